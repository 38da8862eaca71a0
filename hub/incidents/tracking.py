"""Following dispatched units: the ingest listener, the detectors, and the worker that records milestones.

The listener runs inside the pipeline's synchronous stage, so it only looks up whether a message
concerns a response (an ack of a pending command, a contact, an SOS, fixes of a tracked unit) and
queues it; one worker task turns the queue into incident events through the incident log.
Detectors run on device time (SPEC 1), so a store-and-forward batch that arrives late gives the
same milestones as live data; they never answer with a time before the dispatch (fixes before it are
not read). What a device claims goes through `hub.domain.device_claims` first: a contact before the
call or the dispatch, or a second contact, is ignored; a detected departure or arrival may move an
earlier one back by at most `milestone_max_shift_s` (a late batch), never more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from devices.payloads import Fix
from devices.tasks import cancel_and_wait
from hub.domain.arrival import ArrivalDetector
from hub.domain.departure import DepartureDetector
from hub.domain.device_claims import contact_verdict, detected_verdict
from hub.domain.events import Arrived, Contacted, Departed, Event
from hub.domain.hover import HoverArrivalDetector
from hub.domain.incident import Incident
from hub.incidents.alerts import Alerts
from hub.incidents.escalation import AckFollowUp
from hub.incidents.fleet import Fleet
from hub.incidents.ports import IncidentLog
from hub.ingest.live import LiveState
from hub.ingest.pipeline import Message

__all__ = ["QUEUE_LIMIT", "ResponseTracker", "Tracking"]

log = logging.getLogger(__name__)

QUEUE_LIMIT = 100_000
CATCH_UP_ROWS = 200_000

# The stored fixes of devices between two times, at most so many rows (`Database.track`).
TrackReader = Callable[[list[str], int, int, int], Awaitable[list[dict[str, Any]]]]


@dataclass
class Tracking:
    """Detectors following one dispatched unit towards one incident."""

    incident_id: str
    since: int  # dispatch time
    departure: DepartureDetector
    arrival: ArrivalDetector | HoverArrivalDetector  # a drone arrives by hovering over the scene


class ResponseTracker:
    def __init__(self, incidents: IncidentLog, live: LiveState, fleet: Fleet, follow_up: AckFollowUp, alerts: Alerts,
                 read_track: TrackReader, clock: Callable[[], int], *, max_shift_ms: int) -> None:
        self.incidents = incidents
        self.live = live
        self.fleet = fleet
        self.follow_up = follow_up
        self.alerts = alerts
        self.read_track = read_track
        self.clock = clock
        self.max_shift_ms = max_shift_ms
        self.units: dict[str, Tracking] = {}  # unit_id -> its detectors, while it responds
        self.dropped = 0  # messages lost to a full queue (logged and counted, never silent)
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._task = asyncio.create_task(self._work(), name="response-tracker")

    async def stop(self) -> None:
        """Process what the listener queued (the pipeline has drained before), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._queue.join(), 10)
        await cancel_and_wait(self._task)
        self._task = None

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    # ------------------------------------------------------------- tracking
    def track(self, unit_id: str, incident_id: str, since: int, origin: Fix | None, lat: float, lon: float,
              radius_m: float, *, aerial_min_alt_m: float | None = None) -> None:
        """Follow the unit from its dispatch at `since`; `origin` is where it was then (None: not known).

        With `aerial_min_alt_m` the unit is a drone: it arrives when it hovers in the zone at least that
        high above home (seconds), not by the ground rule's stop or dwell (a minute).
        """
        arrival: ArrivalDetector | HoverArrivalDetector
        if aerial_min_alt_m is None:
            arrival = ArrivalDetector(lat, lon, radius_m, since_ms=since)
        else:
            arrival = HoverArrivalDetector(lat, lon, radius_m, since_ms=since, min_alt_m=aerial_min_alt_m)
        self.units[unit_id] = Tracking(
            incident_id, since,
            DepartureDetector(origin.lat if origin else None, origin.lon if origin else None, since), arrival)

    def untrack(self, unit_id: str, incident_id: str) -> None:
        t = self.units.get(unit_id)
        if t is not None and t.incident_id == incident_id:
            del self.units[unit_id]

    def busy_with(self, unit_id: str) -> str | None:
        t = self.units.get(unit_id)
        return t.incident_id if t is not None else None

    async def catch_up(self) -> None:
        """Feed every tracked unit the fixes stored since its dispatch (the hub was down meanwhile)."""
        for unit_id, tracking in list(self.units.items()):
            unit = self.live.units.get(unit_id)
            if unit is None or not unit.devices:
                continue
            rows = await self.read_track(unit.devices, tracking.since, self.clock() + 60_000, CATCH_UP_ROWS)
            fixes = [Fix(ts=r["ts"], lat=r["lat"], lon=r["lon"], alt=r["alt"], acc=r["acc"], speed=r["speed"],
                         heading=r["heading"]) for r in rows]
            if fixes:
                await self._detect(unit_id, fixes)

    # ------------------------------------------------------------- listener
    def on_message(self, m: Message) -> None:
        """Pipeline listener: cheap look-ups only; the work goes to the queue."""
        try:
            if m.event is not None:
                kind = m.event.type
                if kind == "ack" and self.follow_up.awaits_ack(m.event.data.get("cmd_id")):
                    self._queue.put_nowait(("ack", (m.device_id, m.event, m.received_ms)))
                elif kind == "contact" or kind == "sos":
                    self._queue.put_nowait((kind, (m.device_id, m.event, m.received_ms)))
            if m.fixes or m.status is not None:
                dev = self.live.devices.get(m.device_id)
                unit_id = dev.unit_id if dev is not None else None
                if unit_id is None:
                    return
                self.fleet.observe(unit_id, m.fixes, m.status is not None)
                if m.fixes and unit_id in self.units:
                    self._queue.put_nowait(("fixes", (unit_id, m.fixes)))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("response queue full (%d): a dispatch-related message was dropped", self._queue.qsize())

    async def _work(self) -> None:
        while True:
            kind, item = await self._queue.get()
            try:
                if kind == "ack":
                    await self.follow_up.on_ack(*item)
                elif kind == "contact":
                    await self._on_contact(*item)
                elif kind == "sos":
                    await self.alerts.sos(*item)
                else:
                    await self._detect(*item)
            except Exception:
                log.exception("response worker failed on a %s message", kind)
            finally:
                self._queue.task_done()

    async def _on_contact(self, device_id: str, event: Any, received_ms: int) -> None:
        incidents = self.incidents
        incident_id = event.data.get("incident_id")
        dev = self.live.devices.get(device_id)
        if not isinstance(incident_id, str) or dev is None or dev.unit_id is None:
            incidents.count("contact_without_incident_or_unit")
            log.info("contact from %s without an incident id or a unit: ignored", device_id)
            return
        if not incidents.is_open(incident_id):
            incidents.count("contact_incident_not_open")
            log.info("contact from %s for incident %s, which is not open here: dropped", device_id, incident_id[:80])
            return
        unit_id = dev.unit_id

        def decide(incident: Incident) -> list[Event]:
            return incidents.verdict_events(contact_verdict(incident, unit_id, event.ts), incident, unit_id,
                                      f"{device_id}: ", lambda ts: Contacted(ts=ts, source="device", unit_id=unit_id))

        await incidents.claim(incident_id, f"contact from {device_id}", decide)

    async def _detect(self, unit_id: str, fixes: list[Fix]) -> None:
        tracking = self.units.get(unit_id)
        if tracking is None:
            return
        departed = tracking.departure.add(fixes)
        arrived = tracking.arrival.add(fixes)
        incidents, incident_id = self.incidents, tracking.incident_id
        if departed is not None:
            event: Departed | Arrived = Departed(ts=departed.ts, source="motion", unit_id=unit_id)
            await incidents.claim(incident_id, f"departure of {unit_id}", self._detected(event))
        if arrived is not None:
            first = False

            def decide(incident: Incident) -> list[Event]:
                nonlocal first
                a = incident.assignment(unit_id)
                first = a is not None and "arrived" not in a.marks  # a late batch may move it earlier
                return self._detected(Arrived(ts=arrived.ts, source="geofence", unit_id=unit_id))(incident)

            async def on_scene(incident: Incident) -> None:
                if first and incidents.has_mark(incident_id, unit_id, "arrived"):
                    await self.follow_up.video_start(incident_id, unit_id)

            await incidents.claim(incident_id, f"arrival of {unit_id}", decide, on_scene)

    def _detected(self, event: Departed | Arrived) -> Callable[[Incident], list[Event]]:
        def decide(incident: Incident) -> list[Event]:
            verdict = detected_verdict(incident.assignment(str(event.unit_id)), event.type, event.ts,
                                       self.max_shift_ms)
            return self.incidents.verdict_events(verdict, incident, event.unit_id, "", lambda _: event,
                                                 source=event.source)
        return decide
