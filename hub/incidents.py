"""The incident service: the pure incident core wired to storage, MQTT, the live picture and the feed.

Every change is a list of domain events, first checked on a copy of the incident (`Incident.apply`
refuses an illegal one and nothing changes), then appended to the incident log in PostgreSQL with
the version the copy was built on, and only then made the current state. Open incidents are rebuilt
from the log on start-up.

The pipeline listener runs inside the ingest's synchronous stage, so it only looks up whether a
message concerns a dispatch (an ack, a contact, fixes of a dispatched unit) and queues it; one
worker task turns the queue into events. Detected milestones keep device time and their source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from devices import topics
from devices.payloads import Fix, encode_command
from hub.domain.arrival import ArrivalDetector
from hub.domain.compliance import response_times
from hub.domain.departure import DepartureDetector
from hub.domain.dispatch import Candidate, Recommender
from hub.domain.errors import DomainError, IllegalTransition
from hub.domain.events import (
    Acknowledged,
    Arrived,
    Closed,
    Contacted,
    Created,
    Departed,
    Dispatched,
    Event,
    Noted,
    Supported,
)
from hub.domain.incident import Incident
from hub.domain.sla import BUILTIN_POLICIES, DEFAULT_RULES, Policy, PolicyRules
from hub.errors import HubError
from hub.escalation import AckFollowUp, AckWatch, dispatch_command, new_cmd_id
from hub.feed import LiveFeed
from hub.live import LiveState, UnitLive
from hub.pipeline import Message
from hub.storage.incidents import IncidentStore, summary_of

__all__ = ["IncidentConflict", "IncidentError", "IncidentInvalid", "IncidentNotFound", "IncidentService"]

log = logging.getLogger(__name__)

ARRIVAL_RADIUS_M = 100.0
QUEUE_LIMIT = 100_000


class IncidentError(HubError):
    """Base of the service's errors; the API maps each subclass to a 4xx status."""


class IncidentNotFound(IncidentError):
    pass


class IncidentInvalid(IncidentError):
    pass


class IncidentConflict(IncidentError):
    pass


@dataclass
class _Tracking:
    """Detectors following one dispatched unit towards one incident."""

    incident_id: str
    since: int  # dispatch time
    departure: DepartureDetector
    arrival: ArrivalDetector


class IncidentService:
    def __init__(self, store: IncidentStore, live: LiveState, feed: LiveFeed, publish: Callable[[str, bytes], None],
                 clock: Callable[[], int], *, rules: PolicyRules = DEFAULT_RULES,
                 policies: Mapping[str, Policy] = BUILTIN_POLICIES, recommender: Recommender | None = None,
                 ack_timeout_s: float = 15.0, ack_resends: int = 1, auto_dispatch_priority: int = 1,
                 public_base_url: str = "http://127.0.0.1:8000", video_token_ttl_s: float = 300.0) -> None:
        self.store = store
        self.live = live
        self.feed = feed
        self.publish = publish
        self.clock = clock
        self.rules = rules
        self.policies = policies
        self.recommender = recommender or Recommender()
        self.refused = 0  # device/detector events the state machine refused (logged, dropped)
        self._incidents: dict[str, tuple[Incident, int]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: dict[str, tuple[str, str]] = {}  # cmd_id -> (incident_id, unit_id), until acknowledged
        self._tracking: dict[str, _Tracking] = {}  # unit_id -> detectors
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        self._task: asyncio.Task[None] | None = None
        # Commands waiting for an ack: re-sent, then escalated (dispatch) or noted (video_start).
        self.ack_timeout_s = ack_timeout_s
        self.ack_resends = ack_resends
        self._watch = AckWatch(int(ack_timeout_s * 1000), ack_resends)
        self._check_interval_s = max(0.05, min(1.0, ack_timeout_s / 4))
        self._checker: asyncio.Task[None] | None = None
        self.auto_dispatch_priority = auto_dispatch_priority
        self.public_base_url = public_base_url
        self.video_token_ttl_ms = int(video_token_ttl_s * 1000)
        self._video: dict[str, tuple[str, str, str]] = {}  # video_start cmd_id -> (incident_id, unit_id, device)
        self.follow_up = AckFollowUp(self)
        # The recommender is kept in sync incrementally (see `_sync_recommender`): the UnitLive object and status
        # each unit was last synced from, units whose online flag may have changed, units synced as offline.
        self._synced: dict[str, tuple[UnitLive, str]] = {}
        self._resync: set[str] = set()
        self._synced_offline: set[str] = set()

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Rebuild open incidents from the log, re-arm acks and detectors, start the worker."""
        for incident_id, events in (await self.store.load_open()).items():
            incident = Incident.replay(incident_id, events)
            self._incidents[incident_id] = (incident, len(events))
            self._rearm(incident)
        for unit_id, tracking in self._tracking.items():
            await self._catch_up(unit_id, tracking)
        self._task = asyncio.create_task(self._work(), name="incident-service")
        self._checker = asyncio.create_task(self.follow_up.run(self._check_interval_s), name="incident-ack-check")

    async def stop(self) -> None:
        """Process what the listener queued (the pipeline has drained before), then stop."""
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
            self._checker = None
        if self._task is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._queue.join(), 10)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def _rearm(self, incident: Incident) -> None:
        c = incident.created
        assert c is not None
        for a in incident.active_assignments():
            if a.cmd_id and "acknowledged" not in a.marks:
                self._pending[a.cmd_id] = (incident.id, a.unit_id)
                unit = self.live.units.get(a.unit_id)
                raw = encode_command(dispatch_command(incident, a.cmd_id, a.marks["dispatched"].ts))
                self._watch.add(a.cmd_id, "dispatch", incident.id, a.unit_id, unit.devices if unit else [], raw,
                                self.clock())
            since = a.marks["dispatched"].ts
            if a.unit_id in self.live.units:
                self.live.set_unit_status(a.unit_id, a.unit_status.value)
            if "arrived" not in a.marks:
                # The position at dispatch is not in the log: the detector takes the first fix since dispatch.
                self._tracking[a.unit_id] = _Tracking(
                    incident.id, since, DepartureDetector(None, None, since),
                    ArrivalDetector(c.lat, c.lon, ARRIVAL_RADIUS_M, since_ms=since))

    async def _catch_up(self, unit_id: str, tracking: _Tracking) -> None:
        """Feed the fixes stored since dispatch (the hub was down or restarting meanwhile)."""
        unit = self.live.units.get(unit_id)
        if unit is None or not unit.devices:
            return
        rows = await self.store.db.track(unit.devices, tracking.since, self.clock() + 60_000, 200_000)
        fixes = [Fix(ts=r["ts"], lat=r["lat"], lon=r["lon"], acc=r["acc"], speed=r["speed"], heading=r["heading"])
                 for r in rows]
        if fixes:
            await self._detect(unit_id, fixes)

    # ---------------------------------------------------------------- reads
    async def get(self, incident_id: str) -> dict[str, Any]:
        held = self._incidents.get(incident_id)
        if held is not None:
            return held[0].view(self.clock(), self.policies)
        events = await self.store.load(incident_id)
        if not events:
            raise IncidentNotFound(f"incident {incident_id} does not exist")
        return Incident.replay(incident_id, events).view(self.clock(), self.policies)

    async def list_incidents(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        rows = await self.store.list(status, limit)
        return [{"id": r.pop("incident_id"), **r} for r in rows]

    async def report(self, from_ms: int, to_ms: int, group_by: str) -> dict[str, Any]:
        now = self.clock()
        logs = await self.store.incidents_received_between(from_ms, to_ms)
        views = [Incident.replay(i, events).view(now, self.policies) for i, events in logs.items()]
        report = response_times(views, now_ms=now, group_by=group_by, policies=self.policies)
        return {"from": from_ms, "to": to_ms, **report.to_dict()}

    # --------------------------------------------------------------- writes
    async def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        explicit = body.get("policy")
        if explicit is not None and explicit not in self.policies:
            raise IncidentInvalid(f"policy: unknown policy {explicit!r} (known: {', '.join(sorted(self.policies))})")
        now = self.clock()
        policy = self.rules.select(body["category"], body["priority"], explicit)
        try:
            created = Created(ts=now, source="api", category=body["category"], priority=body["priority"],
                              lat=body["lat"], lon=body["lon"], address=body.get("address") or "",
                              summary=body.get("summary") or "", received_at=body.get("received_at"), policy=policy)
        except DomainError as exc:
            raise IncidentInvalid(exc.reason) from exc
        incident_id = await self.store.next_id(now_ms=now)
        async with self._lock(incident_id):
            incident = Incident(incident_id)
            incident.apply(created)
            version = await self.store.append(incident_id, 0, [created], summary_of(incident))
            self._incidents[incident_id] = (incident, version)
        view = self._changed(incident)
        if created.priority <= self.auto_dispatch_priority:
            try:
                await self.auto_dispatch(incident_id, 1)
            except IncidentConflict as exc:
                await self._try(incident_id, Noted(ts=self.clock(), source="system",
                                                   text=f"auto-dispatch (priority {created.priority}): {exc}"))
            view = (await self._incident(incident_id)).view(self.clock(), self.policies)
        return view

    async def dispatch(self, incident_id: str, unit_ids: Sequence[str], *, source: str = "api") -> dict[str, Any]:
        if not unit_ids:
            raise IncidentInvalid("unit_ids: at least one unit is needed")
        if len(set(unit_ids)) != len(unit_ids):
            raise IncidentInvalid("unit_ids: the same unit is listed twice")
        for unit_id in unit_ids:
            unit = self.live.units.get(unit_id)
            if unit is None:
                raise IncidentNotFound(f"unit {unit_id} does not exist")
            busy = self._tracking.get(unit_id)
            if busy is not None and busy.incident_id != incident_id:
                raise IncidentConflict(f"unit {unit_id} is {unit.status} on incident {busy.incident_id}")
        now = self.clock()
        events: list[Event] = [Dispatched(ts=now, source=source, unit_id=u, cmd_id=new_cmd_id("d"))
                               for u in unit_ids]
        incident = await self._commit(incident_id, events)
        c = incident.created
        assert c is not None
        for event in events:
            assert isinstance(event, Dispatched) and event.unit_id is not None and event.cmd_id is not None
            unit = self.live.units[event.unit_id]
            self._pending[event.cmd_id] = (incident_id, event.unit_id)
            origin = unit.fix
            self._tracking[event.unit_id] = _Tracking(
                incident_id, event.ts,
                DepartureDetector(origin.lat if origin else None, origin.lon if origin else None, event.ts),
                ArrivalDetector(c.lat, c.lon, ARRIVAL_RADIUS_M, since_ms=event.ts))
            raw = encode_command(dispatch_command(incident, event.cmd_id, event.ts))
            self._watch.add(event.cmd_id, "dispatch", incident_id, event.unit_id, unit.devices, raw, event.ts)
            self._send(event.cmd_id, unit.devices, raw)  # a failed publish is retried by the re-send
            self.live.set_unit_status(event.unit_id, "dispatched")
            if event.unit_id in self.recommender:
                self.recommender.set_status(event.unit_id, "dispatched")
        return {"incident_id": incident_id,
                "assignments": [a.to_dict() for a in incident.assignments if a.unit_id in unit_ids]}

    async def auto_dispatch(self, incident_id: str, count: int) -> dict[str, Any]:
        incident = await self._incident(incident_id)
        c = incident.created
        assert c is not None
        now = self.clock()
        self._sync_recommender(now)
        best = self.recommender.recommend(c.lat, c.lon, now, count=count)
        if not best:
            raise IncidentConflict("no available unit with a fresh position")
        result = await self.dispatch(incident_id, [r.unit_id for r in best])
        result["recommendations"] = [{"unit_id": r.unit_id, "eta_s": round(r.eta_s, 1),
                                      "distance_m": round(r.distance_m, 1)} for r in best]
        return result

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
        incident = await self._commit(incident_id, [event])
        self._follow_status(incident, unit_id)
        return incident.view(self.clock(), self.policies)

    async def close(self, incident_id: str, reason: str = "") -> dict[str, Any]:
        incident = await self._commit(incident_id, [Closed(ts=self.clock(), source="api", reason=reason)])
        for a in incident.assignments:
            if self._tracking.get(a.unit_id) is not None and self._tracking[a.unit_id].incident_id == incident_id:
                del self._tracking[a.unit_id]
            if a.cmd_id:
                self._pending.pop(a.cmd_id, None)
                self._watch.discard(a.cmd_id)
            self._set_status(a.unit_id, "available")
        return incident.view(self.clock(), self.policies)

    # ------------------------------------------------------------- listener
    def on_message(self, m: Message) -> None:
        """Pipeline listener: cheap look-ups only; the work goes to the queue."""
        try:
            if m.event is not None:
                if m.event.type == "ack" and (m.event.data.get("cmd_id") in self._pending
                                              or m.event.data.get("cmd_id") in self._video):
                    self._queue.put_nowait(("ack", (m.device_id, m.event)))
                elif m.event.type == "contact":
                    self._queue.put_nowait(("contact", (m.device_id, m.event)))
            if m.fixes or m.status is not None:
                dev = self.live.devices.get(m.device_id)
                unit_id = dev.unit_id if dev is not None else None
                if unit_id is None:
                    return
                if m.status is not None or unit_id in self._synced_offline:
                    self._resync.add(unit_id)  # its online flag may have changed
                if not m.fixes:
                    return
                if unit_id in self.recommender:
                    self.recommender.move_unit(unit_id, max(m.fixes, key=lambda f: f.ts))
                if unit_id in self._tracking:
                    self._queue.put_nowait(("fixes", (unit_id, m.fixes)))
        except asyncio.QueueFull:
            log.warning("incident queue full (%d): a dispatch-related message was dropped", self._queue.qsize())

    async def _work(self) -> None:
        while True:
            kind, item = await self._queue.get()
            try:
                if kind == "ack":
                    await self._on_ack(*item)
                elif kind == "contact":
                    await self._on_contact(*item)
                else:
                    await self._detect(*item)
            except Exception:
                log.exception("incident worker failed on a %s message", kind)
            finally:
                self._queue.task_done()

    async def _on_ack(self, device_id: str, event: Any) -> None:
        cmd_id = event.data.get("cmd_id")
        video = self._video.pop(cmd_id, None)
        if video is not None:
            self._watch.discard(cmd_id)
            await self._try(video[0], Noted(ts=self.clock(), source="device", unit_id=video[1],
                                            text=f"video_start acknowledged by {device_id}"))
            return
        found = self._pending.get(cmd_id)
        if found is None:
            return
        incident_id, unit_id = found
        incident = await self._try(incident_id, Acknowledged(ts=event.ts, source="device", unit_id=unit_id,
                                                             cmd_id=cmd_id))
        if incident is not None:
            self._follow_status(incident, unit_id)

    async def _on_contact(self, device_id: str, event: Any) -> None:
        incident_id = event.data.get("incident_id")
        dev = self.live.devices.get(device_id)
        if not isinstance(incident_id, str) or dev is None or dev.unit_id is None:
            return
        if incident_id not in self._incidents:
            log.info("contact from %s for incident %s, which is not open here: dropped", device_id, incident_id)
            return
        await self._try(incident_id, Contacted(ts=event.ts, source="device", unit_id=dev.unit_id))

    async def _detect(self, unit_id: str, fixes: list[Fix]) -> None:
        tracking = self._tracking.get(unit_id)
        if tracking is None:
            return
        departed = tracking.departure.add(fixes)
        arrived = tracking.arrival.add(fixes)
        if departed is not None:
            incident = await self._try(tracking.incident_id, Departed(ts=departed.ts, source="motion",
                                                                      unit_id=unit_id))
            if incident is not None:
                self._follow_status(incident, unit_id)
        if arrived is not None:
            incident = await self._try(tracking.incident_id, Arrived(ts=arrived.ts, source="geofence",
                                                                     unit_id=unit_id))
            if incident is not None:
                self._follow_status(incident, unit_id)
                await self.follow_up.video_start(tracking.incident_id, unit_id)

    async def _try(self, incident_id: str, event: Event) -> Incident | None:
        """Commit a device/detector event; a refused one is logged and dropped."""
        try:
            return await self._commit(incident_id, [event])
        except (IncidentError, DomainError) as exc:
            self.refused += 1
            log.info("incident %s: %s (%s) refused: %s", incident_id, event.type, event.source, exc)
            return None

    # ------------------------------------------------ acks, escalation, video
    def _send(self, cmd_id: str, devices: Sequence[str], raw: bytes) -> None:
        for device_id in devices:
            try:
                self.publish(topics.device_topic(device_id, "cmd"), raw)
            except Exception:
                log.exception("command %s to device %s not published", cmd_id, device_id)

    # -------------------------------------------------------------- helpers
    def _lock(self, incident_id: str) -> asyncio.Lock:
        lock = self._locks.get(incident_id)
        if lock is None:
            lock = self._locks[incident_id] = asyncio.Lock()
        return lock

    async def _incident(self, incident_id: str) -> Incident:
        held = self._incidents.get(incident_id)
        if held is not None:
            return held[0]
        events = await self.store.load(incident_id)
        if not events:
            raise IncidentNotFound(f"incident {incident_id} does not exist")
        incident = Incident.replay(incident_id, events)
        self._incidents[incident_id] = (incident, len(events))
        return incident

    async def _commit(self, incident_id: str, events: Sequence[Event]) -> Incident:
        """Check `events` on a copy, append them to the log, then make the copy current."""
        async with self._lock(incident_id):
            await self._incident(incident_id)
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
        return trial

    def _changed(self, incident: Incident) -> dict[str, Any]:
        view = incident.view(self.clock(), self.policies)
        self.feed.post({"type": "incident", "incident": view})
        return view

    def _follow_status(self, incident: Incident, unit_id: str | None) -> None:
        """The unit's live status follows its assignment (whatever order the milestones came in)."""
        if unit_id is None:
            return
        a = incident.assignment(unit_id)
        if a is not None and a.active:
            self._set_status(unit_id, a.unit_status.value)
            if "acknowledged" in a.marks and a.cmd_id:
                self._pending.pop(a.cmd_id, None)
                self._watch.discard(a.cmd_id)

    def _set_status(self, unit_id: str, status: str) -> None:
        if unit_id in self.live.units:
            self.live.set_unit_status(unit_id, status)
        if unit_id in self.recommender:
            self.recommender.set_status(unit_id, status)

    def _sync_recommender(self, now: int) -> None:
        """Bring units registered, re-registered or changed since the last call into the recommender.

        Incremental: a pass over the registry compares object identity and status only (cheap; a
        re-registration makes a new UnitLive); fixes reach the recommender from `on_message`; the online check runs
        only for units that got a status message or a fix while synced as offline. Online turns false by
        time alone only when no device has a fix younger than ``stale_after_ms``, and a unit is only
        recommended with a fix younger than ``max_fix_age_ms`` (60 s), so with ``stale_after_ms`` at least
        that, a flag left stale this way cannot make a unit wrongly eligible; below it, every unit is
        re-checked each call.
        """
        live, synced, resync = self.live, self._synced, self._resync
        full = live.stale_after_ms < 60_000
        for unit_id, unit in live.units.items():
            seen = synced.get(unit_id)
            if full or seen is None or seen[0] is not unit or seen[1] != unit.status:
                resync.add(unit_id)
        self._resync = set()
        for unit_id in resync:
            changed = live.units.get(unit_id)
            if changed is not None:
                self._sync_unit(unit_id, changed, now)

    def _sync_unit(self, unit_id: str, unit: UnitLive, now: int) -> None:
        online = self.live.unit_online(unit, now)
        caps = frozenset(unit.capabilities)
        seen = self._synced.get(unit_id)
        if unit_id not in self.recommender or seen is None or seen[0] is not unit:  # kind, capabilities, devices
            self.recommender.update_unit(Candidate(unit_id, unit.kind, caps, unit.status, online, unit.fix))
        else:
            self.recommender.set_status(unit_id, unit.status, online=online)
            if unit.fix is not None:
                self.recommender.move_unit(unit_id, unit.fix)
        self._synced[unit_id] = (unit, unit.status)
        if online:
            self._synced_offline.discard(unit_id)
        else:
            self._synced_offline.add(unit_id)
