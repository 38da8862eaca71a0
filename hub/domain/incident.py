"""The incident and its assignments as an event-sourced state machine.

Every change to an incident is a small event (`hub.domain.events`). `Incident.apply` checks it against
the current state and folds it in, or raises `IllegalTransition` and changes nothing; the adapter appends
accepted events to a log and rebuilds state on start-up by applying the log to a fresh `Incident`.
Nothing here reads a clock: every time is an epoch-ms `ts` carried by the events (device time for
detected milestones, hub time for commands), or `now_ms` passed to `view`.

Milestones (SPEC section 4) are derived, never stored: each is the earliest recorded time among all
assignments, so a late store-and-forward batch revealing an earlier arrival moves it back. A missing
one stays None. `cleared` is the close of the incident, not a unit's release.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hub.domain.errors import IllegalTransition
from hub.domain.events import (
    DEFAULT_RADIUS_M,
    Acknowledged,
    Arrived,
    Cancelled,
    Cleared,
    Closed,
    Contacted,
    Created,
    Departed,
    Dispatched,
    Diverted,
    Event,
    HandedOver,
    Noted,
    Reassigned,
    Supported,
)
from hub.domain.sla import BUILTIN_POLICIES, MILESTONES, Policy, evaluate
from hub.domain.unit_status import UnitStatus

__all__ = ["ASSIGNMENT_MILESTONES", "DEVICE_SOURCES", "Assignment", "Diversion", "Incident", "Milestone"]

ASSIGNMENT_MILESTONES = ("dispatched", "acknowledged", "departed", "contacted", "arrived", "cleared")
# Sources that speak for a device: the device itself, and the detectors reading its fixes.
DEVICE_SOURCES = frozenset({"device", "geofence", "motion"})

@dataclass(frozen=True)
class Milestone:
    ts: int
    source: str
    unit_id: str | None = None

    @classmethod
    def of(cls, event: Event) -> Milestone:
        return cls(event.ts, event.source, event.unit_id)

    def to_dict(self) -> dict[str, Any]:
        return {"ts": self.ts, "source": self.source, "unit_id": self.unit_id}


# Status is the furthest milestone of the chain reached, whatever order the times arrived in.
_STATUS_BY_MILESTONE = (("cleared", "cleared"), ("arrived", "on_scene"), ("departed", "en_route"),
                        ("acknowledged", "acknowledged"), ("dispatched", "dispatched"))


@dataclass
class Assignment:
    unit_id: str
    cmd_id: str | None
    marks: dict[str, Milestone]
    cancelled: Milestone | None = None
    aerial: bool = False  # a drone: support from above, not the officers the response targets measure

    @property
    def active(self) -> bool:
        return self.cancelled is None and "cleared" not in self.marks

    @property
    def status(self) -> str:
        if self.cancelled is not None:
            return "cancelled"
        return next(status for name, status in _STATUS_BY_MILESTONE if name in self.marks)

    @property
    def unit_status(self) -> UnitStatus:
        """The unit's status implied by this assignment (a released unit is available)."""
        return UnitStatus.AVAILABLE if not self.active else UnitStatus(self.status)

    def time(self, milestone: str) -> int | None:
        mark = self.marks.get(milestone)
        return None if mark is None else mark.ts

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit_id": self.unit_id,
            "status": self.status,
            **{name: self.time(name) for name in ASSIGNMENT_MILESTONES},
            "cancelled": None if self.cancelled is None else self.cancelled.ts,
            "cmd_id": self.cmd_id,
            "sources": {name: mark.source for name, mark in self.marks.items()},
            "aerial": self.aerial,
        }


@dataclass
class Diversion:
    reason: str
    diverted_at: int
    handed_over_at: int | None = None
    ref: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "diverted_at": self.diverted_at, "handed_over_at": self.handed_over_at,
                "ref": self.ref}


class Incident:
    def __init__(self, incident_id: str) -> None:
        self.id = incident_id
        self.log: list[Event] = []
        self.created: Created | None = None
        self.assignments: list[Assignment] = []
        self.incident_marks: dict[str, Milestone] = {}  # contacted/arrived without a unit, supported
        self.closed: Milestone | None = None
        self.diversion: Diversion | None = None
        self.device_notes = 0  # notes from DEVICE_SOURCES: the service caps them per incident

    @classmethod
    def replay(cls, incident_id: str, events: Iterable[Event]) -> Incident:
        incident = cls(incident_id)
        for event in events:
            incident.apply(event)
        return incident

    @property
    def status(self) -> str:
        return "closed" if self.closed else "diverted" if self.diversion else "open"

    @property
    def received(self) -> int:
        c = self._require_created()
        return c.ts if c.received_at is None else c.received_at

    @property
    def arrival_radius_m(self) -> float:
        c = self._require_created()
        return DEFAULT_RADIUS_M if c.arrival_radius_m is None else c.arrival_radius_m

    def assignment(self, unit_id: str) -> Assignment | None:
        """The unit's latest assignment on this incident (a unit may be re-dispatched after a cancel)."""
        return next((a for a in reversed(self.assignments) if a.unit_id == unit_id), None)

    def active_assignments(self) -> list[Assignment]:
        return [a for a in self.assignments if a.active]

    def apply(self, event: Event) -> None:
        """Check `event` against the current state and fold it in; on IllegalTransition nothing changed."""
        if isinstance(event, Created):
            if self.created is not None:
                raise IllegalTransition(f"incident {self.id} was already created")
            self.created = event
        else:
            self._check_accepts(event)
            if isinstance(event, Dispatched):
                self._dispatch(event)
            elif isinstance(event, Cleared | Cancelled):
                self._release(event)
            elif isinstance(event, Supported) or (isinstance(event, Contacted | Arrived) and event.unit_id is None):
                self._record(self.incident_marks, event, f"incident {self.id}")
            elif isinstance(event, Acknowledged | Departed | Contacted | Arrived):
                self._mark_unit(event)
            elif isinstance(event, Reassigned):
                if self.assignment(str(event.unit_id)) is None:
                    raise IllegalTransition(f"unit {event.unit_id} was never dispatched to incident {self.id}")
            elif isinstance(event, Closed):
                self._end_assignments(event, cancel=False)
                self.closed = Milestone.of(event)
            elif isinstance(event, Diverted):
                self._end_assignments(event, cancel=True)
                self.diversion = Diversion(event.reason, event.ts)
            elif isinstance(event, HandedOver):
                self._hand_over(event)
            elif isinstance(event, Noted) and event.source in DEVICE_SOURCES:
                self.device_notes += 1
        self.log.append(event)

    def _check_accepts(self, event: Event) -> None:
        if self.created is None:
            raise IllegalTransition(f"incident {self.id} does not exist yet: its first event must be 'created'")
        if self.closed is not None:
            raise IllegalTransition(f"incident {self.id} was closed at {self.closed.ts}; no change is accepted")
        if event.ts < self.received:
            raise IllegalTransition(f"{event.type} at {event.ts} is before the call was received at {self.received}")
        if self.diversion is not None and not isinstance(event, Noted | HandedOver | Closed):
            raise IllegalTransition(f"incident {self.id} was diverted to the 12345 hotline; {event.type} is refused")

    def _active_assignment_of(self, event: Event) -> Assignment:
        a = self.assignment(str(event.unit_id))
        if a is None:
            raise IllegalTransition(f"unit {event.unit_id} was never dispatched to incident {self.id}")
        if a.cancelled is not None:
            raise IllegalTransition(f"the assignment of unit {a.unit_id} was cancelled at {a.cancelled.ts}")
        return a

    def _dispatch(self, event: Dispatched) -> None:
        a = self.assignment(str(event.unit_id))
        if a is not None and a.active:
            raise IllegalTransition(f"unit {a.unit_id} is already assigned to incident {self.id} ({a.status})")
        self.assignments.append(Assignment(str(event.unit_id), event.cmd_id, {"dispatched": Milestone.of(event)},
                                           aerial=event.aerial))

    def _mark_unit(self, event: Acknowledged | Departed | Contacted | Arrived) -> None:
        a = self._active_assignment_of(event)
        if isinstance(event, Acknowledged) and event.cmd_id and a.cmd_id and event.cmd_id != a.cmd_id:
            raise IllegalTransition(f"ack of command {event.cmd_id}, but unit {a.unit_id} was dispatched by {a.cmd_id}")
        cleared = a.marks.get("cleared")
        if cleared is not None and event.ts > cleared.ts:
            # Late data from before the release still belongs to the response; later data does not.
            raise IllegalTransition(f"unit {a.unit_id} was cleared at {cleared.ts}, before {event.type} at {event.ts}")
        self._record(a.marks, event, f"unit {a.unit_id}")

    @staticmethod
    def _record(marks: dict[str, Milestone], event: Event, who: str) -> None:
        """Keep the earliest time: a repeat is refused, an earlier time (a late batch) replaces the mark."""
        previous = marks.get(event.type)
        if previous is not None and previous.ts <= event.ts:
            raise IllegalTransition(f"{who} already {event.type} at {previous.ts}")
        marks[event.type] = Milestone.of(event)

    def _release(self, event: Cleared | Cancelled) -> None:
        a = self._active_assignment_of(event)
        if not a.active:
            raise IllegalTransition(f"unit {a.unit_id} was already cleared at {a.marks['cleared'].ts}")
        later = [name for name, mark in a.marks.items() if mark.ts > event.ts]
        if later:
            raise IllegalTransition(f"unit {a.unit_id} cannot be {event.type} at {event.ts}, before its {later[0]} "
                                    f"at {a.marks[later[0]].ts}")
        if isinstance(event, Cleared):
            a.marks["cleared"] = Milestone.of(event)
        else:
            a.cancelled = Milestone.of(event)

    def _end_assignments(self, event: Closed | Diverted, *, cancel: bool) -> None:
        for a in self.active_assignments():
            mark = Milestone(event.ts, event.source, a.unit_id)
            if cancel:
                a.cancelled = mark
            else:
                a.marks["cleared"] = mark

    def _hand_over(self, event: HandedOver) -> None:
        if self.diversion is None:
            raise IllegalTransition(f"incident {self.id} was not diverted to the 12345 hotline")
        if self.diversion.handed_over_at is not None:
            raise IllegalTransition(f"incident {self.id} was already handed over at {self.diversion.handed_over_at}")
        self.diversion.handed_over_at, self.diversion.ref = event.ts, event.ref

    def _require_created(self) -> Created:
        if self.created is None:
            raise IllegalTransition(f"incident {self.id} does not exist yet: its first event must be 'created'")
        return self.created

    def milestones(self) -> dict[str, Milestone | None]:
        """Each SPEC milestone: the earliest time any assignment reached it (ties: the first recorded).

        Drone assignments do not count: the response targets (e.g. on scene within 8 minutes) measure the
        officers reaching the caller, and a drone overhead within 3 minutes must not mark them met.
        """
        c = self._require_created()
        found: dict[str, list[Milestone]] = {name: [] for name in MILESTONES}
        found["received"].append(Milestone(self.received, c.source))
        for a in self.assignments:
            if a.aerial:
                continue
            for name, mark in a.marks.items():
                if name != "cleared":  # a unit's release is not the incident's `cleared`
                    found[name].append(mark)
        for name, mark in self.incident_marks.items():
            found[name].append(mark)
        if self.closed is not None:
            found["cleared"].append(self.closed)
        return {name: min(marks, key=lambda m: m.ts) if marks else None for name, marks in found.items()}

    def _log_tail(self, limit: int | None) -> list[Event]:
        if limit is None:
            return self.log
        return self.log[-limit:] if limit > 0 else []

    def view(self, now_ms: int, policies: Mapping[str, Policy] = BUILTIN_POLICIES, *,
             log_limit: int | None = None) -> dict[str, Any]:
        """The incident as GET /api/v1/incidents/{id} shows it, SLA evaluated at `now_ms`.

        A diverted incident has no SLA (the police targets no longer apply); an unknown policy name
        evaluates to no targets. `log_limit`: only the newest entries of the log (the live feed's view;
        `log_size` says how many there are in all)."""
        c = self._require_created()
        milestones = self.milestones()
        policy = policies.get(c.policy) if c.policy else None
        sla = []
        if policy is not None and self.diversion is None:
            times = {name: None if m is None else m.ts for name, m in milestones.items()}
            sla = [t.to_dict() for t in evaluate(policy, times, self.received, now_ms, final=self.closed is not None)]
        return {
            "id": self.id,
            "category": c.category,
            "priority": c.priority,
            "lat": c.lat,
            "lon": c.lon,
            "address": c.address,
            "summary": c.summary,
            "status": self.status,
            "policy": c.policy,
            "arrival_radius_m": self.arrival_radius_m,
            "received_at": self.received,
            "created_at": c.ts,
            "closed_at": None if self.closed is None else self.closed.ts,
            "diversion": None if self.diversion is None else self.diversion.to_dict(),
            "milestones": {name: None if m is None else m.to_dict() for name, m in milestones.items()},
            "assignments": [a.to_dict() for a in self.assignments],
            "sla": sla,
            "log": [e.to_dict() for e in self._log_tail(log_limit)],
            "log_size": len(self.log),
        }
