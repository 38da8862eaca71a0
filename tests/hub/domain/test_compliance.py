"""Response-time reports, checked by hand on a small fixture."""

from __future__ import annotations

import pytest

from hub.domain.compliance import (
    DiversionStats,
    MilestoneStats,
    ReportError,
    ResponseRecord,
    nearest_rank,
    response_times,
)
from hub.domain.events import Arrived, Closed, Created, Dispatched, Diverted, HandedOver
from hub.domain.incident import Incident

HOUR = 3_600_000
R1, R2, R3, R4, R5, R6 = (1_795_000_000_000 + i * HOUR for i in range(6))


def record(incident_id: str, received: int, category: str, policy: str | None, units: tuple[str, ...],
           closed: bool = True, diverted: bool = False, handed_over: bool = False,
           **seconds: float) -> ResponseRecord:
    return ResponseRecord(incident_id, category, policy, received,
                          {"received": received, **{k: received + round(v * 1000) for k, v in seconds.items()}},
                          units, diverted, handed_over, closed)


# rapid_12358: dispatched 60, departed 120, contacted 180, supported 300, arrived 480.
# nfpa_1710: dispatched 64, departed 144, arrived 384.
FIXTURE = [
    # Everything on time.
    record("I1", R1, "robbery", "rapid_12358", ("A",), dispatched=30, acknowledged=40, departed=100, contacted=150,
           supported=200, arrived=400, cleared=1000),
    # Closed late on every target; contacted and supported never recorded: missed, not met, not timed.
    record("I2", R2, "robbery", "rapid_12358", ("B",), dispatched=90, acknowledged=100, departed=200, arrived=600,
           cleared=2000),
    # Still open, seen 100 s after the call: dispatched exactly at its deadline, the rest still pending.
    record("I3", R3, "robbery", "rapid_12358", ("A",), closed=False, dispatched=60),
    # A fire: departure 6 s late.
    record("I4", R4, "fire", "nfpa_1710", ("C",), dispatched=64, departed=150, arrived=380, cleared=900),
    # Diverted to 12345: counted apart.
    record("I5", R5, "noise", None, (), diverted=True, handed_over=True, cleared=300),
    record("I6", R6, "robbery", "rapid_12358", ("A",), diverted=True, dispatched=10, arrived=50),
]
NOW = R3 + 100_000


def stats(count: int, mean: float | None, p50: float | None, p90: float | None, decided: int = 0, met: int = 0,
          pending: int = 0) -> MilestoneStats:
    return MilestoneStats(count, mean, p50, p90, decided, met, pending, met / decided if decided else None)


def test_nearest_rank() -> None:
    values = [float(v) for v in range(1, 11)]
    assert [nearest_rank(values, p) for p in (10, 50, 90, 91, 100)] == [1.0, 5.0, 9.0, 10.0, 10.0]
    assert nearest_rank([7.0], 90) == 7.0
    assert nearest_rank([30.0, 60.0, 90.0], 50) == 60.0  # rank ceil(1.5) = 2
    assert nearest_rank([40.0, 100.0], 50) == 40.0  # rank ceil(1.0) = 1
    with pytest.raises(ReportError, match="no values"):
        nearest_rank([], 50)


def test_by_category_checked_by_hand() -> None:
    report = response_times(FIXTURE, now_ms=NOW, group_by="category")
    assert list(report.groups) == ["fire", "robbery"]
    robbery = report.groups["robbery"]
    assert robbery.incidents == 3  # I6 is diverted: not here
    assert robbery.milestones == {
        # 30, 90, 60 s: mean 60; sorted 30/60/90: p50 rank 2, p90 rank 3. Met: I1, I3 (exactly); missed: I2.
        "dispatched": stats(3, 60.0, 60.0, 90.0, decided=3, met=2),
        "acknowledged": stats(2, 70.0, 40.0, 100.0),  # no target in rapid_12358
        # I3 has no departure and 20 s left: pending, out of the rate.
        "departed": stats(2, 150.0, 100.0, 200.0, decided=2, met=1, pending=1),
        # I2 closed without contact: missed; I3 pending.
        "contacted": stats(1, 150.0, 150.0, 150.0, decided=2, met=1, pending=1),
        "supported": stats(1, 200.0, 200.0, 200.0, decided=2, met=1, pending=1),
        "arrived": stats(2, 500.0, 400.0, 600.0, decided=2, met=1, pending=1),
        "cleared": stats(2, 1500.0, 1000.0, 2000.0),
    }
    assert robbery.milestones["departed"].compliance == 0.5
    fire = report.groups["fire"]
    assert fire.incidents == 1
    assert fire.milestones["dispatched"] == stats(1, 64.0, 64.0, 64.0, decided=1, met=1)
    assert fire.milestones["departed"] == stats(1, 150.0, 150.0, 150.0, decided=1, met=0)
    assert fire.milestones["departed"].compliance == 0.0
    assert fire.milestones["arrived"] == stats(1, 380.0, 380.0, 380.0, decided=1, met=1)
    assert fire.milestones["contacted"] == stats(0, None, None, None)
    assert report.diverted == {"noise": DiversionStats(1, 1), "robbery": DiversionStats(1, 0)}
    assert report.diverted_total == DiversionStats(2, 1)


def test_overall_excludes_diverted_incidents() -> None:
    overall = response_times(FIXTURE, now_ms=NOW).overall
    assert overall.incidents == 4
    # 30, 90, 60, 64: mean 61; sorted 30/60/64/90: p50 rank 2 = 60, p90 rank ceil(3.6) = 4 = 90.
    assert overall.milestones["dispatched"] == stats(4, 61.0, 60.0, 90.0, decided=4, met=3)
    assert overall.milestones["dispatched"].compliance == 0.75
    # 400, 600, 380: I6's 50 s arrival is not among them.
    assert overall.milestones["arrived"] == stats(3, 460.0, 400.0, 600.0, decided=3, met=2, pending=1)


def test_by_unit_and_by_policy() -> None:
    by_unit = response_times(FIXTURE, now_ms=NOW, group_by="unit")
    assert list(by_unit.groups) == ["A", "B", "C"]
    assert by_unit.groups["A"].incidents == 2  # I1, I3
    assert by_unit.groups["A"].milestones["dispatched"] == stats(2, 45.0, 30.0, 60.0, decided=2, met=2)
    assert by_unit.groups["B"].milestones["dispatched"] == stats(1, 90.0, 90.0, 90.0, decided=1, met=0)
    assert by_unit.diverted == {"unassigned": DiversionStats(1, 1), "A": DiversionStats(1, 0)}
    by_policy = response_times(FIXTURE, now_ms=NOW, group_by="policy")
    assert list(by_policy.groups) == ["nfpa_1710", "rapid_12358"]
    assert by_policy.groups["rapid_12358"].milestones == response_times(FIXTURE, now_ms=NOW).groups[
        "robbery"].milestones
    assert by_policy.diverted == {"none": DiversionStats(1, 1), "rapid_12358": DiversionStats(1, 0)}


def test_an_incident_in_two_units_counts_in_both_and_unassigned_is_a_group() -> None:
    records = [
        record("J1", R1, "robbery", "rapid_12358", ("A", "B"), dispatched=20),
        record("J2", R2, "robbery", "rapid_12358", (), closed=False),  # nobody sent, 100 s on: dispatch overdue
    ]
    report = response_times(records, now_ms=R2 + 100_000, group_by="unit")
    assert report.groups["A"].milestones["dispatched"] == report.groups["B"].milestones["dispatched"]
    assert report.groups["unassigned"].milestones["dispatched"] == stats(0, None, None, None, decided=1, met=0,
                                                                         pending=0)
    assert report.groups["unassigned"].milestones["arrived"] == stats(0, None, None, None, pending=1)


def test_missing_milestone_is_never_met_and_unknown_policy_has_no_targets() -> None:
    records = [record("K1", R1, "robbery", "rapid_12358", ("A",), dispatched=20),
               record("K2", R2, "theft", "retired_policy", ("A",), dispatched=500)]
    report = response_times(records, now_ms=R2 + 10 * HOUR)
    arrived = report.groups["robbery"].milestones["arrived"]
    assert (arrived.count, arrived.decided, arrived.met, arrived.compliance) == (0, 1, 0, 0.0)
    theft = report.groups["theft"].milestones["dispatched"]
    assert (theft.count, theft.mean, theft.decided, theft.compliance) == (1, 500.0, 0, None)


def test_from_incident_views_gives_the_same_report_as_records() -> None:
    fire = Incident("F1")
    for event in (
        Created(ts=R1, source="api", category="fire", priority=1, lat=34.2, lon=117.1, policy="nfpa_1710"),
        Dispatched(ts=R1 + 64_000, source="system", unit_id="E1", cmd_id="c1"),
        Dispatched(ts=R1 + 65_000, source="system", unit_id="E2", cmd_id="c2"),
        Arrived(ts=R1 + 390_000, source="geofence", unit_id="E2"),
        Closed(ts=R1 + 900_000, source="api"),
    ):
        fire.apply(event)
    noise = Incident("N1")
    for event2 in (
        Created(ts=R2, source="api", category="noise", priority=4, lat=34.2, lon=117.1),
        Diverted(ts=R2 + 5_000, source="api", reason="non-police"),
        HandedOver(ts=R2 + 9_000, source="system"),
    ):
        noise.apply(event2)
    views = [fire.view(R3), noise.view(R3)]
    assert ResponseRecord.from_view(views[0]) == ResponseRecord(
        "F1", "fire", "nfpa_1710", R1,
        {"received": R1, "dispatched": R1 + 64_000, "acknowledged": None, "departed": None, "contacted": None,
         "supported": None, "arrived": R1 + 390_000, "cleared": R1 + 900_000},
        ("E1", "E2"), diverted=False, handed_over=False, closed=True)
    report = response_times(views, now_ms=R3, group_by="unit")
    assert report.to_dict()["groups"]["E2"]["milestones"]["arrived"] == {
        "count": 1, "mean": 390.0, "p50": 390.0, "p90": 390.0, "decided": 1, "met": 0, "pending": 0,
        "compliance": 0.0}
    assert report.groups["E1"].milestones["departed"].decided == 1  # closed without departure: missed
    assert report.to_dict()["diverted"] == {"total": {"count": 1, "handed_over": 1},
                                            "groups": {"unassigned": {"count": 1, "handed_over": 1}}}


def test_bad_group_by_is_refused() -> None:
    with pytest.raises(ReportError, match="group_by must be one of category, unit, policy"):
        response_times(FIXTURE, now_ms=NOW, group_by="district")


def test_no_incidents() -> None:
    report = response_times([], now_ms=NOW)
    assert report.groups == {}
    assert report.overall.incidents == 0
    assert report.overall.milestones["arrived"] == stats(0, None, None, None)
