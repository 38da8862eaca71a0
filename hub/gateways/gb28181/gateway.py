"""GB/T 28181 devices into the ingest pipeline, as if they were native MQTT devices.

A MobilePosition becomes a fix on the device's ``telemetry`` topic, an Alarm an ``sos`` event on its ``event``
topic, registration and missed keepalives a retained ``online``/``offline`` status, all handed to the pipeline's
``submit`` so every stage (limits, validation, dedupe, state, detectors, persist) applies as it does to MQTT.

The identity is the SIP one: the registrar accepts a MESSAGE only from where the device registered with its
password, so the body's ``<DeviceID>`` (often a channel of the device) never names another device's topic.

Every body is hostile: a refused one is counted by reason in :attr:`Gb28181Gateway.rejects` and logged, and the
handler returns normally, so one device's garbage is only its own.

What the device is answered (the SIP final response to its MESSAGE/NOTIFY), so that a real device knows whether
to send again: 200 once the hub has the body (stored, or nothing to store: a Keepalive, a query answer, a well-
formed Notify/Response of a CmdType the hub does not use, which the standard expects acknowledged, and a position
without a fix, a normal state of a GPS); 400 with the reason for a body the hub refuses (bad XML, a field out of
range, a Query/Control the hub does not serve, a catalog page that contradicts its answer); 503 when the pipeline
refused the message or did not commit it in time (the device sends it again); 500 when the hub failed (a defect).

When a device comes online the gateway subscribes to its positions (renewed before the subscription expires) and
asks for its catalog and device information (:mod:`hub.gateways.gb28181.queries`). Live-video calls are the video
side's (:class:`gb28181.calls.Calls` on :attr:`Gb28181Gateway.registrar`), which picks the channel with
:meth:`Gb28181Gateway.video_channel`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from devices import payloads
from devices.clock import now_ms
from devices.payloads import Event
from devices.topics import Channel
from gb28181.manscdp import (
    DEFAULT_UTC_OFFSET_MIN,
    Alarm,
    CatalogItem,
    CatalogResponse,
    DeviceInfoResponse,
    Keepalive,
    ManscdpError,
    MobilePosition,
    QueryRequest,
    Unsupported,
    parse_body,
    to_fix,
)
from gb28181.manscdp_build import build_alarm_ack
from gb28181.registrar import Answer, Registrar, RegistrarConfig
from gb28181.sip import SipError
from hub.gateways.submit import Submit, post_status, store

from .queries import DeviceQueries, video_channel

__all__ = ["Gb28181Gateway", "Submit"]

log = logging.getLogger(__name__)

PasswordOf = Callable[[str], Awaitable[str | None]]
# The alarm's own text is kept short in the event: the event's free fields share a 4 KiB budget.
MAX_DESCRIPTION: Final = 256
# ManscdpError reasons that are the hub's own failure, and those that are no error of the device.
_OUR_FAULT: Final = frozenset({"internal"})
_NOT_AN_ERROR: Final = frozenset({"no_fix"})
# Roots of the bodies that ask the hub to do something; the hub serves none of them.
_REQUESTS: Final = frozenset({"Query", "Control"})


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
        position_interval_s: int = 5,
        subscription_expires_s: int = 3600,
        query_devices: bool = True,
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
            # The 200's Date sets the device's clock, which keeps the device's local time (it carries no zone).
            wall=lambda: datetime.fromtimestamp(self.wall_ms() / 1000, timezone(timedelta(minutes=utc_offset_min))),
        )
        self.queries = DeviceQueries(self.registrar, domain=config.domain, wall_ms=wall_ms,
                                     position_interval_s=position_interval_s,
                                     subscription_expires_s=subscription_expires_s)
        self.query_devices = query_devices
        self.counters: Counter[str] = Counter()  # fixes, alarms, keepalives, status, store_timeout, ...
        self.rejects: Counter[str] = Counter()  # refused bodies by reason (ManscdpError reasons, unsupported)
        self.ignored: Counter[str] = Counter()  # well-formed bodies the hub has no use for, by type
        self._acks: set[asyncio.Task[None]] = set()

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Gb28181Gateway:
        await self.registrar.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Queries stopped while the sockets are open, then the registrar: no new message starts an acknowledgment
        # while the pending ones are cancelled.
        await self.queries.close()
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

    def channels(self, device_id: str) -> list[CatalogItem]:
        """The device's channels from its last complete Catalog answer (empty before one came)."""
        return self.queries.channels(device_id)

    def device_info(self, device_id: str) -> DeviceInfoResponse | None:
        return self.queries.device_info(device_id)

    def video_channel(self, device_id: str) -> str:
        """The channel to INVITE: the first camera channel of the catalog, else the device id itself."""
        return video_channel(device_id, self.channels(device_id))

    @property
    def drops(self) -> Counter[str]:
        """Datagrams and connections the transports refused (oversized, garbage, overloaded), by reason."""
        return self.registrar.drops

    # --- presence ---------------------------------------------------------------------------------------------

    def on_online(self, device_id: str) -> None:
        self._status(device_id, "online")
        if self.query_devices:
            self.queries.device_online(device_id)

    def on_offline(self, device_id: str, reason: str) -> None:
        log.info("gb28181: %s is offline (%s)", device_id, reason)
        self.queries.device_offline(device_id)
        self._status(device_id, "offline")

    def _status(self, device_id: str, state: str) -> None:
        post_status(self.submit, device_id, state, self.wall_ms(), counters=self.counters, gateway="gb28181")

    # --- messages ---------------------------------------------------------------------------------------------

    async def on_message(self, device_id: str, body: bytes, content_type: str) -> Answer:
        """One MANSCDP body of a registered device; what to answer it (None: 200), never raises for a body."""
        try:
            parsed = parse_body(body, utc_offset_min=self.utc_offset_min)
        except ManscdpError as exc:
            return self._reject(device_id, exc.reason, exc.detail)
        if isinstance(parsed, MobilePosition):
            return await self._position(device_id, parsed)
        if isinstance(parsed, Alarm):
            return await self._alarm(device_id, parsed)
        if isinstance(parsed, Keepalive):
            self.counters["keepalives"] += 1  # presence is the registrar's: it has already heard the device
        elif isinstance(parsed, CatalogResponse):
            return self.queries.catalog_page(device_id, parsed)
        elif isinstance(parsed, DeviceInfoResponse):
            self.queries.device_info_answer(device_id, parsed)
        elif isinstance(parsed, QueryRequest) or (isinstance(parsed, Unsupported) and parsed.root in _REQUESTS):
            root = "Query" if isinstance(parsed, QueryRequest) else parsed.root
            return self._reject(device_id, "unsupported", f"{root}/{parsed.cmd_type}")
        elif isinstance(parsed, Unsupported):
            self.ignored[f"{parsed.root}/{parsed.cmd_type}"] += 1
        else:
            self.ignored[type(parsed).__name__] += 1
        return None

    def _reject(self, device_id: str, reason: str, detail: str) -> Answer:
        self.rejects[reason] += 1
        log.info("gb28181: a body from %s refused: %s (%s)", device_id, reason, detail)
        if reason in _NOT_AN_ERROR:
            return None
        if reason in _OUR_FAULT:
            return 500, "Server Internal Error"
        return 400, f"Bad Request ({reason})"

    async def _position(self, device_id: str, position: MobilePosition) -> Answer:
        try:
            payload = payloads.encode_fixes([to_fix(position)])
        except Exception as exc:  # contained: a value the contract cannot encode is this body's refusal only
            return self._reject(device_id, "bad_value", f"{type(exc).__name__}: {exc}")
        failure = await self._store(device_id, "telemetry", payload)
        if failure is None:
            self.counters["fixes"] += 1
            return None
        return 503, f"Service Unavailable ({failure})"

    async def _alarm(self, device_id: str, alarm: Alarm) -> Answer:
        self.counters["alarms"] += 1
        event = Event(ts=alarm.ts_ms if alarm.ts_ms is not None else self.wall_ms(), type="sos",
                      data=alarm_data(alarm))
        failure = await self._store(device_id, "event", payloads.encode_event(event))
        if failure is not None:
            return 503, f"Service Unavailable ({failure})"
        if self.ack_alarms:
            # Started now, run after the handler returns: the device gets the SIP 200 before the Response.
            task = asyncio.get_running_loop().create_task(self._ack(device_id, alarm))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)
        return None

    async def _store(self, device_id: str, channel: Channel, payload: bytes) -> str | None:
        return await store(self.submit, device_id, channel, payload, timeout_s=self.store_timeout_s,
                           counters=self.counters, gateway="gb28181")

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
