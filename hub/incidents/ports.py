"""What the incident service's collaborators may ask of it: narrow protocols, so none depends on the service class.

The incident log owns the incidents and their state; the follow-ups (acks, alerts, detectors, assignments) write
to it only through `record`/`claim`/`commit` and read it through the look-ups listed here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, Protocol

from hub.domain.device_claims import Verdict
from hub.domain.events import Event
from hub.domain.incident import Incident

__all__ = ["Decide", "IncidentCreator", "IncidentLog", "IncidentWriter", "Reassigner", "Send"]

# What a claim becomes, decided on the incident as it is when the write happens.
Decide = Callable[[Incident], Sequence[Event]]
# Publish one command (cmd_id, devices, encoded command) to each device's command topic.
Send = Callable[[str, Sequence[str], bytes], None]


class IncidentLog(Protocol):
    """The incidents as a collaborator reads them and adds device, detector and system events to them."""

    def is_open(self, incident_id: str) -> bool: ...

    def has_mark(self, incident_id: str, unit_id: str, milestone: str) -> bool: ...

    def current(self, incident_id: str) -> Incident | None: ...

    def open_incidents(self) -> Iterator[Incident]: ...

    async def record(self, incident_id: str, *events: Event) -> Incident | None: ...

    async def claim(self, incident_id: str, what: str, decide: Decide,
                    then: Callable[[Incident], Awaitable[None]] | None = None) -> Incident | None: ...

    async def refuse_claim(self, reason: str, incident_id: str, unit_id: str | None, detail: str) -> None: ...

    def verdict_events(self, verdict: Verdict, incident: Incident, unit_id: str | None, prefix: str,
                       make: Callable[[int], Event], *, source: str = "device") -> list[Event]: ...

    def count(self, reason: str) -> None: ...


class IncidentWriter(IncidentLog, Protocol):
    """The log as the assignments change it: whole events checked and committed, the result viewed."""

    async def incident(self, incident_id: str, *, keep: bool = True) -> Incident: ...

    async def commit(self, incident_id: str, events: Sequence[Event]) -> Incident: ...

    async def get(self, incident_id: str) -> dict[str, Any]: ...

    def view(self, incident: Incident, *, log_limit: int | None = None) -> dict[str, Any]: ...

    async def audit_act(self, action: str, incident_id: str, detail: dict[str, object]) -> None: ...


class IncidentCreator(IncidentLog, Protocol):
    """The log as an SOS opens an incident of its own."""

    async def create(self, body: Mapping[str, Any], *, source: str = "api",
                     exclude_units: Collection[str] = ()) -> dict[str, Any]: ...


class Reassigner(Protocol):
    """Moves a response from a unit that never acknowledged to the next (the ack follow-up's escalation)."""

    async def reassign(self, incident_id: str, from_unit: str, to_unit: str | None, reason: str, *,
                       source: str = "api", escalated: bool = False) -> dict[str, Any]: ...
