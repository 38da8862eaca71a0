"""The detector-level accuracy benchmark at a tiny scale: its scenarios, its ground truth and its report."""

from __future__ import annotations

import dataclasses
import random

import pytest

from bench import accuracy
from bench.accuracy import ARRIVAL_TARGET_S, CASES, DEPARTURE_TARGET_S, EDGE_INSIDE_M, RADIUS_M, Outcome, render, run
from devices.payloads import Fix
from geo.geodesy import haversine_m, offset

CENTRE = (34.2610, 117.1859)


@pytest.fixture(scope="module")
def outcomes() -> list[Outcome]:
    return run(2 * len(CASES), seed=1)  # two incidents of every case, about a second


def test_every_case_is_simulated_twice(outcomes: list[Outcome]) -> None:
    assert [o.case for o in outcomes] == list(CASES) * 2
    assert all(o.fixes > 300 for o in outcomes)  # dispatch, turnout, a drive of 0.5-3 km and 3-10 min on scene


def test_arrivals_are_detected_within_two_seconds_of_the_truth(outcomes: list[Outcome]) -> None:
    errors = {(o.index, o.case): o.arrival_error_s for o in outcomes}
    assert all(e is not None and abs(e) <= ARRIVAL_TARGET_S for e in errors.values()), errors
    # The truth is an instant of the drive, after departure and before the stop on scene.
    assert all(o.departure_truth_ms < o.arrival_truth_ms for o in outcomes)


def test_departures_are_detected_within_three_seconds_and_nothing_arrives_at_a_decoy(outcomes: list[Outcome]) -> None:
    errors = {(o.index, o.case): o.departure_error_s for o in outcomes}
    assert all(e is not None and abs(e) <= DEPARTURE_TARGET_S for e in errors.values()), errors
    assert [o.false_arrivals for o in outcomes] == [[]] * len(outcomes)
    # A patrolling unit is already rolling: its departure is the first fix after dispatch (at most 1 s later).
    assert all(0 < o.departure_truth_ms <= 1000 for o in outcomes if o.case == "patrolling")
    assert all(o.departure_truth_ms > 20_000 for o in outcomes if o.case != "patrolling")  # the turnout delay


def test_edge_inside_rests_just_inside_after_crossing_along_the_edge() -> None:
    city = accuracy.build_city()
    for index in (6, 13):
        rng = random.Random(1 * 1_000_003 + index)
        samples, dispatch, _, _, stop = accuracy._drive(city, rng, "edge_inside", (500.0, 3000.0))
        centre = accuracy._edge_incident(rng, samples, stop, dispatch)
        rest = RADIUS_M - haversine_m(*centre, samples[stop].lat, samples[stop].lon)
        assert EDGE_INSIDE_M[0] - 0.01 <= rest <= EDGE_INSIDE_M[1] + 0.01
        truth = accuracy._arrival_truth(samples, stop, centre, dispatch)
        assert 0 < samples[stop].ts - truth <= 15_000  # crossed on the final approach, braking along the tangent


def test_decoys_are_driven_through_or_stood_next_to(outcomes: list[Outcome]) -> None:
    decoys = {o.case: o.notes["decoy"] for o in outcomes if "decoy" in o.notes}
    assert set(decoys) == {"drive_by", "edge_jitter"}
    drive_by = next(o for o in outcomes if o.case == "drive_by")
    assert not drive_by.notes["decoy"].startswith("truly inside the decoy zone 0 s")


def _samples(distances: list[float]) -> list[accuracy._Sample]:
    """One sample a second at ``distances`` metres north of the centre."""
    return [accuracy._Sample(1000 * k, *offset(*CENTRE, d, 0.0), 0.0, None) for k, d in enumerate(distances)]


def test_arrival_truth_is_the_first_sample_inside_of_the_final_approach() -> None:
    # In at 2, out at 4-5 (a road grazing the edge), in again at 6 for good: the truth is 6, not 2.
    samples = _samples([300.0, 150.0, 99.0, 80.0, 101.0, 120.0, 100.0, 40.0, 10.0, 10.0])
    assert accuracy._arrival_truth(samples, 9, CENTRE, dispatch=0) == 6000
    # Fixes before dispatch never start the stay.
    assert accuracy._arrival_truth(_samples([50.0, 40.0, 30.0, 10.0]), 3, CENTRE, dispatch=2000) == 2000
    with pytest.raises(RuntimeError):
        accuracy._arrival_truth(_samples([300.0, 150.0]), 1, CENTRE, dispatch=0)


def test_a_dead_zone_is_delivered_as_one_batch_after_later_fixes() -> None:
    fixes = [Fix(ts=1000 * k, lat=CENTRE[0], lon=CENTRE[1]) for k in range(400)]
    chunks = accuracy._deliveries("dead_zone", random.Random(3), fixes, arrival_truth=200_000)
    batch = max(chunks, key=len)
    assert 60 <= len(batch) <= 180 and batch[0].ts < 200_000 <= batch[-1].ts
    before = [f.ts for chunk in chunks[: chunks.index(batch)] for f in chunk]
    assert max(before) > batch[-1].ts  # later fixes reached the hub first
    assert sorted(f.ts for chunk in chunks for f in chunk) == [f.ts for f in fixes]  # none lost or doubled


def test_report_has_a_row_per_case_and_overall_and_passes(outcomes: list[Outcome]) -> None:
    text = render(outcomes, seed=1, elapsed_s=1.0)
    assert "no broker, no database" in text and "cores" in text and "Python" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split() and line.split()[0] in
            (*CASES, "overall")}
    assert set(rows) == {*CASES, "overall"}
    n = str(len(outcomes))
    assert rows["overall"][1:3] == [n, f"{n}/{n}"] and rows["parked"][1:3] == ["2", "2/2"]
    assert rows["overall"][7] == "100.0%" and rows["overall"][8] == "0" and rows["overall"][-1] == "100.0%"
    assert text.count("PASS") == 4 and "FAIL" not in text and "worst" not in text


def test_report_fails_and_names_the_worst_cases() -> None:
    good = Outcome(0, "parked", arrival_truth_ms=200_000, departure_truth_ms=40_000, arrival_ms=201_000,
                   departure_ms=41_000)
    late = dataclasses.replace(good, index=7, case="dead_zone", arrival_ms=195_000, notes={"arrival": "grazed"})
    missed = dataclasses.replace(good, index=8, departure_ms=None)
    decoyed = dataclasses.replace(good, index=9, case="drive_by", false_arrivals=["drive_by decoy at +90 s"])
    text = render([good, late, missed, decoyed], seed=1, elapsed_s=0.1)
    assert "PASS  arrivals detected" in text
    assert "FAIL  arrival |error| <= 2 s" in text and "FAIL  zero false arrivals" in text
    assert "FAIL  departures within 3 s" in text
    assert "#7    dead_zone   truth +200 s  detected +195 s  error -5 s  (grazed)" in text
    assert "#8    parked      truth +40 s  detected never" in text
    assert "#9    drive_by    drive_by decoy at +90 s" in text
