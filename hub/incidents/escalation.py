"""Commands waiting for their `ack` (the commands themselves are built by :mod:`hub.domain.commands`).

`AckWatch` holds each command sent to a device until the device signs for it (SPEC 2): when its
deadline passes the command is due for a re-send (the same cmd_id), and once the re-sends are used
up it has expired; what an expired command means (escalate a dispatch, note a video_start) is the
incident service's business. Time is passed in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from devices.payloads import Command, encode_command
from devices.tasks import cancel_and_wait
from hub.domain.commands import video_start_command
from hub.domain.errors import DomainError
from hub.domain.events import Noted
from hub.errors import HubError, StorageUnavailable
from hub.ingest.live import camera_devices

if TYPE_CHECKING:
    from hub.incidents.service import IncidentService

__all__ = ["AckFollowUp", "AckWatch", "Outstanding", "VideoTokenRegistrar"]

log = logging.getLogger(__name__)

# Stores a video_start's token (command, device_id, unit_id) before the command goes out: the hub's video desk.
VideoTokenRegistrar = Callable[[Command, str, str | None], Awaitable[None]]


@dataclass
class Outstanding:
    """A command sent to `devices` and not acknowledged yet."""

    cmd_id: str
    kind: str  # the command type: "dispatch" or "video_start"
    incident_id: str
    unit_id: str
    devices: list[str]
    raw: bytes
    deadline: int
    resends: int = 0


@dataclass
class AckWatch:
    timeout_ms: int
    max_resends: int
    commands: dict[str, Outstanding] = field(default_factory=dict)

    def add(self, cmd_id: str, kind: str, incident_id: str, unit_id: str, devices: list[str], raw: bytes,
            now_ms: int) -> None:
        self.commands[cmd_id] = Outstanding(cmd_id, kind, incident_id, unit_id, list(devices), raw,
                                            now_ms + self.timeout_ms)

    def discard(self, cmd_id: str | None) -> None:
        if cmd_id is not None:
            self.commands.pop(cmd_id, None)

    def __contains__(self, cmd_id: object) -> bool:
        return cmd_id in self.commands

    def restore(self, c: Outstanding, now_ms: int) -> None:
        """Watch an expired command again (its escalation could not be written): it expires once more later."""
        c.deadline = now_ms + self.timeout_ms
        self.commands[c.cmd_id] = c

    def due(self, now_ms: int) -> tuple[list[Outstanding], list[Outstanding]]:
        """Commands to re-send now (their deadline is moved on) and expired ones (dropped from the watch)."""
        resend: list[Outstanding] = []
        expired: list[Outstanding] = []
        for c in list(self.commands.values()):
            if c.deadline > now_ms:
                continue
            if c.resends < self.max_resends:
                c.resends += 1
                c.deadline = now_ms + self.timeout_ms
                resend.append(c)
            else:
                del self.commands[c.cmd_id]
                expired.append(c)
        return resend, expired


class AckFollowUp:
    """The incident service's periodic ack check (re-send, escalate) and its video_start on arrival."""

    def __init__(self, service: IncidentService) -> None:
        self.service = service
        self._task: asyncio.Task[None] | None = None
        # Without a registrar (no video desk) the token is sent but nothing would accept it.
        self.video_tokens: VideoTokenRegistrar | None = None

    def start(self, interval_s: float) -> None:
        self._task = asyncio.create_task(self.run(interval_s), name="incident-ack-check")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def run(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.check_acks()
                self.service.alerts.check_sla(self.service.clock())
                await self.service.alerts.flush_repeats(self.service.clock())
            except Exception:
                log.exception("incident ack/SLA check failed")

    async def check_acks(self) -> None:
        """Re-send commands whose ack is overdue; escalate dispatches (or note video_starts) past their re-sends."""
        svc = self.service
        resend, expired = svc._watch.due(svc.clock())
        for c in resend:
            log.info("incident %s: no ack of %s %s from unit %s: re-sent (%d)", c.incident_id, c.kind, c.cmd_id,
                     c.unit_id, c.resends)
            svc.send(c.cmd_id, c.devices, c.raw)
            if c.kind == "dispatch" and c.resends == 1:
                svc.alerts.raise_alert("unacknowledged", svc.clock(), f"unit {c.unit_id} has not acknowledged "
                                       f"incident {c.incident_id} within {svc.ack_timeout_s:g} s: re-sent",
                                       unit_id=c.unit_id, incident_id=c.incident_id)
        for c in expired:
            if c.kind == "dispatch":
                await self.escalate(c)
            else:
                svc._video.pop(c.cmd_id, None)
                await svc.record(c.incident_id, Noted(ts=svc.clock(), source="system", unit_id=c.unit_id,
                                                      text=f"{c.kind} not acknowledged by {', '.join(c.devices)} "
                                                           f"(cmd {c.cmd_id})"))

    async def escalate(self, c: Outstanding) -> None:
        """No ack after the re-sends: cancel the assignment and dispatch the next recommended unit."""
        svc = self.service
        svc._pending.pop(c.cmd_id, None)
        incident = svc.current(c.incident_id)
        a = incident.assignment(c.unit_id) if incident is not None else None
        if a is None or not a.active or a.cmd_id != c.cmd_id or "acknowledged" in a.marks:
            return
        waited = f"{svc.ack_timeout_s:g} s and {c.resends} re-send(s)"
        try:
            view = await svc.reassign(c.incident_id, c.unit_id, None,
                                      f"no acknowledgment of dispatch {c.cmd_id} after {waited}",
                                      source="system", escalated=True)
        except StorageUnavailable as exc:
            # Not written: the unit is still waited for (an ack now still counts), the escalation tried again.
            svc._pending[c.cmd_id] = (c.incident_id, c.unit_id)
            svc._watch.restore(c, svc.clock())
            log.warning("incident %s: escalation from %s waits for the database: %s", c.incident_id, c.unit_id, exc)
            return
        except (HubError, DomainError) as exc:
            svc.refused += 1
            log.info("incident %s: escalation from %s refused: %s", c.incident_id, c.unit_id, exc)
            return
        to_unit = next((e["to_unit_id"] for e in reversed(view["log"]) if e["type"] == "reassigned"), None)
        svc.alerts.raise_alert("unacknowledged", svc.clock(),
                               f"unit {c.unit_id} did not acknowledge incident {c.incident_id}; "
                               + (f"escalated to {to_unit}" if to_unit else "no unit available to take over"),
                               unit_id=c.unit_id, incident_id=c.incident_id, to_unit_id=to_unit)
        log.warning("incident %s: unit %s did not acknowledge; escalated to %s", c.incident_id, c.unit_id, to_unit)

    async def video_start(self, incident_id: str, unit_id: str, why: str = "") -> None:
        """On arrival (or an SOS: `why`): the unit's body cameras get `video_start` (SPEC 2), its token stored
        first; the command and its ack are noted."""
        svc = self.service
        for device_id in camera_devices(svc.live, unit_id):
            now = svc.clock()
            command = video_start_command(device_id, incident_id, svc.public_base_url, now, svc.video_token_ttl_ms)
            if self.video_tokens is not None:
                try:
                    await self.video_tokens(command, device_id, unit_id)
                except HubError as exc:
                    log.warning("incident %s: video_start to %s not sent: %s", incident_id, device_id, exc)
                    continue
            raw = encode_command(command)
            svc._video[command.cmd_id] = (incident_id, unit_id, device_id)
            svc._watch.add(command.cmd_id, "video_start", incident_id, unit_id, [device_id], raw, now)
            await svc.record(incident_id, Noted(ts=now, source="system", unit_id=unit_id,
                                                text=f"video_start sent to {device_id} (cmd {command.cmd_id}"
                                                     f"{', ' + why if why else ''})"))
            svc.send(command.cmd_id, [device_id], raw)
