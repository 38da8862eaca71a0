"""The simulated JT/T 808 terminal (:mod:`sim.jt808_terminal`) against a small platform written here with the
:mod:`jt808` codec over real loopback TCP: registration and authentication, a refused code forgotten, texts
acknowledged, heartbeats, blind-area batches after a reconnect, resends, and whatever a platform can send counted.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geo.gcj02 import wgs84_to_gcj02
from jt808 import messages as msg
from jt808.codec import Message, decode_message, encode_message
from jt808.frame import Deframer
from jt808.location import ALARM_EMERGENCY, STATUS_ACC, STATUS_POSITIONED, BatchLocation, Location
from sim.jt808_terminal import Jt808Terminal, Jt808TerminalConfig
from tests.conftest import wait_for

PHONE = "013912344323"
TRUTH = (31.2304, 121.4737, 36.0, 90.0, 12.0)  # WGS-84 lat, lon, km/h, heading, alt


@dataclass
class Seen:
    at: float  # loop time when received
    message: Message

    @property
    def msg_id(self) -> int:
        return self.message.header.msg_id


class Platform:
    """A JT/T 808 platform: answers registration (``register_results`` in turn, then 0), accepts only ``code``,
    answers 0x8001 to everything else unless ``ignore`` says not to; records what it got."""

    def __init__(self, code: str = "AUTHCODE1234", register_results: list[int] | None = None,
                 ignore: Callable[[Seen, int], bool] = lambda seen, copy: False) -> None:
        self.code = code
        self.register_results = register_results or []
        self.ignore = ignore
        self.accepting = True
        self.seen: list[Seen] = []
        self.connections = 0
        self.writer: asyncio.StreamWriter | None = None
        self.serial = 100
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    def ids(self) -> list[int]:
        return [s.msg_id for s in self.seen]

    def of(self, msg_id: int) -> list[Seen]:
        return [s for s in self.seen if s.msg_id == msg_id]

    def send(self, body: msg.Body, *, phone: str | None = None, version: int | None = None) -> int:
        """A message to the terminal (by default in the header of the last one from it); its serial."""
        assert self.writer is not None and self.seen
        last = self.seen[-1].message.header
        self.serial += 1
        self.writer.write(encode_message(body, phone=phone or last.phone, serial=self.serial,
                                         version=last.version if version is None else version))
        return self.serial

    def drop(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.accepting:
            writer.close()
            return
        self.connections += 1
        self.writer = writer
        deframer = Deframer()
        try:
            while data := await reader.read(4096):
                for packet in deframer.feed(data):
                    assert isinstance(packet, bytes), packet  # the terminal sends only good frames
                    self._answer(Seen(asyncio.get_running_loop().time(), decode_message(packet)))
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _answer(self, seen: Seen) -> None:
        copies = sum(1 for s in self.seen if s.message.header.serial == seen.message.header.serial
                     and s.msg_id == seen.msg_id)
        self.seen.append(seen)
        header, body = seen.message.header, seen.message.body
        if isinstance(body, msg.TerminalResponse) or self.ignore(seen, copies):
            return
        if isinstance(body, msg.Registration):
            result = self.register_results.pop(0) if self.register_results else 0
            self.send(msg.RegistrationResponse(header.serial, result, self.code if result == 0 else ""))
            return
        result = 0
        if isinstance(body, msg.Authentication):
            result = 0 if body.code == self.code else 1
        elif isinstance(body, Location) and body.emergency:
            result = 4
        self.send(msg.PlatformResponse(header.serial, header.msg_id, result))


def config(port: int, **changes: object) -> Jt808TerminalConfig:
    base = Jt808TerminalConfig("127.0.0.1", port, PHONE, position=lambda: TRUTH, response_timeout_s=0.5,
                               reconnect_s=0.1, register_retry_s=0.1, retry_max_s=0.3, report_s=0.2)
    return replace(base, **changes)  # type: ignore[arg-type]


@asynccontextmanager
async def platform_and_terminal(platform: Platform, **changes: object) -> AsyncIterator[Jt808Terminal]:
    platform.server = await asyncio.start_server(platform.connection, "127.0.0.1", 0)
    try:
        async with Jt808Terminal(config(platform.port, **changes)) as terminal:
            yield terminal
    finally:
        platform.server.close()


async def test_registers_then_authenticates_then_reports() -> None:
    platform = Platform()
    async with platform_and_terminal(platform) as terminal:
        await wait_for(lambda: platform.of(msg.MSG_LOCATION))
        assert platform.ids()[:3] == [msg.MSG_REGISTRATION, msg.MSG_AUTHENTICATION, msg.MSG_LOCATION]
        registration = platform.seen[0].message
        assert registration.header.phone == PHONE.lstrip("0") and registration.header.version == 0
        assert isinstance(registration.body, msg.Registration) and registration.body.terminal_id == "SIM0001"
        assert platform.seen[1].message.body == msg.Authentication("AUTHCODE1234")
        assert terminal.auth_code == "AUTHCODE1234" and terminal.authenticated.is_set()
        report = platform.of(msg.MSG_LOCATION)[0].message.body
        assert isinstance(report, Location)
        assert report.status & (STATUS_ACC | STATUS_POSITIONED) == STATUS_ACC | STATUS_POSITIONED
        assert (report.lat, report.lon, report.speed_kmh, report.direction, report.altitude_m) == TRUTH
        assert report.ts_ms is not None and abs(report.ts_ms - time.time() * 1000) < 2000  # BCD time in UTC+8
        assert report.mileage == 0 and report.signal == 25 and report.satellites == 10
        await wait_for(lambda: terminal.counters.events["reports_acked"] >= 3)
        assert terminal.counters.events["registered"] == 1 and not terminal.counters.rejected


async def test_2019_headers_carry_the_imei() -> None:
    platform = Platform()
    async with platform_and_terminal(platform, version=2019, terminal_id="T" * 30) as terminal:
        await wait_for(lambda: terminal.counters.events["reports_acked"])
        auth = platform.of(msg.MSG_AUTHENTICATION)[0].message
        assert auth.header.version == 1 and auth.header.phone == PHONE.lstrip("0")
        assert auth.body == msg.Authentication("AUTHCODE1234", "860000000000001", "1.0.0")


async def test_a_refused_code_is_forgotten_and_the_terminal_registers_again() -> None:
    platform = Platform()
    async with platform_and_terminal(platform, auth_code="stale-code") as terminal:
        await wait_for(terminal.authenticated.is_set)
        assert platform.ids()[:3] == [msg.MSG_AUTHENTICATION, msg.MSG_REGISTRATION, msg.MSG_AUTHENTICATION]
        assert terminal.auth_code == "AUTHCODE1234"
        assert terminal.counters.events["auth_failed"] == 1 and terminal.counters.refused["auth_1"] == 1


async def test_a_refused_registration_is_retried_after_a_back_off() -> None:
    platform = Platform(register_results=[3, 3])
    async with platform_and_terminal(platform) as terminal:
        await wait_for(terminal.authenticated.is_set)
        registrations = platform.of(msg.MSG_REGISTRATION)
        assert len(registrations) == 3 and terminal.counters.refused["register_3"] == 2
        gaps = [b.at - a.at for a, b in itertools.pairwise(registrations)]
        assert gaps[0] >= 0.09 and gaps[1] >= 0.18  # 0.1 s, then doubled


async def test_a_text_is_shown_and_acknowledged_with_its_serial() -> None:
    platform = Platform()
    shown: list[tuple[str, int]] = []
    async with platform_and_terminal(platform) as terminal:
        terminal.on_text = lambda text, flags: shown.append((text, flags))
        await wait_for(terminal.authenticated.is_set)
        flags = msg.TEXT_DISPLAY | msg.TEXT_TTS | msg.TEXT_EMERGENCY
        serial = platform.send(msg.TextMessage(flags, "P1 burglary, 12 Main St #inc-42"))
        await wait_for(lambda: platform.of(msg.MSG_TERMINAL_RESPONSE))
        assert platform.of(msg.MSG_TERMINAL_RESPONSE)[0].message.body == msg.TerminalResponse(serial, 0x8300, 0)
        assert shown == [("P1 burglary, 12 Main St #inc-42", flags)] == list(terminal.texts)


async def test_heartbeats_fill_the_silence() -> None:
    platform = Platform()
    async with platform_and_terminal(platform, heartbeat_s=0.3, report_s=60.0) as terminal:
        await wait_for(lambda: len(platform.of(msg.MSG_HEARTBEAT)) >= 3, timeout=5)
        beats = platform.of(msg.MSG_HEARTBEAT)
        first_report = platform.of(msg.MSG_LOCATION)[0]
        times = [first_report.at] + [b.at for b in beats]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(0.25 <= gap <= 0.9 for gap in gaps), gaps  # generous above: a loaded machine is late
        assert terminal.counters.events["heartbeats"] >= 3


async def test_reports_made_offline_go_up_as_one_blind_area_batch_after_reconnecting() -> None:
    platform = Platform()
    async with platform_and_terminal(platform, report_s=0.1) as terminal:
        await wait_for(lambda: terminal.counters.events["reports_acked"] >= 2)
        platform.accepting = False
        platform.drop()
        await wait_for(lambda: len(terminal.blind) >= 5)
        offline = list(terminal.blind)
        platform.accepting = True
        await wait_for(lambda: platform.of(msg.MSG_BATCH_LOCATION), timeout=5)
        batch = platform.of(msg.MSG_BATCH_LOCATION)[0].message.body
        assert isinstance(batch, BatchLocation) and batch.kind == 1
        assert list(batch.locations[: len(offline)]) == offline  # oldest first, as made
        assert terminal.counters.events["registered"] == 1  # the kept code is used again
        assert platform.ids().count(msg.MSG_AUTHENTICATION) == 2
        await wait_for(lambda: not terminal.blind and terminal.counters.events["batches"] == 1)


async def test_an_unanswered_report_is_resent_with_the_same_serial() -> None:
    platform = Platform(ignore=lambda seen, copy: seen.msg_id == msg.MSG_LOCATION and copy == 0)
    async with platform_and_terminal(platform, response_timeout_s=0.2, report_s=60.0) as terminal:
        await wait_for(lambda: terminal.counters.events["reports_acked"] == 1)
        first, resent = platform.of(msg.MSG_LOCATION)[:2]
        assert first.message == resent.message
        assert 0.15 <= resent.at - first.at <= 0.8
        assert terminal.counters.events["resends"] == 1


async def test_an_answer_that_never_comes_is_resent_with_growing_waits_then_the_link_is_renewed() -> None:
    platform = Platform(ignore=lambda seen, copy: seen.msg_id == msg.MSG_HEARTBEAT)
    async with platform_and_terminal(platform, response_timeout_s=0.1, resends=2, heartbeat_s=0.2,
                                     report_s=60.0) as terminal:
        await wait_for(lambda: terminal.counters.gave_up["0x0002"] == 1, timeout=5)
        beats = platform.of(msg.MSG_HEARTBEAT)[:3]
        assert len({b.message.header.serial for b in beats}) == 1
        gaps = [b.at - a.at for a, b in itertools.pairwise(beats)]
        assert 0.08 <= gaps[0] <= 0.5 and 0.18 <= gaps[1] <= 0.8 and gaps[1] - gaps[0] >= 0.05  # T(2) = T(1) * 2
        await wait_for(lambda: platform.connections == 2 and terminal.authenticated.is_set())


async def test_whatever_the_platform_gets_wrong_is_counted_and_the_terminal_carries_on() -> None:
    platform = Platform()
    async with platform_and_terminal(platform, report_s=60.0) as terminal:
        await wait_for(terminal.authenticated.is_set)
        assert platform.writer is not None
        good = encode_message(msg.TextMessage(4, "hello"), phone=PHONE.lstrip("0"), serial=7)
        platform.writer.write(good[:-2] + bytes([good[-2] ^ 0x55]) + good[-1:])  # bad check code
        unsupported = platform.send(msg.Unsupported(0x8F01, b"\x01\x02"))
        platform.send(msg.PlatformResponse(0xBEEF, 0x0200, 0))
        platform.send(msg.TextMessage(4, "not for me"), phone="13800000000")
        platform.writer.write(b"\x7e\x7d\x03\x7e\x7e\x00\x7e")  # a bad escape, a packet too short
        serial = platform.send(msg.TextMessage(4, "still there?"))
        await wait_for(lambda: any(s.message.body == msg.TerminalResponse(serial, 0x8300, 0) for s in platform.seen))
        rejected = terminal.counters.rejected
        assert {k: rejected[k] for k in ("bad_check", "unsupported", "unknown_reply", "wrong_phone", "bad_escape",
                                         "truncated")} == dict.fromkeys(
            ("bad_check", "unsupported", "unknown_reply", "wrong_phone", "bad_escape", "truncated"), 1)
        assert msg.TerminalResponse(unsupported, 0x8F01, 3) in [s.message.body for s in platform.seen]
        assert list(terminal.texts) == [("still there?", 4)]


async def test_the_emergency_button_sets_alarm_bit_0_at_once() -> None:
    platform = Platform()
    async with platform_and_terminal(platform, report_s=60.0) as terminal:
        await wait_for(lambda: terminal.counters.events["reports_acked"] == 1)
        terminal.emergency(True)
        await wait_for(lambda: len(platform.of(msg.MSG_LOCATION)) == 2)
        terminal.emergency(False)
        await wait_for(lambda: len(platform.of(msg.MSG_LOCATION)) == 3)
        alarms = [s.message.body.alarm for s in platform.of(msg.MSG_LOCATION)]  # type: ignore[union-attr]
        assert [a & ALARM_EMERGENCY for a in alarms] == [0, ALARM_EMERGENCY, 0]
        await wait_for(lambda: terminal.counters.events["alarm_confirmed"] == 1)


def test_a_gcj02_terminal_reports_shifted_positions() -> None:
    terminal = Jt808Terminal(config(1, datum="gcj02"))
    report = terminal.location()
    lat, lon = wgs84_to_gcj02(*TRUTH[:2])
    assert abs(report.lat - lat) <= 6e-7 and abs(report.lon - lon) <= 6e-7 and abs(lat - TRUTH[0]) > 1e-4
    south_west = Jt808Terminal(config(1, position=lambda: (-33.86, -70.65, 0.0, 400.0, -5.0))).location()
    assert (south_west.lat, south_west.lon, south_west.direction, south_west.altitude_m) == (-33.86, -70.65, 40, 0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_from_a_platform_are_handled_or_counted(data: bytes) -> None:
    terminal = Jt808Terminal(config(1))
    terminal.receive(data)
    terminal.receive(encode_message(msg.TextMessage(4, "ok"), phone=PHONE.lstrip("0"), serial=1))
    assert terminal.texts[-1] == ("ok", 4)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=5))
def test_random_bytes_over_tcp_never_stop_a_live_terminal(garbage: list[bytes]) -> None:
    async def run() -> None:
        platform = Platform()
        async with platform_and_terminal(platform, report_s=60.0) as terminal:
            await wait_for(terminal.authenticated.is_set)
            assert platform.writer is not None
            for chunk in garbage:
                platform.writer.write(chunk)
            serial = platform.send(msg.TextMessage(4, "after the noise"))
            await wait_for(lambda: ("after the noise", 4) in terminal.texts)
            assert any(s.message.body == msg.TerminalResponse(serial, 0x8300, 0) for s in platform.seen)

    asyncio.run(run())


@pytest.mark.parametrize(("version", "phone"), [(2011, PHONE), (808, PHONE), (2013, "1" * 13), (2019, "1" * 21),
                                                (2013, "139-1234"), (2013, "")])
def test_only_2013_and_2019_exist_with_phone_numbers_that_fit(version: int, phone: str) -> None:
    with pytest.raises(ValueError, match="2013 or 2019"):
        Jt808Terminal(config(1, version=version, phone=phone))


async def test_a_code_the_terminal_could_not_send_back_counts_as_no_registration() -> None:
    platform = Platform(code="C" * 300)  # 2019 authentication carries the code's length in one byte
    async with platform_and_terminal(platform, version=2019) as terminal:
        await wait_for(lambda: terminal.counters.refused["register_bad_code"] >= 2)
        assert terminal.auth_code is None and not platform.of(msg.MSG_AUTHENTICATION)
        assert terminal.counters.events["connects"] == 1  # still on the same connection, backing off


async def test_reports_kept_offline_are_bounded_the_oldest_dropped() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens there now: the terminal never gets through
    async with Jt808Terminal(config(port, report_s=0.02, blind_max=3)) as terminal:
        await wait_for(lambda: terminal.counters.events["blind_dropped"] >= 2)
        times = [location.ts_ms or 0 for location in terminal.blind]
        assert len(times) == 3 and times == sorted(times)
        assert terminal.counters.refused["connect_failed"] >= 1 and not terminal.authenticated.is_set()
