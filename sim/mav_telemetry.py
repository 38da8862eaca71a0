"""The telemetry a simulated ArduCopter streams: each MAVLink message built from its copter's state.

:data:`DEFAULT_STREAMS` are the rates a ground station gets unasked: as from a
stock ArduCopter on a fresh port, HEARTBEAT only (STATUSTEXT is pushed, never
streamed). Anything else streams only once asked, per message with
SET_MESSAGE_INTERVAL or per ArduCopter stream group with REQUEST_DATA_STREAM
(:data:`STREAM_GROUPS`, :func:`stream_group`). :func:`build_message` gives the
current value of any message the drone can send, streamed or requested.
"""

from __future__ import annotations

import math
import os
from typing import Any, Final

os.environ.setdefault("MAVLINK20", "1")
from pymavlink.dialects.v20 import ardupilotmega as M

from sim.arducopter import LandedState, Mode, Result
from sim.copter import Copter
from sim.mav_vehicle import Vehicle

__all__ = ["DEFAULT_STREAMS", "STREAM_GROUPS", "StreamRates", "build_message", "message_ids", "stream_group"]

# message id -> interval in seconds on a fresh link: a stock ArduCopter's stream rates are all 0 but the heartbeat's.
DEFAULT_STREAMS: Final = {M.MAVLINK_MSG_ID_HEARTBEAT: 1.0}

# REQUEST_DATA_STREAM's stream id -> the messages ArduCopter sends in that group (the ones simulated).
# EXTENDED_SYS_STATE and HOME_POSITION are in none, as in ArduCopter: only by interval or request.
STREAM_GROUPS: Final[dict[int, frozenset[int]]] = {
    M.MAV_DATA_STREAM_EXTENDED_STATUS: frozenset({M.MAVLINK_MSG_ID_SYS_STATUS, M.MAVLINK_MSG_ID_MISSION_CURRENT,
                                                  M.MAVLINK_MSG_ID_GPS_RAW_INT}),
    M.MAV_DATA_STREAM_POSITION: frozenset({M.MAVLINK_MSG_ID_GLOBAL_POSITION_INT}),
    M.MAV_DATA_STREAM_EXTRA1: frozenset({M.MAVLINK_MSG_ID_ATTITUDE}),
    M.MAV_DATA_STREAM_EXTRA2: frozenset({M.MAVLINK_MSG_ID_VFR_HUD}),
    M.MAV_DATA_STREAM_EXTRA3: frozenset({M.MAVLINK_MSG_ID_SYSTEM_TIME, M.MAVLINK_MSG_ID_BATTERY_STATUS}),
}
_ALL_GROUPS: Final = frozenset().union(*STREAM_GROUPS.values())
_MIN_INTERVAL_S: Final = 0.02  # 50 Hz, ArduPilot's fastest stream rate


def stream_group(stream_id: int) -> frozenset[int]:
    """The messages of a REQUEST_DATA_STREAM stream id (MAV_DATA_STREAM_ALL: every group); none if unknown."""
    return _ALL_GROUPS if stream_id == M.MAV_DATA_STREAM_ALL else STREAM_GROUPS.get(stream_id, frozenset())


_SENSORS: Final = (M.MAV_SYS_STATUS_SENSOR_3D_GYRO | M.MAV_SYS_STATUS_SENSOR_3D_ACCEL | M.MAV_SYS_STATUS_SENSOR_3D_MAG
                   | M.MAV_SYS_STATUS_SENSOR_ABSOLUTE_PRESSURE | M.MAV_SYS_STATUS_SENSOR_GPS
                   | M.MAV_SYS_STATUS_SENSOR_BATTERY)
_CAPABILITIES: Final = (M.MAV_PROTOCOL_CAPABILITY_MISSION_FLOAT | M.MAV_PROTOCOL_CAPABILITY_MISSION_INT
                        | M.MAV_PROTOCOL_CAPABILITY_COMMAND_INT | M.MAV_PROTOCOL_CAPABILITY_MAVLINK2
                        | M.MAV_PROTOCOL_CAPABILITY_SET_POSITION_TARGET_GLOBAL_INT)
_AUTOPILOT_MODES: Final = frozenset({Mode.AUTO, Mode.GUIDED, Mode.RTL, Mode.LAND})
_CELLS: Final = 4
_FAULT_SENSORS: Final = {"gyro": M.MAV_SYS_STATUS_SENSOR_3D_GYRO, "accel": M.MAV_SYS_STATUS_SENSOR_3D_ACCEL,
                         "compass": M.MAV_SYS_STATUS_SENSOR_3D_MAG, "baro": M.MAV_SYS_STATUS_SENSOR_ABSOLUTE_PRESSURE}


def _battery(c: Copter) -> tuple[int, int]:
    """Pack voltage (mV) of a 4S LiPo at this charge, and current (cA): about 30 A hovering, none disarmed."""
    volts = _CELLS * (3.5 + 0.7 * c.battery_pct / 100.0)
    amps = (28.0 + 1.2 * c.ground_speed()) if c.armed else 0.5
    return int(volts * 1000), int(amps * 100)


def _sys_status(c: Copter) -> tuple[int, int]:
    """SYS_STATUS sensors ``(present and enabled, healthy)``: PREARM_CHECK healthy only while the pre-arm
    checks pass, the sensor an injected fault names unhealthy, GPS unhealthy without a fix."""
    present = _SENSORS | M.MAV_SYS_STATUS_PREARM_CHECK
    health = present
    if not c.gps_ok:
        health &= ~M.MAV_SYS_STATUS_SENSOR_GPS
    fault = (c.fault or "").lower()
    for word, bit in _FAULT_SENSORS.items():
        if word in fault:
            health &= ~bit
    if not c.prearm_ok:
        health &= ~M.MAV_SYS_STATUS_PREARM_CHECK
    return present, health


def build_message(d: Vehicle, msg_id: int) -> Any | None:
    """The current value of a streamable message, or None for one the drone does not send."""
    c, mav = d.copter, d.mav
    boot_ms = c.time_boot_ms()
    alt = c.position()[2]  # above home
    amsl = c.amsl()
    if msg_id == M.MAVLINK_MSG_ID_HEARTBEAT:
        base = M.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED | M.MAV_MODE_FLAG_STABILIZE_ENABLED
        base |= M.MAV_MODE_FLAG_GUIDED_ENABLED if c.mode in _AUTOPILOT_MODES else 0
        base |= M.MAV_MODE_FLAG_SAFETY_ARMED if c.armed else 0
        status = M.MAV_STATE_ACTIVE if c.armed else M.MAV_STATE_STANDBY
        status = M.MAV_STATE_CRITICAL if c.gcs_failsafe else status  # as ArduCopter, while a failsafe is on
        return mav.heartbeat_encode(M.MAV_TYPE_QUADROTOR, M.MAV_AUTOPILOT_ARDUPILOTMEGA, base, int(c.mode), status)
    if msg_id == M.MAVLINK_MSG_ID_GLOBAL_POSITION_INT:
        glat, glon = c.gps_position()
        b = c.body
        return mav.global_position_int_encode(boot_ms, round(glat * 1e7), round(glon * 1e7), round(amsl * 1000),
                                              round(alt * 1000), round(b.vn * 100), round(b.ve * 100),
                                              round(-b.vz * 100), round(b.heading * 100) % 36000)
    if msg_id == M.MAVLINK_MSG_ID_GPS_RAW_INT:
        glat, glon = c.gps_position()
        return mav.gps_raw_int_encode(c.unix_time_us(), c.gps.fix_type, round(glat * 1e7), round(glon * 1e7),
                                      round(amsl * 1000), 80, 120, round(c.ground_speed() * 100),
                                      round(c.body.heading * 100) % 36000, c.gps.satellites)
    if msg_id == M.MAVLINK_MSG_ID_SYS_STATUS:
        mv, ca = _battery(c)
        present, health = _sys_status(c)
        return mav.sys_status_encode(present, present, health, 150, mv, ca, round(c.battery_pct), 0, 0, 0, 0, 0, 0)
    if msg_id == M.MAVLINK_MSG_ID_BATTERY_STATUS:
        mv, ca = _battery(c)
        cells = [mv // _CELLS] * _CELLS + [0xFFFF] * (10 - _CELLS)
        used_mah = round((100.0 - c.battery_pct) / 100.0 * 10_000)  # a 10 Ah pack
        return mav.battery_status_encode(0, M.MAV_BATTERY_FUNCTION_ALL, M.MAV_BATTERY_TYPE_LIPO, 0x7FFF, cells, ca,
                                         used_mah, -1, round(c.battery_pct))
    if msg_id == M.MAVLINK_MSG_ID_EXTENDED_SYS_STATE:
        return mav.extended_sys_state_encode(M.MAV_VTOL_STATE_UNDEFINED, int(c.landed_state))
    if msg_id == M.MAVLINK_MSG_ID_SYSTEM_TIME:
        return mav.system_time_encode(c.unix_time_us(), boot_ms)
    if msg_id == M.MAVLINK_MSG_ID_MISSION_CURRENT:
        total = max(0, len(c.mission) - 1)
        flying_auto = c.mode is Mode.AUTO and c.landed_state is not LandedState.ON_GROUND
        state = (M.MISSION_STATE_NO_MISSION if total == 0
                 else M.MISSION_STATE_ACTIVE if flying_auto else M.MISSION_STATE_NOT_STARTED)
        return mav.mission_current_encode(c.mission_current, total, state, int(c.mode is Mode.AUTO))
    if msg_id == M.MAVLINK_MSG_ID_HOME_POSITION:
        hlat, hlon, hamsl = c.home()
        return mav.home_position_encode(round(hlat * 1e7), round(hlon * 1e7), round(hamsl * 1000), 0, 0, 0,
                                        [1, 0, 0, 0], 0, 0, 0)
    if msg_id == M.MAVLINK_MSG_ID_ATTITUDE:
        yaw = math.radians(c.body.heading if c.body.heading <= 180 else c.body.heading - 360)
        return mav.attitude_encode(boot_ms, 0.0, 0.0, yaw, 0.0, 0.0, 0.0)
    if msg_id == M.MAVLINK_MSG_ID_VFR_HUD:
        return mav.vfr_hud_encode(c.ground_speed(), c.ground_speed(), round(c.body.heading) % 360,
                                  50 if c.armed else 0, amsl, c.body.vz)
    if msg_id == M.MAVLINK_MSG_ID_AUTOPILOT_VERSION:
        version = (4 << 24) | (7 << 16) | (0 << 8) | M.FIRMWARE_VERSION_TYPE_DEV  # 4.7.0-dev, as BOOT_TEXT
        return mav.autopilot_version_encode(_CAPABILITIES, version, 0, 0, 0, [0] * 8, [0] * 8, [0] * 8, 0, 0,
                                            d.dock.system_id)
    return None


def message_ids() -> frozenset[int]:
    """The messages the drone can stream or send on request (STATUSTEXT is not one: it is always pushed)."""
    return _MESSAGE_IDS


_MESSAGE_IDS: Final = frozenset({
    M.MAVLINK_MSG_ID_HEARTBEAT, M.MAVLINK_MSG_ID_GLOBAL_POSITION_INT, M.MAVLINK_MSG_ID_GPS_RAW_INT,
    M.MAVLINK_MSG_ID_SYS_STATUS, M.MAVLINK_MSG_ID_BATTERY_STATUS, M.MAVLINK_MSG_ID_EXTENDED_SYS_STATE,
    M.MAVLINK_MSG_ID_SYSTEM_TIME, M.MAVLINK_MSG_ID_MISSION_CURRENT, M.MAVLINK_MSG_ID_HOME_POSITION,
    M.MAVLINK_MSG_ID_ATTITUDE, M.MAVLINK_MSG_ID_VFR_HUD, M.MAVLINK_MSG_ID_AUTOPILOT_VERSION,
})


class StreamRates:
    """One autopilot's stream rates (message id -> interval in seconds of real time): stock at boot, changed
    by SET_MESSAGE_INTERVAL and REQUEST_DATA_STREAM, whoever asks (one GCS link per drone here)."""

    def __init__(self) -> None:
        self.intervals: dict[int, float] = dict(DEFAULT_STREAMS)
        self._due: dict[int, float] = {}

    def reset(self) -> None:
        """Back to stock, as after a reboot."""
        self.intervals, self._due = dict(DEFAULT_STREAMS), {}

    def set_interval(self, msg_id: int, interval_us: float) -> int:
        """MAV_CMD_SET_MESSAGE_INTERVAL: a negative interval stops a stream, 0 restores its default rate (which
        is off for all but HEARTBEAT); FAILED for a message the drone cannot stream (STATUSTEXT is pushed)."""
        if msg_id not in _MESSAGE_IDS or not math.isfinite(interval_us):
            return Result.FAILED
        if interval_us < 0:
            self._set(msg_id, 0.0)
        elif interval_us == 0:
            self._set(msg_id, DEFAULT_STREAMS.get(msg_id, 0.0))
        else:
            self._set(msg_id, interval_us / 1e6)
        return Result.ACCEPTED

    def request_data_stream(self, stream_id: int, rate_hz: int, start_stop: int) -> None:
        """REQUEST_DATA_STREAM, the older way (MAVProxy, MAVSDK): a whole ArduCopter stream group at
        ``rate_hz``; stop turns it off; a start with rate 0 changes nothing, as in ArduPilot."""
        if start_stop == 0:
            interval = 0.0
        elif rate_hz > 0:
            interval = 1.0 / rate_hz
        else:
            return
        for msg_id in stream_group(stream_id):
            self._set(msg_id, interval)

    def due(self, now: float) -> list[int]:
        """The messages to send at ``now`` (monotonic seconds); each is then due again one interval later."""
        out = []
        for msg_id, interval in self.intervals.items():
            if interval > 0 and now >= self._due.get(msg_id, 0.0):
                out.append(msg_id)
                # Keep the phase but never try to catch up on a burst of missed sends.
                self._due[msg_id] = max(self._due.get(msg_id, now) + interval, now + interval / 2)
        return out

    def _set(self, msg_id: int, interval_s: float) -> None:
        self.intervals[msg_id] = max(interval_s, _MIN_INTERVAL_S) if interval_s > 0 else 0.0
        self._due[msg_id] = 0.0
