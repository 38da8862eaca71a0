"""A simulated GB/T 28181-2016 body camera: as strict as the real device it stands for.

It registers with digest and re-registers before expiry, sets its clock from the 200's ``Date``, backs off
after a refusal (403/404/timeouts; never a tight retry loop), keeps alive every ``keepalive_s``, reports
``MobilePosition`` when the platform subscribes (NOTIFY at the subscription's Interval) and, when configured
so, unsolicited by MESSAGE every ``position_interval_s`` (off by default, as on most devices), raises alarms,
answers Catalog and DeviceInfo queries (200 first, then the answer as MESSAGEs) and streams video on INVITE
(:mod:`sim.gb28181_media`). It refuses what a real device refuses, each refusal counted in ``rejected`` by
reason: a request from another platform (403), a body it cannot parse (400), an unknown device or channel
(404), a SUBSCRIBE without an Event (489), an unknown dialog (481).

Cheap when not streaming: one socket and three small tasks per camera, no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from devices.tasks import cancel_and_wait
from gb28181.manscdp import Ack, ManscdpError, QueryRequest, parse_body
from gb28181.sip import SipRequest, SipResponse, Transport, uri_user
from sim import gb28181_bodies as bodies
from sim.gb28181_media import MediaSessions
from sim.gb28181_stream import StreamFactory, StreamSettings
from sim.gb28181_subscription import PositionSubscription
from sim.gb28181_ua import DeviceUa, UaConfig, UaError

__all__ = ["GbCamera", "GbCameraConfig", "GbCounters", "PositionSource", "parse_date"]

log = logging.getLogger(__name__)

PositionSource = Callable[[], tuple[float, float, float, float]]  # (lat, lon, speed km/h, heading deg)


@dataclass(frozen=True, slots=True)
class GbCameraConfig:
    device_id: str
    password: str
    server_id: str
    server_host: str
    server_port: int
    transport: Transport = "udp"
    local_host: str = "127.0.0.1"
    domain: str = ""  # default: the first 10 digits of server_id
    expires_s: int = 3600
    keepalive_s: float = 60.0
    max_keepalive_failures: int = 3  # then the camera registers anew, as devices do
    position_interval_s: float | None = None  # unsolicited MobilePosition by MESSAGE; None: only when subscribed
    utc_offset_min: int = 8 * 60  # the device's clock zone: Beijing time
    sync_clock: bool = True  # set the clock from the 200's Date
    register_retry_s: float = 30.0  # first back-off after a refusal, doubling
    register_retry_max_s: float = 300.0
    name: str = "Body camera"
    model: str = "BWC-SIM-1"
    firmware: str = "V1.0.0"
    manufacturer: str = "fieldhub-sim"
    channels: int = 1
    catalog_page_size: int = 4
    max_streams: int = 2
    utf8: bool = False  # bodies in UTF-8 instead of GB2312
    request_timeout_s: float = 32.0
    sip_t1_s: float = 0.5  # RFC 3261 T1: retransmission start, and 64*T1 for an INVITE's ACK
    stream: StreamSettings = field(default_factory=StreamSettings)
    # Builds each call's stream; None: a live PsRtpStream (draw + libx264 + PS per frame). A benchmark passes a
    # replay of pre-encoded pictures here so that its cameras do not eat the CPU it measures.
    stream_factory: StreamFactory | None = None

    @property
    def realm(self) -> str:
        return self.domain or self.server_id[:10]


@dataclass(slots=True)
class GbCounters:
    registered: int = 0
    keepalives: int = 0
    positions_sent: int = 0
    alarms: int = 0
    alarm_acks: int = 0
    queries_answered: int = 0
    invites: int = 0
    streams_started: int = 0
    frames_sent: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # what the platform refused us, by reason
    rejected: Counter[str] = field(default_factory=Counter)  # what we refused the platform, by reason


def parse_date(value: str, utc_offset_min: int) -> float | None:
    """Epoch seconds of a 200's ``Date`` (``2024-01-02T03:04:05.123``, local time of the device's zone)."""
    text = value.strip()
    for pattern in ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S"):
        try:
            moment = datetime.strptime(text, pattern)
        except ValueError:
            continue
        return moment.replace(tzinfo=timezone(timedelta(minutes=utc_offset_min))).timestamp()
    return None


class GbCamera:
    """One camera; an async context manager that starts registering on entry and unregisters on exit."""

    def __init__(self, config: GbCameraConfig, *, position: PositionSource | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.position: PositionSource = position or (lambda: (31.2304, 121.4737, 0.0, 0.0))
        self.wall = wall
        self.counters = GbCounters()
        self.clock_offset_s = 0.0  # platform time minus our wall clock, from the last 200's Date
        self.registered = asyncio.Event()
        self.ua = DeviceUa(UaConfig(config.device_id, config.server_id, config.server_host, config.server_port,
                                    config.transport, config.local_host, config.domain,
                                    t1_s=config.sip_t1_s, timeout_s=config.request_timeout_s), self._on_request)
        self.channels = [bodies.Channel(cid, f"{config.name} {k + 1}", 0.0, 0.0)
                         for k, cid in enumerate(bodies.channel_ids(config.device_id, config.channels))]
        self.subscription = PositionSubscription(self)
        self.media = MediaSessions(self)
        self._sn = 0
        self._reregister = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ----------------------------------------------------------------------------------------------

    async def __aenter__(self) -> GbCamera:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        name = self.config.device_id
        self._tasks = [asyncio.create_task(self._register_loop(), name=f"gb-register-{name}"),
                       asyncio.create_task(self._keepalive_loop(), name=f"gb-keepalive-{name}")]
        if self.config.position_interval_s:
            self._tasks.append(asyncio.create_task(self._position_loop(), name=f"gb-position-{name}"))

    async def stop(self) -> None:
        # Streams and subscriptions end first (their BYE needs the transport), then the loops, then the
        # registration is withdrawn, then the socket closes.
        await self.media.stop_all()
        await self.subscription.stop()
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        if self.registered.is_set():
            with contextlib.suppress(UaError):
                await asyncio.wait_for(self.ua.register(self.config.password, 0), 2.0)
            self.registered.clear()
        with contextlib.suppress(TimeoutError):
            await self.ua.close()

    def now(self) -> float:
        """The camera's clock: its wall clock corrected by the platform's Date."""
        return self.wall() + self.clock_offset_s

    def local_time(self) -> str:
        return bodies.local_time(self.now(), self.config.utc_offset_min)

    def next_sn(self) -> int:
        self._sn += 1
        return self._sn

    # --- registration and keepalive -----------------------------------------------------------------------------

    async def _register_loop(self) -> None:
        backoff = self.config.register_retry_s
        while True:
            reason = await self._register_once()
            if reason is None:
                backoff = self.config.register_retry_s
                self._reregister.clear()
                # Refresh before expiry (at 80 %, a margin real devices keep) or when the keepalive says so.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._reregister.wait(), self.config.expires_s * 0.8)
                continue
            self.registered.clear()
            self.counters.refused[reason] += 1
            log.info("gb28181 camera %s: registration refused (%s), retry in %.0f s", self.config.device_id,
                     reason, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.config.register_retry_max_s)

    async def _register_once(self) -> str | None:
        """Register; None on success, else the reason of the refusal."""
        try:
            response = await self.ua.register(self.config.password, self.config.expires_s)
        except UaError as exc:
            return "register_timeout" if "no final response" in str(exc) else "register_unreachable"
        if response.status_code != 200:
            return f"register_{response.status_code}"
        self._set_clock(response)
        self.counters.registered += 1
        self.registered.set()
        return None

    def _set_clock(self, response: SipResponse) -> None:
        date = response.headers.get_first("date")
        if not self.config.sync_clock or date is None:
            return
        platform = parse_date(date, self.config.utc_offset_min)
        if platform is not None:
            self.clock_offset_s = platform - self.wall()

    async def _keepalive_loop(self) -> None:
        failures = 0
        while True:
            await self.registered.wait()
            await asyncio.sleep(self.config.keepalive_s)
            if not self.registered.is_set():
                continue
            body = bodies.keepalive(self.next_sn(), self.config.device_id, utf8=self.config.utf8)
            status = await self.send_message(body, "keepalive")
            if status == 200:
                failures = 0
                self.counters.keepalives += 1
                continue
            failures += 1
            # A 403 says the platform forgot us; silence for a few keepalives says the same, more slowly.
            if status == 403 or failures >= self.config.max_keepalive_failures:
                failures = 0
                self.registered.clear()
                self._reregister.set()

    async def send_message(self, body: bytes, what: str) -> int | None:
        """MESSAGE ``body`` to the platform; the final status, None without one (counted in ``refused``)."""
        try:
            response = await self.ua.request(self.ua.build("MESSAGE", body=body))
        except UaError:
            self.counters.refused[f"{what}_no_answer"] += 1
            return None
        if response.status_code != 200:
            self.counters.refused[f"{what}_{response.status_code}"] += 1
        return response.status_code

    # --- positions and alarms -----------------------------------------------------------------------------------

    def position_body(self) -> bytes:
        lat, lon, speed, heading = self.position()
        return bodies.mobile_position(self.next_sn(), self.config.device_id, time=self.local_time(), lat=lat,
                                      lon=lon, speed_kmh=speed, heading_deg=heading, utf8=self.config.utf8)

    async def _position_loop(self) -> None:
        interval = self.config.position_interval_s or 5.0
        while True:
            await self.registered.wait()
            if await self.send_message(self.position_body(), "position") == 200:
                self.counters.positions_sent += 1
            await asyncio.sleep(interval)

    async def raise_alarm(self, priority: int = 1, method: int = 2, description: str = "SOS",
                          alarm_type: int | None = None) -> int:
        """Send an Alarm with the current position; its SN. The platform's Response is counted in alarm_acks."""
        lat, lon, _, _ = self.position()
        sn = self.next_sn()
        body = bodies.alarm(sn, self.config.device_id, time=self.local_time(), priority=priority, method=method,
                            description=description, lat=lat, lon=lon, alarm_type=alarm_type,
                            utf8=self.config.utf8)
        if await self.send_message(body, "alarm") == 200:
            self.counters.alarms += 1
        return sn

    async def stop_stream(self, call_id: str | None = None) -> int:
        """End the camera's streams (one by Call-ID, or all) with BYE; how many were ended."""
        return await self.media.hang_up(call_id)

    # --- the platform's requests --------------------------------------------------------------------------------

    def reject(self, request: SipRequest, status: int, reason: str, counter: str) -> None:
        self.counters.rejected[counter] += 1
        self.ua.respond(request, status, reason)

    async def _on_request(self, request: SipRequest) -> None:
        method = request.method
        if method == "ACK":
            self.media.acked(request)
            return
        if method == "BYE":
            await self.media.bye(request)
            return
        if uri_user(request.headers.get_first("from")) != self.config.server_id:
            self.reject(request, 403, "Forbidden (not my platform)", "unknown_platform")
        elif method == "MESSAGE":
            await self._message(request)
        elif method == "SUBSCRIBE":
            self.subscription.subscribe(request)
        elif method == "INVITE":
            await self.media.invite(request)
        elif method == "OPTIONS":
            self.ua.respond(request, 200, "OK", headers={"Allow": "INVITE, ACK, BYE, MESSAGE, SUBSCRIBE, OPTIONS"})
        else:
            self.reject(request, 405, "Method Not Allowed", "method_not_allowed")

    def addressed_to_me(self, request: SipRequest) -> bool:
        return uri_user(request.headers.get_first("to")) in (self.config.device_id, *self.channel_id_list())

    def channel_id_list(self) -> list[str]:
        return [c.channel_id for c in self.channels]

    async def _message(self, request: SipRequest) -> None:
        try:
            body = parse_body(request.body, utc_offset_min=self.config.utc_offset_min)
        except ManscdpError as exc:
            self.reject(request, 400, f"Bad Request ({exc.reason})", f"bad_body_{exc.reason}")
            return
        if isinstance(body, Ack) and body.cmd_type == "Alarm":
            self.ua.respond(request, 200, "OK")
            self.counters.alarm_acks += 1
            return
        if not isinstance(body, QueryRequest) or body.cmd_type not in ("Catalog", "DeviceInfo"):
            self.reject(request, 400, "Bad Request (unsupported CmdType)", "unsupported_cmd")
            return
        if body.device_id != self.config.device_id:
            self.reject(request, 404, "Not Found (unknown device)", "unknown_device")
            return
        self.ua.respond(request, 200, "OK")
        for answer in self._answers(body):
            if await self.send_message(answer, f"{body.cmd_type.lower()}_response") != 200:
                return
        self.counters.queries_answered += 1

    def _answers(self, query: QueryRequest) -> list[bytes]:
        cfg = self.config
        if query.cmd_type == "DeviceInfo":
            return [bodies.device_info(query.sn, cfg.device_id, name=cfg.name, manufacturer=cfg.manufacturer,
                                       model=cfg.model, firmware=cfg.firmware, channels=len(self.channels),
                                       utf8=cfg.utf8)]
        lat, lon, _, _ = self.position()
        channels = [bodies.Channel(c.channel_id, c.name, lat, lon) for c in self.channels]
        return bodies.catalog_pages(query.sn, cfg.device_id, channels, per_page=cfg.catalog_page_size,
                                    manufacturer=cfg.manufacturer, model=cfg.model, utf8=cfg.utf8)
