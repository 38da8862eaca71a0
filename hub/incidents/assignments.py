"""Which unit responds to which incident: dispatch, cancel, reassign, divert, close, and the release of units.

`Assignments` is the one owner of the unit -> incident map. It changes incidents only through the incident log
(`commit`), keeps the recommender's unit status, the detectors and the ack follow-up in step with each change,
and announces every assignment that ends on `unit_released` (the video desk, the drones), and every close just
before it is written on `closing` (the video of the incident is stopped while its log still takes entries).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any

from devices.payloads import Command, encode_command
from hub.domain.commands import dispatch_command, new_cmd_id
from hub.domain.events import Cancelled, Closed, Dispatched, Diverted, Event, HandedOver, Noted, Reassigned
from hub.domain.incident import Incident
from hub.errors import IncidentConflict, IncidentError, IncidentInvalid, IncidentNotFound
from hub.incidents.escalation import AckFollowUp
from hub.incidents.fleet import DRONE_KIND, Fleet
from hub.incidents.hotline import HotlineHandOver
from hub.incidents.ports import IncidentWriter, Send
from hub.incidents.tracking import ResponseTracker
from hub.ingest.live import LiveState
from hub.signals import AsyncSignal, Signal

__all__ = ["Assignments"]

log = logging.getLogger(__name__)


class Assignments:
    def __init__(self, incidents: IncidentWriter, live: LiveState, fleet: Fleet, tracker: ResponseTracker,
                 follow_up: AckFollowUp, send: Send, clock: Callable[[], int], *,
                 hotline: HotlineHandOver | None = None, aerial_min_alt_m: float = 20.0) -> None:
        self.incidents = incidents
        self.live = live
        self.fleet = fleet
        self.tracker = tracker
        self.follow_up = follow_up
        self.send = send
        self.clock = clock
        self.hotline = hotline
        self.aerial_min_alt_m = aerial_min_alt_m  # a drone hovering lower over the scene has not arrived
        self._assigned: dict[str, str] = {}  # unit_id -> the incident it actively responds to
        # (incident_id, unit_id) when an assignment ends (cleared, cancelled, closed, diverted).
        self.unit_released: Signal[[str, str]] = Signal("unit_released")
        # The incident_id just before it closes, while its log still takes entries (video_stop).
        self.closing: AsyncSignal[[str]] = AsyncSignal("closing")

    def assigned_to(self, unit_id: str) -> str | None:
        """The incident the unit is actively assigned to, if any."""
        return self._assigned.get(unit_id)

    def rearm(self, incident: Incident) -> None:
        """An open incident rebuilt from the log: its pending hand-over, acks, unit status and detectors again."""
        c = incident.created
        assert c is not None
        if incident.diversion is not None and incident.diversion.handed_over_at is None:
            self.hand_over(incident)
        for a in incident.active_assignments():
            self._assigned[a.unit_id] = incident.id
            unit = self.live.units.get(a.unit_id)
            dispatched = a.marks["dispatched"].ts
            if a.cmd_id and "acknowledged" not in a.marks and not a.aerial:
                raw = encode_command(dispatch_command(incident, a.cmd_id, dispatched))
                self.follow_up.expect_dispatch(a.cmd_id, incident.id, a.unit_id, unit.devices if unit else [], raw,
                                               self.clock())
            self.fleet.set_status(a.unit_id, a.unit_status.value)
            if "arrived" not in a.marks:  # the position at dispatch is not in the log: the first fix since
                self.tracker.track(a.unit_id, incident.id, dispatched, None, c.lat, c.lon, incident.arrival_radius_m,
                                   aerial_min_alt_m=self.aerial_min_alt_m if a.aerial else None)

    # ------------------------------------------------------------- dispatch
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
        incident = await self.incidents.commit(incident_id, events)
        c = incident.created
        assert c is not None
        for event in events:
            unit_id, cmd_id = str(event.unit_id), str(event.cmd_id)
            unit = self.live.units[unit_id]
            self._assigned[unit_id] = incident_id
            self.tracker.track(unit_id, incident_id, event.ts, unit.fix, c.lat, c.lon, incident.arrival_radius_m,
                               aerial_min_alt_m=self.aerial_min_alt_m if aerial else None)
            if aerial:
                self.follow_up.expect_dispatch(cmd_id, incident_id, unit_id)
                self.fleet.set_status(unit_id, "dispatched")
                continue
            raw = encode_command(dispatch_command(incident, cmd_id, event.ts))
            self.follow_up.expect_dispatch(cmd_id, incident_id, unit_id, unit.devices, raw, event.ts)
            self.send(cmd_id, unit.devices, raw)  # a failed publish is retried by the re-send
            self.fleet.set_status(unit_id, "dispatched")
        if source == "system":  # auto-dispatch, escalation; a route audits its caller's dispatch
            await self.incidents.audit_act("incident.dispatch", incident_id, {
                "unit_ids": list(unit_ids), "aerial": aerial, "cmd_ids": [str(e.cmd_id) for e in events]})
        return {"incident_id": incident_id,
                "assignments": [a.to_dict() for a in incident.assignments if a.unit_id in unit_ids]}

    async def auto_dispatch(self, incident_id: str, count: int, *, exclude: Collection[str] = (),
                            source: str = "api") -> dict[str, Any]:
        incident = await self.incidents.incident(incident_id)
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

    # ------------------------------------------------- ending an assignment
    async def cancel(self, incident_id: str, unit_id: str, reason: str, *, source: str = "api") -> dict[str, Any]:
        """Withdraw one unit's assignment (the incident stays open); the unit's devices get `cancel`."""
        incident = await self.incidents.commit(incident_id, [Cancelled(ts=self.clock(), source=source,
                                                                       unit_id=unit_id, reason=reason)])
        self.release(incident, [unit_id])
        if source == "system":
            await self.incidents.audit_act("incident.cancel", incident_id, {"unit_id": unit_id, "reason": reason})
        return self.incidents.view(incident)

    async def reassign(self, incident_id: str, from_unit: str, to_unit: str | None, reason: str, *,
                       source: str = "api", escalated: bool = False) -> dict[str, Any]:
        """Move the response from `from_unit` to `to_unit` (None: the best available unit, if any)."""
        incident = await self.incidents.incident(incident_id)
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
        incident = await self.incidents.commit(incident_id, events)
        self.release(incident, [from_unit])
        if source == "system":  # the dispatch of `to_unit` below is audited by `dispatch`
            await self.incidents.audit_act("incident.cancel", incident_id, {
                "unit_id": from_unit, "reason": reason, "to_unit_id": to_unit, "escalated": escalated})
        if to_unit is not None:
            try:
                await self.dispatch(incident_id, [to_unit], source=source)
            except IncidentError as exc:
                await self.incidents.record(incident_id, Noted(
                    ts=self.clock(), source="system", unit_id=to_unit,
                    text=f"reassignment: dispatch of {to_unit} failed: {exc}"))
        return await self.incidents.get(incident_id)

    async def divert(self, incident_id: str, reason: str, *, source: str = "api") -> dict[str, Any]:
        """双非: hand the incident to the 12345 hotline; its units are withdrawn."""
        before = await self.incidents.incident(incident_id)
        active = [a.unit_id for a in before.active_assignments()]
        incident = await self.incidents.commit(incident_id, [Diverted(ts=self.clock(), source=source,
                                                                      reason=reason)])
        self.release(incident, active)
        self.hand_over(incident)
        return self.incidents.view(incident)

    async def handed_over(self, incident_id: str, accepted_at: int, ref: str) -> None:
        """The hotline accepted the hand-over (called by `HotlineHandOver`; raising makes it retry)."""
        if self.has_handed_over(incident_id):
            return
        await self.incidents.commit(incident_id, [HandedOver(ts=accepted_at, source="system", ref=ref)])

    def has_handed_over(self, incident_id: str) -> bool:
        incident = self.incidents.current(incident_id)
        return incident is not None and incident.diversion is not None and incident.diversion.handed_over_at is not None

    async def close(self, incident_id: str, reason: str = "") -> Incident:
        """Close the incident: `closing` is awaited first, then the close is written and its units released."""
        before = await self.incidents.incident(incident_id)
        active = [a.unit_id for a in before.active_assignments()]
        await self.closing.emit(incident_id)
        incident = await self.incidents.commit(incident_id, [Closed(ts=self.clock(), source="api", reason=reason)])
        self.release(incident, active, send_cancel=False)
        return incident

    def release(self, incident: Incident, unit_ids: Sequence[str], *, send_cancel: bool = True) -> None:
        """Units whose assignment ended: stop following them, tell their devices, make them available."""
        for unit_id in unit_ids:
            a = incident.assignment(unit_id)
            if self._assigned.get(unit_id) == incident.id:
                del self._assigned[unit_id]
                self.fleet.set_status(unit_id, "available")
            self.tracker.untrack(unit_id, incident.id)
            self.unit_released.emit(incident.id, unit_id)
            if a is None or a.cmd_id is None or a.aerial:
                continue
            self.follow_up.settled(a.cmd_id)
            unit = self.live.units.get(unit_id)
            if send_cancel and unit is not None:
                cmd = Command(new_cmd_id("c"), self.clock(), "cancel",
                              {"incident_id": incident.id, "dispatch_cmd_id": a.cmd_id})
                self.send(cmd.cmd_id, unit.devices, encode_command(cmd))

    def hand_over(self, incident: Incident) -> None:
        if self.hotline is None:
            log.warning("incident %s diverted, but this service has no 12345 hand-over", incident.id)
            return
        view = self.incidents.view(incident, log_limit=0)
        del view["log"], view["log_size"], view["sla"]  # the hotline needs the case, not the police's internal record
        self.hotline.submit(incident.id, view)
