"""Commands waiting for their `ack` (the commands themselves are built by :mod:`hub.domain.commands`).

`AckWatch` holds each command sent to a device until the device signs for it (SPEC 2): when its
deadline passes the command is due for a re-send (the same cmd_id), and once the re-sends are used
up it has expired. Time is passed in. `AckFollowUp` is the one owner of what is waited for (dispatches
by cmd_id until acked, video_starts until their camera acks, and their watch): it takes the acks,
re-sends, escalates an expired dispatch to the next unit and notes an expired video_start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from devices.payloads import Command, encode_command
from devices.tasks import cancel_and_wait
from hub.domain.commands import video_start_command
from hub.domain.device_claims import ack_verdict
from hub.domain.errors import DomainError
from hub.domain.events import Acknowledged, Event, Noted
from hub.domain.incident import Incident
from hub.errors import HubError, StorageUnavailable
from hub.incidents.alerts import Alerts
from hub.incidents.ports import IncidentLog, Reassigner, Send
from hub.ingest.live import LiveState, camera_devices

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
    """The commands an incident is waiting on: their acks, the periodic check (re-send, escalate, with the
    alerts' SLA check), and the video_start on arrival."""

    def __init__(self, incidents: IncidentLog, reassigner: Reassigner, alerts: Alerts, live: LiveState, send: Send,
                 clock: Callable[[], int], *, ack_timeout_s: float, ack_resends: int, public_base_url: str,
                 video_token_ttl_ms: int) -> None:
        self.incidents = incidents
        self.reassigner = reassigner
        self.alerts = alerts
        self.live = live
        self.send = send
        self.clock = clock
        self.ack_timeout_s = ack_timeout_s
        self.public_base_url = public_base_url
        self.video_token_ttl_ms = video_token_ttl_ms
        self.refused = 0  # escalations the incident refused (logged, dropped)
        self.watch = AckWatch(int(ack_timeout_s * 1000), ack_resends)
        self.interval_s = max(0.05, min(1.0, ack_timeout_s / 4))
        self._pending: dict[str, tuple[str, str]] = {}  # dispatch cmd_id -> (incident_id, unit_id), until acked
        self._video: dict[str, tuple[str, str, str]] = {}  # video_start cmd_id -> (incident_id, unit_id, device)
        self._task: asyncio.Task[None] | None = None
        # Without a registrar (no video desk) the token is sent but nothing would accept it.
        self.video_tokens: VideoTokenRegistrar | None = None
        # Whether a device can sign for a dispatch (the composition root's answer: a device behind a gateway whose
        # protocol has no such message, e.g. a GB/T 28181 camera, cannot).
        self.can_sign: Callable[[str], bool] = lambda device_id: True

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(self.interval_s), name="incident-ack-check")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    # ------------------------------------------------------- what is waited for
    def expect_dispatch(self, cmd_id: str, incident_id: str, unit_id: str, devices: list[str] | None = None,
                        raw: bytes | None = None, now_ms: int = 0) -> None:
        """A dispatch waits for its ack; with `raw` (a ground unit's command) it is also watched for re-sends."""
        self._pending[cmd_id] = (incident_id, unit_id)
        if raw is None:
            return
        if devices and not any(self.can_sign(d) for d in devices):
            # Waiting for an ack that cannot come would take the unit off the incident: the dispatcher confirms by
            # radio instead, and the unit's acknowledgment stays unrecorded (never invented).
            self.alerts.raise_alert("unacknowledged", now_ms or self.clock(),
                                    f"unit {unit_id} has no device that can sign for incident {incident_id} "
                                    f"({', '.join(devices)}): confirm by radio", unit_id=unit_id,
                                    incident_id=incident_id, cannot_sign=True)
            return
        self.watch.add(cmd_id, "dispatch", incident_id, unit_id, devices or [], raw, now_ms)

    def settled(self, cmd_id: str) -> None:
        """The dispatch was acknowledged or its assignment ended: nothing is waited for any more."""
        self._pending.pop(cmd_id, None)
        self.watch.discard(cmd_id)

    def awaits_ack(self, cmd_id: object) -> bool:
        return cmd_id in self._pending or cmd_id in self._video

    async def on_ack(self, device_id: str, event: Any, received_ms: int) -> None:
        """An `ack` counts only from the device the command went to (video_start) or a device of the
        dispatched unit (dispatch); the dispatch counts as acknowledged from this moment on (no escalation),
        even when its log entry has to wait for the database."""
        incidents = self.incidents
        cmd_id = event.data.get("cmd_id")
        dev = self.live.devices.get(device_id)
        device_unit = dev.unit_id if dev is not None else None
        video = self._video.get(cmd_id)
        if video is not None:
            incident_id, unit_id, camera = video
            if device_id != camera:
                await incidents.refuse_claim("ack_wrong_device", incident_id, unit_id,
                                        f"ack of video_start {cmd_id} (sent to {camera}) from {device_id}: ignored")
                return
            del self._video[cmd_id]
            self.watch.discard(cmd_id)
            await incidents.record(incident_id, Noted(ts=self.clock(), source="device", unit_id=unit_id,
                                                 text=f"video_start acknowledged by {device_id}"))
            return
        found = self._pending.get(cmd_id)
        if found is None:
            return
        incident_id, unit_id = found
        if device_unit != unit_id:
            await incidents.refuse_claim("ack_wrong_unit", incident_id, unit_id,
                                    f"ack of dispatch {cmd_id} to unit {unit_id} from {device_id}, a device of "
                                    f"{'unit ' + device_unit if device_unit else 'no unit'}: ignored")
            return
        del self._pending[cmd_id]
        self.watch.discard(cmd_id)

        def decide(incident: Incident) -> list[Event]:
            a = incident.assignment(unit_id)
            dispatched = a.marks["dispatched"].ts if a is not None and a.cmd_id == cmd_id else event.ts
            return incidents.verdict_events(  # an ack is never ignored, only re-timed
                ack_verdict(dispatched, event.ts, received_ms), incident, unit_id, f"ack from {device_id}: ",
                lambda ts: Acknowledged(ts=ts, source="device", unit_id=unit_id, cmd_id=cmd_id))

        await incidents.claim(incident_id, f"ack of {cmd_id} from {device_id}", decide)

    # -------------------------------------------------------------- the check
    async def run(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.check_acks()
                self.alerts.check_sla(self.clock())
                await self.alerts.flush_repeats(self.clock())
            except Exception:
                log.exception("incident ack/SLA check failed")

    async def check_acks(self) -> None:
        """Re-send commands whose ack is overdue; escalate dispatches (or note video_starts) past their re-sends."""
        resend, expired = self.watch.due(self.clock())
        for c in resend:
            log.info("incident %s: no ack of %s %s from unit %s: re-sent (%d)", c.incident_id, c.kind, c.cmd_id,
                     c.unit_id, c.resends)
            self.send(c.cmd_id, c.devices, c.raw)
            if c.kind == "dispatch" and c.resends == 1:
                self.alerts.raise_alert("unacknowledged", self.clock(), f"unit {c.unit_id} has not acknowledged "
                                        f"incident {c.incident_id} within {self.ack_timeout_s:g} s: re-sent",
                                        unit_id=c.unit_id, incident_id=c.incident_id)
        for c in expired:
            if c.kind == "dispatch":
                await self.escalate(c)
            else:
                self._video.pop(c.cmd_id, None)
                await self.incidents.record(c.incident_id, Noted(ts=self.clock(), source="system", unit_id=c.unit_id,
                                                           text=f"{c.kind} not acknowledged by {', '.join(c.devices)} "
                                                                f"(cmd {c.cmd_id})"))

    async def escalate(self, c: Outstanding) -> None:
        """No ack after the re-sends: cancel the assignment and dispatch the next recommended unit."""
        self._pending.pop(c.cmd_id, None)
        incident = self.incidents.current(c.incident_id)
        a = incident.assignment(c.unit_id) if incident is not None else None
        if a is None or not a.active or a.cmd_id != c.cmd_id or "acknowledged" in a.marks:
            return
        waited = f"{self.ack_timeout_s:g} s and {c.resends} re-send(s)"
        try:
            view = await self.reassigner.reassign(c.incident_id, c.unit_id, None,
                                                  f"no acknowledgment of dispatch {c.cmd_id} after {waited}",
                                                  source="system", escalated=True)
        except StorageUnavailable as exc:
            # Not written: the unit is still waited for (an ack now still counts), the escalation tried again.
            self._pending[c.cmd_id] = (c.incident_id, c.unit_id)
            self.watch.restore(c, self.clock())
            log.warning("incident %s: escalation from %s waits for the database: %s", c.incident_id, c.unit_id, exc)
            return
        except (HubError, DomainError) as exc:
            self.refused += 1
            log.info("incident %s: escalation from %s refused: %s", c.incident_id, c.unit_id, exc)
            return
        to_unit = next((e["to_unit_id"] for e in reversed(view["log"]) if e["type"] == "reassigned"), None)
        self.alerts.raise_alert("unacknowledged", self.clock(),
                                f"unit {c.unit_id} did not acknowledge incident {c.incident_id}; "
                                + (f"escalated to {to_unit}" if to_unit else "no unit available to take over"),
                                unit_id=c.unit_id, incident_id=c.incident_id, to_unit_id=to_unit)
        log.warning("incident %s: unit %s did not acknowledge; escalated to %s", c.incident_id, c.unit_id, to_unit)

    async def video_start(self, incident_id: str, unit_id: str, why: str = "") -> None:
        """On arrival (or an SOS: `why`): the unit's body cameras get `video_start` (SPEC 2), its token stored
        first; the command and its ack are noted."""
        for device_id in camera_devices(self.live, unit_id):
            now = self.clock()
            command = video_start_command(device_id, incident_id, self.public_base_url, now, self.video_token_ttl_ms)
            if self.video_tokens is not None:
                try:
                    await self.video_tokens(command, device_id, unit_id)
                except HubError as exc:
                    log.warning("incident %s: video_start to %s not sent: %s", incident_id, device_id, exc)
                    continue
            raw = encode_command(command)
            self._video[command.cmd_id] = (incident_id, unit_id, device_id)
            self.watch.add(command.cmd_id, "video_start", incident_id, unit_id, [device_id], raw, now)
            await self.incidents.record(incident_id, Noted(ts=now, source="system", unit_id=unit_id,
                                                     text=f"video_start sent to {device_id} (cmd {command.cmd_id}"
                                                          f"{', ' + why if why else ''})"))
            self.send(command.cmd_id, [device_id], raw)
