"""ArduCopter mode table and the patrol mission builder."""

from __future__ import annotations

import pytest

from drone.mission import (
    MAV_CMD_NAV_RETURN_TO_LAUNCH,
    MAV_CMD_NAV_TAKEOFF,
    MAV_CMD_NAV_WAYPOINT,
    MissionItem,
    patrol_mission,
    wire_fields,
)
from drone.modes import COPTER_MODES, is_armed, landed_state_name, mode_name, mode_number


@pytest.mark.parametrize(("name", "number"), [
    ("STABILIZE", 0), ("ACRO", 1), ("ALT_HOLD", 2), ("AUTO", 3), ("GUIDED", 4), ("LOITER", 5), ("RTL", 6),
    ("CIRCLE", 7), ("LAND", 9), ("DRIFT", 11), ("SPORT", 13), ("FLIP", 14), ("AUTOTUNE", 15), ("POSHOLD", 16),
    ("BRAKE", 17), ("THROW", 18), ("AVOID_ADSB", 19), ("GUIDED_NOGPS", 20), ("SMART_RTL", 21),
])
def test_copter_modes_both_ways(name: str, number: int) -> None:
    assert mode_number(name) == number
    assert mode_number(name.lower()) == number
    assert mode_name(number) == name


def test_mode_table_is_a_bijection_and_unknowns_are_refused() -> None:
    assert len(set(COPTER_MODES.values())) == len(COPTER_MODES)
    assert mode_name(8) is None and mode_name(999) is None
    with pytest.raises(ValueError, match="unknown ArduCopter mode"):
        mode_number("HOVER")


def test_armed_flag_and_landed_states() -> None:
    assert is_armed(128 | 1) and not is_armed(1) and not is_armed(0)
    assert [landed_state_name(i) for i in range(6)] == [None, "on_ground", "in_air", "takeoff", "landing", None]


def test_patrol_mission_layout() -> None:
    route = [(52.52, 13.40), (52.53, 13.41), (52.54, 13.39)]
    items = patrol_mission(route, 40.0, home=(52.50, 13.38))
    assert [i.command for i in items] == [MAV_CMD_NAV_WAYPOINT, MAV_CMD_NAV_TAKEOFF] + [MAV_CMD_NAV_WAYPOINT] * 3 + [
        MAV_CMD_NAV_RETURN_TO_LAUNCH]
    assert (items[0].lat, items[0].lon, items[0].alt_m) == (52.50, 13.38, 0.0)  # home placeholder
    assert (items[1].lat, items[1].lon, items[1].alt_m) == (52.52, 13.40, 40.0)
    assert [(i.lat, i.lon) for i in items[2:5]] == route
    assert all(i.alt_m == 40.0 for i in items[1:5])


def test_patrol_mission_options_and_errors() -> None:
    items = patrol_mission([(1.0, 2.0)], 30.0, takeoff=False, rtl=False)
    assert [(i.lat, i.lon, i.alt_m, i.command) for i in items] == [
        (1.0, 2.0, 0.0, MAV_CMD_NAV_WAYPOINT), (1.0, 2.0, 30.0, MAV_CMD_NAV_WAYPOINT)]
    with pytest.raises(ValueError):
        patrol_mission([], 30.0)
    with pytest.raises(ValueError):
        patrol_mission([(1.0, 2.0)], 0.0)
    with pytest.raises(ValueError):
        MissionItem(91.0, 0.0, 10.0)
    with pytest.raises(ValueError):
        MissionItem(0.0, 0.0, float("nan"))


def test_wire_fields_scale_and_frame() -> None:
    fields = wire_fields(MissionItem(52.5200001, -13.4049999, 35.5, hold_s=5.0), 3)
    assert fields["seq"] == 3 and fields["frame"] == 6 and fields["command"] == MAV_CMD_NAV_WAYPOINT
    assert (fields["x"], fields["y"], fields["z"]) == (525200001, -134049999, 35.5)
    assert fields["param1"] == 5.0 and fields["autocontinue"] == 1
    takeoff = wire_fields(MissionItem(1.0, 1.0, 10.0, command=MAV_CMD_NAV_TAKEOFF, hold_s=9.0), 1)
    assert takeoff["param1"] == 0.0  # hold time is meaningless for a takeoff
