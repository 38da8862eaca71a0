"""The end-to-end accuracy benchmark's scoring, report and case planning (pure: no stack is started)."""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bench import e2e_accuracy
from bench.e2e_drive import Outcome, expected_radius, plan_case
from geo.geodesy import haversine_m
from sim.runner import CitySim
from sim.scenarios import CASES, trace
from sim.truth import Truth

T0 = 1_795_000_000_000
ZONE = (34.26, 117.18)


def outcome(index: int, case: str, truth: dict[str, int | None], hub: dict[str, int | None], **extra: Any) -> Outcome:
    t = Truth(f"I{index}", f"P{index:03d}", case, ZONE, 100.0, T0, truth.get("acknowledged"), truth.get("departed"),
              truth.get("arrived"), truth.get("contacted"), T0 + 600_000, truth.get("stop"), 40.0, 900,
              notes=extra.pop("notes", {}))
    return Outcome(index, case, t.unit_id, t.incident_id, "theft", 100.0, t, hub, **extra)


GOOD = {"acknowledged": T0 + 5, "departed": T0 + 30_000, "arrived": T0 + 200_000, "contacted": T0 + 260_000,
        "stop": T0 + 210_000}


def test_scoring_counts_hits_misses_false_arrivals_and_departures() -> None:
    outcomes = [
        outcome(0, "parked", GOOD, {**GOOD, "arrived": T0 + 201_500, "departed": T0 + 32_000}),  # within targets
        outcome(1, "parked", GOOD, {**GOOD, "arrived": T0 + 197_000}),  # 3 s early: outside 2 s
        outcome(2, "edge_jitter", GOOD, {**GOOD, "arrived": None}, notes={"arrival": "rested 99 m"}),  # missed
        outcome(3, "edge_outside", {**GOOD, "arrived": None}, {**GOOD}),  # truth: none; hub: one -> false
        outcome(4, "edge_outside", {**GOOD, "arrived": None}, {**GOOD, "arrived": None}),  # correctly none
        outcome(5, "patrolling", GOOD, {**GOOD, "departed": T0 + 34_000}),  # departure 4 s late
        Outcome(6, "dead_zone", "P006", problem="dispatch refused: HTTP 409"),
    ]
    s = e2e_accuracy.summarize(outcomes)
    o = s["overall"]
    assert (o["incidents"], o["measured"], o["problems"]) == (7, 6, 1)
    assert (o["true_arrivals"], o["arrivals_detected"], o["arrivals_within_2s"]) == (4, 3, 2)
    assert (o["false_arrivals"], o["missed_arrivals"]) == (1, 1)
    assert (o["departures_detected"], o["departures_within_3s"]) == (6, 5)
    assert o["arrival_abs_error_s"] == {"p50": 1.5, "p95": 3.0, "max": 3.0}
    assert o["ack_abs_error_ms"]["max"] == 0.0
    assert s["cases"]["edge_outside"]["false_arrivals"] == 1 and s["cases"]["parked"]["arrivals_within_2s"] == 1
    assert s["targets"] == {"arrivals_all_within_2s": False, "arrivals_within_2s_beyond_2m_edge_band": False,
                            "zero_false_arrivals": False, "departures_all_within_3s": False, "all_measured": False}
    good = e2e_accuracy.summarize([outcome(0, "parked", GOOD, dict(GOOD))])
    assert all(good["targets"].values())


def test_the_edge_band_excuses_only_what_gps_cannot_tell() -> None:
    # A car that rested 1 m inside the edge and was missed; a car that stood 20 s at a red light just
    # inside the edge, detected when it drove on; a car that was 3 s late with no edge span; a false one.
    at_edge = outcome(0, "edge_jitter", GOOD, {**GOOD, "arrived": None})
    at_edge.truth = replace(at_edge.truth, edge_span=(T0 + 200_000, T0 + 600_000), rests_at_edge=True)
    light = outcome(1, "dead_zone", GOOD, {**GOOD, "arrived": T0 + 221_000})
    light.truth = replace(light.truth, edge_span=(T0 + 199_000, T0 + 220_000))
    late = outcome(2, "parked", GOOD, {**GOOD, "arrived": T0 + 203_000})
    late.truth = replace(late.truth, edge_span=(T0 + 199_000, T0 + 200_500))
    assert at_edge.missed_at_edge and light.arrival_within(2.0) and not late.arrival_within(2.0)
    s = e2e_accuracy.summarize([at_edge, light])
    assert s["overall"]["missed_at_edge"] == 1 and s["overall"]["arrivals_within_2s_of_edge_span"] == 1
    assert s["targets"]["arrivals_within_2s_beyond_2m_edge_band"] and not s["targets"]["arrivals_all_within_2s"]
    assert not e2e_accuracy.summarize([light, late])["targets"]["arrivals_within_2s_beyond_2m_edge_band"]
    # A false arrival is never excused, edge or not.
    false = outcome(3, "edge_outside", {**GOOD, "arrived": None}, dict(GOOD))
    assert not e2e_accuracy.summarize([at_edge, light, false])["targets"]["zero_false_arrivals"]


def test_the_report_names_every_failure_with_its_facts(tmp_path: Path) -> None:
    outcomes = [outcome(0, "parked", GOOD, dict(GOOD)),
                outcome(2, "edge_jitter", GOOD, {**GOOD, "arrived": None}, notes={"arrival": "grazed the edge"}),
                outcome(3, "edge_outside", {**GOOD, "arrived": None}, dict(GOOD))]
    result = {"machine": {"cpu": "CPU", "cores": 2, "ram_gib": 23.5, "python": "3.11", "date": "today"},
              "config": {"incidents": 3, "units": 3, "seed": 1, "fix_interval_s": 1.0}, "wall_s": 10.0,
              "fixes_sent": 1234, "summary": e2e_accuracy.summarize(outcomes),
              "outcomes": [o.to_dict() for o in outcomes], "_outcomes": outcomes}
    text = e2e_accuracy.render(result)
    assert "FAIL  arrivals_all_within_2s" in text and "FAIL  zero_false_arrivals" in text
    assert "PASS  departures_all_within_3s" in text
    assert "#2    edge_jitter" in text and "grazed the edge" in text and "hub never" in text
    assert "false arrivals (1):" in text and "#3    edge_outside" in text
    table = e2e_accuracy.markdown_table(result["summary"])
    assert table.splitlines()[0].startswith("| case | n |") and "| overall | 3 | 1/2 |" in table
    saved = e2e_accuracy.save(result, tmp_path)
    stored = json.loads(saved.read_text())
    assert "_outcomes" not in stored and stored["outcomes"][2]["false_arrival"] is True
    assert stored["outcomes"][1]["errors_s"]["arrived"] is None and saved.name.startswith("e2e-accuracy-")
    # --report re-renders a saved run: the same outcomes, the same report.
    reloaded = e2e_accuracy.load(saved)
    assert [o.to_dict() for o in reloaded["_outcomes"]] == stored["outcomes"]
    assert e2e_accuracy.render(reloaded) == text


@pytest.mark.parametrize("case", CASES)
def test_every_case_plans_its_geometry_on_the_units_route(case: str) -> None:
    sim = CitySim("http://127.0.0.1:1", "mqtt://127.0.0.1:1", "t", units=1, seed=31, start_parked=True)
    sim._build()
    unit = sim.units[0]
    now = time.time_ns() // 1_000_000
    if case == "patrolling":
        unit.vehicle.resume_patrol()
    planned = plan_case(case, unit, now, random.Random(CASES.index(case)), 100.0)
    assert planned is not None
    incident, plan = planned
    assert plan.case == case
    assert 500.0 - 1.0 <= haversine_m(*unit.vehicle.position, *incident) <= 1500.0 + 150.0
    if case == "drive_by":
        assert len(plan.via) == 1 and 150.0 <= haversine_m(*incident, plan.via[0].lat, plan.via[0].lon) <= 250.0
    if case in ("edge_jitter", "edge_outside"):
        assert plan.rest_at is not None
        lo, hi = (95.0, 110.0) if case == "edge_jitter" else (110.0, 130.0)
        assert lo - 0.01 <= haversine_m(*incident, *plan.rest_at) <= hi + 0.01
        assert trace(unit.vehicle, now, plan.rest_at).rest == pytest.approx(plan.rest_at, abs=1e-7)
    assert (plan.dead_zone is not None) == (case == "dead_zone")
    assert (plan.outlier_probability is not None) == (case == "outliers")


def test_the_zone_radius_follows_the_hubs_category_rules() -> None:
    assert expected_radius("theft") == 100.0
    assert expected_radius("missing_person") >= expected_radius("theft")
