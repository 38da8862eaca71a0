"""Vehicle state and the reducer that folds telemetry messages into it (pure).

Time is passed in: ``now`` is the hub's monotonic clock, ``wall_ms`` the hub's
epoch milliseconds. Nothing here does I/O, so it is tested by feeding messages.

One clock: GLOBAL_POSITION_INT and SYSTEM_TIME carry the autopilot's ``time_boot_ms``;
each is a sample for the state's :class:`~drone.clock.ClockSync`, and positions are
stamped in *hub* time (the boot time on the hub's clock; the receive time before the
first sample). SYSTEM_TIME's wall clock only gives the drone's clock offset.

Reboot: a boot clock that goes back means the autopilot restarted. Everything the
old boot said (position, home, landed state, pre-arm health, battery, parameters,
which streams arrive) is dropped and the change kind ``reboot`` reported, so nobody
acts on a stale position or a stream rate the autopilot has forgotten.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from drone.clock import ClockSync
from drone.modes import (
    MAV_AUTOPILOT_ARDUPILOTMEGA,
    MAV_MODE_FLAG_CUSTOM_MODE_ENABLED,
    MAV_SYS_STATUS_PREARM_CHECK,
    is_armed,
    landed_state_name,
    unhealthy_sensors,
)
from drone.modes import mode_name as copter_mode_name

__all__ = ["HEARTBEAT_GAP_S", "KINDS", "StatusText", "VehicleState", "apply_message", "check_link", "text_of"]

KINDS: Final = ("heartbeat", "position", "battery", "link", "mission", "landed", "statustext", "home", "param",
                "reboot", "health", "signing")
MAV_AUTOPILOT_INVALID: Final = 8
# A pause between two autopilot heartbeats longer than this is a radio loss or a reboot (1 Hz nominal).
HEARTBEAT_GAP_S: Final = 2.5
TEXTS_KEPT: Final = 32
_UINT16_MAX: Final = 65535


@dataclass(frozen=True)
class StatusText:
    """One STATUSTEXT: hub wall time (ms), MAV_SEVERITY (0 emergency .. 7 debug) and the text."""

    ts_ms: int
    severity: int
    text: str


@dataclass
class VehicleState:
    armed: bool = False
    mode: str | None = None
    custom_mode: int | None = None
    base_mode: int | None = None
    system_status: int | None = None
    mav_type: int | None = None
    autopilot: int | None = None
    lat: float | None = None
    lon: float | None = None
    alt_msl_m: float | None = None
    relative_alt_m: float | None = None
    vx: float | None = None
    vy: float | None = None
    vz: float | None = None
    heading_deg: float | None = None
    ground_speed_mps: float | None = None
    battery_pct: float | None = None
    voltage_v: float | None = None
    landed_state: str | None = None
    mission_current: int | None = None
    mission_reached: int | None = None
    position_ts_ms: int | None = None  # hub wall time of the position (see the module docstring)
    clock: ClockSync = field(default_factory=ClockSync)
    statustext: str | None = None  # the latest; all recent ones are in ``texts``
    statustext_severity: int | None = None
    texts: deque[StatusText] = field(default_factory=lambda: deque(maxlen=TEXTS_KEPT))
    prearm_ok: bool | None = None  # None: the autopilot does not report its pre-arm checks
    sensors_unhealthy: list[str] = field(default_factory=list)
    home: tuple[float, float, float] | None = None  # lat, lon, metres above sea level
    params: dict[str, float] = field(default_factory=dict)
    param_types: dict[str, int] = field(default_factory=dict)  # MAV_PARAM_TYPE last seen per name
    last_seen: dict[str, float] = field(default_factory=dict)  # message type -> monotonic receive time
    reboots: int = 0
    rebooted_at: float | None = None  # monotonic
    heartbeat_gap_s: float | None = None  # the last gap between heartbeats longer than HEARTBEAT_GAP_S
    heartbeat_gap_at: float | None = None  # monotonic, the heartbeat that ended that gap
    signed_unkeyed: bool = False  # it signs its MAVLink with a key the hub does not have (set by the link)
    last_heartbeat: float | None = None  # monotonic
    last_message: float | None = None  # monotonic
    link_ok: bool = False
    lost_at: float | None = None  # monotonic, last link loss
    restored_at: float | None = None  # monotonic, last restore (or first heartbeat)


def text_of(value: Any) -> str:
    """A MAVLink char[] field as text: bytes decoded, NUL padding and surrounding blanks removed."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)
    return text.split("\0", 1)[0].strip()


def _forget_boot(state: VehicleState, now: float) -> None:
    """The autopilot rebooted: drop what its previous boot told us."""
    state.reboots += 1
    state.rebooted_at = now
    state.lat = state.lon = state.alt_msl_m = state.relative_alt_m = None
    state.vx = state.vy = state.vz = state.heading_deg = state.ground_speed_mps = None
    state.position_ts_ms = None
    state.home = None
    state.landed_state = None
    state.prearm_ok = None
    state.sensors_unhealthy = []
    state.battery_pct = state.voltage_v = None
    state.params = {}
    state.param_types = {}
    heartbeat = state.last_seen.get("HEARTBEAT")
    state.last_seen = {} if heartbeat is None else {"HEARTBEAT": heartbeat}


def _boot_sample(state: VehicleState, time_boot_ms: int, now: float, wall_ms: int, unix_ms: int | None) -> list[str]:
    if state.clock.observe(time_boot_ms, wall_ms, unix_ms):
        _forget_boot(state, now)
        return ["reboot"]
    return []


def _heartbeat(state: VehicleState, msg: Any, now: float) -> list[str]:
    if msg.autopilot == MAV_AUTOPILOT_INVALID:
        return []  # a GCS, camera or companion computer, not the vehicle's autopilot
    kinds = ["heartbeat"]
    state.armed = is_armed(msg.base_mode)
    state.base_mode = msg.base_mode
    state.custom_mode = msg.custom_mode
    state.system_status = msg.system_status
    state.mav_type = msg.type
    state.autopilot = msg.autopilot
    ardupilot = msg.autopilot == MAV_AUTOPILOT_ARDUPILOTMEGA
    custom = bool(msg.base_mode & MAV_MODE_FLAG_CUSTOM_MODE_ENABLED)
    state.mode = copter_mode_name(msg.custom_mode) if ardupilot and custom else None
    if state.last_heartbeat is not None and now - state.last_heartbeat > HEARTBEAT_GAP_S:
        state.heartbeat_gap_s = now - state.last_heartbeat
        state.heartbeat_gap_at = now
    state.last_heartbeat = now
    if not state.link_ok:
        state.link_ok = True
        state.restored_at = now
        kinds.append("link")
    return kinds


def _position(state: VehicleState, msg: Any, now: float, wall_ms: int) -> list[str]:
    kinds = _boot_sample(state, msg.time_boot_ms, now, wall_ms, None)
    state.lat = msg.lat / 1e7
    state.lon = msg.lon / 1e7
    state.alt_msl_m = msg.alt / 1000.0
    state.relative_alt_m = msg.relative_alt / 1000.0
    state.vx, state.vy, state.vz = msg.vx / 100.0, msg.vy / 100.0, msg.vz / 100.0
    state.ground_speed_mps = math.hypot(state.vx, state.vy)
    state.heading_deg = None if msg.hdg == _UINT16_MAX else (msg.hdg / 100.0) % 360.0
    hub_ms = state.clock.hub_ms(msg.time_boot_ms)
    state.position_ts_ms = wall_ms if hub_ms is None else hub_ms
    return [*kinds, "position"]


def _system_time(state: VehicleState, msg: Any, now: float, wall_ms: int) -> list[str]:
    # time_unix_usec 0: the autopilot has no wall clock yet (no GPS time), the boot time still counts.
    unix_ms = msg.time_unix_usec // 1000 if msg.time_unix_usec > 0 else None
    return _boot_sample(state, msg.time_boot_ms, now, wall_ms, unix_ms)


def _sys_status(state: VehicleState, msg: Any) -> list[str]:
    kinds: list[str] = []
    if msg.battery_remaining >= 0 or msg.voltage_battery != _UINT16_MAX:
        if msg.battery_remaining >= 0:  # -1 = unknown
            state.battery_pct = float(min(msg.battery_remaining, 100))
        if msg.voltage_battery != _UINT16_MAX:
            state.voltage_v = msg.voltage_battery / 1000.0
        kinds.append("battery")
    present, enabled, health = (msg.onboard_control_sensors_present, msg.onboard_control_sensors_enabled,
                                msg.onboard_control_sensors_health)
    prearm = bool(health & MAV_SYS_STATUS_PREARM_CHECK) if present & MAV_SYS_STATUS_PREARM_CHECK else None
    unhealthy = unhealthy_sensors(present, enabled, health)
    if (prearm, unhealthy) != (state.prearm_ok, state.sensors_unhealthy):
        state.prearm_ok, state.sensors_unhealthy = prearm, unhealthy
        kinds.append("health")
    return kinds


def _battery_status(state: VehicleState, msg: Any) -> list[str]:
    if msg.id != 0:
        return []  # the hub shows the main battery only
    changed = False
    if msg.battery_remaining >= 0:
        state.battery_pct = float(min(msg.battery_remaining, 100))
        changed = True
    cells = [v for v in msg.voltages if v != _UINT16_MAX]
    if cells:
        state.voltage_v = sum(cells) / 1000.0
        changed = True
    return ["battery"] if changed else []


def _home(state: VehicleState, msg: Any) -> list[str]:
    home = (msg.latitude / 1e7, msg.longitude / 1e7, msg.altitude / 1000.0)
    changed = home != state.home
    state.home = home
    return ["home"] if changed else []


def _param(state: VehicleState, msg: Any) -> list[str]:
    name = text_of(msg.param_id)
    if not name:
        return []
    state.params[name] = float(msg.param_value)
    state.param_types[name] = int(msg.param_type)
    return ["param"]  # every answer: a read that finds the same value is news too


def _statustext(state: VehicleState, msg: Any, wall_ms: int) -> list[str]:
    text = text_of(msg.text)
    state.statustext = text
    state.statustext_severity = msg.severity
    state.texts.append(StatusText(wall_ms, int(msg.severity), text))
    return ["statustext"]


def _dispatch(state: VehicleState, kind: str, msg: Any, now: float, wall_ms: int) -> list[str]:
    if kind == "HEARTBEAT":
        return _heartbeat(state, msg, now)
    if kind == "GLOBAL_POSITION_INT":
        return _position(state, msg, now, wall_ms)
    if kind == "SYSTEM_TIME":
        return _system_time(state, msg, now, wall_ms)
    if kind == "SYS_STATUS":
        return _sys_status(state, msg)
    if kind == "BATTERY_STATUS":
        return _battery_status(state, msg)
    if kind == "HOME_POSITION":
        return _home(state, msg)
    if kind == "PARAM_VALUE":
        return _param(state, msg)
    if kind == "STATUSTEXT":
        return _statustext(state, msg, wall_ms)
    # These arrive at a steady rate; report them only when they change.
    if kind == "EXTENDED_SYS_STATE":
        landed = landed_state_name(msg.landed_state)
        changed = landed != state.landed_state
        state.landed_state = landed
        return ["landed"] if changed else []
    if kind == "MISSION_CURRENT":
        changed = msg.seq != state.mission_current
        state.mission_current = msg.seq
        return ["mission"] if changed else []
    if kind == "MISSION_ITEM_REACHED":
        state.mission_reached = msg.seq
        return ["mission"]
    return []


def apply_message(state: VehicleState, msg: Any, now: float, wall_ms: int) -> list[str]:
    """Fold one decoded message into ``state``; return the change kinds it caused (``reboot`` first)."""
    state.last_message = now
    kind = msg.get_type()
    kinds = _dispatch(state, kind, msg, now, wall_ms)
    state.last_seen[kind] = now  # after a reboot's reset: this message is from the new boot
    return kinds


def check_link(state: VehicleState, now: float, timeout_s: float) -> bool:
    """Mark the link lost when the last heartbeat is older than ``timeout_s``; True if it just changed."""
    if state.link_ok and state.last_heartbeat is not None and now - state.last_heartbeat > timeout_s:
        state.link_ok = False
        state.lost_at = now
        return True
    return False
