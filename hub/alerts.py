"""Alerts for the command centre: SOS buttons, unacknowledged dispatches, escalations, SLA breaches.

An alert goes out on `/api/v1/live` at once (`{"type": "alert", "alert": {...}}`), is part of
every snapshot while recent, and is listed by `GET /api/v1/alerts`. An `sos` event (SPEC 2) from
a device raises an alert and, by policy (`sos_incident`), an incident at the device's position:
priority 1 with category `sos`, so it is measured against `rapid_12358` and auto-dispatched to
the nearest available unit other than the one in trouble (backup). A second SOS from the same
unit while its SOS incident is open adds a note to that incident instead of a new one.

An SLA breach (a response target of an open incident missed: its deadline passed without the
milestone, or the milestone came late) raises one alert per incident and target, when it happens;
after a restart only breaches of the last `BREACH_RECENT_MS` are raised again.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from hub.domain.events import Noted
from hub.domain.sla import evaluate

if TYPE_CHECKING:
    from hub.incidents import IncidentService

__all__ = ["Alerts"]

log = logging.getLogger(__name__)

KEEP = 500  # alerts kept for the API
BREACH_RECENT_MS = 300_000
IN_SNAPSHOT = 100  # of which the newest go into a live snapshot


def _coordinate(data: dict[str, Any], key: str, limit: float) -> float | None:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value) if -limit <= value <= limit else None


class Alerts:
    def __init__(self, service: IncidentService, *, sos_incident: bool = True, sos_category: str = "sos",
                 sos_priority: int = 1) -> None:
        self.svc = service
        self.sos_incident = sos_incident
        self.sos_category = sos_category
        self.sos_priority = sos_priority
        self.recent: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self.counts: Counter[str] = Counter()
        self._sos_incidents: dict[str, str] = {}  # unit_id -> its open SOS incident
        self._breached: set[tuple[str, str]] = set()  # (incident_id, milestone) already alerted
        self._ids = itertools.count(1)
        # Awaited after each new SOS with (device_id, unit_id, incident_id or None): the video desk's backhaul.
        self.on_sos: list[Callable[[str, str | None, str | None], Awaitable[None]]] = []

    def raise_alert(self, kind: str, ts: int, text: str, **about: Any) -> dict[str, Any]:
        """Record and broadcast one alert; `about` names what it concerns (unit_id, incident_id, lat, ...)."""
        alert = {"id": f"A{self.svc.clock()}-{next(self._ids)}", "kind": kind, "ts": ts, "text": text,
                 **{k: v for k, v in about.items() if v is not None}}
        self.recent.append(alert)
        self.counts[kind] += 1
        self.svc.feed.post({"type": "alert", "alert": alert})
        return alert

    def snapshot_part(self, now_ms: int) -> dict[str, Any]:
        return {"alerts": list(self.recent)[-IN_SNAPSHOT:]}

    def list(self, limit: int) -> list[dict[str, Any]]:
        """Newest first."""
        return list(itertools.islice(reversed(self.recent), limit))

    def check_sla(self, now_ms: int) -> int:
        """Raise an alert for each response target newly missed by an open incident; returns how many."""
        svc, raised = self.svc, 0
        open_ids = set()
        for incident in svc.open_incidents():
            open_ids.add(incident.id)
            c = incident.created
            policy = svc.policies.get(c.policy) if c is not None and c.policy else None
            if c is None or policy is None or incident.diversion is not None:
                continue
            times = {name: None if m is None else m.ts for name, m in incident.milestones().items()}
            for t in evaluate(policy, times, incident.received, now_ms):
                key = (incident.id, t.milestone)
                if t.met is not False or key in self._breached:
                    continue
                self._breached.add(key)
                if now_ms - t.deadline > BREACH_RECENT_MS and t.actual is None:
                    continue  # an old breach found again after a restart: already told
                late = "reached late" if t.actual is not None else "not reached"
                self.raise_alert("sla_breach", now_ms, f"incident {incident.id}: {t.milestone} {late}, target "
                                 f"{t.seconds} s ({c.policy})", incident_id=incident.id, milestone=t.milestone,
                                 lat=c.lat, lon=c.lon)
                raised += 1
        self._breached = {k for k in self._breached if k[0] in open_ids}
        return raised

    async def sos(self, device_id: str, event: Any) -> None:
        svc = self.svc
        dev = svc.live.devices.get(device_id)
        unit_id = dev.unit_id if dev is not None else None
        lat, lon = _coordinate(event.data, "lat", 90), _coordinate(event.data, "lon", 180)
        if lat is None or lon is None:
            fix = dev.fix if dev is not None else None
            unit = svc.live.units.get(unit_id) if unit_id else None
            fix = fix or (unit.fix if unit is not None else None)
            lat, lon = (fix.lat, fix.lon) if fix is not None else (None, None)
        who = f"{device_id}" + (f" ({unit_id})" if unit_id else "")
        open_sos = self._sos_incidents.get(unit_id or device_id)
        if open_sos is not None and svc.is_open(open_sos):
            self.raise_alert("sos", event.ts, f"SOS again from {who}", device_id=device_id, unit_id=unit_id,
                             incident_id=open_sos, lat=lat, lon=lon)
            await svc.record(open_sos, Noted(ts=svc.clock(), source="device", unit_id=None,
                                             text=f"SOS pressed again on {who} at {event.ts}"))
            return
        alert = self.raise_alert("sos", event.ts, f"SOS from {who}", device_id=device_id, unit_id=unit_id,
                                 lat=lat, lon=lon)
        if not self.sos_incident:
            await self._tell(device_id, unit_id, None)
            return
        if lat is None or lon is None:
            log.warning("SOS from %s: no position known, so no incident was created (alert %s)", who, alert["id"])
            await self._tell(device_id, unit_id, None)
            return
        now = svc.clock()
        body = {"category": self.sos_category, "priority": self.sos_priority, "lat": lat, "lon": lon,
                "summary": f"SOS 紧急求助 / emergency button: {who}", "address": "",
                "received_at": event.ts if 0 <= event.ts <= now else None}
        view = await svc.create(body, source="system", exclude_units=[unit_id] if unit_id else [])
        self._sos_incidents[unit_id or device_id] = view["id"]
        alert["incident_id"] = view["id"]
        self.svc.feed.post({"type": "alert", "alert": alert})  # the same alert, now with its incident
        log.warning("SOS from %s: incident %s", who, view["id"])
        await self._tell(device_id, unit_id, view["id"])

    async def _tell(self, device_id: str, unit_id: str | None, incident_id: str | None) -> None:
        for hook in self.on_sos:
            try:
                await hook(device_id, unit_id, incident_id)
            except Exception:
                log.exception("SOS hook failed for %s", device_id)
