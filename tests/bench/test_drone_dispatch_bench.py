"""The drone dispatch benchmark's pure parts: kinematic minimum, the simulator's truth, summaries, verdict, report.

No stack, no drones: made-up samples and figures.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import drone_dispatch as dd
from bench.drone_dispatch import Dispatch, summarise, summary, verdict
from bench.drone_kinematics import move_s, physical_minimum, reach_s
from geo.geodesy import haversine_m
from sim.arducopter import CopterConfig
from sim.stations import DroneDock

T0 = 1_800_000_000_000


def test_move_is_a_trapezoid_or_a_triangle() -> None:
    assert move_s(300, 12, 2.5) == pytest.approx(300 / 12 + 12 / 2.5)  # 29.8 s: 4.8 s of ramps, 242.4 m at 12
    assert move_s(10, 12, 2.5) == pytest.approx(4.0)  # never reaches 12 m/s: 5 m up to 5 m/s, 5 m down
    assert move_s(0, 12, 2.5) == 0.0


def test_reach_follows_the_same_profile() -> None:
    assert reach_s(2, 30, 2.5, 1.5) == pytest.approx(math.sqrt(4 / 1.5))  # still accelerating at 2 m
    assert reach_s(200, 300, 12, 2.5) == pytest.approx(4.8 + (200 - 28.8) / 12)  # cruising
    assert reach_s(300, 300, 12, 2.5) == pytest.approx(move_s(300, 12, 2.5))
    assert reach_s(0, 300, 12, 2.5) == 0.0


@given(st.floats(1, 5000), st.floats(0.5, 30), st.floats(0.2, 10), st.lists(st.floats(0, 1), min_size=2))
def test_reach_is_monotone_and_bounded_by_the_move(distance: float, vmax: float, accel: float,
                                                  shares: list[float]) -> None:
    times = [reach_s(s * distance, distance, vmax, accel) for s in sorted(shares)]
    assert all(a <= b + 1e-9 for a, b in itertools.pairwise(times))
    assert times[0] >= 0.0 and times[-1] <= move_s(distance, vmax, accel) + 1e-9


def test_physical_minimum_at_the_simulators_defaults() -> None:
    p = physical_minimum(CopterConfig(), 30.0, 300.0)
    # Climb 30 m at 2.5 m/s, 1.5 m/s2: 12 s + 1.67 s; 300 m at 12 m/s, 2.5 m/s2: 25 s + 4.8 s.
    assert (p["airborne_s"], p["climb_s"], p["cruise_s"], p["over_scene_s"]) == (1.63, 13.67, 29.8, 43.47)
    assert p["zone_entry_s"] == 32.73  # 200 m of the 300 m, entering the 100 m zone at cruise speed
    assert p["hub_profile_s"] == 41.43  # level flight from 27 m up: 11.63 s + 29.8 s
    assert p["hub_profile_s"] < p["over_scene_s"]


def test_physical_minimum_reads_the_configured_limits() -> None:
    slow = physical_minimum(CopterConfig(cruise_mps=6.0, takeoff_mps=1.0), 30.0, 300.0)
    assert slow["cruise_s"] == round(300 / 6 + 6 / 2.5, 2) and slow["climb_s"] == round(30 / 1 + 1 / 1.5, 2)
    assert slow["cruise_mps"] == 6.0 and slow["takeoff_mps"] == 1.0


def _flown(hover_alt: float = 21.0) -> Dispatch:
    """A copter that lifts off at +1 s, is 2 m up at +2.5 s, crosses the zone fast, hovers from +40 s."""
    d = Dispatch(0, "UAV-01", (34.25, 117.18), received_ms=T0, hover_alt_m=hover_alt)
    samples = [(0.0, 0.0, False, 300, 0.0), (1.0, 0.1, True, 300, 0.0), (2.5, 2.0, True, 300, 0.0),
               (20.0, 30.0, True, 90, 12.0),  # inside the zone at cruise speed: not a hover
               (40.0, 30.0, True, 0.5, 1.4), (45.0, 30.0, True, 0.3, 0.0)]
    for t, alt, flying, scene_m, speed in samples:
        d.observe_truth(T0 + int(t * 1000), alt, flying, scene_m, speed)
    return d


def test_truth_marks_liftoff_two_metres_and_the_hover_start() -> None:
    d = _flown()
    assert (d.liftoff_ms, d.up_ms, d.hover_ms) == (T0 + 1000, T0 + 2500, T0 + 40_000)


def test_a_slow_copter_below_the_hover_floor_is_not_hovering_over_the_scene() -> None:
    d = _flown(hover_alt=35.0)
    assert d.hover_ms is None and d.up_ms == T0 + 2500


def test_intervals_in_seconds_and_none_where_an_end_is_missing() -> None:
    d = _flown()
    d.sent_ms, d.answered_ms, d.acknowledged_ms = T0 + 100, T0 + 112, T0 + 900
    d.airborne_seen_ms, d.arrived_ms, d.arrival_seen_ms = T0 + 2600, T0 + 30_000, T0 + 43_250
    i = d.intervals()
    assert i["post_drone"] == 12  # milliseconds
    assert (i["to_acknowledged"], i["to_airborne"], i["to_arrived"], i["to_arrival_seen"]) == (0.9, 2.6, 30.0, 43.25)
    assert (i["after_hover"], i["detection"], i["flight_truth"]) == (3.25, 13.25, 39.0)
    assert Dispatch(0, "UAV-02", (0.0, 0.0), received_ms=T0).intervals()["to_arrived"] is None
    assert set(d.to_dict()["intervals"]) == set(dd.INTERVALS)


def test_summary_is_nearest_rank_over_the_values_present() -> None:
    # Ties around each rank, so the figures hold for any nearest-rank convention.
    s = summary([9.0, 9.0] + [4.0] * 8 + [1.0] * 10 + [None])
    assert s == {"count": 20, "min": 1.0, "p50": 1.0, "p95": 9.0, "max": 9.0, "mean": 3.0}
    assert summary([None]) == {"count": 0} and summary([]) == {"count": 0}


def _arrived(after_hover_s: float | None) -> Dispatch:
    d = Dispatch(0, "UAV-01", (0.0, 0.0), received_ms=T0, hover_ms=T0 + 40_000)
    if after_hover_s is not None:
        d.arrival_seen_ms = T0 + 40_000 + int(after_hover_s * 1000)
    return d


@pytest.mark.parametrize(("lags", "expected"), [
    ([3.2, 4.1], True),
    ([3.2, 5.0], True),  # the limit itself passes
    ([3.2, 5.01], False),
    ([3.2, None], False),  # an arrival never seen fails
    ([], False),  # nothing measured proves nothing
])
def test_verdict_needs_every_arrival_within_five_seconds_of_the_hover(lags: list[float | None],
                                                                       expected: bool) -> None:
    assert verdict([_arrived(x) for x in lags]) is expected


def test_a_dispatch_without_truth_fails_the_verdict() -> None:
    d = _arrived(3.0)
    d.hover_ms = None  # the copter never hovered over the scene, whatever the hub said
    assert verdict([d]) is False


def _result() -> dict[str, Any]:
    d = _flown()
    d.status, d.sent_ms, d.answered_ms, d.acknowledged_ms = 201, T0 + 100, T0 + 112, T0 + 900
    d.airborne_seen_ms, d.arrived_ms, d.arrival_seen_ms = T0 + 2600, T0 + 30_000, T0 + 43_250
    failed = Dispatch(1, "UAV-02", (0.0, 0.0), received_ms=T0, status=409, error="dispatch answered 409")
    physical = physical_minimum(CopterConfig(), 30.0, 300.0)
    return {"machine": {"cpu": "Test CPU", "cores": 2, "ram_gib": 4.0, "kernel": "Linux 6", "python": "3.11.7",
                        "date": "2026-12-05 10:00:00 UTC"},
            "command": "fieldhub bench drone-dispatch --drones 2 --rounds 1",
            "config": {"drones": 2, "rounds": 1, "dispatches": 2, "distance_m": 300.0, "cruise_alt_m": 30.0,
                       "radius_m": 100.0},
            "physical": physical, "summary": summarise([d, failed], physical)}


def test_summarise_counts_and_ratios() -> None:
    s = _result()["summary"]
    assert (s["dispatched"], s["arrived"], s["pass"]) == (1, 1, False)  # the 409 one never arrived
    assert s["errors"] == ["UAV-02 round 1: dispatch answered 409"]
    assert s["ratio_p50"]["airborne"] == round(2.6 / 1.63, 2)
    assert s["ratio_p50"]["arrival_seen"] == round(43.25 / 43.47, 2)
    assert s["ratio_p50"]["sim_flight"] == round(39.0 / 41.43, 2)


def test_table_and_markdown_carry_the_same_figures() -> None:
    r = _result()
    text, md = dd.table(r), dd.markdown(r)
    for label, value in dd.rows(r):
        assert f"{label:<46} {value}" in text
        assert f"| {label} | {value} |" in md
    figures = dict(dd.rows(r))
    assert figures["dispatched / arrival seen"] == "1/2 / 1/2"
    assert figures["arrival seen - hover start"] == "p50 3.25  p95 3.25  max 3.25 s (n=1) -> FAIL (limit 5 s)"
    assert figures["POST .../drone -> 201"] == "p50 12  p95 12 ms"
    assert "= 43.47 s" in figures["physical minimum from lift-off"]
    assert "`fieldhub bench drone-dispatch --drones 2 --rounds 1`" in md and "2 cores" in text


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_each_scene_is_exactly_the_distance_from_its_dock(seed: int) -> None:
    dock = DroneDock("UAV-01", 1, 34.26, 117.19, "Central Police Station")
    scenes = [dd.scene_for(dock, random.Random(seed), 300.0) for _ in range(2)]
    assert scenes[0] == scenes[1]  # seeded
    assert haversine_m(dock.lat, dock.lon, *scenes[0]) == pytest.approx(300.0, abs=0.5)


@pytest.mark.parametrize("argv", [["--drones", "0"], ["--drones", "11"], ["--rounds", "0"], ["--distance", "50"],
                                  ["--cruise-alt", "5"]])
def test_bad_options_are_refused_before_anything_starts(argv: list[str]) -> None:
    assert dd.main(argv) == 2


def test_defaults_are_the_issues_twenty_dispatches() -> None:
    args = dd.build_parser().parse_args([])
    assert (args.drones * args.rounds, args.distance, args.cruise_alt) == (20, 300.0, 30.0)
