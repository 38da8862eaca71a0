"""The reducer for what a stock ArduCopter adds: pre-arm health, home, parameters, texts, heartbeat gaps, reboot."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from drone.codec import mavlink
from drone.state import KINDS, StatusText, VehicleState, apply_message
from drone.telemetry import fix_of, position_age_s

WALL_MS = 1_780_000_000_000
PREARM = 0x1000_0000
GYRO, ACCEL, GPS = 0x1, 0x2, 0x20


def _sys_status(present: int, enabled: int, health: int) -> Any:
    return mavlink.MAVLink_sys_status_message(present, enabled, health, 0, 65535, -1, -1, 0, 0, 0, 0, 0, 0)


def _heartbeat() -> Any:
    return mavlink.MAVLink_heartbeat_message(2, 3, 1, 0, 3, 3)


def _position(boot_ms: int) -> Any:
    return mavlink.MAVLink_global_position_int_message(boot_ms, 525200000, 134050000, 85_000, 57_000, 0, 0, 0, 0)


def test_prearm_bit_and_unhealthy_sensors() -> None:
    state = VehicleState()
    assert apply_message(state, _sys_status(GYRO | GPS, GYRO | GPS, GYRO | GPS), now=1.0, wall_ms=0) == []
    assert state.prearm_ok is None  # the bit is not present: the autopilot does not say
    failing = _sys_status(GYRO | ACCEL | GPS | PREARM, GYRO | GPS | PREARM, GPS)
    assert apply_message(state, failing, now=2.0, wall_ms=0) == ["health"]
    # ACCEL is unhealthy but not enabled: not listed; the pre-arm bit is not a sensor.
    assert state.prearm_ok is False and state.sensors_unhealthy == ["3D_GYRO"]
    assert apply_message(state, failing, now=3.0, wall_ms=0) == []  # unchanged: no event
    passing = _sys_status(GYRO | PREARM, GYRO | PREARM, GYRO | PREARM)
    assert apply_message(state, passing, now=4.0, wall_ms=0) == ["health"]
    assert state.prearm_ok is True and state.sensors_unhealthy == []


def test_home_position_in_degrees_and_metres_amsl() -> None:
    state = VehicleState()
    home = mavlink.MAVLink_home_position_message(342610000, 1171859000, 45_250, 0, 0, 0, [1, 0, 0, 0], 0, 0, 0)
    assert apply_message(state, home, now=1.0, wall_ms=0) == ["home"]
    assert state.home == (34.261, 117.1859, 45.25)
    assert apply_message(state, home, now=2.0, wall_ms=0) == []


def test_param_values_fill_params_with_names_stripped() -> None:
    state = VehicleState()
    value = mavlink.MAVLink_param_value_message(b"FS_GCS_ENABLE", 1.0, 2, 900, 12)
    assert apply_message(state, value, now=1.0, wall_ms=0) == ["param"]
    assert apply_message(state, value, now=2.0, wall_ms=0) == ["param"]  # a read-back is news even if equal
    padded = mavlink.MAVLink_param_value_message(b"MAV_GCS_SYSID\0\0", 250.0, 4, 900, 13)
    apply_message(state, padded, now=3.0, wall_ms=0)
    assert state.params == {"FS_GCS_ENABLE": 1.0, "MAV_GCS_SYSID": 250.0}
    assert state.param_types == {"FS_GCS_ENABLE": 2, "MAV_GCS_SYSID": 4}


def test_statustexts_are_kept_in_hub_time_with_the_latest_on_top() -> None:
    state = VehicleState()
    for i in range(40):
        text = mavlink.MAVLink_statustext_message(2 if i % 2 else 6, f"text {i}".encode())
        assert apply_message(state, text, now=float(i), wall_ms=WALL_MS + i) == ["statustext"]
    assert len(state.texts) == 32 and state.texts[0] == StatusText(WALL_MS + 8, 6, "text 8")
    assert state.texts[-1] == StatusText(WALL_MS + 39, 2, "text 39")
    assert (state.statustext, state.statustext_severity) == ("text 39", 2)


def test_heartbeat_gap_is_recorded_only_beyond_2_5_s() -> None:
    state = VehicleState()
    apply_message(state, _heartbeat(), now=10.0, wall_ms=0)
    apply_message(state, _heartbeat(), now=12.4, wall_ms=0)
    assert state.heartbeat_gap_s is None
    apply_message(state, _heartbeat(), now=15.4, wall_ms=0)
    assert state.heartbeat_gap_s == 3.0 and state.heartbeat_gap_at == 15.4
    apply_message(state, _heartbeat(), now=16.4, wall_ms=0)
    assert state.heartbeat_gap_s == 3.0 and state.heartbeat_gap_at == 15.4  # the last long gap stays


def _flying_state() -> VehicleState:
    state = VehicleState()
    for msg, now in [
        (_heartbeat(), 1.0),
        (mavlink.MAVLink_system_time_message(WALL_MS * 1000, 600_000), 1.0),
        (_position(600_100), 1.1),
        (mavlink.MAVLink_home_position_message(525200000, 134050000, 28_000, 0, 0, 0, [1, 0, 0, 0], 0, 0, 0), 1.2),
        (mavlink.MAVLink_extended_sys_state_message(0, 2), 1.3),
        (_sys_status(PREARM | GYRO, PREARM | GYRO, PREARM), 1.4),
        (mavlink.MAVLink_battery_status_message(0, 0, 0, 2500, [4000] * 4 + [65535] * 6, 120, -1, -1, 55), 1.5),
        (mavlink.MAVLink_param_value_message(b"FS_GCS_ENABLE", 1.0, 2, 900, 12), 1.6),
        (mavlink.MAVLink_statustext_message(6, b"EKF3 IMU0 is using GPS"), 1.7),
    ]:
        apply_message(state, msg, now=now, wall_ms=WALL_MS + int(now * 1000))
    return state


def test_reboot_drops_everything_the_old_boot_said() -> None:
    state = _flying_state()
    assert state.relative_alt_m == 57.0 and state.home is not None and state.params and state.prearm_ok
    # The boot clock is back at 2 s: the autopilot restarted.
    kinds = apply_message(state, mavlink.MAVLink_system_time_message(0, 2_000), now=5.0, wall_ms=WALL_MS + 5000)
    assert kinds == ["reboot"] and state.reboots == 1 and state.rebooted_at == 5.0
    assert (state.lat, state.lon, state.relative_alt_m, state.position_ts_ms) == (None, None, None, None)
    assert (state.home, state.landed_state, state.prearm_ok, state.battery_pct, state.voltage_v) == (None,) * 5
    assert state.params == {} and state.sensors_unhealthy == [] and fix_of(state) is None
    assert state.last_seen == {"HEARTBEAT": 1.0, "SYSTEM_TIME": 5.0}
    assert state.clock.drone_offset_ms is None and state.clock.hub_ms(2_000) == WALL_MS + 5000
    assert [t.text for t in state.texts] == ["EKF3 IMU0 is using GPS"]  # history is kept
    assert "reboot" in KINDS and "home" in KINDS and "param" in KINDS


def test_reboot_seen_in_a_position_is_reported_before_it() -> None:
    state = _flying_state()
    assert apply_message(state, _position(1_500), now=6.0, wall_ms=WALL_MS + 6000) == ["reboot", "position"]
    assert state.relative_alt_m == 57.0 and state.position_ts_ms == WALL_MS + 6000 and state.reboots == 1
    assert position_age_s(state, 6.5) == 0.5


def test_position_age() -> None:
    state = VehicleState()
    assert position_age_s(state, 10.0) is None
    apply_message(state, _position(1_000), now=8.0, wall_ms=WALL_MS)
    assert position_age_s(state, 10.0) == 2.0


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**31)), max_size=30))
def test_reboots_count_every_jump_back_of_the_boot_clock(samples: list[tuple[int, int]]) -> None:
    state = VehicleState()
    expected, last = 0, None
    for boot_ms, wall in samples:
        if last is not None and boot_ms + 1000 < last:
            expected += 1
        last = boot_ms
        kinds = apply_message(state, _position(boot_ms), now=wall / 1000, wall_ms=wall)
        assert kinds[-1] == "position" and state.position_ts_ms is not None
    assert state.reboots == expected
