"""ArduCopter's vocabulary, as the simulated :class:`~sim.copter.Copter` speaks it.

The MAVLink numbers a ground station sees (flight modes, MAV_RESULT, landed
states, the mission commands the copter flies), a stored mission item, the
events the copter raises for its MAVLink endpoint, the tunables its parameters
stand for (the parameter table itself is :mod:`sim.mav_params`), its pre-arm and
arming checks, and what its GCS failsafe does. Each follows a stock ArduCopter 4.7
with default parameters (FACTS.md): a simulator kinder than the real autopilot
would hide the hub's mistakes. Pure: no state, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Literal

__all__ = ["ARMABLE_MODES", "BOOT_TEXT", "FORCE_MAGIC", "HOME_MAX_DISTANCE_M", "MISSION_COMMANDS", "POSITION_MODES",
           "PREARM_REPORT_S", "REBOOT_FORCE_MAGIC", "ArmingCheck", "CopterConfig", "CopterEvent", "LandedState",
           "MissionItem", "Mode", "NavCmd", "Result", "arm_failure", "gcs_failsafe_mode", "mode_refusal",
           "prearm_failure"]

FORCE_MAGIC: Final = 21196  # param2 of COMPONENT_ARM_DISARM that skips the checks, as in ArduPilot
REBOOT_FORCE_MAGIC: Final = 20190226  # param6 of PREFLIGHT_REBOOT_SHUTDOWN that reboots even when armed
BOOT_TEXT: Final = "ArduCopter V4.7.0-dev (sim)"  # the first STATUSTEXT after a boot
PREARM_REPORT_S: Final = 30.0  # a disarmed copter repeats its failing pre-arm check this often
HOME_MAX_DISTANCE_M: Final = 50_000.0  # DO_SET_HOME farther than this from the copter is refused


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


class ArmingCheck(IntEnum):
    """ARMING_CHECK bits (the subset simulated): ALL enables every check, else only the bits set."""

    ALL = 1
    GPS = 1 << 3
    INS = 1 << 4  # gyros and accelerometers: an injected sensor fault
    BATTERY = 1 << 8


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
    """Something to tell the ground station: a status text, a new current item, an item reached, a new home."""

    kind: Literal["text", "mission_current", "item_reached", "home"]
    value: int = 0  # MAV_SEVERITY for text, the item seq otherwise
    text: str = ""


@dataclass(slots=True)
class CopterConfig:
    """The tunables, named after the ArduCopter parameters they stand for; defaults are a stock ArduCopter's
    where one is simulated (FS_GCS_*, MAV_GCS_SYSID, ARMING_CHECK) and the simulator's own otherwise."""

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
    fs_gcs_enable: int = 0  # FS_GCS_ENABLE: 0 off (stock), 1 RTL, 2 AUTO goes on else RTL, 3/6 RTL, 4/5/7 LAND
    fs_gcs_timeout_s: float = 5.0  # FS_GCS_TIMEOUT
    gcs_sysid: int = 255  # MAV_GCS_SYSID: the only system whose GCS heartbeats count
    arming_check: int = 1  # ArmingCheck.ALL; ARMING_CHECK: 0 skips the sensor, GPS and battery checks
    gps_error_m: float = 1.5
    reboot_s: float = 3.0  # how long a reboot keeps the autopilot silent (real time)
    angle_max_deg: float = 30.0  # ANGLE_MAX (centidegrees there)
    clock_offset_ms: int = -2650  # the autopilot's clock against the host's: SITL's ran 2.65 s behind (FACTS.md)


def _checked(config: CopterConfig, bit: ArmingCheck) -> bool:
    return bool(config.arming_check & (ArmingCheck.ALL | bit))


def prearm_failure(fault: str | None, gps_ok: bool, battery_pct: float, config: CopterConfig) -> str:
    """The first of ArduCopter's pre-arm checks that fails, or "" when all pass (or ARMING_CHECK skips them).

    The order is ArduPilot's: sensors, then position, then battery.
    """
    if fault and _checked(config, ArmingCheck.INS):
        return fault
    if not gps_ok and _checked(config, ArmingCheck.GPS):
        return "Need Position Estimate"
    if battery_pct < config.arm_min_battery_pct and _checked(config, ArmingCheck.BATTERY):
        return f"Battery 1 below minimum arming capacity ({battery_pct:.0f}%)"
    return ""


def arm_failure(fault: str | None, gps_ok: bool, battery_pct: float, mode: Mode, flying: bool,
                config: CopterConfig, tilt_deg: float = 0.0) -> str:
    """Why an arm request is refused (reported as "Arm: ..."), or "" to arm: the pre-arm checks, then the
    arm-time ones: the copter leaning more than ANGLE_MAX (checked only when arming, so the pre-arm health
    flag does not show it), and the ones ARMING_CHECK cannot skip (an armable mode, on the ground)."""
    failure = prearm_failure(fault, gps_ok, battery_pct, config)
    if failure:
        return failure
    if config.arming_check and abs(tilt_deg) > config.angle_max_deg:
        return "Leaning"
    if flying:
        return "not landed"
    if mode not in ARMABLE_MODES:
        return f"Mode not armable: {mode.name}"
    return ""


def mode_refusal(new: Mode, gps_ok: bool, mission: Sequence[MissionItem], armed: bool, flying: bool) -> str | None:
    """Why ArduCopter refuses to switch to ``new`` (its status text; "" when it says nothing), or None."""
    if new in POSITION_MODES and not gps_ok:
        return f"Flight mode change failed: {new.name} needs position"
    if new is Mode.AUTO and len(mission) < 2:  # item 0 is home: nothing to fly
        return ""
    if new is Mode.AUTO and armed and not flying and mission[1].command != NavCmd.TAKEOFF:
        return "Auto: Missing Takeoff Cmd"
    return None

def gcs_failsafe_mode(fs_gcs_enable: int, mode: Mode) -> Mode | None:
    """The mode FS_GCS_ENABLE switches to when the GCS is lost in ``mode``; None to carry on.

    SmartRTL, DO_LAND_START and BRAKE are not simulated: 3 and 6 fall back to RTL, 4 and 7 to LAND, as
    ArduCopter does when it has no SmartRTL path, landing sequence or position to brake at.
    """
    if fs_gcs_enable == 0 or (fs_gcs_enable == 2 and mode is Mode.AUTO):
        return None
    return Mode.LAND if fs_gcs_enable in (4, 5, 7) else Mode.RTL
