"""A simulated JT/T 808 vehicle terminal (2013, or 2019 headers): as strict as the real device it stands for.

It connects over TCP, registers (0x0100 -> 0x8100) when it holds no authentication code and keeps the code it is
given (a terminal's flash), authenticates (0x0102 -> 0x8001) and forgets the code when the platform refuses it, then
reports its position (0x0200) every ``report_s`` and sends a heartbeat (0x0002) when nothing else was sent for
``heartbeat_s``. Every message the platform must answer is tracked by serial and resent as the standard says
(timeout T(n+1) = T(n) * (n + 1), ``resends`` times); a message still unanswered means the link is dead, so the
terminal reconnects with back-off. Reports made while offline are kept (bounded) and uploaded after the next
authentication as 0x0704 batches of type 1 (blind area). A text (0x8300) is shown (``on_text``) and acknowledged
with 0x0001. What the platform sends that a terminal cannot use is counted by reason in ``counters.rejected``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from devices.tasks import cancel_and_wait
from geo.gcj02 import Datum, from_wgs84
from geo.geodesy import haversine_m
from jt808 import location as loc
from jt808 import messages as msg
from jt808.codec import Message, decode_message, encode_message
from jt808.errors import Jt808Error
from jt808.frame import Deframer
from jt808.header import MAX_BODY, VERSION_2013, VERSION_2019, parse_packet
from jt808.subpackage import Reassembler

__all__ = ["Jt808Counters", "Jt808Terminal", "Jt808TerminalConfig", "PositionSource", "TextHandler"]

log = logging.getLogger(__name__)

PositionSource = Callable[[], tuple[float, float, float, float, float]]  # WGS-84 lat, lon, km/h, heading, alt m
TextHandler = Callable[[str, int], None]  # the text of a 0x8300 and its flags

RESULT_ALARM_CONFIRMED: Final = 4  # 0x8001 result to a report carrying an alarm
_TERMINAL_RESULT_BAD: Final = 2  # 0x0001 results: a message the terminal cannot read, one it does not support
_TERMINAL_RESULT_UNSUPPORTED: Final = 3
_ANSWERS: Final = (msg.MSG_PLATFORM_RESPONSE, msg.MSG_REGISTRATION_RESPONSE)  # a bad one gets no 0x0001
_BATCH_HEAD: Final = 3  # item count WORD + type BYTE
_BLIND_AREA: Final = 1


@dataclass(frozen=True, slots=True)
class Jt808TerminalConfig:
    host: str
    port: int
    phone: str  # decimal digits, as printed on the SIM
    version: int = 2013  # 2013, or 2019 (headers with protocol version 1)
    province: int = 31
    city: int = 100
    manufacturer: str = "FHSIM"
    model: str = "JT808-SIM"
    terminal_id: str = "SIM0001"
    plate: str = ""
    plate_color: int = 0  # 0: no plate (the terminal is not tied to a registered vehicle)
    imei: str = "860000000000001"
    software_version: str = "1.0.0"
    heartbeat_s: float = 60.0
    report_s: float = 10.0
    datum: Datum = "wgs84"  # gcj02: reports converted from the WGS-84 truth, as terminals sold in China do
    position: PositionSource = lambda: (31.2304, 121.4737, 0.0, 0.0, 10.0)
    auth_code: str | None = None  # a code kept from an earlier registration
    response_timeout_s: float = 10.0  # T(1), the wait for the first answer (terminal parameter 0x0002)
    resends: int = 3  # retransmissions of an unanswered message (terminal parameter 0x0003)
    reconnect_s: float = 5.0  # first back-off after a lost or refused connection, doubling
    register_retry_s: float = 30.0  # first back-off after a refused registration, doubling
    retry_max_s: float = 300.0
    connect_timeout_s: float = 10.0
    blind_max: int = 2000  # reports kept while offline; the oldest go first
    signal: int = 25  # additional item 0x30
    satellites: int = 10  # additional item 0x31


@dataclass(slots=True)
class Jt808Counters:
    events: Counter[str] = field(default_factory=Counter)  # connects, registered, reports, reports_acked, resends...
    gave_up: Counter[str] = field(default_factory=Counter)  # messages unanswered after every resend, by id
    refused: Counter[str] = field(default_factory=Counter)  # what the platform refused us, by reason
    rejected: Counter[str] = field(default_factory=Counter)  # what we refused the platform, by reason


_Answer = asyncio.Future[tuple[int, str]]  # result, and the authentication code of a 0x8100


class Jt808Terminal:
    """One terminal; an async context manager (or :meth:`start` / :meth:`stop`)."""

    def __init__(self, config: Jt808TerminalConfig, *, on_text: TextHandler | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        digits = 12 if config.version == 2013 else 20  # BCD[6] or BCD[10]
        if config.version not in (2013, 2019) or not (config.phone.isdigit() and len(config.phone) <= digits):
            raise ValueError(f"JT/T 808 {config.version}, phone {config.phone!r}: 2013 or 2019, {digits} digits")
        self.config = config
        self._version = VERSION_2019 if config.version == 2019 else VERSION_2013
        self.on_text = on_text
        self.wall = wall
        self.auth_code = config.auth_code
        self.counters = Jt808Counters()
        self.texts: deque[tuple[str, int]] = deque(maxlen=100)  # the display's memory
        self.authenticated = asyncio.Event()
        self.alarm = 0
        self.mileage_m = 0.0
        self.blind: deque[loc.Location] = deque(maxlen=config.blind_max)
        self._last: tuple[float, float] | None = None
        self._serials = itertools.cycle(range(0x10000))
        self._pending: dict[int, tuple[int, _Answer]] = {}  # serial -> message id, its answer
        self._writer: asyncio.StreamWriter | None = None
        self._deframer, self._reassembler = Deframer(), Reassembler()
        self._last_sent = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._sends: set[asyncio.Task[None]] = set()
        self._flush: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Jt808Terminal:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        name = self.config.phone
        self._tasks = [asyncio.create_task(self._link_loop(), name=f"jt808-link-{name}"),
                       asyncio.create_task(self._report_loop(), name=f"jt808-report-{name}")]

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks, self._flush, *self._sends)
        self._tasks, self._flush = [], None
        self._drop_link()

    async def _link_loop(self) -> None:
        cfg = self.config
        backoff = cfg.reconnect_s
        while True:
            try:
                connecting = asyncio.open_connection(cfg.host, cfg.port)
                reader, writer = await asyncio.wait_for(connecting, cfg.connect_timeout_s)
            except (OSError, TimeoutError):
                self.counters.refused["connect_failed"] += 1
            else:
                self.counters.events["connects"] += 1
                try:
                    if await self._session(reader, writer):
                        backoff = cfg.reconnect_s  # it worked for a while: come back soon
                except Exception:  # a bug in one connection's handling must not end the terminal's life
                    log.exception("jt808 terminal %s: connection failed", cfg.phone)
                    self.counters.rejected["session_failed"] += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, cfg.retry_max_s)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One connection until it drops; whether the terminal authenticated on it."""
        self._writer, self._deframer, self._reassembler = writer, Deframer(), Reassembler()
        reading = asyncio.create_task(self._read(reader))
        online = asyncio.create_task(self._online())
        try:
            await asyncio.wait({reading, online}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(online, reading)
            was_online = self.authenticated.is_set()
            self._drop_link()
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
        return was_online

    def _drop_link(self) -> None:
        """The connection is gone: nothing pending will be answered."""
        self._writer = None
        self.authenticated.clear()
        for _, answer in self._pending.values():
            if not answer.done():  # read at once: its waiter may be cancelled with the link
                answer.set_exception(ConnectionResetError("the link dropped"))
                answer.exception()
        self._pending.clear()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(4096):
                self.receive(data)

    async def _online(self) -> None:
        """Register and authenticate, then keep the link alive with heartbeats; returns when the link is dead."""
        if not await self._login():
            return
        self.counters.events["authenticated"] += 1
        self.authenticated.set()
        self._start_flush()
        self._report()
        while True:
            idle = asyncio.get_running_loop().time() - self._last_sent
            if idle < self.config.heartbeat_s:
                await asyncio.sleep(self.config.heartbeat_s - idle)
                continue
            self.counters.events["heartbeats"] += 1
            if await self._request(msg.Heartbeat()) is None:
                return

    async def _login(self) -> bool:
        cfg = self.config
        backoff = cfg.register_retry_s
        while True:
            if self.auth_code is None:
                answer = await self._request(msg.Registration(cfg.province, cfg.city, cfg.manufacturer, cfg.model,
                                                          cfg.terminal_id, cfg.plate_color, cfg.plate))
                if answer is None:
                    return False
                result, code = answer
                if result == msg.RESULT_OK and not 0 < len(code.encode("gb18030")) <= 0xFF:
                    result = -1  # a code it could not send back (2019 gives it one length byte): as good as none
                if result != msg.RESULT_OK:
                    self.counters.refused[f"register_{result if result >= 0 else 'bad_code'}"] += 1
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, cfg.retry_max_s)
                    continue
                self.counters.events["registered"] += 1
                self.auth_code = code
            answer = await self._request(msg.Authentication(self.auth_code, cfg.imei, cfg.software_version))
            if answer is None:
                return False
            if answer[0] == msg.RESULT_OK:
                return True
            # A refused code is forgotten and the terminal registers again, as real terminals do.
            self.counters.events["auth_failed"] += 1
            self.counters.refused[f"auth_{answer[0]}"] += 1
            self.auth_code = None

    def _write(self, frame: bytes) -> bool:
        if self._writer is None or self._writer.is_closing():
            return False
        self._writer.write(frame)
        self._last_sent = asyncio.get_running_loop().time()
        return True

    def _send(self, body: msg.Body) -> None:
        """One message that gets no answer."""
        self._write(encode_message(body, phone=self.config.phone, serial=next(self._serials), version=self._version))

    async def _request(self, body: msg.Body) -> tuple[int, str] | None:
        """Send ``body`` and wait for its answer (0x8001, or 0x8100 to a registration), resending as the standard
        says; (result, code), or None when the link dropped or nothing came back (then the link is closed)."""
        cfg = self.config
        serial = next(self._serials)
        frame = encode_message(body, phone=cfg.phone, serial=serial, version=self._version)
        answer: _Answer = asyncio.get_running_loop().create_future()
        self._pending[serial] = (msg.message_id(body), answer)
        timeout = cfg.response_timeout_s
        try:
            for attempt in range(1, cfg.resends + 2):
                if attempt > 1:
                    self.counters.events["resends"] += 1
                if not self._write(frame):
                    return None
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(answer), timeout)
                timeout *= attempt + 1  # T(n+1) = T(n) * (n + 1)
        except ConnectionResetError:
            return None  # the link dropped while waiting
        finally:
            self._pending.pop(serial, None)
        self.counters.gave_up[f"{msg.message_id(body):#06x}"] += 1
        log.info("jt808 terminal %s: %#06x unanswered, reconnecting", cfg.phone, msg.message_id(body))
        if self._writer is not None:
            self._writer.close()  # the standard's verdict: the link is dead
        return None

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.report_s)
            self._report()

    def emergency(self, on: bool) -> None:
        """The emergency button pressed (alarm bit 0 set) or reset; a report goes out at once."""
        self.alarm = self.alarm | loc.ALARM_EMERGENCY if on else self.alarm & ~loc.ALARM_EMERGENCY
        self.counters.events["emergencies"] += on
        self._report()

    def location(self) -> loc.Location:
        """The report of now: the position source read, in the configured datum."""
        lat, lon, speed_kmh, heading, alt = self.config.position()
        if self._last is not None:
            self.mileage_m += haversine_m(*self._last, lat, lon)
        self._last = (lat, lon)
        lat, lon = from_wgs84(lat, lon, self.config.datum)
        status = loc.STATUS_ACC | loc.STATUS_POSITIONED
        status |= (loc.STATUS_SOUTH if lat < 0 else 0) | (loc.STATUS_WEST if lon < 0 else 0)
        return loc.Location(self.alarm, status, round(abs(lat) * 1e6), round(abs(lon) * 1e6),
                        min(max(round(alt), 0), 0xFFFF), min(max(round(speed_kmh * 10), 0), 0xFFFF),
                        int(heading) % 360 if math.isfinite(heading) else 0, int(self.wall()) * 1000,
                        mileage=min(int(self.mileage_m / 100), 0xFFFFFFFF), signal=self.config.signal,
                        satellites=self.config.satellites)

    def _report(self) -> None:
        location = self.location()
        self.counters.events["reports"] += 1
        if self.authenticated.is_set():
            task = asyncio.create_task(self._send_report(location))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
        else:
            self._keep(location)

    async def _send_report(self, location: loc.Location) -> None:
        answer = await self._request(location)
        if answer is not None and answer[0] in (msg.RESULT_OK, RESULT_ALARM_CONFIRMED):
            self.counters.events["reports_acked"] += 1
            self.counters.events["alarm_confirmed"] += answer[0] == RESULT_ALARM_CONFIRMED
            return
        if answer is not None:
            self.counters.refused[f"location_{answer[0]}"] += 1
        self._keep(location)  # unconfirmed: it goes with the next batch
        self._start_flush()

    def _keep(self, location: loc.Location) -> None:
        self.counters.events["blind_dropped"] += len(self.blind) == self.blind.maxlen  # the oldest goes
        self.blind.append(location)

    def _start_flush(self) -> None:
        if self.blind and self.authenticated.is_set() and (self._flush is None or self._flush.done()):
            self._flush = asyncio.create_task(self._upload_blind())

    async def _upload_blind(self) -> None:
        """The reports kept while offline, oldest first, as 0x0704 batches (type 1) that each fit one packet."""
        while self.blind and self.authenticated.is_set():
            items: list[loc.Location] = []
            size = _BATCH_HEAD
            while self.blind and (size := size + 2 + len(loc.encode_location(self.blind[0]))) <= MAX_BODY:
                items.append(self.blind.popleft())
            answer = await self._request(loc.BatchLocation(_BLIND_AREA, tuple(items)))
            if answer is None or answer[0] not in (msg.RESULT_OK, RESULT_ALARM_CONFIRMED):
                if answer is not None:
                    self.counters.refused[f"batch_{answer[0]}"] += 1
                self.blind.extendleft(reversed(items))  # kept for the next try
                return
            self.counters.events["batches"] += 1
            self.counters.events["batch_items"] += len(items)

    def receive(self, data: bytes) -> None:
        """Bytes from the platform; every frame handled or counted, never raised."""
        for item in self._deframer.feed(data):
            if isinstance(item, Jt808Error):
                self.counters.rejected[item.reason] += 1
                continue
            packet = None
            try:
                packet, _ = self._reassembler.push(parse_packet(item), time.monotonic())
                if packet is not None:
                    self._handle(decode_message(packet))
            except Jt808Error as exc:
                self.counters.rejected[exc.reason] += 1
                if packet is not None and packet.header.msg_id not in _ANSWERS:  # a request it cannot read
                    self._send(msg.TerminalResponse(packet.header.serial, packet.header.msg_id, _TERMINAL_RESULT_BAD))

    def _handle(self, message: Message) -> None:
        header, body = message.header, message.body
        if header.phone != (self.config.phone.lstrip("0") or "0"):
            self.counters.rejected["wrong_phone"] += 1
        elif isinstance(body, msg.PlatformResponse):
            self._answered(body.reply_serial, body.reply_id, (body.result, ""))
        elif isinstance(body, msg.RegistrationResponse):
            self._answered(body.reply_serial, msg.MSG_REGISTRATION, (body.result, body.auth_code))
        elif isinstance(body, msg.TextMessage):
            self._text(header.serial, body)
        elif isinstance(body, msg.Unsupported):
            self.counters.rejected["unsupported"] += 1
            self._send(msg.TerminalResponse(header.serial, header.msg_id, _TERMINAL_RESULT_UNSUPPORTED))
        else:  # a terminal's message sent to a terminal
            self.counters.rejected["unexpected_message"] += 1

    def _answered(self, serial: int, msg_id: int, answer: tuple[int, str]) -> None:
        sent_id, future = self._pending.get(serial, (None, None))
        if future is None:
            self.counters.rejected["unknown_reply"] += 1
        elif sent_id != msg_id:
            self.counters.rejected["reply_mismatch"] += 1
        elif future.done():
            self.counters.rejected["duplicate_reply"] += 1
        else:
            future.set_result(answer)

    def _text(self, serial: int, text: msg.TextMessage) -> None:
        self.counters.events["texts"] += 1
        self.texts.append((text.text, text.flags))
        self._send(msg.TerminalResponse(serial, msg.MSG_TEXT, msg.RESULT_OK))
        if self.on_text is not None:
            try:
                self.on_text(text.text, text.flags)
            except Exception:  # the officer's side of the demo; a bug there must not take the terminal down
                log.exception("jt808 terminal %s: on_text failed", self.config.phone)
                self.counters.rejected["on_text_failed"] += 1

