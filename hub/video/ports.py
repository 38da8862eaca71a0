"""What the video desk needs of the rest of the hub, as Protocols: the composition root passes the real objects.

The desk never imports the incident service; `hub.server` hands it one, and mypy checks that it fits here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from hub.domain.events import Event

__all__ = ["CameraStarts", "Incidents"]


class CameraStarts(Protocol):
    """Starting a unit's body cameras for an incident, with the ack watch the incident service keeps on it."""

    async def video_start(self, incident_id: str, unit_id: str, why: str = "") -> None: ...


class Incidents(Protocol):
    """The incident service, as far as the desk uses it: look-ups, log entries and sending device commands."""

    @property
    def follow_up(self) -> CameraStarts: ...

    @property
    def video_token_ttl_ms(self) -> int: ...

    def assigned_to(self, unit_id: str) -> str | None: ...

    def is_open(self, incident_id: str) -> bool: ...

    async def get(self, incident_id: str) -> dict[str, Any]: ...

    async def record(self, incident_id: str, *events: Event) -> object: ...

    def send(self, cmd_id: str, devices: Sequence[str], raw: bytes) -> None: ...
