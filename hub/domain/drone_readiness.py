"""Is a drone fit to be sent, and what will its autopilot do if the hub's link is lost (issue 14).

Pure: the hub reads the autopilot's parameters and state over MAVLink and passes them in; these
rules say, in words for the one-map, the dispatch refusal and the incident log, what they mean.

The link failsafe follows ArduCopter's parameters. ``FS_GCS_ENABLE`` chooses the action (0 none);
``FS_GCS_TIMEOUT`` how long the autopilot waits without ground-station heartbeats (5 s where the
firmware has no such parameter); ``MAV_GCS_SYSID`` (``SYSID_MYGCS`` on older firmware, default 255)
is the one system whose heartbeats count. A hub with another system id is never "seen" by the
autopilot, so losing the hub's link triggers nothing whatever ``FS_GCS_ENABLE`` says: the issue's
copter flew on to the scene with the hub at 250 and ``MAV_GCS_SYSID`` at 255. An ``FS_GCS_ENABLE``
value this module does not know is not trusted (ArduCopter itself falls back to RTL, other firmware
need not).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from hub.domain.drone_candidate import DroneCandidate, DroneEnergy, Failsafe

__all__ = ["FAILSAFE_PARAMS", "Readiness", "gcs_failsafe", "readiness", "unknown_failsafe"]

# The parameters the hub reads with PARAM_REQUEST_READ; the two sysid names are the same setting.
FAILSAFE_PARAMS: Final = ("FS_GCS_ENABLE", "FS_GCS_TIMEOUT", "MAV_GCS_SYSID", "SYSID_MYGCS")
_DEFAULT_TIMEOUT_S: Final = 5.0
_DEFAULT_GCS_SYSID: Final = 255

# FS_GCS_ENABLE -> (action, what the autopilot does, in words). The hub flies in GUIDED, so "continue
# the mission in AUTO" (2) means RTL for a hub flight.
_ACTIONS: Final[dict[int, tuple[str, str]]] = {
    1: ("rtl", "returns to launch"),
    2: ("continue_or_rtl", "returns to launch (it would continue a mission flown in AUTO)"),
    3: ("smartrtl_or_rtl", "flies back along its path (SmartRTL; RTL if that is unavailable)"),
    4: ("smartrtl_or_land", "flies back along its path (SmartRTL; lands where it is if that is unavailable)"),
    5: ("land", "lands where it is"),
    6: ("land_start_or_rtl", "flies its mission's landing sequence (DO_LAND_START; RTL if there is none)"),
}


@dataclass(frozen=True, slots=True)
class Readiness:
    """A drone's state for dispatch: ``ready`` or why not (``reason``) and what would fix it (``actions``)."""

    state: str
    reason: str | None = None
    actions: tuple[str, ...] = ()


def _integer(value: float | None) -> int | None:
    """A parameter that must be a whole number (MAVLink sends every parameter as a float); None if not one."""
    if value is None or not math.isfinite(value) or value != int(value):
        return None
    return int(value)


def _seconds(value: float) -> str:
    return f"{value:g} s"


def gcs_failsafe(params: Mapping[str, float], hub_system_id: int) -> Failsafe:
    """What the autopilot will do on losing the hub's link, from its failsafe parameters as read.

    ``params`` maps parameter names to values (others are ignored); ``hub_system_id`` is the
    MAVLink system id the hub sends its heartbeats as.
    """
    read = {name: float(params[name]) for name in FAILSAFE_PARAMS if name in params}
    enable_raw = read.get("FS_GCS_ENABLE")
    if enable_raw is None:
        return Failsafe(False, False, "unknown", "link failsafe unknown: parameters not read", read)
    enable = _integer(enable_raw)
    if enable is None or (enable != 0 and enable not in _ACTIONS):
        return Failsafe(False, False, "unknown",
                        f"link failsafe unknown: FS_GCS_ENABLE={enable_raw:g} is not a value the hub knows", read)
    sysid_name = "MAV_GCS_SYSID" if "MAV_GCS_SYSID" in read else "SYSID_MYGCS" if "SYSID_MYGCS" in read else None
    sysid = _DEFAULT_GCS_SYSID if sysid_name is None else _integer(read[sysid_name])
    timeout = read.get("FS_GCS_TIMEOUT", _DEFAULT_TIMEOUT_S)
    if sysid is None or not math.isfinite(timeout) or timeout < 0:
        return Failsafe(False, False, "unknown", "link failsafe unknown: MAV_GCS_SYSID or FS_GCS_TIMEOUT unreadable",
                        read)
    problems = []
    if enable == 0:
        problems.append("FS_GCS_ENABLE=0, on link loss the drone flies on to its last target and hovers there "
                        "until its battery failsafe")
    if sysid != hub_system_id:
        source = sysid_name or "MAV_GCS_SYSID not read: its default"
        problems.append(f"the autopilot takes ground-station heartbeats only from system {sysid} ({source}) "
                        f"and the hub is system {hub_system_id}")
    if problems:
        return Failsafe(True, False, "none", "NO link failsafe: " + "; also, ".join(problems), read)
    action, words = _ACTIONS[enable]
    return Failsafe(True, True, action,
                    f"on link loss the autopilot {words} after {_seconds(timeout)} (FS_GCS_ENABLE={enable})", read)


def unknown_failsafe() -> Failsafe:
    """The failsafe of a drone whose parameters have not been read."""
    return gcs_failsafe({}, 0)


def readiness(c: DroneCandidate, energy: DroneEnergy) -> Readiness:
    """The state of a drone with no flight from the hub, the first that applies in this order:

    ``refused_unsigned``, ``offline`` (never heard), ``unavailable`` (link lost), ``signed_no_key``,
    ``no_telemetry``, ``flying`` (armed or off the ground), ``not_ready`` (pre-arm checks failing),
    ``landed_away`` (on the ground beyond ``energy.dock_radius_m`` of its dock), ``no_failsafe``, ``ready``.
    """
    if c.signing == "refused":
        return Readiness("refused_unsigned", "link refused: the hub has no key for it and no \"unsigned\" opt-in")
    if not c.heard:
        return Readiness("offline", "never heard")
    if not c.link_ok:
        return Readiness("unavailable", "link lost")
    if c.signed_no_key:
        return Readiness("signed_no_key", "signed, no key: the autopilot drops every command the hub sends it")
    telemetry = _telemetry_problem(c)
    if telemetry is not None:
        return Readiness("no_telemetry", telemetry)
    if c.armed or not c.on_ground:
        return Readiness("flying")
    if c.prearm_ok is False:
        return Readiness("not_ready", c.prearm_text or "pre-arm checks failing")
    assert c.dock_distance_m is not None  # _telemetry_problem has checked it
    if c.dock_distance_m > energy.dock_radius_m:
        return Readiness("landed_away", f"landed {c.dock_distance_m:.0f} m from its dock", ("return_to_dock",))
    failsafe = c.failsafe or unknown_failsafe()
    if not failsafe.ok:
        return Readiness("no_failsafe", failsafe.text, ("enable_failsafe",))
    return Readiness("ready")


def _telemetry_problem(c: DroneCandidate) -> str | None:
    if c.telemetry_problem is not None:
        return c.telemetry_problem
    if not c.position_fresh:  # checked first: a caller may blank a stale position
        return "no fresh position"
    if c.lat is None or c.lon is None or c.dock_distance_m is None:
        return "no position"
    return None
