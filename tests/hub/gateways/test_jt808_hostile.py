"""Hostile terminals against a live JT/T 808 gateway over real TCP: a bad frame costs only itself, a connection of
garbage is closed, a terminal that does not read is closed, and random bytes or mutated valid frames (before and
after authentication) never crash the server while a good terminal on another connection keeps being served."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.clock import now_ms
from hub.gateways.jt808 import Connection, Jt808Gateway, Jt808Server
from jt808.codec import Message, encode_message, encode_subpackaged
from jt808.errors import REASONS
from jt808.header import VERSION_2013, VERSION_2019
from jt808.location import ALARM_EMERGENCY, BatchLocation
from jt808.messages import (
    MSG_TEXT,
    Authentication,
    Body,
    Heartbeat,
    PlatformResponse,
    Registration,
    TerminalResponse,
    TextMessage,
    Unsupported,
)
from tests.hub.gateways.jt808_peer import (
    DEVICE,
    PHONE,
    MemoryLogins,
    Recorder,
    Terminal,
    eventually,
    location,
    result_of,
)

CODE = "K7fQ2mZp9xW4sT1b"
EVIL_PHONE = "13800000666"
EVIL_CODE = "evil-but-valid-1"
# Server reasons beyond the codec's: connections it closed or refused.
SERVER_REASONS = REASONS | {"garbage_close", "idle_close", "too_many_connections"}


async def good_terminal(gw: Jt808Gateway, logins: MemoryLogins) -> Terminal:
    logins.registered(PHONE, DEVICE, CODE)
    terminal = await Terminal.connect(gw.port)
    assert result_of(await terminal.ask(Authentication(CODE))) == 0
    return terminal


async def test_a_bad_frame_costs_only_itself() -> None:
    logins, recorder = MemoryLogins(), Recorder()
    async with Jt808Gateway(host="127.0.0.1", port=0, logins=logins, submit=recorder, owns=bool) as gw:
        terminal = await good_terminal(gw, logins)
        good = bytearray(terminal.frame(location(now_ms() // 1000 * 1000)))
        bad_check = bytes(good[:-2]) + bytes([good[-2] ^ 0x55]) + b"\x7e"
        bad_escape = b"\x7e\x00\x02\x00\x00\x7d\x03\x7e"
        await terminal.raw(bad_check + bad_escape + b"\x7e\x01\x02\x7e" + bytes(good))
        answer = await terminal.recv()
        assert result_of(answer.body) == 0
        assert gw.drops["bad_check"] == 1 and gw.drops["bad_escape"] == 1 and gw.drops["truncated"] == 1
        assert len(recorder.on("telemetry")) == 1


async def test_garbage_connections_are_closed() -> None:
    logins, recorder = MemoryLogins(), Recorder()
    async with Jt808Gateway(host="127.0.0.1", port=0, logins=logins, submit=recorder, owns=bool) as gw:
        good = await good_terminal(gw, logins)
        frames = await Terminal.connect(gw.port)
        await frames.raw(b"\x7e\x01\x02\x03\x7e" * 16)  # sixteen refused frames in a row
        assert await frames.closed()
        noise = await Terminal.connect(gw.port)
        with contextlib.suppress(ConnectionError):
            await noise.raw(b"\x00" * (65 * 1024))  # no flag at all: one refusal, then the byte budget
        assert await noise.closed()
        assert gw.drops["garbage_close"] == 2
        assert result_of(await good.ask(Heartbeat())) == 0


async def test_a_terminal_that_does_not_read_is_closed() -> None:
    closed: list[str] = []

    async def flood(connection: Connection, message: Message) -> None:
        text = TextMessage(0, "x" * 1000)
        for _ in range(200_000):  # the kernel's buffers fill first, then the transport's
            if connection.send(text) is None:
                return
            await asyncio.sleep(0)

    server = Jt808Server(host="127.0.0.1", port=0, on_message=flood, on_close=lambda c, r: closed.append(r),
                         max_write_buffer=16 * 1024)
    await server.start()
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(encode_message(Heartbeat(), phone=PHONE, serial=1))
        await eventually(lambda: closed == ["slow_reader"], timeout=20)
        writer.close()
    finally:
        await server.stop()


def _bodies(ts: int) -> list[Body]:
    return [Heartbeat(), location(ts), location(ts, alarm=ALARM_EMERGENCY), location(ts, positioned=False),
            BatchLocation(1, (location(ts), location(ts - 1000))), Registration(1, 2, "M", "X", "T1", 1, "京A1"),
            Authentication(EVIL_CODE), Authentication("nope"), TerminalResponse(0, MSG_TEXT, 0),
            Unsupported(0x0900, b"\x00\x01"), TextMessage(1, "hi")]


MUTATIONS = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "repeat"]), st.integers(0, 10_000),
                               st.binary(max_size=8)), max_size=3)


def _mutate(frame: bytes, mutations: list[tuple[str, int, bytes]]) -> bytes:
    data = bytearray(frame)
    for kind, at, extra in mutations:
        i = at % max(len(data), 1)
        if kind == "flip" and data:
            data[i] ^= extra[0] if extra else 0xFF
        elif kind == "cut":
            del data[i:]
        elif kind == "insert":
            data[i:i] = extra
        else:
            data += bytes(data)
    return bytes(data)


HOSTILE = st.one_of(
    st.binary(max_size=3000).map(lambda b: [b]),
    st.lists(st.tuples(st.integers(0, 10), st.sampled_from([VERSION_2013, VERSION_2019]), st.booleans(),
                       MUTATIONS), min_size=1, max_size=8),
)


async def _drained(evil: Terminal) -> None:
    """Wait until the gateway has handled all the hostile bytes: a heartbeat sent after them is answered, or the
    connection has been closed."""
    try:
        await evil.raw(encode_message(Heartbeat(), phone=EVIL_PHONE, serial=0xBEEF))
        while True:
            answer = (await evil.recv()).body
            if isinstance(answer, PlatformResponse) and (answer.reply_serial, answer.reply_id) == (0xBEEF, 0x0002):
                return
    except ConnectionError:
        return


async def _scenario(stream: list[bytes] | list[tuple[int, int, bool, list[tuple[str, int, bytes]]]],
                    log_in: bool) -> None:
    logins, recorder = MemoryLogins(), Recorder()
    logins.registered(EVIL_PHONE, "truck-2", EVIL_CODE)
    async with Jt808Gateway(host="127.0.0.1", port=0, logins=logins, submit=recorder, owns=bool,
                            store_timeout_s=0.2) as gw:
        good = await good_terminal(gw, logins)
        evil = await Terminal.connect(gw.port, phone=EVIL_PHONE)
        if log_in:
            assert result_of(await evil.ask(Authentication(EVIL_CODE))) == 0
        ts = now_ms() // 1000 * 1000
        bodies = _bodies(ts)
        try:
            for item in stream:
                if isinstance(item, bytes):
                    await evil.raw(item)
                    continue
                index, version, split, mutations = item
                body = bodies[index]
                if split:
                    frames = encode_subpackaged(body, phone=EVIL_PHONE, serial=index, version=version, part_size=7)
                else:
                    frames = [encode_message(body, phone=EVIL_PHONE, serial=index, version=version)]
                await evil.raw(b"".join(_mutate(frame, mutations) for frame in frames))
        except ConnectionError:
            pass  # the gateway may close a hostile connection; that is one of the allowed outcomes
        await _drained(evil)
        # Meanwhile the good terminal is served as ever.
        assert result_of(await good.ask(location(ts))) == 0
        assert result_of(await good.ask(Heartbeat())) == 0
        assert gw.server.counters["internal"] == 0
        assert set(gw.drops) <= SERVER_REASONS, gw.drops
        assert all(m.topic.split("/")[-2] in (DEVICE, "truck-2") for m in recorder.messages)
        if gw.counters["authenticated"] == 1:  # only the good terminal: nothing submitted for the other
            assert all("truck-2" not in m.topic for m in recorder.messages)
        await evil.close()
        await good.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=HOSTILE, log_in=st.booleans())
def test_hostile_streams_never_hurt_the_server(stream: Any, log_in: bool) -> None:
    asyncio.run(_scenario(stream, log_in))
