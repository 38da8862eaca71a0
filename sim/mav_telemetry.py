"""The telemetry a simulated ArduCopter streams: each MAVLink message built from its copter's state.

:data:`DEFAULT_STREAMS` are the rates a ground station gets unasked, as from
ArduPilot's SRx_ parameters; :func:`build_message` gives the current value of
any message the drone can send, streamed or requested.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Final

os.environ.setdefault("MAVLINK20", "1")
from pymavlink.dialects.v20 import ardupilotmega as M

from sim.arducopter import LandedState, Mode
from sim.copter import Copter

if TYPE_CHECKING:
    from sim.drones import SimDrone

__all__ = ["DEFAULT_STREAMS", "build_message", "message_ids"]

DEFAULT_STREAMS: Final = {  # message id -> interval in seconds, as ArduPilot's SRx_ rates give a GCS
    M.MAVLINK_MSG_ID_HEARTBEAT: 1.0,
    M.MAVLINK_MSG_ID_GLOBAL_POSITION_INT: 0.25,
    M.MAVLINK_MSG_ID_SYS_STATUS: 1.0,
    M.MAVLINK_MSG_ID_BATTERY_STATUS: 1.0,
    M.MAVLINK_MSG_ID_EXTENDED_SYS_STATE: 1.0,
    M.MAVLINK_MSG_ID_SYSTEM_TIME: 1.0,
    M.MAVLINK_MSG_ID_GPS_RAW_INT: 1.0,
    M.MAVLINK_MSG_ID_MISSION_CURRENT: 1.0,
}

_SENSORS: Final = (M.MAV_SYS_STATUS_SENSOR_3D_GYRO | M.MAV_SYS_STATUS_SENSOR_3D_ACCEL | M.MAV_SYS_STATUS_SENSOR_3D_MAG
                   | M.MAV_SYS_STATUS_SENSOR_ABSOLUTE_PRESSURE | M.MAV_SYS_STATUS_SENSOR_GPS
                   | M.MAV_SYS_STATUS_SENSOR_BATTERY)
_CAPABILITIES: Final = (M.MAV_PROTOCOL_CAPABILITY_MISSION_FLOAT | M.MAV_PROTOCOL_CAPABILITY_MISSION_INT
                        | M.MAV_PROTOCOL_CAPABILITY_COMMAND_INT | M.MAV_PROTOCOL_CAPABILITY_MAVLINK2
                        | M.MAV_PROTOCOL_CAPABILITY_SET_POSITION_TARGET_GLOBAL_INT)
_AUTOPILOT_MODES: Final = frozenset({Mode.AUTO, Mode.GUIDED, Mode.RTL, Mode.LAND})
_CELLS: Final = 4


def _battery(c: Copter) -> tuple[int, int]:
    """Pack voltage (mV) of a 4S LiPo at this charge, and current (cA): about 30 A hovering, none disarmed."""
    volts = _CELLS * (3.5 + 0.7 * c.battery_pct / 100.0)
    amps = (28.0 + 1.2 * c.ground_speed()) if c.armed else 0.5
    return int(volts * 1000), int(amps * 100)


def build_message(d: SimDrone, msg_id: int) -> Any | None:
    """The current value of a streamable message, or None for one the drone does not send."""
    c, mav = d.copter, d.mav
    boot_ms = (c.now_ms - c.boot_ms) & 0xFFFFFFFF
    alt = c.body.alt
    amsl = c.dock[2] + alt
    if msg_id == M.MAVLINK_MSG_ID_HEARTBEAT:
        base = M.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED | M.MAV_MODE_FLAG_STABILIZE_ENABLED
        base |= M.MAV_MODE_FLAG_GUIDED_ENABLED if c.mode in _AUTOPILOT_MODES else 0
        base |= M.MAV_MODE_FLAG_SAFETY_ARMED if c.armed else 0
        status = M.MAV_STATE_ACTIVE if c.armed else M.MAV_STATE_STANDBY
        return mav.heartbeat_encode(M.MAV_TYPE_QUADROTOR, M.MAV_AUTOPILOT_ARDUPILOTMEGA, base, int(c.mode), status)
    if msg_id == M.MAVLINK_MSG_ID_GLOBAL_POSITION_INT:
        glat, glon = c.gps_position()
        b = c.body
        return mav.global_position_int_encode(boot_ms, round(glat * 1e7), round(glon * 1e7), round(amsl * 1000),
                                              round(alt * 1000), round(b.vn * 100), round(b.ve * 100),
                                              round(-b.vz * 100), round(b.heading * 100) % 36000)
    if msg_id == M.MAVLINK_MSG_ID_GPS_RAW_INT:
        glat, glon = c.gps_position()
        return mav.gps_raw_int_encode(d.sim_time_us(), c.gps_fix_type, round(glat * 1e7), round(glon * 1e7),
                                      round(amsl * 1000), 80, 120, round(c.ground_speed() * 100),
                                      round(c.body.heading * 100) % 36000, c.satellites)
    if msg_id == M.MAVLINK_MSG_ID_SYS_STATUS:
        mv, ca = _battery(c)
        health = _SENSORS if c.gps_ok else _SENSORS & ~M.MAV_SYS_STATUS_SENSOR_GPS
        return mav.sys_status_encode(_SENSORS, _SENSORS, health, 150, mv, ca, round(c.battery_pct), 0, 0, 0, 0, 0, 0)
    if msg_id == M.MAVLINK_MSG_ID_BATTERY_STATUS:
        mv, ca = _battery(c)
        cells = [mv // _CELLS] * _CELLS + [0xFFFF] * (10 - _CELLS)
        used_mah = round((100.0 - c.battery_pct) / 100.0 * 10_000)  # a 10 Ah pack
        return mav.battery_status_encode(0, M.MAV_BATTERY_FUNCTION_ALL, M.MAV_BATTERY_TYPE_LIPO, 0x7FFF, cells, ca,
                                         used_mah, -1, round(c.battery_pct))
    if msg_id == M.MAVLINK_MSG_ID_EXTENDED_SYS_STATE:
        return mav.extended_sys_state_encode(M.MAV_VTOL_STATE_UNDEFINED, int(c.landed_state))
    if msg_id == M.MAVLINK_MSG_ID_SYSTEM_TIME:
        return mav.system_time_encode(d.sim_time_us(), boot_ms)
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
        return mav.vfr_hud_encode(c.ground_speed(), c.ground_speed(), round(c.body.heading), 50 if c.armed else 0,
                                  amsl, c.body.vz)
    if msg_id == M.MAVLINK_MSG_ID_AUTOPILOT_VERSION:
        version = (4 << 24) | (5 << 16) | (7 << 8) | M.FIRMWARE_VERSION_TYPE_OFFICIAL
        return mav.autopilot_version_encode(_CAPABILITIES, version, 0, 0, 0, [0] * 8, [0] * 8, [0] * 8, 0, 0,
                                            d.dock.system_id)
    return None


def message_ids() -> frozenset[int]:
    return _MESSAGE_IDS


_MESSAGE_IDS: Final = frozenset({
    M.MAVLINK_MSG_ID_HEARTBEAT, M.MAVLINK_MSG_ID_GLOBAL_POSITION_INT, M.MAVLINK_MSG_ID_GPS_RAW_INT,
    M.MAVLINK_MSG_ID_SYS_STATUS, M.MAVLINK_MSG_ID_BATTERY_STATUS, M.MAVLINK_MSG_ID_EXTENDED_SYS_STATE,
    M.MAVLINK_MSG_ID_SYSTEM_TIME, M.MAVLINK_MSG_ID_MISSION_CURRENT, M.MAVLINK_MSG_ID_HOME_POSITION,
    M.MAVLINK_MSG_ID_ATTITUDE, M.MAVLINK_MSG_ID_VFR_HUD, M.MAVLINK_MSG_ID_AUTOPILOT_VERSION,
})
