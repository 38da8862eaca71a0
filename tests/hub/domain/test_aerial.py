"""Drone choice and the battery model: pure, table-driven."""

from __future__ import annotations

import pytest

from devices.geo import offset
from hub.domain.aerial import DroneCandidate, DroneEnergy, choose_drone, must_return

SCENE = (34.2610, 117.1859)
ENERGY = DroneEnergy(cruise_mps=10.0, pct_per_km=4.0, climb_pct=2.0, hover_pct_per_min=1.0, on_scene_min=5.0,
                     reserve_pct=20.0)


def docked(drone_id: str, metres_north: float, battery: float | None = 100.0, **changes: object) -> DroneCandidate:
    lat, lon = offset(*SCENE, metres_north, 0.0)
    fields: dict[str, object] = {"drone_id": drone_id, "lat": lat, "lon": lon, "battery_pct": battery,
                                 "link_ok": True, "armed": False, "on_ground": True, "dock_distance_m": 3.0}
    fields.update(changes)
    return DroneCandidate(**fields)  # type: ignore[arg-type]


def test_mission_needs_climb_round_trip_hover_and_reserve() -> None:
    # 2 km out: 2 + 2 * 2 km * 4 %/km + 5 min * 1 %/min + 20 = 43 %.
    assert ENERGY.mission_pct(2000.0) == pytest.approx(43.0)
    assert ENERGY.return_pct(2000.0) == pytest.approx(28.0)


@pytest.mark.parametrize(("name", "fleet", "chosen", "refused"), [
    ("nearest of two ready", [docked("A", 3000), docked("B", 1000)], "B", {}),
    ("too little battery is not chosen", [docked("A", 3000), docked("B", 1000, battery=30.0)], "A",
     {"B": "battery 30 %, the round trip needs 35 %"}),
    ("unknown battery is not chosen", [docked("B", 1000, battery=None)], None,
     {"B": "battery unknown, the round trip needs 35 %"}),
    ("busy", [docked("B", 1000, busy_with="I-7")], None, {"B": "on incident I-7"}),
    ("link lost", [docked("B", 1000, link_ok=False)], None, {"B": "no link"}),
    ("flying", [docked("B", 1000, armed=True, on_ground=False)], None, {"B": "flying"}),
    ("landed away from its dock", [docked("B", 1000, dock_distance_m=400.0)], None,
     {"B": "not on its dock (400 m away)"}),
    ("no position yet", [docked("B", 1000, lat=None, dock_distance_m=None)], None, {"B": "no position"}),
    ("nobody", [], None, {}),
])
def test_choice(name: str, fleet: list[DroneCandidate], chosen: str | None, refused: dict[str, str]) -> None:
    choice, why = choose_drone(fleet, *SCENE, ENERGY)
    assert (choice.drone_id if choice else None) == chosen, name
    assert why == refused, name
    if choice is not None:
        assert choice.eta_s == pytest.approx(choice.distance_m / ENERGY.cruise_mps)


def test_must_return_when_the_battery_only_just_gets_it_home() -> None:
    assert must_return(27.0, 2000.0, ENERGY) and must_return(28.0, 2000.0, ENERGY)
    assert not must_return(28.5, 2000.0, ENERGY)
    assert not must_return(None, 2000.0, ENERGY)


def test_bad_energy_figures_are_refused() -> None:
    with pytest.raises(ValueError):
        DroneEnergy(cruise_mps=0.0)
    with pytest.raises(ValueError):
        DroneEnergy(reserve_pct=-1.0)
