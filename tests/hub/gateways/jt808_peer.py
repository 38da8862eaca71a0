"""Test doubles for the JT/T 808 gateway that are real where it matters: a terminal speaking over real TCP with the
real codec, a login store in memory with the real PBKDF2 hashing, and a recording ``submit``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from hub.domain import device_login
from hub.domain.device_login import StoredLogin
from jt808.codec import Message, decode_message, encode_message, encode_subpackaged
from jt808.errors import Jt808Error
from jt808.frame import Deframer
from jt808.header import VERSION_2013
from jt808.location import STATUS_POSITIONED, Location
from jt808.messages import Body, PlatformResponse

PHONE = "13912344323"
DEVICE = "truck-1"


@dataclass(frozen=True, slots=True)
class Login:
    device_id: str
    secret: StoredLogin | None
    terminal_id: str | None
    registration_open: bool


class MemoryLogins:
    """GatewayLoginStore's by_ident/issue_code, in memory: the window closes when a code is issued."""

    def __init__(self) -> None:
        self.by_phone: dict[str, Login] = {}

    def provision(self, phone: str, device_id: str, terminal_id: str | None = None) -> None:
        self.by_phone[phone] = Login(device_id, None, terminal_id, True)

    def registered(self, phone: str, device_id: str, code: str) -> None:
        self.by_phone[phone] = Login(device_id, device_login.new_login(device_id, code), None, False)

    async def by_ident(self, protocol: str, ident: str) -> Login | None:
        assert protocol == "jt808"
        return self.by_phone.get(ident)

    async def issue_code(self, device_id: str, code: StoredLogin) -> bool:
        for phone, login in self.by_phone.items():
            if login.device_id == device_id and login.registration_open:
                self.by_phone[phone] = replace(login, secret=code, registration_open=False)
                return True
        return False


@dataclass
class Submitted:
    topic: str
    payload: bytes
    qos: int
    retained: bool

    @property
    def channel(self) -> str:
        return self.topic.rsplit("/", 1)[-1]

    def json(self) -> Any:
        return json.loads(self.payload)


class Recorder:
    """A ``submit`` that records; ``mode``: "ok" (committed at once), "never" (not committed), "full" (None)."""

    def __init__(self) -> None:
        self.messages: list[Submitted] = []
        self.mode = "ok"
        self._never: list[asyncio.Future[None]] = []

    def __call__(self, topic: str, payload: bytes, qos: int, retained: bool = False) -> asyncio.Future[None] | None:
        if self.mode == "full":
            return None
        self.messages.append(Submitted(topic, payload, qos, retained))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.mode == "ok":
            future.set_result(None)
        else:
            self._never.append(future)
        return future

    def on(self, channel: str) -> list[Any]:
        return [m.json() for m in self.messages if m.channel == channel]


class Terminal:
    """A JT/T 808 terminal on a real TCP connection, built on the codec: send bodies, read the platform's."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, phone: str, version: int) -> None:
        self.reader, self.writer, self.phone, self.version = reader, writer, phone, version
        self.serial = 0
        self.deframer = Deframer()
        self.inbox: list[Message] = []

    @classmethod
    async def connect(cls, port: int, phone: str = PHONE, version: int = VERSION_2013) -> Terminal:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, phone, version)

    def frame(self, body: Body) -> bytes:
        self.serial += 1
        return encode_message(body, phone=self.phone, serial=self.serial, version=self.version)

    async def send(self, body: Body) -> int:
        self.writer.write(self.frame(body))
        await self.writer.drain()
        return self.serial

    async def send_parts(self, body: Body, part_size: int) -> int:
        frames = encode_subpackaged(body, phone=self.phone, serial=self.serial + 1, version=self.version,
                                    part_size=part_size)
        first = self.serial + 1
        self.serial += len(frames)
        for frame in reversed(frames):  # out of order: the reassembler must not care
            self.writer.write(frame)
        await self.writer.drain()
        return first

    async def raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, timeout: float = 5.0) -> Message:
        while not self.inbox:
            data = await asyncio.wait_for(self.reader.read(4096), timeout)
            if not data:
                raise ConnectionError("closed by the platform")
            for item in self.deframer.feed(data):
                if isinstance(item, Jt808Error):
                    raise item
                self.inbox.append(decode_message(item))
        return self.inbox.pop(0)

    async def ask(self, body: Body) -> Any:
        """Send and read the platform's answer body (asserting it answers this message's serial)."""
        serial = await self.send(body)
        answer = (await self.recv()).body
        assert getattr(answer, "reply_serial", serial) == serial, answer
        return answer

    async def closed(self, timeout: float = 5.0) -> bool:
        """Whether the platform closes the connection (EOF or reset) within ``timeout``, ignoring what it sends."""
        try:
            while await asyncio.wait_for(self.reader.read(4096), timeout):
                pass
        except ConnectionError:
            return True
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def location(ts_ms: int, *, lat: float = 39.9, lon: float = 116.4, alarm: int = 0, positioned: bool = True,
             speed_dkmh: int = 360) -> Location:
    status = STATUS_POSITIONED if positioned else 0
    return Location(alarm, status, round(lat * 1e6), round(lon * 1e6), 50, speed_dkmh, 90, ts_ms, satellites=9)


def result_of(answer: Any) -> int:
    assert isinstance(answer, PlatformResponse), answer
    return answer.result


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)
