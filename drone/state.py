"""Vehicle state and the reducer that folds telemetry messages into it (pure).

Time is passed in: ``now`` is the hub's monotonic clock, ``wall_ms`` the hub's
epoch milliseconds. Nothing here does I/O, so it is tested by feeding messages.

Device time: GLOBAL_POSITION_INT only carries ``time_boot_ms``. When the vehicle
sends SYSTEM_TIME with a valid ``time_unix_usec`` (GPS time), we keep the offset
boot -> epoch and stamp positions with device time; until then (or after the
vehicle rebooted, seen as ``time_boot_ms`` going backwards) positions carry the
hub's receive time. Ask for SYSTEM_TIME with ``vehicle.set_message_interval("SYSTEM_TIME", 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from drone.modes import MAV_AUTOPILOT_ARDUPILOTMEGA, MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, is_armed, landed_state_name
from drone.modes import mode_name as copter_mode_name

__all__ = ["KINDS", "VehicleState", "apply_message", "check_link"]

KINDS: Final = ("heartbeat", "position", "battery", "link", "mission", "landed", "statustext")
MAV_AUTOPILOT_INVALID: Final = 8
_UINT16_MAX: Final = 65535
# A boot clock that jumps back by more than this means the vehicle rebooted.
_REBOOT_JUMP_MS: Final = 1000


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
    position_ts_ms: int | None = None
    boot_offset_ms: int | None = None  # epoch ms - time_boot_ms, from SYSTEM_TIME
    last_boot_ms: int | None = None
    statustext: str | None = None
    statustext_severity: int | None = None
    last_heartbeat: float | None = None  # monotonic
    last_message: float | None = None  # monotonic
    link_ok: bool = False
    lost_at: float | None = None  # monotonic, last link loss
    restored_at: float | None = None  # monotonic, last restore (or first heartbeat)


def _boot_clock(state: VehicleState, time_boot_ms: int) -> None:
    if state.last_boot_ms is not None and time_boot_ms + _REBOOT_JUMP_MS < state.last_boot_ms:
        state.boot_offset_ms = None  # rebooted: the old offset would date fixes in the past
    state.last_boot_ms = time_boot_ms


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
    state.last_heartbeat = now
    if not state.link_ok:
        state.link_ok = True
        state.restored_at = now
        kinds.append("link")
    return kinds


def _position(state: VehicleState, msg: Any, wall_ms: int) -> list[str]:
    _boot_clock(state, msg.time_boot_ms)
    state.lat = msg.lat / 1e7
    state.lon = msg.lon / 1e7
    state.alt_msl_m = msg.alt / 1000.0
    state.relative_alt_m = msg.relative_alt / 1000.0
    state.vx, state.vy, state.vz = msg.vx / 100.0, msg.vy / 100.0, msg.vz / 100.0
    state.ground_speed_mps = math.hypot(state.vx, state.vy)
    state.heading_deg = None if msg.hdg == _UINT16_MAX else (msg.hdg / 100.0) % 360.0
    if state.boot_offset_ms is not None:
        state.position_ts_ms = state.boot_offset_ms + msg.time_boot_ms
    else:
        state.position_ts_ms = wall_ms
    return ["position"]


def _system_time(state: VehicleState, msg: Any) -> list[str]:
    _boot_clock(state, msg.time_boot_ms)
    if msg.time_unix_usec > 0:  # 0 = the vehicle has no time source yet
        state.boot_offset_ms = msg.time_unix_usec // 1000 - msg.time_boot_ms
    return []


def _sys_status(state: VehicleState, msg: Any) -> list[str]:
    changed = False
    if msg.battery_remaining >= 0:  # -1 = unknown
        state.battery_pct = float(min(msg.battery_remaining, 100))
        changed = True
    if msg.voltage_battery != _UINT16_MAX:
        state.voltage_v = msg.voltage_battery / 1000.0
        changed = True
    return ["battery"] if changed else []


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


def apply_message(state: VehicleState, msg: Any, now: float, wall_ms: int) -> list[str]:
    """Fold one decoded message into ``state``; return the change kinds it caused."""
    state.last_message = now
    kind = msg.get_type()
    if kind == "HEARTBEAT":
        return _heartbeat(state, msg, now)
    if kind == "GLOBAL_POSITION_INT":
        return _position(state, msg, wall_ms)
    if kind == "SYSTEM_TIME":
        return _system_time(state, msg)
    if kind == "SYS_STATUS":
        return _sys_status(state, msg)
    if kind == "BATTERY_STATUS":
        return _battery_status(state, msg)
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
    if kind == "STATUSTEXT":
        text = msg.text
        state.statustext = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        state.statustext_severity = msg.severity
        return ["statustext"]
    return []


def check_link(state: VehicleState, now: float, timeout_s: float) -> bool:
    """Mark the link lost when the last heartbeat is older than ``timeout_s``; True if it just changed."""
    if state.link_ok and state.last_heartbeat is not None and now - state.last_heartbeat > timeout_s:
        state.link_ok = False
        state.lost_at = now
        return True
    return False
