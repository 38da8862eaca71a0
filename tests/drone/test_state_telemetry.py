"""The state reducer and its conversion to hub payloads, fed with real pymavlink messages."""

from __future__ import annotations

from typing import Any

import pytest

from devices.payloads import Fix
from drone.codec import mavlink
from drone.state import VehicleState, apply_message, check_link
from drone.telemetry import fix_of, status_fields, status_of

WALL_MS = 1_780_000_000_000


def _heartbeat(custom_mode: int = 4, armed: bool = True, autopilot: int = 3) -> Any:
    return mavlink.MAVLink_heartbeat_message(2, autopilot, 1 | (128 if armed else 0), custom_mode, 4, 3)


def _position(boot_ms: int = 10_000, hdg: int = 9000) -> Any:
    return mavlink.MAVLink_global_position_int_message(boot_ms, 525200000, 134050000, 85_000, 40_000,
                                                      300, 400, -50, hdg)


def test_heartbeat_sets_mode_armed_and_restores_link() -> None:
    state = VehicleState()
    assert apply_message(state, _heartbeat(), now=10.0, wall_ms=WALL_MS) == ["heartbeat", "link"]
    assert (state.mode, state.custom_mode, state.armed, state.link_ok) == ("GUIDED", 4, True, True)
    assert state.restored_at == 10.0 and state.last_heartbeat == 10.0
    assert apply_message(state, _heartbeat(6, False), now=11.0, wall_ms=WALL_MS) == ["heartbeat"]
    assert (state.mode, state.armed) == ("RTL", False)


def test_non_ardupilot_and_gcs_heartbeats() -> None:
    state = VehicleState()
    apply_message(state, _heartbeat(autopilot=12), now=1.0, wall_ms=WALL_MS)  # PX4: other mode table
    assert state.mode is None and state.custom_mode == 4 and state.link_ok
    other = VehicleState()
    assert apply_message(other, _heartbeat(autopilot=8), now=1.0, wall_ms=WALL_MS) == []  # a GCS
    assert other.last_heartbeat is None and not other.link_ok


def test_link_loss_after_timeout_only() -> None:
    state = VehicleState()
    apply_message(state, _heartbeat(), now=100.0, wall_ms=WALL_MS)
    assert not check_link(state, 102.9, 3.0) and state.link_ok
    assert check_link(state, 103.1, 3.0) and not state.link_ok and state.lost_at == 103.1
    assert not check_link(state, 104.0, 3.0)  # reported once
    assert "link" in apply_message(state, _heartbeat(), now=105.0, wall_ms=WALL_MS)
    assert state.link_ok and state.restored_at == 105.0


def test_position_is_stamped_in_hub_time() -> None:
    state = VehicleState()
    apply_message(state, _position(10_000), now=1.0, wall_ms=WALL_MS)
    assert state.position_ts_ms == WALL_MS  # the first sample: boot 10 s = hub WALL_MS
    # SYSTEM_TIME 3 ms later than its boot time says, from a clock 2.65 s behind the hub's.
    unix_us = (WALL_MS + 1_000 - 2_650) * 1000
    apply_message(state, mavlink.MAVLink_system_time_message(unix_us, 11_000), now=2.0, wall_ms=WALL_MS + 1_003)
    # A position delayed 50 ms on the link is still stamped when it was measured, on the hub's clock.
    assert apply_message(state, _position(12_000), now=3.0, wall_ms=WALL_MS + 2_050) == ["position"]
    assert state.position_ts_ms == WALL_MS + 2_000
    assert state.clock.drone_offset_ms == -2_650
    assert (state.lat, state.lon, state.alt_msl_m, state.relative_alt_m) == (52.52, 13.405, 85.0, 40.0)
    assert (state.vx, state.vy, state.vz) == (3.0, 4.0, -0.5)
    assert state.ground_speed_mps == 5.0 and state.heading_deg == 90.0
    assert state.last_seen == {"GLOBAL_POSITION_INT": 3.0, "SYSTEM_TIME": 2.0}


def test_system_time_without_gps_time_still_syncs_the_boot_clock() -> None:
    state = VehicleState()
    assert apply_message(state, mavlink.MAVLink_system_time_message(0, 5000), now=1.0, wall_ms=WALL_MS) == []
    assert state.clock.drone_offset_ms is None and state.clock.hub_ms(6000) == WALL_MS + 1000


def test_battery_sys_status_and_battery_status() -> None:
    state = VehicleState()
    sys_status = mavlink.MAVLink_sys_status_message(0, 0, 0, 500, 15_800, -1, 76, 0, 0, 0, 0, 0, 0)
    assert apply_message(state, sys_status, now=1.0, wall_ms=WALL_MS) == ["battery"]
    assert (state.battery_pct, state.voltage_v) == (76.0, 15.8)
    unknown = mavlink.MAVLink_sys_status_message(0, 0, 0, 500, 65535, -1, -1, 0, 0, 0, 0, 0, 0)
    assert apply_message(state, unknown, now=1.0, wall_ms=WALL_MS) == []
    cells = [4000, 4000, 4000, 4100] + [65535] * 6
    battery = mavlink.MAVLink_battery_status_message(0, 0, 0, 2500, cells, 120, -1, -1, 55)
    assert apply_message(state, battery, now=1.0, wall_ms=WALL_MS) == ["battery"]
    assert state.battery_pct == 55.0 and state.voltage_v == pytest.approx(16.1)
    second = mavlink.MAVLink_battery_status_message(1, 0, 0, 2500, cells, 120, -1, -1, 10)
    assert apply_message(state, second, now=1.0, wall_ms=WALL_MS) == [] and state.battery_pct == 55.0


def test_landed_mission_and_statustext_report_changes() -> None:
    state = VehicleState()
    ext = mavlink.MAVLink_extended_sys_state_message(0, 2)
    assert apply_message(state, ext, now=1.0, wall_ms=0) == ["landed"] and state.landed_state == "in_air"
    assert apply_message(state, ext, now=1.1, wall_ms=0) == []  # unchanged: no event
    current = mavlink.MAVLink_mission_current_message(3)
    assert apply_message(state, current, now=1.0, wall_ms=0) == ["mission"] and state.mission_current == 3
    assert apply_message(state, current, now=1.0, wall_ms=0) == []
    reached = mavlink.MAVLink_mission_item_reached_message(2)
    assert apply_message(state, reached, now=1.0, wall_ms=0) == ["mission"] and state.mission_reached == 2
    text = mavlink.MAVLink_statustext_message(4, b"PreArm: GPS not healthy")
    assert apply_message(state, text, now=1.0, wall_ms=0) == ["statustext"]
    assert state.statustext == "PreArm: GPS not healthy" and state.statustext_severity == 4


def test_fix_of_converts_and_refuses_no_position() -> None:
    state = VehicleState()
    assert fix_of(state) is None
    apply_message(state, _position(hdg=65535), now=1.0, wall_ms=WALL_MS)
    state.battery_pct = 80.0
    assert fix_of(state) == Fix(ts=WALL_MS, lat=52.52, lon=13.405, alt=40.0, speed=5.0, heading=None, battery=80.0)
    no_gps = mavlink.MAVLink_global_position_int_message(1, 0, 0, 0, 0, 0, 0, 0, 65535)
    apply_message(state, no_gps, now=2.0, wall_ms=WALL_MS)
    assert fix_of(state) is None  # 0/0 is "no fix yet", not a place


def test_status_follows_the_link() -> None:
    state = VehicleState()
    apply_message(state, _heartbeat(), now=1.0, wall_ms=WALL_MS)
    state.battery_pct = 150.0  # out of range input is clamped for the hub
    status = status_of(state, WALL_MS, unit_id="D-1")
    assert (status.state, status.kind, status.unit_id, status.battery) == ("online", "drone", "D-1", 100.0)
    check_link(state, 10.0, 3.0)
    assert status_of(state, WALL_MS).state == "offline"
    assert status_fields(state) == {"battery": 100.0, "voltage": None, "mode": "GUIDED", "armed": True,
                                    "landed": None, "link": False}
