"""Vehicle state -> the hub's payload shapes (pure).

A drone becomes a device of kind ``drone``: its position is a :class:`Fix` (hub
time, see :mod:`drone.clock`; altitude relative to home) and its health a :class:`Status` plus the drone
fields the generic Status has no slot for (mode, armed, landed, link).
"""

from __future__ import annotations

import math
from typing import Any

from devices.payloads import Fix, Status
from drone.state import VehicleState

__all__ = ["fix_of", "position_age_s", "status_fields", "status_of"]


def _clamp(value: float | None, low: float, high: float) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return min(max(value, low), high)


def fix_of(state: VehicleState) -> Fix | None:
    """The current position as a Fix, or None without a usable position.

    lat = lon = 0 is what autopilots send before their first GPS fix, not a place.
    """
    if state.lat is None or state.lon is None or state.position_ts_ms is None:
        return None
    if state.lat == 0.0 and state.lon == 0.0:
        return None
    if not (-90.0 <= state.lat <= 90.0 and -180.0 <= state.lon <= 180.0):
        return None
    alt = state.relative_alt_m
    if alt is not None and not -1000.0 <= alt <= 100_000.0:
        alt = None
    return Fix(
        ts=state.position_ts_ms,
        lat=state.lat,
        lon=state.lon,
        alt=alt,
        speed=_clamp(state.ground_speed_mps, 0.0, 1000.0),
        heading=_clamp(state.heading_deg, 0.0, 360.0),
        battery=_clamp(state.battery_pct, 0.0, 100.0),
    )


def position_age_s(state: VehicleState, now: float) -> float | None:
    """Seconds since the last GLOBAL_POSITION_INT arrived (``now`` monotonic); None if none since boot."""
    seen = state.last_seen.get("GLOBAL_POSITION_INT")
    return None if seen is None else max(0.0, now - seen)


def status_fields(state: VehicleState) -> dict[str, Any]:
    """The drone-specific status the hub shows next to the unit."""
    return {
        "battery": _clamp(state.battery_pct, 0.0, 100.0),
        "voltage": state.voltage_v,
        "mode": state.mode,
        "armed": state.armed,
        "landed": state.landed_state,
        "link": state.link_ok,
    }


def status_of(state: VehicleState, ts_ms: int, *, unit_id: str | None = None) -> Status:
    """A generic device Status: online while the MAVLink link is up."""
    return Status(
        ts=ts_ms,
        state="online" if state.link_ok else "offline",
        kind="drone",
        unit_id=unit_id,
        battery=_clamp(state.battery_pct, 0.0, 100.0),
    )
