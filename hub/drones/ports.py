"""What the drones need of the rest of the hub, as Protocols: the composition root passes the real objects.

The drone service never imports the incident service; `hub.server` hands it one, and mypy checks that it fits
here. Incident errors it catches (IncidentConflict) are in `hub.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from hub.domain.events import Event

__all__ = ["Incidents"]


class Incidents(Protocol):
    """The incident service, as far as the drones use it: look-ups, aerial assignments, log entries, cancels."""

    async def get(self, incident_id: str) -> dict[str, Any]: ...

    def is_open(self, incident_id: str) -> bool: ...

    def has_mark(self, incident_id: str, unit_id: str, milestone: str) -> bool: ...

    def assigned_to(self, unit_id: str) -> str | None: ...

    async def dispatch(self, incident_id: str, unit_ids: Sequence[str], *, source: str = "api",
                       aerial: bool = False) -> dict[str, Any]: ...

    async def record(self, incident_id: str, *events: Event) -> object: ...

    async def cancel(self, incident_id: str, unit_id: str, reason: str, *, source: str = "api") -> dict[str, Any]: ...
