"""The incident service: the pure incident core wired to storage, MQTT, the live picture and the feed.

Every change is a list of domain events, first checked on a copy of the incident (`Incident.apply`
refuses an illegal one and nothing changes), then appended to the incident log in PostgreSQL with
the version the copy was built on, and only then made the current state. Open incidents are rebuilt
from the log on start-up. Around it: `Fleet` (the recommender kept in step with the live picture),
`ResponseTracker` (detectors and the ingest listener), `AckFollowUp` (re-send, escalate,
video_start), `Alerts` (SOS) and the 12345 hand-over of diverted incidents.

What devices report goes through `record`/`claim`: the hub's rules (`hub.domain.device_claims`) decide
what a device may change, every claim ignored or corrected is counted by reason in `ignored`, logged,
and noted in the incident (at most `DEVICE_NOTE_CAP` device notes each); a write that meets a database
outage waits in the `Outbox` and is made, in order, when the database is back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

from devices import topics
from devices.payloads import Command, encode_command
from hub.domain.categories import DEFAULT_CATEGORY_RULES, CategoryRules
from hub.domain.commands import dispatch_command, new_cmd_id
from hub.domain.compliance import response_times
from hub.domain.device_claims import DEVICE_NOTE_CAP, Verdict, ack_verdict
from hub.domain.dispatch import Recommender
from hub.domain.errors import DomainError, IllegalTransition
from hub.domain.events import (
    Acknowledged,
    Arrived,
    Cancelled,
    Closed,
    Contacted,
    Created,
    Dispatched,
    Diverted,
    Event,
    HandedOver,
    Noted,
    Reassigned,
    Supported,
)
from hub.domain.incident import DEVICE_SOURCES, Incident
from hub.domain.sla import BUILTIN_POLICIES, DEFAULT_RULES, Policy, PolicyRules
from hub.errors import IncidentConflict, IncidentError, IncidentInvalid, IncidentNotFound
from hub.incidents.alerts import Alerts
from hub.incidents.escalation import AckFollowUp, AckWatch
from hub.incidents.fleet import DRONE_KIND, Fleet
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
                 clock: Callable[[], int], *, rules: PolicyRules = DEFAULT_RULES,
                 policies: Mapping[str, Policy] = BUILTIN_POLICIES,
                 categories: CategoryRules = DEFAULT_CATEGORY_RULES, recommender: Recommender | None = None,
                 ack_timeout_s: float = 15.0, ack_resends: int = 1, auto_dispatch_priority: int = 1,
                 public_base_url: str = "http://127.0.0.1:8000", video_token_ttl_s: float = 300.0,
                 sos_incident: bool = True, hotline: HotlineHandOver | None = None,
                 milestone_max_shift_s: float = 300.0, sos_max_distance_m: float = 1000.0) -> None:
        self.store = store
        self.live = live
        self.feed = feed
        self.publish = publish
        self.clock = clock
        self.rules = rules
        self.policies = policies
        self.categories = categories
        self.fleet = Fleet(live, recommender)
        self.aerial_min_alt_m = 20.0  # a drone hovering lower over the scene has not arrived (set from the settings)
        self.tracker = ResponseTracker(self)
        self.alerts = Alerts(self, sos_incident=sos_incident)
        self.hotline = hotline
        self.refused = 0  # device/detector events the state machine refused (logged, dropped)
        self.ignored: Counter[str] = Counter()  # device claims ignored or corrected, by reason
        self.max_shift_ms = int(milestone_max_shift_s * 1000)
        self.sos_max_distance_m = sos_max_distance_m
        self.outbox = Outbox()
        self.audit: AuditRecorder | None = None  # set by the composition root; what the hub decides itself is audited
        # Called with (incident_id, unit_id) when an assignment ends (cleared, cancelled, closed, diverted).
        self.on_release: list[Callable[[str, str], None]] = []
        # Awaited with the incident_id just before it closes, while its log still takes entries (video_stop).
        self.before_close: list[Callable[[str], Awaitable[None]]] = []
        self._incidents: dict[str, tuple[Incident, int]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._assigned: dict[str, str] = {}  # unit_id -> the incident it actively responds to
        self._pending: dict[str, tuple[str, str]] = {}  # dispatch cmd_id -> (incident_id, unit_id), until acked
        self._video: dict[str, tuple[str, str, str]] = {}  # video_start cmd_id -> (incident_id, unit_id, device)
        # Commands waiting for an ack: re-sent, then escalated (dispatch) or noted (video_start).
        self.ack_timeout_s = ack_timeout_s
        self._watch = AckWatch(int(ack_timeout_s * 1000), ack_resends)
        self._check_interval_s = max(0.05, min(1.0, ack_timeout_s / 4))
        self.follow_up = AckFollowUp(self)
        self.auto_dispatch_priority = auto_dispatch_priority
        self.public_base_url = public_base_url
        self.video_token_ttl_ms = int(video_token_ttl_s * 1000)
        feed.snapshot_parts.append(self._snapshot_part)
        feed.snapshot_parts.append(self.alerts.snapshot_part)

    @property
    def recommender(self) -> Recommender:
        return self.fleet.recommender

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Rebuild open incidents from the log, re-arm acks, detectors and hand-overs, start the workers."""
        for incident_id, events in (await self.store.load_open()).items():
            incident = Incident.replay(incident_id, events)
            self._incidents[incident_id] = (incident, len(events))
            self._rearm(incident)
        await self.tracker.catch_up()
        self.outbox.start()
        self.tracker.start()
        self.follow_up.start(self._check_interval_s)

    async def stop(self) -> None:
        await self.follow_up.stop()
        await self.tracker.stop()
        await self.outbox.stop()

    def _rearm(self, incident: Incident) -> None:
        c = incident.created
        assert c is not None
        if incident.diversion is not None and incident.diversion.handed_over_at is None:
            self._hand_over(incident)
        for a in incident.active_assignments():
            self._assigned[a.unit_id] = incident.id
            unit = self.live.units.get(a.unit_id)
            dispatched = a.marks["dispatched"].ts
            if a.cmd_id and "acknowledged" not in a.marks and not a.aerial:
                self._pending[a.cmd_id] = (incident.id, a.unit_id)
                raw = encode_command(dispatch_command(incident, a.cmd_id, dispatched))
                self._watch.add(a.cmd_id, "dispatch", incident.id, a.unit_id, unit.devices if unit else [], raw,
                                self.clock())
            self.fleet.set_status(a.unit_id, a.unit_status.value)
            if "arrived" not in a.marks:  # the position at dispatch is not in the log: the first fix since
                self.tracker.track(a.unit_id, incident.id, dispatched, None, c.lat, c.lon, incident.arrival_radius_m,
                                   aerial_min_alt_m=self.aerial_min_alt_m if a.aerial else None)

    # ---------------------------------------------------------------- reads
    async def get(self, incident_id: str) -> dict[str, Any]:
        return (await self._incident(incident_id, keep=False)).view(self.clock(), self.policies)

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
        return self._assigned.get(unit_id)

    def awaits_ack(self, cmd_id: object) -> bool:
        return cmd_id in self._pending or cmd_id in self._video

    def open_incidents(self) -> Iterator[Incident]:
        return (i for i, _ in self._incidents.values() if i.closed is None)

    def current(self, incident_id: str) -> Incident | None:
        """The incident as held in memory (open ones and recently read ones), without a database read."""
        held = self._incidents.get(incident_id)
        return held[0] if held is not None else None

    def _snapshot_part(self, now_ms: int) -> dict[str, Any]:
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

    async def dispatch(self, incident_id: str, unit_ids: Sequence[str], *, source: str = "api",
                       aerial: bool = False) -> dict[str, Any]:
        """Assign units and send them the SPEC `dispatch` command; ``aerial``: drones, which
        :mod:`hub.drones.service` flies over MAVLink instead (no MQTT command, no ack watch)."""
        if not unit_ids:
            raise IncidentInvalid("unit_ids: at least one unit is needed")
        if len(set(unit_ids)) != len(unit_ids):
            raise IncidentInvalid("unit_ids: the same unit is listed twice")
        for unit_id in unit_ids:
            unit = self.live.units.get(unit_id)
            if unit is None:
                raise IncidentNotFound(f"unit {unit_id} does not exist")
            if (unit.kind == DRONE_KIND) != aerial:
                raise IncidentInvalid(f"unit {unit_id} is not a drone" if aerial else
                                      f"unit {unit_id} is a drone: send it with POST /api/v1/incidents/{{id}}/drone")
            busy = self._assigned.get(unit_id)
            if busy is not None and busy != incident_id:
                raise IncidentConflict(f"unit {unit_id} is {unit.status} on incident {busy}")
        now = self.clock()
        events = [Dispatched(ts=now, source=source, unit_id=u, cmd_id=new_cmd_id("d"), aerial=aerial) for u in unit_ids]
        incident = await self.commit(incident_id, events)
        c = incident.created
        assert c is not None
        for event in events:
            unit_id, cmd_id = str(event.unit_id), str(event.cmd_id)
            unit = self.live.units[unit_id]
            self._assigned[unit_id] = incident_id
            self._pending[cmd_id] = (incident_id, unit_id)
            self.tracker.track(unit_id, incident_id, event.ts, unit.fix, c.lat, c.lon, incident.arrival_radius_m,
                               aerial_min_alt_m=self.aerial_min_alt_m if aerial else None)
            if aerial:
                self.fleet.set_status(unit_id, "dispatched")
                continue
            raw = encode_command(dispatch_command(incident, cmd_id, event.ts))
            self._watch.add(cmd_id, "dispatch", incident_id, unit_id, unit.devices, raw, event.ts)
            self.send(cmd_id, unit.devices, raw)  # a failed publish is retried by the re-send
            self.fleet.set_status(unit_id, "dispatched")
        if source == "system":  # auto-dispatch, escalation; a route audits its caller's dispatch
            await self._audit("incident.dispatch", incident_id, {"unit_ids": list(unit_ids), "aerial": aerial,
                                                                 "cmd_ids": [str(e.cmd_id) for e in events]})
        return {"incident_id": incident_id,
                "assignments": [a.to_dict() for a in incident.assignments if a.unit_id in unit_ids]}

    async def auto_dispatch(self, incident_id: str, count: int, *, exclude: Collection[str] = (),
                            source: str = "api") -> dict[str, Any]:
        incident = await self._incident(incident_id)
        c = incident.created
        assert c is not None
        on_it = {a.unit_id for a in incident.active_assignments()}
        best = self.fleet.recommend(c.lat, c.lon, self.clock(), count, exclude={*exclude, *on_it})
        if not best:
            raise IncidentConflict("no available unit with a fresh position")
        result = await self.dispatch(incident_id, [r.unit_id for r in best], source=source)
        result["recommendations"] = [{"unit_id": r.unit_id, "eta_s": round(r.eta_s, 1),
                                      "distance_m": round(r.distance_m, 1), "eta_method": r.method} for r in best]
        return result

    def recommend(self, incident: Incident, count: int) -> list[dict[str, Any]]:
        c = incident.created
        assert c is not None
        on_it = {a.unit_id for a in incident.active_assignments()}
        return [{"unit_id": r.unit_id, "eta_s": round(r.eta_s, 1), "distance_m": round(r.distance_m, 1),
                 "eta_method": r.method, "fix_age_ms": r.fix_age_ms}
                for r in self.fleet.recommend(c.lat, c.lon, self.clock(), count, exclude=on_it)]

    async def recommendations(self, incident_id: str, count: int) -> dict[str, Any]:
        return {"incident_id": incident_id, "recommendations": self.recommend(await self._incident(incident_id), count)}

    async def cancel(self, incident_id: str, unit_id: str, reason: str, *, source: str = "api") -> dict[str, Any]:
        """Withdraw one unit's assignment (the incident stays open); the unit's devices get `cancel`."""
        incident = await self.commit(incident_id, [Cancelled(ts=self.clock(), source=source, unit_id=unit_id,
                                                             reason=reason)])
        self._release(incident, [unit_id])
        if source == "system":
            await self._audit("incident.cancel", incident_id, {"unit_id": unit_id, "reason": reason})
        return incident.view(self.clock(), self.policies)

    async def reassign(self, incident_id: str, from_unit: str, to_unit: str | None, reason: str, *,
                       source: str = "api", escalated: bool = False) -> dict[str, Any]:
        """Move the response from `from_unit` to `to_unit` (None: the best available unit, if any)."""
        incident = await self._incident(incident_id)
        a = incident.assignment(from_unit)
        if a is None or not a.active:
            raise IncidentConflict(f"unit {from_unit} has no active assignment on incident {incident_id}")
        if to_unit is None:
            best = self.recommend(incident, 1)
            to_unit = best[0]["unit_id"] if best else None
        elif to_unit not in self.live.units:
            raise IncidentNotFound(f"unit {to_unit} does not exist")
        elif self._assigned.get(to_unit) not in (None, incident_id) or to_unit == from_unit:
            raise IncidentConflict(f"unit {to_unit} cannot take over: it is busy ({self.live.units[to_unit].status})")
        now = self.clock()
        events: list[Event] = [Cancelled(ts=now, source=source, unit_id=from_unit, reason=reason),
                               Reassigned(ts=now, source=source, unit_id=from_unit, reason=reason,
                                          to_unit_id=to_unit, escalated=escalated)]
        if to_unit is None:
            events.append(Noted(ts=now, source="system", unit_id=from_unit,
                                text=f"no available unit to take over from {from_unit}"))
        incident = await self.commit(incident_id, events)
        self._release(incident, [from_unit])
        if source == "system":  # the dispatch of `to_unit` below is audited by `dispatch`
            await self._audit("incident.cancel", incident_id, {"unit_id": from_unit, "reason": reason,
                                                               "to_unit_id": to_unit, "escalated": escalated})
        if to_unit is not None:
            try:
                await self.dispatch(incident_id, [to_unit], source=source)
            except IncidentError as exc:
                await self.record(incident_id, Noted(ts=self.clock(), source="system", unit_id=to_unit,
                                                     text=f"reassignment: dispatch of {to_unit} failed: {exc}"))
        return await self.get(incident_id)

    async def divert(self, incident_id: str, reason: str, *, source: str = "api") -> dict[str, Any]:
        """双非: hand the incident to the 12345 hotline; its units are withdrawn."""
        before = await self._incident(incident_id)
        active = [a.unit_id for a in before.active_assignments()]
        incident = await self.commit(incident_id, [Diverted(ts=self.clock(), source=source, reason=reason)])
        self._release(incident, active)
        self._hand_over(incident)
        return incident.view(self.clock(), self.policies)

    async def handed_over(self, incident_id: str, accepted_at: int, ref: str) -> None:
        """The hotline accepted the hand-over (called by `HotlineHandOver`; raising makes it retry)."""
        if self.has_handed_over(incident_id):
            return
        await self.commit(incident_id, [HandedOver(ts=accepted_at, source="system", ref=ref)])

    def has_handed_over(self, incident_id: str) -> bool:
        held = self._incidents.get(incident_id)
        return held is not None and held[0].diversion is not None and held[0].diversion.handed_over_at is not None

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
        before = await self._incident(incident_id)
        active = [a.unit_id for a in before.active_assignments()]
        for hook in self.before_close:
            await hook(incident_id)
        incident = await self.commit(incident_id, [Closed(ts=self.clock(), source="api", reason=reason)])
        self._release(incident, active, send_cancel=False)
        self._incidents.pop(incident_id, None)  # closed: read from the log from now on
        self._locks.pop(incident_id, None)
        return incident.view(self.clock(), self.policies)

    # ------------------------------------------------------ device messages
    async def on_ack(self, device_id: str, event: Any, received_ms: int) -> None:
        """An `ack` counts only from the device the command went to (video_start) or a device of the
        dispatched unit (dispatch); the dispatch counts as acknowledged from this moment on (no escalation),
        even when its log entry has to wait for the database."""
        cmd_id = event.data.get("cmd_id")
        dev = self.live.devices.get(device_id)
        device_unit = dev.unit_id if dev is not None else None
        video = self._video.get(cmd_id)
        if video is not None:
            incident_id, unit_id, camera = video
            if device_id != camera:
                await self.refuse_claim("ack_wrong_device", incident_id, unit_id,
                                        f"ack of video_start {cmd_id} (sent to {camera}) from {device_id}: ignored")
                return
            del self._video[cmd_id]
            self._watch.discard(cmd_id)
            await self.record(incident_id, Noted(ts=self.clock(), source="device", unit_id=unit_id,
                                                 text=f"video_start acknowledged by {device_id}"))
            return
        found = self._pending.get(cmd_id)
        if found is None:
            return
        incident_id, unit_id = found
        if device_unit != unit_id:
            await self.refuse_claim("ack_wrong_unit", incident_id, unit_id,
                                    f"ack of dispatch {cmd_id} to unit {unit_id} from {device_id}, a device of "
                                    f"{'unit ' + device_unit if device_unit else 'no unit'}: ignored")
            return
        del self._pending[cmd_id]
        self._watch.discard(cmd_id)

        def decide(incident: Incident) -> list[Event]:
            a = incident.assignment(unit_id)
            dispatched = a.marks["dispatched"].ts if a is not None and a.cmd_id == cmd_id else event.ts
            return self.verdict_events(  # an ack is never ignored, only re-timed
                ack_verdict(dispatched, event.ts, received_ms), incident, unit_id, f"ack from {device_id}: ",
                lambda ts: Acknowledged(ts=ts, source="device", unit_id=unit_id, cmd_id=cmd_id))

        await self.claim(incident_id, f"ack of {cmd_id} from {device_id}", decide)

    def count(self, reason: str) -> None:
        self.ignored[reason] += 1

    def ignored_note(self, reason: str, incident_id: str, unit_id: str | None, detail: str, *,
                     ts: int | None = None, source: str = "device") -> list[Event]:
        """Count and log a device claim the rules ignored or corrected; the note that says so in the incident."""
        self.count(reason)
        log.info("incident %s: %s (%s)", incident_id, detail, reason)
        return [Noted(ts=self.clock() if ts is None else ts, source=source, unit_id=unit_id,
                      text=f"{detail} [{reason}]")]

    def verdict_events(self, verdict: Verdict, incident: Incident, unit_id: str | None, prefix: str,
                       make: Callable[[int], Event], *, source: str = "device") -> list[Event]:
        """What a checked device claim becomes: its event at the verdict's time (none when ignored), then the
        note that says why it was corrected or ignored (counted and logged by `ignored_note`)."""
        events = [] if verdict.ts is None else [make(verdict.ts)]
        if verdict.reason is not None:
            events += self.ignored_note(verdict.reason, incident.id, unit_id, prefix + verdict.detail,
                                        ts=verdict.ts, source=source)
        return events

    async def refuse_claim(self, reason: str, incident_id: str, unit_id: str | None, detail: str) -> None:
        """A device claim ignored: counted, logged and noted in the incident (bounded, see `claim`)."""
        await self.claim(incident_id, f"note ({reason})",
                         lambda incident: self.ignored_note(reason, incident.id, unit_id, detail))

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
                incident = await self._incident(incident_id)
                events = self._capped(incident, decide(incident))
                if not events:
                    return
                done.append(await self.commit(incident_id, events))
            except (IncidentError, DomainError) as exc:
                self.refused += 1
                log.info("incident %s: %s refused: %s", incident_id, what, exc)
                return
            if then is not None:
                try:  # it must not fail the written job: the outbox would write it again
                    await then(done[0])
                except Exception:
                    log.exception("incident %s: follow-up of %s failed", incident_id, what)

        await self.outbox.run(incident_id, f"{what} on incident {incident_id}", job)
        return done[0] if done else None

    def _capped(self, incident: Incident, events: Sequence[Event]) -> list[Event]:
        used, kept = incident.device_notes, []
        for event in events:
            if isinstance(event, Noted) and event.source in DEVICE_SOURCES:
                if used >= DEVICE_NOTE_CAP:
                    self.count("device_note_capped")
                    log.info("incident %s: device note not written (cap %d): %s", incident.id, DEVICE_NOTE_CAP,
                             event.text[:200])
                    continue
                used += 1
                if used == DEVICE_NOTE_CAP:
                    event = dataclasses.replace(event, text=f"{event.text} (the last device note kept on this "
                                                            "incident: later ones are only counted)")
            kept.append(event)
        return kept

    def send(self, cmd_id: str, devices: Sequence[str], raw: bytes) -> None:
        for device_id in devices:
            try:
                self.publish(topics.device_topic(device_id, "cmd"), raw)
            except Exception:
                log.exception("command %s to device %s not published", cmd_id, device_id)

    # -------------------------------------------------------------- helpers
    async def _audit(self, action: str, incident_id: str, detail: dict[str, object]) -> None:
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

    async def _incident(self, incident_id: str, *, keep: bool = True) -> Incident:
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
            self._pending.pop(a.cmd_id, None)
            self._watch.discard(a.cmd_id)

    def _release(self, incident: Incident, unit_ids: Sequence[str], *, send_cancel: bool = True) -> None:
        """Units whose assignment ended: stop following them, tell their devices, make them available."""
        for unit_id in unit_ids:
            a = incident.assignment(unit_id)
            if self._assigned.get(unit_id) == incident.id:
                del self._assigned[unit_id]
                self.fleet.set_status(unit_id, "available")
            self.tracker.untrack(unit_id, incident.id)
            for hook in self.on_release:
                hook(incident.id, unit_id)
            if a is None or a.cmd_id is None or a.aerial:
                continue
            self._pending.pop(a.cmd_id, None)
            self._watch.discard(a.cmd_id)
            unit = self.live.units.get(unit_id)
            if send_cancel and unit is not None:
                cmd = Command(new_cmd_id("c"), self.clock(), "cancel",
                              {"incident_id": incident.id, "dispatch_cmd_id": a.cmd_id})
                self.send(cmd.cmd_id, unit.devices, encode_command(cmd))

    def _hand_over(self, incident: Incident) -> None:
        if self.hotline is None:
            log.warning("incident %s diverted, but this service has no 12345 hand-over", incident.id)
            return
        view = incident.view(self.clock(), self.policies, log_limit=0)
        del view["log"], view["log_size"], view["sla"]  # the hotline needs the case, not the police's internal record
        self.hotline.submit(incident.id, view)
