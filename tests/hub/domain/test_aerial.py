"""Drone choice and the battery model: pure, table-driven. Readiness itself: test_drone_readiness."""

from __future__ import annotations

import pytest

from geo.geodesy import offset
from hub.domain.aerial import choose_drone, must_return
from hub.domain.drone_candidate import DroneCandidate, DroneEnergy
from hub.domain.drone_readiness import gcs_failsafe

SCENE = (34.2610, 117.1859)
ENERGY = DroneEnergy(cruise_mps=10.0, pct_per_km=4.0, climb_pct=2.0, hover_pct_per_min=1.0, on_scene_min=5.0,
                     reserve_pct=20.0)
FAILSAFE = gcs_failsafe({"FS_GCS_ENABLE": 1.0, "MAV_GCS_SYSID": 250.0}, 250)
NO_FAILSAFE = gcs_failsafe({"FS_GCS_ENABLE": 0.0, "MAV_GCS_SYSID": 250.0}, 250)


def docked(drone_id: str, metres_north: float, battery: float | None = 100.0, **changes: object) -> DroneCandidate:
    lat, lon = offset(*SCENE, metres_north, 0.0)
    fields: dict[str, object] = {"drone_id": drone_id, "lat": lat, "lon": lon, "battery_pct": battery,
                                 "link_ok": True, "armed": False, "on_ground": True, "dock_distance_m": 3.0,
                                 "failsafe": FAILSAFE}
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
    ("link lost", [docked("B", 1000, link_ok=False)], None, {"B": "link lost"}),
    ("flying", [docked("B", 1000, armed=True, on_ground=False)], None, {"B": "flying"}),
    ("landed away from its dock", [docked("B", 1000, dock_distance_m=400.0)], None,
     {"B": "landed 400 m from its dock"}),
    ("no position yet", [docked("B", 1000, lat=None, dock_distance_m=None)], None, {"B": "no position"}),
    ("busy beats not ready", [docked("B", 1000, busy_with="I-7", armed=True, on_ground=False)], None,
     {"B": "on incident I-7"}),
    ("pre-arm failing, with the autopilot's words",
     [docked("B", 1000, prearm_ok=False, prearm_text="Arm: Need Position Estimate")], None,
     {"B": "Arm: Need Position Estimate"}),
    ("signed, no key", [docked("B", 1000, signed_no_key=True)], None,
     {"B": "signed, no key: the autopilot drops every command the hub sends it"}),
    ("no telemetry", [docked("B", 1000, telemetry_problem="no GLOBAL_POSITION_INT since the reboot")], None,
     {"B": "no GLOBAL_POSITION_INT since the reboot"}),
    ("no failsafe", [docked("A", 3000), docked("B", 1000, failsafe=NO_FAILSAFE)], "A", {"B": NO_FAILSAFE.text}),
    ("failsafe not read", [docked("B", 1000, failsafe=None)], None,
     {"B": "link failsafe unknown: parameters not read"}),
    ("not ready before battery", [docked("B", 1000, battery=5.0, link_ok=False)], None, {"B": "link lost"}),
    ("nobody", [], None, {}),
])
def test_choice(name: str, fleet: list[DroneCandidate], chosen: str | None, refused: dict[str, str]) -> None:
    choice, why = choose_drone(fleet, *SCENE, ENERGY)
    assert (choice.drone_id if choice else None) == chosen, name
    assert why == refused, name
    if choice is not None:
        assert choice.eta_s == pytest.approx(choice.distance_m / ENERGY.cruise_mps)


def test_no_failsafe_goes_only_when_the_operator_allows_it() -> None:
    fleet = [docked("B", 1000, failsafe=NO_FAILSAFE)]
    assert choose_drone(fleet, *SCENE, ENERGY) == (None, {"B": NO_FAILSAFE.text})
    choice, refused = choose_drone(fleet, *SCENE, ENERGY, allow_no_failsafe=True)
    assert choice is not None and choice.drone_id == "B" and refused == {}
    assert choice.overridden == NO_FAILSAFE.text  # for the incident log: what the operator overrode
    # Unknown (parameters not read) is overridable the same way; nothing else is.
    choice, _ = choose_drone([docked("B", 1000, failsafe=None)], *SCENE, ENERGY, allow_no_failsafe=True)
    assert choice is not None and choice.overridden == "link failsafe unknown: parameters not read"
    away = [docked("B", 1000, failsafe=NO_FAILSAFE, dock_distance_m=119.0)]
    assert choose_drone(away, *SCENE, ENERGY, allow_no_failsafe=True) == (None, {"B": "landed 119 m from its dock"})
    low = [docked("B", 1000, failsafe=NO_FAILSAFE, battery=30.0)]
    assert choose_drone(low, *SCENE, ENERGY, allow_no_failsafe=True) == (
        None, {"B": "battery 30 %, the round trip needs 35 %"})


def test_with_the_override_a_drone_with_a_failsafe_still_goes_first() -> None:
    fleet = [docked("A", 3000), docked("B", 1000, failsafe=NO_FAILSAFE)]
    choice, refused = choose_drone(fleet, *SCENE, ENERGY, allow_no_failsafe=True)
    assert choice is not None and (choice.drone_id, choice.overridden, refused) == ("A", None, {})
    choice, _ = choose_drone([docked("B", 1000, failsafe=NO_FAILSAFE), docked("C", 500, failsafe=NO_FAILSAFE)],
                             *SCENE, ENERGY, allow_no_failsafe=True)
    assert choice is not None and choice.drone_id == "C"


def test_old_callers_construct_candidates_positionally() -> None:
    c = DroneCandidate("B", *SCENE, 90.0, True, False, True, 3.0, None)
    assert (c.signing, c.heard, c.signed_no_key, c.telemetry_problem, c.position_fresh, c.prearm_ok,
            c.failsafe) == ("signed", True, False, None, True, None, None)


def test_must_return_when_the_battery_only_just_gets_it_home() -> None:
    assert must_return(27.0, 2000.0, ENERGY) and must_return(28.0, 2000.0, ENERGY)
    assert not must_return(28.5, 2000.0, ENERGY)
    assert not must_return(None, 2000.0, ENERGY)


def test_bad_energy_figures_are_refused() -> None:
    with pytest.raises(ValueError):
        DroneEnergy(cruise_mps=0.0)
    with pytest.raises(ValueError):
        DroneEnergy(reserve_pct=-1.0)
