"""ArduCopter's vocabulary, as the simulated :class:`~sim.copter.Copter` speaks it.

The MAVLink numbers a ground station sees (flight modes, MAV_RESULT, landed
states, the mission commands the copter flies), a stored mission item, the
events the copter raises for its MAVLink endpoint, the parameters it is tuned
by, and its pre-arm checks. Pure: no state, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Literal

__all__ = ["ARMABLE_MODES", "FORCE_MAGIC", "MISSION_COMMANDS", "POSITION_MODES", "CopterConfig", "CopterEvent",
           "LandedState", "MissionItem", "Mode", "NavCmd", "Result", "prearm_failure"]

FORCE_MAGIC: Final = 21196  # param2 of COMPONENT_ARM_DISARM that skips the checks, as in ArduPilot


class Mode(IntEnum):
    """ArduCopter custom_mode numbers (the subset simulated)."""

    STABILIZE = 0
    ALT_HOLD = 2
    AUTO = 3
    GUIDED = 4
    LOITER = 5
    RTL = 6
    LAND = 9


class Result(IntEnum):
    """MAV_RESULT."""

    ACCEPTED = 0
    TEMPORARILY_REJECTED = 1
    DENIED = 2
    UNSUPPORTED = 3
    FAILED = 4


class LandedState(IntEnum):
    """MAV_LANDED_STATE."""

    UNDEFINED = 0
    ON_GROUND = 1
    IN_AIR = 2
    TAKEOFF = 3
    LANDING = 4


class NavCmd(IntEnum):
    """The MAV_CMD mission items the copter can fly."""

    WAYPOINT = 16
    LOITER_TIME = 19
    RETURN_TO_LAUNCH = 20
    LAND = 21
    TAKEOFF = 22


MISSION_COMMANDS: Final = frozenset(int(c) for c in NavCmd)
ARMABLE_MODES: Final = frozenset({Mode.STABILIZE, Mode.ALT_HOLD, Mode.GUIDED, Mode.LOITER})
POSITION_MODES: Final = frozenset({Mode.AUTO, Mode.GUIDED, Mode.LOITER, Mode.RTL})  # refused without a GPS fix


@dataclass(frozen=True, slots=True)
class MissionItem:
    """One stored mission item; ``alt`` in the item's ``frame`` (AMSL for 0/5, above home for 3/6)."""

    command: int
    lat: float = 0.0
    lon: float = 0.0
    alt: float = 0.0
    frame: int = 3
    param1: float = 0.0
    param2: float = 0.0
    param3: float = 0.0
    param4: float = 0.0


@dataclass(frozen=True, slots=True)
class CopterEvent:
    """Something to tell the ground station: a status text, a new current item, an item reached."""

    kind: Literal["text", "mission_current", "item_reached"]
    value: int = 0  # MAV_SEVERITY for text, the item seq otherwise
    text: str = ""


@dataclass(slots=True)
class CopterConfig:
    """The tunables, named after the ArduCopter parameters they stand for."""

    cruise_mps: float = 12.0  # WPNAV_SPEED
    climb_mps: float = 3.0  # WPNAV_SPEED_UP
    takeoff_mps: float = 2.5  # PILOT_SPEED_UP / takeoff climb rate
    descent_mps: float = 1.5  # WPNAV_SPEED_DN, LAND_SPEED_HIGH
    land_mps: float = 1.0  # LAND_SPEED, below land_slow_alt_m
    land_slow_alt_m: float = 10.0
    accel_mps2: float = 2.5  # WPNAV_ACCEL
    accel_z_mps2: float = 1.5
    wp_radius_m: float = 2.0  # WPNAV_RADIUS
    rtl_alt_m: float = 30.0  # RTL_ALT
    rtl_loiter_s: float = 5.0  # RTL_LOIT_TIME
    disarm_delay_s: float = 10.0  # DISARM_DELAY: armed on the ground without taking off
    arm_min_battery_pct: float = 25.0
    low_battery_pct: float = 20.0  # BATT_LOW, action RTL
    hover_drain_pct_s: float = 100.0 / 1500.0  # a 25-minute hover
    move_drain_pct_m: float = 0.0015  # extra per metre flown at cruise speed
    gcs_failsafe_s: float | None = None  # FS_GCS_ENABLE off by default
    gps_error_m: float = 1.5


def prearm_failure(mode: Mode, gps_ok: bool, battery_pct: float, flying: bool, config: CopterConfig) -> str:
    """The first of ArduCopter's pre-arm checks that fails (reported as "PreArm: ..."), or "" when all pass."""
    if not gps_ok:
        return "GPS: no 3D fix"
    if battery_pct < config.arm_min_battery_pct:
        return f"Battery 1 below minimum arming capacity ({battery_pct:.0f}%)"
    if flying:
        return "not landed"
    if mode not in ARMABLE_MODES:
        return f"Mode not armable: {mode.name}"
    return ""
