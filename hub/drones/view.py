"""How a drone looks to the one-map and the API: its state, why it is not ready, and what it can do.

A drone with no flight from the hub is in the state :func:`hub.domain.drone_readiness.readiness` gives
(``ready`` only when it is linked, sends telemetry, passes its pre-arm checks, has a real link
failsafe and stands on its dock); with a flight it is ``launching``, ``flying``, ``on_scene`` or
``returning``. Next to the state: the reason, the actions an operator may take (``return_to_dock``,
``enable_failsafe``), the failsafe the autopilot will really apply, the telemetry set-up, pre-arm
health with the autopilot's own words, home, the drone's clock offset and its latest status texts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from geo.geodesy import haversine_m
from hub.domain.drone_candidate import DroneEnergy
from hub.domain.drone_readiness import readiness
from hub.drones.fleet import DroneRecord, prearm_text

__all__ = ["clock_text", "drone_view", "link_name", "state_and_reason"]

_TEXTS_SHOWN = 5


def link_name(r: DroneRecord, refused: Mapping[str, int], signed_no_key: bool) -> str:
    """``refused_unsigned`` for a drone the link will not hear, ``signed_no_key`` for one that signs with a key the
    hub does not have, ``refused_bad_signature`` for a keyed one heard only with bad signatures so far; else
    ``unknown`` (never heard), ``ok`` or ``lost``."""
    if signed_no_key:
        return "signed_no_key"
    if r.signing == "refused":
        return "refused_unsigned"
    if not r.seen:
        return "refused_bad_signature" if refused.get("bad_signature") else "unknown"
    return "ok" if r.vehicle.state.link_ok else "lost"


def state_and_reason(r: DroneRecord, energy: DroneEnergy, hub_system_id: int, signed_no_key: bool,
                     on_scene: bool) -> tuple[str, str | None, tuple[str, ...]]:
    f = r.flight
    if f is not None and r.vehicle.state.link_ok:
        if f.phase == "returning":
            return "returning", f.reason or None, ()
        if f.phase == "launching":
            return "launching", None, ()
        return ("on_scene" if on_scene else "flying"), None, ()
    ready = readiness(r.candidate(None, hub_system_id, signed_no_key), energy)
    return ready.state, ready.reason, ready.actions


def drone_view(r: DroneRecord, now_ms: int, *, energy: DroneEnergy, hub_system_id: int, on_scene: bool = False,
               refused: Mapping[str, int] | None = None, signed_no_key: bool = False) -> dict[str, Any]:
    s, c, f = r.vehicle.state, r.config, r.flight
    fresh = r.position_fresh(time.monotonic())
    position = None
    if s.lat is not None and s.lon is not None:
        position = {"ts": s.position_ts_ms or now_ms, "lat": s.lat, "lon": s.lon, "alt_m": s.relative_alt_m,
                    "heading": s.heading_deg, "speed": s.ground_speed_mps, "stale": not fresh}
    state, reason, actions = state_and_reason(r, energy, hub_system_id, signed_no_key, on_scene)
    mission = None
    if f is not None:
        mission = {"incident_id": f.incident_id, "kind": f.kind, "route": f.route, "progress": f.progress,
                   "target": {"lat": f.target[0], "lon": f.target[1], "alt_m": f.target[2]}}
    failsafe = r.failsafe(hub_system_id)
    home = None
    if s.home is not None:
        lat, lon, amsl = s.home
        away = haversine_m(lat, lon, c.dock_lat, c.dock_lon)
        home = {"lat": lat, "lon": lon, "amsl_m": amsl, "dock_distance_m": round(away, 1),
                "at_dock": away <= energy.dock_radius_m}
    keeper = r.keeper
    return {
        "drone_id": c.drone_id, "unit_id": c.drone_id, "name": c.name, "system_id": c.system_id,
        "link": link_name(r, refused or {}, signed_no_key), "signing": r.signing, "refused": dict(refused or {}),
        "armed": s.armed, "mode": s.mode, "landed": s.landed_state, "position": position,
        "battery_pct": s.battery_pct, "dock": {"lat": c.dock_lat, "lon": c.dock_lon, "name": c.dock_name},
        "state": state, "reason": reason, "actions": list(actions), "mission": mission,
        "failsafe": {"ok": failsafe.ok, "known": failsafe.known, "action": failsafe.action, "text": failsafe.text,
                     "params": failsafe.params},
        "telemetry": {"problem": keeper.problem() if keeper is not None else None,
                      "messages": keeper.status() if keeper is not None else {}},
        "prearm": {"ok": s.prearm_ok, "text": prearm_text(s)},
        "home": home, "clock": {"offset_ms": s.clock.drone_offset_ms}, "reboots": s.reboots,
        "texts": [{"ts": t.ts_ms, "severity": t.severity, "text": t.text} for t in list(s.texts)[-_TEXTS_SHOWN:]],
        "updated_at": now_ms,
    }


def clock_text(r: DroneRecord) -> str:
    offset = r.vehicle.state.clock.drone_offset_ms
    if offset is None:
        return "its times are taken on the hub's clock"
    side = "behind" if offset < 0 else "ahead of"
    return f"the drone's clock runs {abs(offset) / 1000:.2f} s {side} the hub's: its times are stated in hub time"
