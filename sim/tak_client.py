"""A simulated TAK client (ATAK on a phone): its own position out as Cursor-on-Target, everyone else's read in.

Every ``interval_s`` it sends its self-report as ATAK does: ``a-f-G-U-C``, uid ``ANDROID-<16 hex>``, ``how``
``m-g``, ``<contact callsign endpoint>``, ``<__group name role>`` (its team), ``<takv>`` (the app), ``<uid
Droid>``, ``<precisionlocation>``, ``<status battery>``, ``<track speed course>``, stale a few intervals on. It
goes to the LAN's SA multicast group (``udp://239.2.3.1:6969``: sent and received there) or to a TAK server's
plain stream (``tcp://host:8087``). What it reads (the hub's units, incidents, SOS beacons, other clients) is
counted by CoT type in :attr:`TakClient.seen`, the uids per type in :attr:`TakClient.uids`; an event it cannot read
is refused by reason in :attr:`TakClient.refused`, never stopping the reader. :func:`sa_event` and
:func:`read_event` are pure.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element, ParseError, SubElement, tostring

import defusedxml
import defusedxml.ElementTree as DefusedET

from devices.payloads import Fix
from devices.tasks import cancel_and_wait

__all__ = ["CotRefused", "SeenEvent", "TakClient", "TakClientConfig", "android_uid", "read_event", "sa_event"]

log = logging.getLogger(__name__)

SA_TYPE: Final = "a-f-G-U-C"
UNKNOWN: Final = 9_999_999.0
MAX_EVENT_BYTES: Final = 64 * 1024
Position = Callable[[], Fix]


class CotRefused(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def android_uid(seed: int) -> str:
    """ATAK's uid of a device: ``ANDROID-`` and the phone's 64-bit Android id in hex."""
    return f"ANDROID-{seed & (2**64 - 1):016x}"


def _cot_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sa_event(uid: str, callsign: str, fix: Fix, *, now_ms: int, stale_ms: int, team: str = "Cyan",
             role: str = "Team Member", endpoint: str = "*:-1:stcp", device: str = "SAMSUNG SM-G781U",
             version: str = "4.10.0.7 (5e5cd8e4).1709308744-CIV") -> bytes:
    """The client's self-report (situational awareness) for ``fix``, as ATAK writes it."""
    event = Element("event", version="2.0", uid=uid, type=SA_TYPE, how="m-g", time=_cot_time(now_ms),
                    start=_cot_time(now_ms), stale=_cot_time(stale_ms))
    hae, ce = UNKNOWN if fix.alt is None else fix.alt, UNKNOWN if fix.acc is None else fix.acc
    SubElement(event, "point", lat=f"{fix.lat:.7f}", lon=f"{fix.lon:.7f}", hae=f"{hae:.1f}", ce=f"{ce:.1f}",
               le=f"{UNKNOWN:.1f}")
    detail = SubElement(event, "detail")
    SubElement(detail, "takv", os="34", version=version, device=device, platform="ATAK-CIV")
    SubElement(detail, "contact", endpoint=endpoint, callsign=callsign)
    SubElement(detail, "uid", Droid=callsign)
    SubElement(detail, "precisionlocation", altsrc="GPS", geopointsrc="GPS")
    SubElement(detail, "__group", role=role, name=team)
    if fix.battery is not None:
        SubElement(detail, "status", battery=str(round(fix.battery)))
    SubElement(detail, "track", course=f"{fix.heading or 0.0:.1f}", speed=f"{fix.speed or 0.0:.1f}")
    body: bytes = tostring(event, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>' + body


@dataclass(frozen=True, slots=True)
class SeenEvent:
    uid: str
    cot_type: str
    lat: float
    lon: float
    callsign: str | None
    stale: str


def _attr(element: Element, name: str) -> str:
    value = element.get(name)
    if value is None or not value.strip():
        raise CotRefused("missing_field", f"{element.tag}/@{name}")
    if len(value) > 200 or not value.isprintable():
        raise CotRefused("bad_text", f"{element.tag}/@{name}")
    return value


def _coord(point: Element, name: str, limit: float) -> float:
    raw = _attr(point, name)
    try:
        value = float(raw) if len(raw) <= 40 else math.nan
    except ValueError:
        raise CotRefused("bad_value", f"{name} is not a number") from None
    if not math.isfinite(value) or not -limit <= value <= limit:
        raise CotRefused("out_of_range", f"{name}={raw[:40]!r}")
    return value


def read_event(raw: bytes) -> SeenEvent:
    """One CoT XML event as the client reads it (DTDs and entities refused); :class:`CotRefused` otherwise."""
    if len(raw) > MAX_EVENT_BYTES:
        raise CotRefused("too_large", f"{len(raw)} bytes")
    if raw[:1] == b"\xbf":
        raise CotRefused("protobuf", "TAK protocol v1 is not read by this client (it speaks XML)")
    try:
        root: Element = DefusedET.fromstring(raw.strip(), forbid_dtd=True, forbid_entities=True,
                                             forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise CotRefused("forbidden_xml", type(exc).__name__) from None
    except (ParseError, UnicodeError, ValueError, LookupError) as exc:
        raise CotRefused("bad_xml", str(exc)[:120]) from None
    if root.tag != "event":
        raise CotRefused("not_event", f"root element {root.tag[:40]!r}")
    point = root.find("point")
    if point is None:
        raise CotRefused("missing_field", "point")
    contact = root.find("detail/contact")
    callsign = contact.get("callsign") if contact is not None else None
    return SeenEvent(_attr(root, "uid"), _attr(root, "type"), _coord(point, "lat", 90.0),
                     _coord(point, "lon", 180.0), callsign[:80] if callsign else None, _attr(root, "stale"))


@dataclass(frozen=True, slots=True)
class TakClientConfig:
    url: str = "udp://239.2.3.1:6969"  # the SA multicast group, or tcp://host:port of a TAK server
    uid: str = android_uid(0xF1E1D0B0)
    callsign: str = "VIPER"
    team: str = "Cyan"
    role: str = "Team Member"
    interval_s: float = 10.0
    stale_intervals: int = 3
    interface: str = "0.0.0.0"  # the multicast interface's address (0.0.0.0: the system's choice)
    reconnect_s: float = 2.0


class TakClient:
    """One TAK client; :meth:`start`, :meth:`stop`. See the module docstring."""

    def __init__(self, config: TakClientConfig, position: Position, *, wall: Callable[[], float] = time.time) -> None:
        parts = urlsplit(config.url)
        if parts.scheme not in ("udp", "tcp") or not parts.hostname or not parts.port:
            raise ValueError("a TAK URL is udp://group:port or tcp://host:port")
        self.config, self.position, self.wall = config, position, wall
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.multicast = self.scheme == "udp" and ipaddress.ip_address(self.host).is_multicast
        self.seen: Counter[str] = Counter()  # events read, by CoT type (our own echoes not counted)
        self.uids: dict[str, set[str]] = {}  # CoT type -> uids seen
        self.refused: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()  # sent, connects, send_failed
        self.connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._send: Callable[[bytes], None] | None = None
        self._closers: list[Callable[[], None]] = []

    async def start(self) -> None:
        if self.scheme == "udp":
            await self._open_udp()
            self._tasks.append(asyncio.create_task(self._report(), name=f"tak-{self.config.callsign}"))
        else:
            self._tasks.append(asyncio.create_task(self._tcp(), name=f"tak-{self.config.callsign}"))

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        for close in self._closers:
            with contextlib.suppress(Exception):
                close()
        self._closers, self._send = [], None
        self.connected.clear()

    # --- in -----------------------------------------------------------------------------------------------------

    def on_event(self, raw: bytes) -> None:
        """One event from the network; counted by type, or refused by reason. Never raises."""
        try:
            event = read_event(raw)
        except CotRefused as exc:
            self.refused[exc.reason] += 1
            return
        if event.uid == self.config.uid:
            self.counters["own_echo"] += 1
            return
        kind = event.cot_type if event.cot_type in self.seen or len(self.seen) < 1000 else "other"  # bounded
        self.seen[kind] += 1
        uids = self.uids.setdefault(kind, set())
        if len(uids) < 10_000:
            uids.add(event.uid)

    # --- out ----------------------------------------------------------------------------------------------------

    def send_position(self) -> None:
        cfg = self.config
        now = int(self.wall() * 1000)
        event = sa_event(cfg.uid, cfg.callsign, self.position(), now_ms=now,
                         stale_ms=now + int(cfg.interval_s * cfg.stale_intervals * 1000), team=cfg.team,
                         role=cfg.role)
        if self._send is None:
            self.counters["not_connected"] += 1
            return
        try:
            self._send(event)
        except OSError as exc:
            self.counters["send_failed"] += 1
            log.info("%s: sending its position failed: %s", cfg.callsign, exc)
            return
        self.counters["sent"] += 1

    async def _report(self) -> None:
        while True:
            self.send_position()
            await asyncio.sleep(self.config.interval_s)

    # --- transports ---------------------------------------------------------------------------------------------

    async def _open_udp(self) -> None:
        loop = asyncio.get_running_loop()
        group, port, iface = self.host, self.port, self.config.interface
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(AttributeError, OSError):
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        rx.bind((group if self.multicast else "0.0.0.0", port))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if self.multicast:
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                          struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(iface)))
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            if iface != "0.0.0.0":
                tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface))
        rx.setblocking(False)
        tx.setblocking(False)
        transport, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(self.on_event), sock=rx)
        self._closers = [transport.close, tx.close]

        def send(data: bytes) -> None:
            tx.sendto(data, (group, port))

        self._send = send
        self.counters["connects"] += 1
        self.connected.set()

    async def _tcp(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                self.counters["connect_failed"] += 1
                log.info("%s: cannot reach the TAK server: %s", self.config.callsign, exc)
                await asyncio.sleep(self.config.reconnect_s)
                continue
            self.counters["connects"] += 1
            self._send = writer.write
            self.connected.set()
            reporter = asyncio.create_task(self._report())
            try:
                while True:
                    try:
                        self.on_event(await reader.readuntil(b"</event>"))
                    except asyncio.LimitOverrunError as exc:
                        await reader.readexactly(exc.consumed)
                        self.refused["too_large"] += 1
            except (asyncio.IncompleteReadError, OSError):
                self.counters["disconnects"] += 1
            finally:
                self.connected.clear()
                self._send = None
                await cancel_and_wait(reporter)
                writer.close()
            await asyncio.sleep(self.config.reconnect_s)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_event: Callable[[bytes], None]) -> None:
        self.on_event = on_event

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_event(data)
