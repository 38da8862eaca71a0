"""Ground truth of a response on synthetic trajectories: pure, no network."""

from __future__ import annotations

import json
from pathlib import Path

from geo.geodesy import offset
from sim.truth import ResponseTruth, Sample, TruthLog, arrival_truth, departure_truth, edge_span

ZONE = (34.2610, 117.1859)
T0 = 1_795_000_000_000  # the dispatch


def north(ts: int, metres: float, speed: float) -> Sample:
    return Sample(ts, *offset(*ZONE, metres, 0.0), speed)


def recorder(case: str = "parked") -> ResponseTruth:
    return ResponseTruth("I1", "P001", case, ZONE, 100.0, T0)


def test_departure_is_the_first_sample_after_dispatch_that_moves() -> None:
    standing = [north(T0 + k * 1000, 900.0, 0.0) for k in range(30)]
    moving = [north(T0 + 30_250 + k * 1000, 899.0 - k, 0.5 + k) for k in range(5)]
    assert departure_truth(standing + moving, T0) == T0 + 30_250
    # A car driving at dispatch departs with its first sample at or after dispatch, not before.
    driving = [north(T0 - 2000 + k * 1000, 900.0 - 10 * k, 10.0) for k in range(6)]
    assert departure_truth(driving, T0) == T0
    assert departure_truth(driving, T0 + 1) == T0 + 1000
    assert departure_truth(standing, T0) is None


def test_arrival_walks_back_from_the_stop_while_inside() -> None:
    # Approach from 300 m at 10 m/s, rest at 40 m: the first sample inside is at 100 m or nearer.
    samples = [north(T0 + k * 1000, 300.0 - 10 * k, 10.0) for k in range(27)]
    samples += [north(T0 + (27 + k) * 1000, 40.0, 0.0) for k in range(60)]
    stop = T0 + 27_000
    assert arrival_truth(samples, stop, ZONE, 100.0, T0) == T0 + 20_000  # 300 - 200 = 100 m: inside, the edge counts
    assert arrival_truth(samples, stop, ZONE, 60.0, T0) == T0 + 24_000
    assert arrival_truth(samples, None, ZONE, 100.0, T0) is None
    # Samples before dispatch never start the stay.
    assert arrival_truth(samples, stop, ZONE, 100.0, T0 + 23_000) == T0 + 23_000


def test_a_drive_through_before_the_final_stay_is_not_the_arrival() -> None:
    # Through the zone (150 m in, out to 200 m beyond the edge), stand there, then back to rest at 20 m.
    path = [300.0 - 10 * k for k in range(51)]  # 300 .. -200
    back = [-200.0 + 10 * k for k in range(23)]  # -200 .. 20
    samples = [north(T0 + k * 1000, d, 10.0) for k, d in enumerate(path)]
    samples += [north(T0 + (51 + k) * 1000, -200.0, 0.0) for k in range(60)]
    samples += [north(T0 + (111 + k) * 1000, d, 10.0) for k, d in enumerate(back)]
    samples += [north(T0 + (134 + k) * 1000, 20.0, 0.0) for k in range(60)]
    assert arrival_truth(samples, T0 + 134_000, ZONE, 100.0, T0) == T0 + 121_000  # -100 m on the way back


def test_resting_outside_the_zone_is_no_arrival_whatever_the_route_crossed() -> None:
    truth = recorder("edge_outside")
    for k in range(40):  # crosses the zone, then rests at 115 m
        d = 200.0 - 10 * k if k < 32 else -115.0
        truth.add(T0 + k * 1000, *offset(*ZONE, d, 0.0), 0.0 if k >= 32 else 10.0)
    truth.stopped(T0 + 32_000)
    result = truth.result()
    assert result.arrived is None
    assert result.stop_distance_m == 115.0
    assert "rested outside the zone" in result.notes["arrival"]
    assert "earlier_visit" in result.notes


def test_recorder_merges_devices_keeps_one_sample_per_instant_and_reports_every_milestone() -> None:
    truth = recorder()
    truth.add(T0 - 500, *offset(*ZONE, 500.0, 0.0), 0.0)  # before dispatch: not a sample of this response
    for device_offset in (0, 333, 666):  # three devices, interleaved and out of order
        for k in range(0, 120):
            ts = T0 + k * 1000 + device_offset
            d = 500.0 if ts < T0 + 30_000 else max(30.0, 500.0 - 10 * (ts - T0 - 30_000) / 1000)
            truth.add(ts, *offset(*ZONE, d, 0.0), 0.0 if d in (500.0, 30.0) else 10.0)
    truth.add(T0 + 1000, *offset(*ZONE, 0.0, 0.0), 99.0)  # a second device at the same instant: ignored
    assert len(truth.samples) == 360 and [s.ts for s in truth.samples] == sorted(s.ts for s in truth.samples)
    truth.acks = [T0 + 45, T0 + 12, T0 + 30]
    truth.stopped(T0 + 77_000)
    truth.stopped(T0 + 90_000)  # only the first rest counts
    truth.contact_ms = T0 + 100_000
    truth.cleared_ms = T0 + 119_000
    result = truth.result()
    assert result.acknowledged == T0 + 12
    assert result.departed == T0 + 30_333  # 30_000 stands at 500 m: the first moving sample is the next
    assert result.arrived == T0 + 70_000  # 500 - 400 = 100 m
    assert (result.contacted, result.cleared, result.stop) == (T0 + 100_000, T0 + 119_000, T0 + 77_000)
    assert result.stop_distance_m == 30.0 and result.samples == 360 and result.notes == {}


def test_log_keeps_responses_in_memory_and_as_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    log = TruthLog(path)
    first = recorder()
    first.stopped(T0)
    log.add(first.result())
    second = ResponseTruth("I1", "P002", "patrolling", ZONE, 150.0, T0 + 5)
    log.add(second.result())
    log.close()
    assert len(log) == 2
    assert log.get("I1", "P002") is not None and log.get("I1", "P002").radius_m == 150.0  # type: ignore[union-attr]
    assert log.get("I2", "P001") is None
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(d["incident_id"], d["unit_id"], d["case"]) for d in lines] == [("I1", "P001", "parked"),
                                                                              ("I1", "P002", "patrolling")]
    assert lines[0]["zone"] == list(ZONE) and lines[0]["arrived"] is None and lines[1]["dispatched"] == T0 + 5


def test_edge_span_covers_the_time_spent_within_the_band_of_the_edge() -> None:
    # In at 10 m/s to 101 m, a 20 s red light 99 m out (1 m inside), then on to rest at 40 m.
    samples = [north(T0 + k * 1000, 200.0 - 10 * k, 10.0) for k in range(10)]  # 200 .. 110
    samples += [north(T0 + 10_000, 101.0, 5.0)] + [north(T0 + (11 + k) * 1000, 99.0, 0.0) for k in range(20)]
    samples += [north(T0 + (31 + k) * 1000, 90.0 - 10 * k, 10.0) for k in range(6)]  # 90 .. 40
    samples += [north(T0 + (37 + k) * 1000, 40.0, 0.0) for k in range(30)]
    arrived = arrival_truth(samples, T0 + 37_000, ZONE, 100.0, T0)
    assert arrived == T0 + 11_000
    assert edge_span(samples, arrived, T0 + 37_000, ZONE, 100.0) == ((T0 + 10_000, T0 + 30_000), False)
    # A straight crossing: the span is the arrival sample alone.
    straight = [north(T0 + k * 1000, 200.0 - 10 * k, 10.0) for k in range(16)] + [
        north(T0 + (16 + k) * 1000, 40.0, 0.0) for k in range(30)]
    first = arrival_truth(straight, T0 + 16_000, ZONE, 100.0, T0)
    assert edge_span(straight, first, T0 + 16_000, ZONE, 100.0) == ((first, first), False)
    # Resting 1 m inside the edge: the span runs to the end and the car rests at the edge.
    parked = samples[:11] + [north(T0 + (11 + k) * 1000, 99.0, 0.0) for k in range(60)]
    arrived = arrival_truth(parked, T0 + 11_000, ZONE, 100.0, T0)
    assert edge_span(parked, arrived, T0 + 11_000, ZONE, 100.0) == ((T0 + 10_000, T0 + 70_000), True)
    assert edge_span(parked, None, T0 + 11_000, ZONE, 100.0) == (None, False)
