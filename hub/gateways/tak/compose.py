"""The TAK gateway in a running hub: its sources (the live picture and the open incidents), TAK users as units of
kind "tak", SOS beacons, and its place among the device-command gateways.

A TAK user is an allied team member: on the one-map like a unit, but not the hub's to dispatch. Its device cannot
receive or sign for a dispatch order (:class:`TakCommands`: a command is counted, never sent), so a dispatch to it
raises the "confirm by radio" alert instead of waiting for an acknowledgment.

An SOS beacon goes out when a unit's SOS is raised and is cancelled when its SOS incident closes, or after
``hold_s`` when the SOS made no incident (the hub's alerts are never "resolved" on their own).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Protocol

from devices.clock import now_ms
from hub.config import Settings
from hub.gateways.submit import Submit
from hub.gateways.tak.gateway import TakGateway, TakTls
from hub.ingest.live import LiveState

__all__ = ["TakCommands", "TakLink", "start_tak"]

log = logging.getLogger(__name__)

PutUnit = Callable[[str, dict[str, Any]], Awaitable[None]]


class OpenIncidents(Protocol):
    """The incident service as the feed reads it (a gateway does not depend on the incident package)."""

    def open_incidents(self) -> Iterable[Any]: ...

    def view(self, incident: Any) -> dict[str, Any]: ...


class TakCommands:
    """CommandRouter's side of TAK users' devices: owned, unable to sign, commands counted and dropped."""

    def __init__(self, gateway: TakGateway) -> None:
        self.gateway = gateway
        self.counters: Counter[str] = Counter()

    def owns(self, device_id: str) -> bool:
        return device_id in self.gateway.users

    def can_sign(self, device_id: str) -> bool:
        return False  # a TAK client has no message that signs for a dispatch order

    def command(self, device_id: str, raw: bytes) -> None:
        self.counters["command_unsupported"] += 1
        log.info("tak: %s is a TAK user; the hub's command to it is not sent (confirm by radio)", device_id)


class TakLink:
    """Sources, new users and SOS beacons between the hub and its :class:`TakGateway`."""

    def __init__(self, live: LiveState, incidents: OpenIncidents, put_unit: PutUnit, *, hold_s: float = 600.0,
                 wall_ms: Callable[[], int] = now_ms) -> None:
        self.live, self.incidents, self.put_unit, self.hold_s, self.wall_ms = live, incidents, put_unit, hold_s, wall_ms
        self.gateway: TakGateway | None = None
        self._sos_incident: dict[str, str] = {}  # SOS incident id -> unit id
        self._timers: set[asyncio.TimerHandle] = set()

    def units(self) -> list[dict[str, Any]]:
        return self.live.snapshot(self.wall_ms())

    def open_incidents(self) -> list[dict[str, Any]]:
        return [self.incidents.view(incident) for incident in self.incidents.open_incidents()]

    async def new_user(self, device_id: str, callsign: str, team: str | None) -> None:
        """A TAK user seen for the first time: a unit of its own (id = the device id), so its fixes are taken."""
        if device_id in self.live.units:
            return
        await self.put_unit(device_id, {"name": callsign[:64] or device_id, "kind": "tak", "devices": [device_id],
                                        "capabilities": []})
        log.info("tak: %s (%s, team %s) joins the map", callsign, device_id, team)

    async def sos_raised(self, device_id: str, unit_id: str | None, incident_id: str | None) -> None:
        if self.gateway is None or unit_id is None or unit_id not in self.live.units:
            return
        self.gateway.sos(self.live.unit_view(unit_id, self.wall_ms()))
        if incident_id is not None:
            self._sos_incident[incident_id] = unit_id
        else:
            timer = asyncio.get_running_loop().call_later(self.hold_s, self._cancel, unit_id)
            self._timers.add(timer)

    async def incident_closing(self, incident_id: str) -> None:
        unit_id = self._sos_incident.pop(incident_id, None)
        if unit_id is not None:
            self._cancel(unit_id)

    def _cancel(self, unit_id: str) -> None:
        if self.gateway is not None and unit_id in self.live.units:
            self.gateway.cancel_sos(self.live.unit_view(unit_id, self.wall_ms()))

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()


def tak_tls(s: Settings) -> TakTls | None:
    """The client certificate a ``tls://`` TAK server asks for (FIELDHUB_TAK_TLS_*), or None."""
    if s.tak_tls_cert is None:
        return None
    return TakTls(cert=str(s.tak_tls_cert), key=_text(s.tak_tls_key), cafile=_text(s.tak_tls_ca),
                  password=s.tak_tls_password, server_hostname=s.tak_tls_server_name)


def _text(path: Path | None) -> str | None:
    return str(path) if path is not None else None


async def start_tak(stack: AsyncExitStack, s: Settings, submit: Submit, link: TakLink) -> TakGateway:
    """The TAK connection on ``stack`` (it connects in the background and retries; a bad URL stops the start)."""
    gateway = await stack.enter_async_context(TakGateway(
        s.tak_url, submit=submit, units_source=link.units, incidents_source=link.open_incidents,
        interval_s=s.tak_interval_s, on_new_user=link.new_user, tls=tak_tls(s)))
    link.gateway = gateway
    stack.callback(link.close)
    log.info("tak: Cursor-on-Target to %s every %.0f s", s.tak_url, s.tak_interval_s)
    return gateway
