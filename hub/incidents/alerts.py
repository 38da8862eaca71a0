"""Alerts for the command centre: SOS buttons, unacknowledged dispatches, escalations, SLA breaches.

An alert goes out on `/api/v1/live` at once (`{"type": "alert", "alert": {...}}`), is part of
every snapshot while recent, and is listed by `GET /api/v1/alerts`. An `sos` event (SPEC 2) from
a device raises an alert and, by policy (`sos_incident`), an incident at the device's position:
priority 1 with category `sos`, so it is measured against `rapid_12358` and auto-dispatched to
the nearest available unit other than the one in trouble (backup). A second SOS from the same
unit while its SOS incident is open adds a note to that incident instead of a new one: at most one
alert and note per unit per `REPEAT_WINDOW_MS`, the presses in between counted into the next (a flood
of SOS grows neither the log nor the alerts). An SOS whose own position lies farther than
`sos_max_distance_m` from the device's (or its unit's) fresh last fix is placed at that fix, and the
alert and the incident say so. While the database is down the alert goes out at once and the incident
waits in the outbox.

An SLA breach (a response target of an open incident missed: its deadline passed without the
milestone, or the milestone came late) raises one alert per incident and target, when it happens;
after a restart only breaches of the last `BREACH_RECENT_MS` are raised again.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any

from devices.payloads import Fix
from hub.domain.device_claims import Coalescer, sos_place, sos_received_verdict
from hub.domain.events import Noted
from hub.domain.sla import Policy, evaluate
from hub.errors import StorageUnavailable
from hub.incidents.ports import IncidentCreator
from hub.ingest.feed import LiveFeed
from hub.ingest.live import DeviceLive, LiveState, UnitLive
from hub.signals import AsyncSignal
from hub.storage.outbox import Outbox

__all__ = ["Alerts"]

log = logging.getLogger(__name__)

KEEP = 500  # alerts kept for the API
BREACH_RECENT_MS = 300_000
IN_SNAPSHOT = 100  # of which the newest go into a live snapshot
REPEAT_WINDOW_MS = 60_000  # repeated SOS of one unit: at most one alert and note per window
PENDING = ""  # an SOS incident being created (waiting for the database)


def _last_fix(dev: DeviceLive | None, unit: UnitLive | None, now_ms: int, stale_after_ms: int) -> Fix | None:
    """The device's last fix if fresh, else its unit's if fresh, else the newer of the two (or None)."""
    fixes = [f for f in (dev.fix if dev else None, unit.fix if unit else None) if f is not None]
    fresh = [f for f in fixes if now_ms - f.ts <= stale_after_ms]
    if fresh:
        return fresh[0]
    return max(fixes, key=lambda f: f.ts) if fixes else None


def _coordinate(data: dict[str, Any], key: str, limit: float) -> float | None:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value) if -limit <= value <= limit else None


class Alerts:
    def __init__(self, incidents: IncidentCreator, live: LiveState, feed: LiveFeed, outbox: Outbox,
                 clock: Callable[[], int], *, policies: Mapping[str, Policy], sos_incident: bool = True,
                 sos_max_distance_m: float = 1000.0, max_shift_ms: int = 300_000, sos_category: str = "sos",
                 sos_priority: int = 1) -> None:
        self.incidents = incidents
        self.live = live
        self.feed = feed
        self.outbox = outbox
        self.clock = clock
        self.policies = policies
        self.sos_max_distance_m = sos_max_distance_m
        self.max_shift_ms = max_shift_ms
        self.sos_incident = sos_incident
        self.sos_category = sos_category
        self.sos_priority = sos_priority
        self.recent: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self.counts: Counter[str] = Counter()
        self._sos_incidents: dict[str, str] = {}  # unit_id -> its open SOS incident (PENDING: being created)
        self._repeats = Coalescer(REPEAT_WINDOW_MS)
        self._breached: set[tuple[str, str]] = set()  # (incident_id, milestone) already alerted
        self._ids = itertools.count(1)
        # Emitted after each new SOS with (device_id, unit_id, incident_id or None): the video desk's backhaul.
        self.sos_raised: AsyncSignal[[str, str | None, str | None]] = AsyncSignal("sos_raised")

    def raise_alert(self, kind: str, ts: int, text: str, **about: Any) -> dict[str, Any]:
        """Record and broadcast one alert; `about` names what it concerns (unit_id, incident_id, lat, ...)."""
        alert = {"id": f"A{self.clock()}-{next(self._ids)}", "kind": kind, "ts": ts, "text": text,
                 **{k: v for k, v in about.items() if v is not None}}
        self.recent.append(alert)
        self.counts[kind] += 1
        self.feed.post({"type": "alert", "alert": alert})
        return alert

    def snapshot_part(self, now_ms: int) -> dict[str, Any]:
        return {"alerts": list(self.recent)[-IN_SNAPSHOT:]}

    def list(self, limit: int) -> list[dict[str, Any]]:
        """Newest first."""
        return list(itertools.islice(reversed(self.recent), limit))

    def check_sla(self, now_ms: int) -> int:
        """Raise an alert for each response target newly missed by an open incident; returns how many."""
        raised = 0
        open_ids = set()
        for incident in self.incidents.open_incidents():
            open_ids.add(incident.id)
            c = incident.created
            policy = self.policies.get(c.policy) if c is not None and c.policy else None
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

    async def sos(self, device_id: str, event: Any, received_ms: int) -> None:
        incidents = self.incidents
        now = self.clock()
        dev = self.live.devices.get(device_id)
        unit_id = dev.unit_id if dev is not None else None
        unit = self.live.units.get(unit_id) if unit_id else None
        claimed = _coordinate(event.data, "lat", 90), _coordinate(event.data, "lon", 180)
        place = sos_place(*claimed, _last_fix(dev, unit, now, self.live.stale_after_ms), now,
                          self.live.stale_after_ms, self.sos_max_distance_m)
        lat, lon = place.lat, place.lon
        who = f"{device_id}" + (f" ({unit_id})" if unit_id else "")
        flag = ""
        if place.replaced:
            incidents.count("sos_position_replaced")
            flag = (f"; its reported position ({claimed[0]:.5f}, {claimed[1]:.5f}) lay {place.distance_m:.0f} m "
                    f"from its last fix: placed at the last fix")
            log.warning("SOS from %s: position %s replaced by the last fix (%.0f m away)", who, claimed,
                        place.distance_m)
        key = unit_id or device_id
        open_sos = self._sos_incidents.get(key)
        if open_sos is not None and (open_sos == PENDING or incidents.is_open(open_sos)):
            await self._again(key, who, device_id, unit_id, open_sos, event.ts, now, lat, lon, flag)
            return
        if not self.sos_incident or lat is None or lon is None:
            # No incident to gather repeats in: repeats within a window are counted into one alert.
            held = self._repeats.offer(key, now)
            if held is None:
                incidents.count("sos_repeat_coalesced")
                return
            more = f" ({held} more press(es) before)" if held else ""
            alert = self.raise_alert("sos", event.ts, f"SOS from {who}{more}{flag}", device_id=device_id,
                                     unit_id=unit_id, lat=lat, lon=lon, position_replaced=place.replaced or None)
            if self.sos_incident:
                log.warning("SOS from %s: no position known, so no incident was created (alert %s)", who,
                            alert["id"])
            await self.sos_raised.emit(device_id, unit_id, None)
            return
        self._repeats.forget(key)  # a new SOS incident: its first repeat is reported at once
        alert = self.raise_alert("sos", event.ts, f"SOS from {who}{flag}", device_id=device_id, unit_id=unit_id,
                                 lat=lat, lon=lon, position_replaced=place.replaced or None)
        received = sos_received_verdict(event.ts, received_ms, self.max_shift_ms)
        if received.reason is not None:
            incidents.count(received.reason)
            flag += f"; {received.detail}"
        body = {"category": self.sos_category, "priority": self.sos_priority, "lat": lat, "lon": lon,
                "summary": f"SOS 紧急求助 / emergency button: {who}", "address": "", "received_at": received.ts}
        self._sos_incidents[key] = PENDING  # repeats until it exists are counted, not new incidents

        async def create() -> None:
            try:
                view = await incidents.create(body, source="system", exclude_units=[unit_id] if unit_id else [])
            except StorageUnavailable:
                raise
            except Exception:
                self._sos_incidents.pop(key, None)
                raise
            incident_id = view["id"]
            self._sos_incidents[key] = incident_id
            alert["incident_id"] = incident_id
            self.feed.post({"type": "alert", "alert": alert})  # the same alert, now with its incident
            log.warning("SOS from %s: incident %s", who, incident_id)
            if flag:
                await incidents.record(incident_id, Noted(ts=self.clock(), source="device", unit_id=unit_id,
                                                    text=f"SOS from {who}{flag}"))
            await self.sos_raised.emit(device_id, unit_id, incident_id)

        # Refused (outbox full): the next SOS of this unit must create its incident, not count as a repeat.
        if not await self.outbox.run(f"sos:{key}", f"SOS incident for {who}", create,
                                    on_refused=lambda: self._sos_incidents.pop(key, None)):
            log.warning("SOS from %s: alert %s raised; its incident waits for the database", who, alert["id"])

    async def _again(self, key: str, who: str, device_id: str, unit_id: str | None, incident_id: str, ts: int,
                     now: int, lat: float | None, lon: float | None, flag: str) -> None:
        """SOS again while the unit's SOS incident is open: one alert and one note per unit per minute at most,
        the presses in between counted into the next one."""
        held = self._repeats.offer(key, now)
        if held is None:
            self.incidents.count("sos_repeat_coalesced")
            return
        more = f" ({held} more press(es) since the last report)" if held else ""
        self.raise_alert("sos", ts, f"SOS again from {who}{more}{flag}", device_id=device_id, unit_id=unit_id,
                         incident_id=incident_id or None, lat=lat, lon=lon)
        if incident_id != PENDING:
            await self.incidents.record(incident_id, Noted(ts=now, source="device", unit_id=None,
                                                     text=f"SOS pressed again on {who} at {ts}{more}{flag}"))

    async def flush_repeats(self, now_ms: int) -> None:
        """Presses held back once a flood stopped: reported when their window is over."""
        for key, held in self._repeats.due(now_ms):
            incident_id = self._sos_incidents.get(key)
            text = f"SOS pressed {held} more time(s) on {key} within {REPEAT_WINDOW_MS // 1000} s"
            self.raise_alert("sos", now_ms, text, unit_id=key, incident_id=incident_id or None)
            if incident_id and self.incidents.is_open(incident_id):
                await self.incidents.record(incident_id, Noted(ts=now_ms, source="device", text=text))
