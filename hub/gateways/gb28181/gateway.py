"""GB/T 28181 devices into the ingest pipeline, as if they were native MQTT devices.

A MobilePosition becomes a fix on the device's ``telemetry`` topic, an Alarm an ``sos`` event on its ``event``
topic, registration and missed keepalives a retained ``online``/``offline`` status, all handed to the pipeline's
``submit`` so every stage (limits, validation, dedupe, state, detectors, persist) applies as it does to MQTT.

The identity is the SIP one: the registrar accepts a MESSAGE only from where the device registered with its
password, so the body's ``<DeviceID>`` (often a channel of the device) never names another device's topic.

Every body is hostile: a refused one is counted by reason in :attr:`Gb28181Gateway.rejects` and logged, and the
handler returns normally, so one device's garbage is only its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from devices import payloads
from devices.clock import now_ms
from devices.payloads import Event, Status
from devices.topics import Channel, device_topic
from gb28181.manscdp import (
    DEFAULT_UTC_OFFSET_MIN,
    Alarm,
    Keepalive,
    ManscdpError,
    MobilePosition,
    Unsupported,
    parse_body,
    to_fix,
)
from gb28181.manscdp_build import build_alarm_ack
from gb28181.registrar import Registrar, RegistrarConfig
from gb28181.sip import SipError

__all__ = ["Gb28181Gateway", "Submit"]

log = logging.getLogger(__name__)

PasswordOf = Callable[[str], Awaitable[str | None]]
# The alarm's own text is kept short in the event: the event's free fields share a 4 KiB budget.
MAX_DESCRIPTION: Final = 256


class Submit(Protocol):
    """``Pipeline.submit``: hand over one raw message; for QoS 1 the future of its commit, None when refused."""

    def __call__(self, topic: str, payload: bytes, qos: int, retained: bool = False) -> asyncio.Future[None] | None:
        ...


class Gb28181Gateway:
    """Owns a :class:`Registrar` and feeds what its devices say to ``submit``; an async context manager.

    A position or an alarm is answered (the registrar sends the 200 once the handler returns) only after its rows
    are committed, or after ``store_timeout_s``: then the 200 means "stored", and a slow database delays this
    device's answer without holding up any other device (the registrar handles each request in its own task).
    """

    def __init__(
        self,
        config: RegistrarConfig,
        *,
        submit: Submit,
        password_of: PasswordOf,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = now_ms,
        utc_offset_min: int = DEFAULT_UTC_OFFSET_MIN,
        store_timeout_s: float = 5.0,
        ack_alarms: bool = True,
    ) -> None:
        self.submit = submit
        self.wall_ms = wall_ms
        self.utc_offset_min = utc_offset_min
        self.store_timeout_s = store_timeout_s
        self.ack_alarms = ack_alarms
        self.registrar = Registrar(
            config,
            password_of=password_of,
            on_message=self.on_message,
            on_online=self.on_online,
            on_offline=self.on_offline,
            clock=clock,
        )
        self.counters: Counter[str] = Counter()  # fixes, alarms, keepalives, status, store_timeout, ...
        self.rejects: Counter[str] = Counter()  # refused bodies by reason (ManscdpError reasons, unsupported)
        self.ignored: Counter[str] = Counter()  # well-formed bodies the hub has no use for, by type
        self._acks: set[asyncio.Task[None]] = set()

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Gb28181Gateway:
        await self.registrar.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        # The registrar first: no new message starts an acknowledgment while the pending ones are cancelled.
        await self.registrar.stop()
        for task in list(self._acks):
            task.cancel()
        await asyncio.gather(*self._acks, return_exceptions=True)

    @property
    def udp_port(self) -> int:
        return self.registrar.udp_port

    @property
    def tcp_port(self) -> int:
        return self.registrar.tcp_port

    # --- metrics ----------------------------------------------------------------------------------------------

    @property
    def registered_devices(self) -> int:
        return len(self.registrar.presence.registered())

    @property
    def fixes(self) -> int:
        return self.counters["fixes"]

    @property
    def alarms(self) -> int:
        return self.counters["alarms"]

    @property
    def drops(self) -> Counter[str]:
        """Datagrams and connections the transports refused (oversized, garbage, overloaded), by reason."""
        return self.registrar.drops

    # --- presence ---------------------------------------------------------------------------------------------

    def on_online(self, device_id: str) -> None:
        self._status(device_id, "online")

    def on_offline(self, device_id: str, reason: str) -> None:
        log.info("gb28181: %s is offline (%s)", device_id, reason)
        self._status(device_id, "offline")

    def _status(self, device_id: str, state: str) -> None:
        # Retained, QoS 1, as a native device's status and Last Will: the latest state is what the hub keeps.
        payload = payloads.encode_status(Status(ts=self.wall_ms(), state=state))
        future = self.submit(device_topic(device_id, "status"), payload, 1, True)
        if future is None:
            self.counters["status_refused"] += 1
            log.warning("gb28181: the pipeline refused the %s status of %s (full)", state, device_id)
            return
        self.counters["status"] += 1
        future.add_done_callback(_consume)

    # --- messages ---------------------------------------------------------------------------------------------

    async def on_message(self, device_id: str, body: bytes, content_type: str) -> None:
        """One MANSCDP body of a registered device; returns normally whatever the body holds."""
        try:
            parsed = parse_body(body, utc_offset_min=self.utc_offset_min)
        except ManscdpError as exc:
            self._reject(device_id, exc.reason, exc.detail)
            return
        if isinstance(parsed, MobilePosition):
            await self._position(device_id, parsed)
        elif isinstance(parsed, Alarm):
            await self._alarm(device_id, parsed)
        elif isinstance(parsed, Keepalive):
            self.counters["keepalives"] += 1  # presence is the registrar's: it has already heard the device
        elif isinstance(parsed, Unsupported):
            self._reject(device_id, "unsupported", f"{parsed.root}/{parsed.cmd_type}")
        else:
            self.ignored[type(parsed).__name__] += 1

    def _reject(self, device_id: str, reason: str, detail: str) -> None:
        self.rejects[reason] += 1
        log.info("gb28181: a body from %s refused: %s (%s)", device_id, reason, detail)

    async def _position(self, device_id: str, position: MobilePosition) -> None:
        try:
            payload = payloads.encode_fixes([to_fix(position)])
        except Exception as exc:  # contained: a value the contract cannot encode is this body's refusal only
            self._reject(device_id, "bad_value", f"{type(exc).__name__}: {exc}")
            return
        if await self._store(device_id, "telemetry", payload):
            self.counters["fixes"] += 1

    async def _alarm(self, device_id: str, alarm: Alarm) -> None:
        self.counters["alarms"] += 1
        event = Event(ts=alarm.ts_ms if alarm.ts_ms is not None else self.wall_ms(), type="sos",
                      data=alarm_data(alarm))
        if await self._store(device_id, "event", payloads.encode_event(event)) and self.ack_alarms:
            # Started now, run after the handler returns: the device gets the SIP 200 before the Response.
            task = asyncio.get_running_loop().create_task(self._ack(device_id, alarm))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)

    async def _store(self, device_id: str, channel: Channel, payload: bytes) -> bool:
        """Submit with QoS 1 and wait (bounded) for the commit; False when refused or not committed in time."""
        future = self.submit(device_topic(device_id, channel), payload, 1)
        if future is None:
            self.counters["store_refused"] += 1
            log.warning("gb28181: the pipeline refused a %s message of %s (full)", channel, device_id)
            return False
        try:
            # Shielded: the future is shared by every message of the cut, a time-out here must not cancel it.
            await asyncio.wait_for(asyncio.shield(future), self.store_timeout_s)
        except TimeoutError:
            self.counters["store_timeout"] += 1
            log.warning("gb28181: a %s message of %s not committed within %.1f s", channel, device_id,
                        self.store_timeout_s)
            future.add_done_callback(_consume)
            return False
        except Exception:  # contained: a failed commit is counted, the device's request is still answered
            self.counters["store_failed"] += 1
            log.exception("gb28181: storing a %s message of %s failed", channel, device_id)
            return False
        return True

    async def _ack(self, device_id: str, alarm: Alarm) -> None:
        try:
            body = build_alarm_ack(alarm.sn, alarm.device_id)
            response = await self.registrar.send_request(device_id, "MESSAGE", body)
        except (SipError, ValueError) as exc:
            self.counters["alarm_ack_failed"] += 1
            log.info("gb28181: the alarm response to %s was not delivered: %s", device_id, exc)
            return
        self.counters["alarm_acks" if response.status_code < 300 else "alarm_ack_refused"] += 1


def alarm_data(alarm: Alarm) -> dict[str, Any]:
    """The ``sos`` event's fields: the position the alarm carries (the sos path checks it against the last fix),
    and what the standard says of the alarm, under names that say where they come from."""
    data: dict[str, Any] = {"source": "gb28181", "alarm_priority": alarm.priority, "alarm_method": alarm.method}
    if alarm.lat is not None and alarm.lon is not None:
        data["lat"], data["lon"] = alarm.lat, alarm.lon
    if alarm.alarm_type is not None:
        data["alarm_type"] = alarm.alarm_type
    if alarm.description:
        data["description"] = alarm.description[:MAX_DESCRIPTION]
    return data


def _consume(future: asyncio.Future[None]) -> None:
    # Nobody awaits this commit: read its outcome so a failure is not reported as "never retrieved".
    if not future.cancelled():
        future.exception()
