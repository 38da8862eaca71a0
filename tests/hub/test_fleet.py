"""The fleet adapter: the recommender kept in step with the live picture incrementally, never rebuilt."""

from __future__ import annotations

from devices.payloads import Fix, Status
from geo.geodesy import offset
from hub.domain.dispatch import Recommender
from hub.incidents.fleet import Fleet
from hub.ingest.live import LiveState

LAT, LON = 34.26, 117.18
NOW = 1_795_000_000_000


def fix(north_m: float, ts: int = NOW - 1000) -> Fix:
    lat, lon = offset(LAT, LON, north_m, 0)
    return Fix(ts=ts, lat=lat, lon=lon, acc=5.0)


def fleet_of(*units: tuple[str, str, float]) -> tuple[Fleet, LiveState]:
    live = LiveState(stale_after_ms=120_000)
    for unit_id, kind, north in units:
        live.register_unit(unit_id, unit_id, kind, [f"{unit_id}-d"])
        live.apply_fix(f"{unit_id}-d", fix(north), NOW)
    return Fleet(live), live


def best(fleet: Fleet, count: int = 3, now: int = NOW, **kw: object) -> list[str]:
    return [r.unit_id for r in fleet.recommend(LAT, LON, now, count, **kw)]  # type: ignore[arg-type]


def test_first_call_brings_every_unit_in_and_drones_are_not_ground_units() -> None:
    fleet, _ = fleet_of(("A", "patrol", 100), ("B", "foot", 200), ("UAV", "drone", 50))
    assert best(fleet) == ["A", "B"]
    assert best(fleet, kinds=["drone"]) == ["UAV"]
    assert best(fleet, exclude={"A"}) == ["B"]


def test_fixes_move_units_without_a_resync() -> None:
    fleet, live = fleet_of(("A", "patrol", 100), ("B", "patrol", 900))
    assert best(fleet) == ["A", "B"]
    newer = fix(10, NOW)
    live.apply_fix("B-d", newer, NOW)
    fleet.observe("B", [newer], status_changed=False)
    assert fleet.recommender.get("B").fix == newer  # type: ignore[union-attr]
    assert best(fleet) == ["B", "A"]


def test_status_changes_and_re_registration_are_picked_up() -> None:
    fleet, live = fleet_of(("A", "patrol", 100), ("B", "patrol", 900))
    assert best(fleet) == ["A", "B"]
    fleet.set_status("A", "dispatched")
    assert live.units["A"].status == "dispatched"
    assert best(fleet) == ["B"]
    live.set_unit_status("A", "available")  # changed behind the fleet's back (e.g. by the live picture)
    assert best(fleet) == ["A", "B"]
    # Re-registered as another kind with a capability: a new UnitLive object, synced in full.
    live.register_unit("B", "B", "drone", ["B-d"], capabilities=["thermal"])
    assert best(fleet) == ["A"]
    assert best(fleet, kinds=["drone"]) == ["B"]
    assert fleet.recommender.get("B").capabilities == frozenset({"thermal"})  # type: ignore[union-attr]
    live.register_unit("C", "C", "patrol", ["C-d"])  # registered, never located: not recommended
    assert best(fleet) == ["A"] and "C" in fleet.recommender


def test_offline_status_and_coming_back() -> None:
    fleet, live = fleet_of(("A", "patrol", 100), ("B", "patrol", 900))
    assert best(fleet) == ["A", "B"]
    live.apply_status("A-d", Status(ts=NOW, state="offline"), NOW)
    fleet.observe("A", [], status_changed=True)
    assert best(fleet) == ["B"]
    back = fix(100, NOW + 500)
    live.apply_status("A-d", Status(ts=NOW + 400, state="online"), NOW + 500)
    live.apply_fix("A-d", back, NOW + 500)
    fleet.observe("A", [back], status_changed=True)
    assert best(fleet, now=NOW + 600) == ["A", "B"]


def test_stale_fixes_are_not_recommended_and_an_empty_recommender_is_used_as_given() -> None:
    live = LiveState(stale_after_ms=120_000)
    given = Recommender()
    fleet = Fleet(live, given)
    assert fleet.recommender is given  # an empty Recommender is falsy: must not be replaced
    live.register_unit("OLD", "OLD", "patrol", ["OLD-d"])
    live.apply_fix("OLD-d", fix(100, NOW - 90_000), NOW - 90_000)
    assert best(fleet) == []  # 90 s old: past the 60 s freshness limit
