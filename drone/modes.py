"""ArduCopter flight modes, the armed flag, landed states and SYS_STATUS sensor bits (pure tables).

ArduPilot puts its flight mode in HEARTBEAT.custom_mode; the numbers below are
ArduCopter's ``Mode::Number``. Other autopilots use other tables, so a mode name
is only derived for heartbeats from an ArduPilot autopilot.

SYS_STATUS reports each onboard sensor as a bit of ``present``/``enabled``/``health``;
ArduPilot also reports the outcome of its pre-arm checks there, as the bit
``MAV_SYS_STATUS_PREARM_CHECK`` (healthy = the checks pass).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "COPTER_MODES",
    "LANDED_STATES",
    "MAV_AUTOPILOT_ARDUPILOTMEGA",
    "MAV_MODE_FLAG_CUSTOM_MODE_ENABLED",
    "MAV_MODE_FLAG_SAFETY_ARMED",
    "MAV_SYS_STATUS_PREARM_CHECK",
    "SENSOR_NAMES",
    "is_armed",
    "landed_state_name",
    "mode_name",
    "mode_number",
    "unhealthy_sensors",
]

MAV_MODE_FLAG_SAFETY_ARMED: Final = 128
MAV_MODE_FLAG_CUSTOM_MODE_ENABLED: Final = 1
MAV_AUTOPILOT_ARDUPILOTMEGA: Final = 3

COPTER_MODES: Final[dict[str, int]] = {
    "STABILIZE": 0,
    "ACRO": 1,
    "ALT_HOLD": 2,
    "AUTO": 3,
    "GUIDED": 4,
    "LOITER": 5,
    "RTL": 6,
    "CIRCLE": 7,
    "LAND": 9,
    "DRIFT": 11,
    "SPORT": 13,
    "FLIP": 14,
    "AUTOTUNE": 15,
    "POSHOLD": 16,
    "BRAKE": 17,
    "THROW": 18,
    "AVOID_ADSB": 19,
    "GUIDED_NOGPS": 20,
    "SMART_RTL": 21,
    "FLOWHOLD": 22,
    "FOLLOW": 23,
    "ZIGZAG": 24,
    "SYSTEMID": 25,
    "AUTOROTATE": 26,
    "AUTO_RTL": 27,
    "TURTLE": 28,
}
_NAMES: Final[dict[int, str]] = {number: name for name, number in COPTER_MODES.items()}

MAV_SYS_STATUS_PREARM_CHECK: Final = 0x1000_0000
# MAV_SYS_STATUS_SENSOR bits -> names without the enum prefix ("3D_GYRO"); the pre-arm bit is not a sensor.
SENSOR_NAMES: Final[dict[int, str]] = {
    1 << bit: name for bit, name in enumerate((
        "3D_GYRO", "3D_ACCEL", "3D_MAG", "ABSOLUTE_PRESSURE", "DIFFERENTIAL_PRESSURE", "GPS", "OPTICAL_FLOW",
        "VISION_POSITION", "LASER_POSITION", "EXTERNAL_GROUND_TRUTH", "ANGULAR_RATE_CONTROL",
        "ATTITUDE_STABILIZATION", "YAW_POSITION", "Z_ALTITUDE_CONTROL", "XY_POSITION_CONTROL", "MOTOR_OUTPUTS",
        "RC_RECEIVER", "3D_GYRO2", "3D_ACCEL2", "3D_MAG2", "GEOFENCE", "AHRS", "TERRAIN", "REVERSE_MOTOR",
        "LOGGING", "BATTERY", "PROXIMITY", "SATCOM", None, "OBSTACLE_AVOIDANCE", "PROPULSION",
    )) if name is not None
}

# MAV_LANDED_STATE -> the names the hub shows; UNDEFINED (0) is None.
LANDED_STATES: Final[dict[int, str]] = {1: "on_ground", 2: "in_air", 3: "takeoff", 4: "landing"}


def mode_number(name: str) -> int:
    """custom_mode for an ArduCopter mode name (case-insensitive); ValueError if unknown."""
    try:
        return COPTER_MODES[name.strip().upper()]
    except KeyError:
        raise ValueError(f"unknown ArduCopter mode {name!r}") from None


def mode_name(custom_mode: int) -> str | None:
    """ArduCopter mode name for a custom_mode number, None if not in the table."""
    return _NAMES.get(custom_mode)


def is_armed(base_mode: int) -> bool:
    return bool(base_mode & MAV_MODE_FLAG_SAFETY_ARMED)


def landed_state_name(landed_state: int) -> str | None:
    return LANDED_STATES.get(landed_state)


def unhealthy_sensors(present: int, enabled: int, health: int) -> list[str]:
    """Names of the sensors that are present and enabled but not healthy, in bit order."""
    bad = present & enabled & ~health
    return [name for bit, name in SENSOR_NAMES.items() if bad & bit]
