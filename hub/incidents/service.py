"""The incident service: the pure incident core wired to storage, MQTT, the live picture and the feed.

Every change is a list of domain events, first checked on a copy of the incident (`Incident.apply`
refuses an illegal one and nothing changes), then appended to the incident log in PostgreSQL with
the version the copy was built on, and only then made the current state. Open incidents are rebuilt
from the log on start-up. This service is the one owner of the incidents and their log; around it,
each with one job and each seeing it only through :mod:`hub.incidents.ports`: `Assignments` (dispatch,
reassign, release, divert, close), `AckFollowUp` (acks, re-send, escalate, video_start), `Alerts` (SOS,
SLA breaches), `ResponseTracker` (the ingest listener and the detectors), `Fleet` (the recommender kept in
step with the live picture) and the 12345 hand-over of diverted incidents.

What devices report goes through `record`/`claim`: the hub's rules (`hub.domain.device_claims`) decide
what a device may change, every claim ignored or corrected is counted by reason in `ignored`, logged,
and noted in the incident (at most `DEVICE_NOTE_CAP` device notes each, see `DeviceClaims`); a write that
meets a database outage waits in the `Outbox` and is made, in order, when the database is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

from devices import topics
from hub.domain.compliance import response_times
from hub.domain.device_claims import Verdict
from hub.domain.dispatch import Recommender
from hub.domain.errors import DomainError, IllegalTransition
from hub.domain.events import Arrived, Contacted, Created, Event, Noted, Supported
from hub.domain.incident import Incident
from hub.errors import IncidentConflict, IncidentError, IncidentInvalid, IncidentNotFound
from hub.incidents.alerts import Alerts
from hub.incidents.assignments import Assignments
from hub.incidents.claims import DeviceClaims
from hub.incidents.config import IncidentConfig, ResponseOptions
from hub.incidents.escalation import AckFollowUp
from hub.incidents.fleet import Fleet
from hub.incidents.hotline import HotlineHandOver
from hub.incidents.tracking import ResponseTracker
from hub.ingest.feed import LiveFeed
from hub.ingest.live import LiveState
from hub.storage.audit import HUB_ACTOR, AuditRecorder
from hub.storage.incidents import IncidentStore, summary_of
from hub.storage.outbox import Outbox

__all__ = ["IncidentConflict", "IncidentError", "IncidentInvalid", "IncidentNotFound", "IncidentService"]

log = logging.getLogger(__name__)

LIVE_LOG_ENTRIES = 30  # log entries an incident carries on the live feed (the panel shows as many)


class IncidentService:
    def __init__(self, store: IncidentStore, live: LiveState, feed: LiveFeed, publish: Callable[[str, bytes], None],
                 clock: Callable[[], int], *, config: IncidentConfig | None = None,
                 options: ResponseOptions | None = None, recommender: Recommender | None = None,
                 hotline: HotlineHandOver | None = None) -> None:
        config = config or IncidentConfig()
        o = options or ResponseOptions()
        self.store = store
        self.live = live
        self.feed = feed
        self.publish = publish
        self.clock = clock
        self.rules = config.rules
        self.policies = config.policies
        self.categories = config.categories
        self.auto_dispatch_priority = o.auto_dispatch_priority
        self.video_token_ttl_ms = int(o.video_token_ttl_s * 1000)
        self.max_shift_ms = int(o.milestone_max_shift_s * 1000)
        self.hotline = hotline
        self.audit: AuditRecorder | None = None  # set by the composition root; what the hub decides itself is audited
        self.outbox = Outbox()
        self.claims = DeviceClaims(clock)
        self.fleet = Fleet(live, recommender)
        self.alerts = Alerts(self, live, feed, self.outbox, clock, policies=self.policies,
                             sos_incident=o.sos_incident, sos_max_distance_m=o.sos_max_distance_m,
                             max_shift_ms=self.max_shift_ms)
        self.follow_up = AckFollowUp(self, self, self.alerts, live, self.send, clock, ack_timeout_s=o.ack_timeout_s,
                                     ack_resends=o.ack_resends, public_base_url=o.public_base_url,
                                     video_token_ttl_ms=self.video_token_ttl_ms)
        self.tracker = ResponseTracker(self, live, self.fleet, self.follow_up, self.alerts, store.db.track, clock,
                                       max_shift_ms=self.max_shift_ms)
        self.assignments = Assignments(self, live, self.fleet, self.tracker, self.follow_up, self.send, clock,
                                       hotline=hotline, aerial_min_alt_m=o.aerial_min_alt_m)
        # Announcements of the assignments, connected by the composition root.
        self.unit_released = self.assignments.unit_released
        self.closing = self.assignments.closing
        self._refused = 0  # device/detector events the state machine refused (logged, dropped)
        self._incidents: dict[str, tuple[Incident, int]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def recommender(self) -> Recommender:
        return self.fleet.recommender

    @property
    def refused(self) -> int:
        """Device, detector and escalation events the incidents refused (logged, dropped)."""
        return self._refused + self.follow_up.refused

    @property
    def ignored(self) -> Counter[str]:
        return self.claims.ignored

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Rebuild open incidents from the log, re-arm acks, detectors and hand-overs, start the workers."""
        for incident_id, events in (await self.store.load_open()).items():
            incident = Incident.replay(incident_id, events)
            self._incidents[incident_id] = (incident, len(events))
            self.assignments.rearm(incident)
        await self.tracker.catch_up()
        self.outbox.start()
        self.tracker.start()
        self.follow_up.start()

    async def stop(self) -> None:
        await self.follow_up.stop()
        await self.tracker.stop()
        await self.outbox.stop()

    # ---------------------------------------------------------------- reads
    async def get(self, incident_id: str) -> dict[str, Any]:
        return self.view(await self.incident(incident_id, keep=False))

    def view(self, incident: Incident, *, log_limit: int | None = None) -> dict[str, Any]:
        return incident.view(self.clock(), self.policies, log_limit=log_limit)

    async def list_incidents(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        rows = await self.store.list(status, limit)
        return [{"id": r.pop("incident_id"), **r} for r in rows]

    async def report(self, from_ms: int, to_ms: int, group_by: str) -> dict[str, Any]:
        now = self.clock()
        logs = await self.store.incidents_received_between(from_ms, to_ms)
        views = [Incident.replay(i, events).view(now, self.policies) for i, events in logs.items()]
        report = response_times(views, now_ms=now, group_by=group_by, policies=self.policies)
        return {"from": from_ms, "to": to_ms, **report.to_dict()}

    def is_open(self, incident_id: str) -> bool:
        held = self._incidents.get(incident_id)
        return held is not None and held[0].closed is None

    def has_mark(self, incident_id: str, unit_id: str, milestone: str) -> bool:
        held = self._incidents.get(incident_id)
        a = held[0].assignment(unit_id) if held is not None else None
        return a is not None and milestone in a.marks

    def assigned_to(self, unit_id: str) -> str | None:
        """The incident the unit is actively assigned to, if any."""
        return self.assignments.assigned_to(unit_id)

    def awaits_ack(self, cmd_id: object) -> bool:
        return self.follow_up.awaits_ack(cmd_id)

    def open_incidents(self) -> Iterator[Incident]:
        return (i for i, _ in self._incidents.values() if i.closed is None)

    def current(self, incident_id: str) -> Incident | None:
        """The incident as held in memory (open ones and recently read ones), without a database read."""
        held = self._incidents.get(incident_id)
        return held[0] if held is not None else None

    def snapshot_part(self, now_ms: int) -> dict[str, Any]:
        return {"incidents": [i.view(now_ms, self.policies, log_limit=LIVE_LOG_ENTRIES)
                              for i in self.open_incidents()]}

    # --------------------------------------------------------------- writes
    async def create(self, body: Mapping[str, Any], *, source: str = "api",
                     exclude_units: Collection[str] = ()) -> dict[str, Any]:
        explicit = body.get("policy")
        if explicit is not None and explicit not in self.policies:
            raise IncidentInvalid(f"policy: unknown policy {explicit!r} (known: {', '.join(sorted(self.policies))})")
        now = self.clock()
        category, priority = body["category"], body["priority"]
        radius = body.get("arrival_radius_m") or self.categories.arrival_radius_m(category)
        policy = self.rules.select(category, priority, explicit)
        try:
            created = Created(ts=now, source=source, category=category, priority=priority, lat=body["lat"],
                              lon=body["lon"], address=body.get("address") or "", summary=body.get("summary") or "",
                              received_at=body.get("received_at"), policy=policy,
                              arrival_radius_m=float(radius))
        except DomainError as exc:
            raise IncidentInvalid(exc.reason) from exc
        incident_id = await self.store.next_id(now_ms=now)
        async with self._lock(incident_id):
            incident = Incident(incident_id)
            incident.apply(created)
            self._incidents[incident_id] = (incident, await self.store.append(incident_id, 0, [created],
                                                                               summary_of(incident)))
        self._changed(incident)
        divert = body.get("divert")
        if divert or (divert is None and self.categories.diverts(category)):
            why = "by the dispatcher" if divert else f"category {category!r} is non-emergency/non-police (rule)"
            return await self.divert(incident_id, why, source=source)
        if priority <= self.auto_dispatch_priority:
            async def auto() -> None:
                try:
                    await self.auto_dispatch(incident_id, 1, exclude=exclude_units, source="system")
                except IncidentConflict as exc:
                    await self.record(incident_id, Noted(ts=self.clock(), source="system",
                                                         text=f"auto-dispatch (priority {priority}): {exc}"))
            # The incident is written; a database gone since must not lose its dispatch.
            await self.outbox.run(incident_id, f"auto-dispatch of {incident_id}", auto)
        return await self.get(incident_id)

    async def add_event(self, incident_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        kind, unit_id = body["type"], body.get("unit_id")
        ts = body.get("ts") or self.clock()
        try:
            event: Event
            if kind == "contacted":
                event = Contacted(ts=ts, source="manual", unit_id=unit_id)
            elif kind == "supported":
                event = Supported(ts=ts, source="manual", unit_id=unit_id)
            elif kind == "arrived":
                event = Arrived(ts=ts, source="manual", unit_id=unit_id)
            else:
                event = Noted(ts=ts, source="manual", unit_id=unit_id, text=body.get("text") or "")
        except DomainError as exc:
            raise IncidentInvalid(exc.reason) from exc
        incident = await self.commit(incident_id, [event])
        return incident.view(self.clock(), self.policies)

    async def close(self, incident_id: str, reason: str = "") -> dict[str, Any]:
        incident = await self.assignments.close(incident_id, reason)
        self._incidents.pop(incident_id, None)  # closed: read from the log from now on
        self._locks.pop(incident_id, None)
        return self.view(incident)

    # The assignments' own operations, as the routes, the drones and the hotline call them.
    async def dispatch(self, incident_id: str, unit_ids: Sequence[str], *, source: str = "api",
                       aerial: bool = False) -> dict[str, Any]:
        return await self.assignments.dispatch(incident_id, unit_ids, source=source, aerial=aerial)

    async def auto_dispatch(self, incident_id: str, count: int, *, exclude: Collection[str] = (),
                            source: str = "api") -> dict[str, Any]:
        return await self.assignments.auto_dispatch(incident_id, count, exclude=exclude, source=source)

    def recommend(self, incident: Incident, count: int) -> list[dict[str, Any]]:
        return self.assignments.recommend(incident, count)

    async def recommendations(self, incident_id: str, count: int) -> dict[str, Any]:
        return {"incident_id": incident_id, "recommendations": self.recommend(await self.incident(incident_id), count)}

    async def cancel(self, incident_id: str, unit_id: str, reason: str, *, source: str = "api") -> dict[str, Any]:
        return await self.assignments.cancel(incident_id, unit_id, reason, source=source)

    async def reassign(self, incident_id: str, from_unit: str, to_unit: str | None, reason: str, *,
                       source: str = "api", escalated: bool = False) -> dict[str, Any]:
        return await self.assignments.reassign(incident_id, from_unit, to_unit, reason, source=source,
                                               escalated=escalated)

    async def divert(self, incident_id: str, reason: str, *, source: str = "api") -> dict[str, Any]:
        return await self.assignments.divert(incident_id, reason, source=source)

    async def handed_over(self, incident_id: str, accepted_at: int, ref: str) -> None:
        await self.assignments.handed_over(incident_id, accepted_at, ref)

    def has_handed_over(self, incident_id: str) -> bool:
        return self.assignments.has_handed_over(incident_id)

    # ------------------------------------------------------ device messages
    def count(self, reason: str) -> None:
        self.claims.count(reason)

    def verdict_events(self, verdict: Verdict, incident: Incident, unit_id: str | None, prefix: str,
                       make: Callable[[int], Event], *, source: str = "device") -> list[Event]:
        return self.claims.verdict_events(verdict, incident, unit_id, prefix, make, source=source)

    async def refuse_claim(self, reason: str, incident_id: str, unit_id: str | None, detail: str) -> None:
        """A device claim ignored: counted, logged and noted in the incident (bounded, see `claim`)."""
        await self.claim(incident_id, f"note ({reason})",
                         lambda incident: self.claims.ignored_note(reason, incident.id, unit_id, detail))

    async def record(self, incident_id: str, *events: Event) -> Incident | None:
        """Commit device/detector/system events; a refused one is logged, counted and dropped. While the
        database is down they wait in the outbox (None is returned)."""
        return await self.claim(incident_id, "+".join(e.type for e in events), lambda _: list(events))

    async def claim(self, incident_id: str, what: str, decide: Callable[[Incident], Sequence[Event]],
                    then: Callable[[Incident], Awaitable[None]] | None = None) -> Incident | None:
        """Commit what `decide` makes of the incident as it is when the write happens (now, or after an outage).

        Notes from devices beyond `DEVICE_NOTE_CAP` per incident are counted (`device_note_capped`), not written."""
        done: list[Incident] = []

        async def job() -> None:
            try:
                incident = await self.incident(incident_id)
                events = self.claims.capped(incident, decide(incident))
                if not events:
                    return
                done.append(await self.commit(incident_id, events))
            except (IncidentError, DomainError) as exc:
                self._refused += 1
                log.info("incident %s: %s refused: %s", incident_id, what, exc)
                return
            if then is not None:
                try:  # it must not fail the written job: the outbox would write it again
                    await then(done[0])
                except Exception:
                    log.exception("incident %s: follow-up of %s failed", incident_id, what)

        await self.outbox.run(incident_id, f"{what} on incident {incident_id}", job)
        return done[0] if done else None

    def send(self, cmd_id: str, devices: Sequence[str], raw: bytes) -> None:
        for device_id in devices:
            try:
                self.publish(topics.device_topic(device_id, "cmd"), raw)
            except Exception:
                log.exception("command %s to device %s not published", cmd_id, device_id)

    # ------------------------------------------------------------ the log
    async def audit_act(self, action: str, incident_id: str, detail: dict[str, object]) -> None:
        """Audit what the hub did by itself (actor `hub`). The act is done: a failure here is logged, not raised
        (an outage does not fail it: the audit log waits in the outbox)."""
        if self.audit is None:
            return
        try:
            await self.audit.record(HUB_ACTOR, action, incident_id, detail)
        except Exception:
            log.exception("incident %s: audit of %s failed: %s", incident_id, action, detail)

    def _lock(self, incident_id: str) -> asyncio.Lock:
        lock = self._locks.get(incident_id)
        if lock is None:
            lock = self._locks[incident_id] = asyncio.Lock()
        return lock

    async def incident(self, incident_id: str, *, keep: bool = True) -> Incident:
        """The incident held in memory, else replayed from its log (and held from now on, with `keep`)."""
        held = self._incidents.get(incident_id)
        if held is not None:
            return held[0]
        events = await self.store.load(incident_id)
        if not events:
            raise IncidentNotFound(f"incident {incident_id} does not exist")
        incident = Incident.replay(incident_id, events)
        if keep:
            self._incidents[incident_id] = (incident, len(events))
        return incident

    async def commit(self, incident_id: str, events: Sequence[Event]) -> Incident:
        """Check `events` on a copy, append them to the log, then make the copy current."""
        async with self._lock(incident_id):
            await self.incident(incident_id)
            current, version = self._incidents[incident_id]
            trial = Incident.replay(incident_id, current.log)
            try:
                for event in events:
                    trial.apply(event)
            except IllegalTransition as exc:
                raise IncidentConflict(exc.reason) from exc
            version = await self.store.append(incident_id, version, events, summary_of(trial))
            self._incidents[incident_id] = (trial, version)
        self._changed(trial)
        for event in events:
            self._follow_status(trial, event.unit_id)
        return trial

    def _changed(self, incident: Incident) -> None:
        """The live feed gets the incident's latest state once per frame, with the newest log entries only
        (`log_size` says how many there are; GET /api/v1/incidents/{id} has them all)."""
        self.feed.post_latest(f"incident:{incident.id}", lambda: {
            "type": "incident", "incident": incident.view(self.clock(), self.policies, log_limit=LIVE_LOG_ENTRIES)})

    def _follow_status(self, incident: Incident, unit_id: str | None) -> None:
        """The unit's live status follows its active assignment (whatever order the milestones came in)."""
        a = incident.assignment(unit_id) if unit_id is not None else None
        if a is None or not a.active:
            return
        self.fleet.set_status(a.unit_id, a.unit_status.value)
        if "acknowledged" in a.marks and a.cmd_id:
            self.follow_up.settled(a.cmd_id)
