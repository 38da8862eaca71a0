"""The JT/T 808 gateway over real loopback TCP, a codec-built terminal on the other end: registration and its
window, authentication, heartbeat, locations stored before they are answered, batches (also sub-packaged), the
emergency alarm's edge, dispatch text and its acknowledgment, connection replacement, revocation, 2013 and 2019
headers, and the refusals (unknown phone, closed window, wrong code, unauthenticated, unsupported)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from devices import payloads
from devices.clock import now_ms
from devices.payloads import Command
from geo.gcj02 import wgs84_to_gcj02
from hub.gateways.jt808 import Jt808Gateway
from hub.gateways.jt808.commands import PendingCommands, command_text, fit_text
from jt808.header import VERSION_2013, VERSION_2019
from jt808.location import ALARM_EMERGENCY, BatchLocation
from jt808.messages import (
    MSG_TEXT,
    TEXT_DISPLAY,
    TEXT_EMERGENCY,
    TEXT_TTS,
    Authentication,
    Heartbeat,
    PlatformResponse,
    Registration,
    RegistrationResponse,
    TerminalResponse,
    TextMessage,
    Unsupported,
)
from tests.hub.gateways.jt808_peer import (
    DEVICE,
    PHONE,
    Login,
    MemoryLogins,
    Recorder,
    Terminal,
    eventually,
    location,
    result_of,
)

CODE = "K7fQ2mZp9xW4sT1b"
REG = Registration(11, 100, "ACME", "M1", "T000001", 0, "")


@pytest.fixture
def logins() -> MemoryLogins:
    return MemoryLogins()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def gateway(logins: MemoryLogins, recorder: Recorder) -> AsyncIterator[Jt808Gateway]:
    async with Jt808Gateway(host="127.0.0.1", port=0, logins=logins, submit=recorder, owns=lambda d: d == DEVICE,
                            store_timeout_s=0.3) as gw:
        yield gw


def now_s() -> int:
    return now_ms() // 1000 * 1000


async def authenticated(gw: Jt808Gateway, logins: MemoryLogins, version: int = VERSION_2013) -> Terminal:
    logins.registered(PHONE, DEVICE, CODE)
    terminal = await Terminal.connect(gw.port, version=version)
    assert result_of(await terminal.ask(Authentication(CODE, "860000000000001", "1.0"))) == 0
    return terminal


@pytest.mark.parametrize("version", [VERSION_2013, VERSION_2019])
async def test_register_authenticate_and_report(gateway: Jt808Gateway, logins: MemoryLogins, recorder: Recorder,
                                                version: int) -> None:
    logins.provision(PHONE, DEVICE, terminal_id="T000001")
    terminal = await Terminal.connect(gateway.port, version=version)
    serial = await terminal.send(REG)
    reply = await terminal.recv()
    # Answered in the terminal's own header version and phone number.
    assert reply.header.version == version and reply.header.phone == PHONE
    answer = reply.body
    assert isinstance(answer, RegistrationResponse) and answer.reply_serial == serial
    assert answer.result == 0 and len(answer.auth_code) == 16
    assert not logins.by_phone[PHONE].registration_open
    assert result_of(await terminal.ask(Authentication("wrong"))) == 1
    assert result_of(await terminal.ask(Authentication(answer.auth_code, "860000000000001", "1.0"))) == 0
    assert recorder.on("status")[-1]["state"] == "online"
    assert all(m.retained and m.qos == 1 for m in recorder.messages if m.channel == "status")
    assert result_of(await terminal.ask(Heartbeat())) == 0
    ts = now_s()
    assert result_of(await terminal.ask(location(ts))) == 0
    [fix] = recorder.on("telemetry")
    assert fix["ts"] == ts and fix["lat"] == pytest.approx(39.9) and fix["lon"] == pytest.approx(116.4)
    assert fix["speed"] == pytest.approx(10.0) and fix["sats"] == 9
    assert recorder.messages[-1].topic.endswith(f"/{DEVICE}/telemetry")
    assert gateway.counters["fixes"] == 1 and gateway.rejects["bad_code"] == 1
    await terminal.close()
    await eventually(lambda: recorder.on("status")[-1]["state"] == "offline")


async def test_registration_refusals(gateway: Jt808Gateway, logins: MemoryLogins, recorder: Recorder) -> None:
    terminal = await Terminal.connect(gateway.port)
    assert (await terminal.ask(REG)).result == 4  # unknown phone
    logins.provision(PHONE, DEVICE, terminal_id="OTHER01")
    assert (await terminal.ask(REG)).result == 4  # not the provisioned terminal id
    logins.provision(PHONE, DEVICE)
    first = await terminal.ask(REG)
    assert first.result == 0
    again = await terminal.ask(REG)  # the window is closed: nobody else gets the code
    assert again.result == 3 and again.auth_code == ""
    assert gateway.rejects == {"unknown_phone": 1, "wrong_terminal_id": 1, "registration_closed": 1}
    assert recorder.messages == []


async def test_three_wrong_codes_close_the_connection(gateway: Jt808Gateway, logins: MemoryLogins) -> None:
    logins.registered(PHONE, DEVICE, CODE)
    terminal = await Terminal.connect(gateway.port)
    for _ in range(3):
        assert result_of(await terminal.ask(Authentication("guess"))) == 1
    assert await terminal.closed()
    assert gateway.rejects["bad_code"] == 3 and gateway.counters["auth_close"] == 1


async def test_nothing_before_authentication(gateway: Jt808Gateway, logins: MemoryLogins,
                                             recorder: Recorder) -> None:
    logins.registered(PHONE, DEVICE, CODE)
    terminal = await Terminal.connect(gateway.port)
    assert result_of(await terminal.ask(location(now_s()))) == 1
    assert result_of(await terminal.ask(Heartbeat())) == 1
    assert gateway.rejects["unauthenticated"] == 2 and recorder.messages == []


async def test_unsupported_message(gateway: Jt808Gateway, logins: MemoryLogins) -> None:
    terminal = await authenticated(gateway, logins)
    assert result_of(await terminal.ask(Unsupported(0x0900, b"\x01\x02"))) == 3
    assert gateway.rejects["unsupported_0900"] == 1


async def test_store_refused_or_late_is_answered_failure(gateway: Jt808Gateway, logins: MemoryLogins,
                                                         recorder: Recorder) -> None:
    terminal = await authenticated(gateway, logins)
    recorder.mode = "full"
    assert result_of(await terminal.ask(location(now_s()))) == 1
    recorder.mode = "never"
    assert result_of(await terminal.ask(location(now_s()))) == 1
    assert gateway.counters["store_refused"] == 1 and gateway.counters["store_timeout"] == 1
    recorder.mode = "ok"
    assert result_of(await terminal.ask(location(now_s()))) == 0


async def test_no_fix_is_answered_ok_and_not_stored(gateway: Jt808Gateway, logins: MemoryLogins,
                                                    recorder: Recorder) -> None:
    terminal = await authenticated(gateway, logins)
    assert result_of(await terminal.ask(location(now_s(), positioned=False))) == 0
    assert result_of(await terminal.ask(location(None))) == 0  # type: ignore[arg-type]
    assert gateway.rejects["no_fix"] == 1 and gateway.rejects["bad_time"] == 1
    assert recorder.on("telemetry") == []


async def test_emergency_rising_edge(gateway: Jt808Gateway, logins: MemoryLogins, recorder: Recorder) -> None:
    terminal = await authenticated(gateway, logins)
    ts = now_s()
    assert result_of(await terminal.ask(location(ts, alarm=ALARM_EMERGENCY))) == 4
    [sos] = recorder.on("event")
    assert sos["type"] == "sos" and sos["source"] == "jt808" and sos["alarm"] == ALARM_EMERGENCY
    assert sos["lat"] == pytest.approx(39.9) and sos["device_ts"] == ts and abs(sos["ts"] - now_ms()) < 5000
    assert result_of(await terminal.ask(location(ts + 1000, alarm=ALARM_EMERGENCY))) == 0  # still held: no new sos
    assert result_of(await terminal.ask(location(ts + 2000))) == 0  # released: armed again
    assert len(recorder.on("event")) == 1
    assert result_of(await terminal.ask(location(ts + 3000, alarm=ALARM_EMERGENCY, positioned=False))) == 4
    second = recorder.on("event")[1]
    assert second["type"] == "sos" and "lat" not in second
    assert len(recorder.on("telemetry")) == 3 and gateway.counters["sos"] == 2
    # The bit still set after a reconnection is the same alarm: no new sos.
    await terminal.close()
    terminal = await authenticated(gateway, logins)
    assert result_of(await terminal.ask(location(ts + 4000, alarm=ALARM_EMERGENCY))) == 0
    assert len(recorder.on("event")) == 2


async def test_sos_not_stored_is_sent_again(gateway: Jt808Gateway, logins: MemoryLogins,
                                            recorder: Recorder) -> None:
    terminal = await authenticated(gateway, logins)
    recorder.mode = "full"
    assert result_of(await terminal.ask(location(now_s(), alarm=ALARM_EMERGENCY))) == 1
    recorder.mode = "ok"
    assert result_of(await terminal.ask(location(now_s(), alarm=ALARM_EMERGENCY))) == 4  # still a rising edge
    assert [e["type"] for e in recorder.on("event")] == ["sos"]


async def test_batch_and_subpackaged_batch(gateway: Jt808Gateway, logins: MemoryLogins, recorder: Recorder) -> None:
    terminal = await authenticated(gateway, logins)
    ts = now_s() - 60_000
    items = tuple(location(ts + i * 1000, lat=39.9 + i / 1000) for i in range(5))
    blind = BatchLocation(1, (*items, location(ts + 9000, alarm=ALARM_EMERGENCY), location(ts, positioned=False)))
    assert result_of(await terminal.ask(blind)) == 0
    [batch] = recorder.on("telemetry")
    assert [f["ts"] for f in batch] == [ts + i * 1000 for i in range(5)] + [ts + 9000]
    assert recorder.on("event") == [] and gateway.counters["historical_emergency"] == 1
    assert gateway.rejects["no_fix"] == 1
    many = BatchLocation(0, tuple(location(ts + i * 1000) for i in range(40)))
    first = await terminal.send_parts(many, part_size=300)
    answer = (await terminal.recv()).body
    assert isinstance(answer, PlatformResponse) and answer.result == 0 and answer.reply_serial == first
    assert len(recorder.on("telemetry")[1]) == 40


async def test_dispatch_text_and_its_ack(gateway: Jt808Gateway, logins: MemoryLogins, recorder: Recorder) -> None:
    terminal = await authenticated(gateway, logins)
    incident = {"id": "inc-7", "category": "fire", "priority": 1, "lat": 39.9, "lon": 116.4,
                "address": "长安街 1号", "summary": "烟 " * 2000}
    gateway.command(DEVICE, payloads.encode_command(Command("d-1", now_ms(), "dispatch", {"incident": incident})))
    text = await terminal.recv()
    assert isinstance(text.body, TextMessage)
    assert text.body.flags == TEXT_DISPLAY | TEXT_TTS | TEXT_EMERGENCY
    assert text.body.text.startswith("P1 fire 长安街 1号 烟") and len(text.body.text.encode("gbk")) <= 1021
    await terminal.send(TerminalResponse(text.header.serial, MSG_TEXT, 0))
    await eventually(lambda: len(recorder.on("event")) == 1)
    assert recorder.on("event")[0]["type"] == "ack" and recorder.on("event")[0]["cmd_id"] == "d-1"
    await terminal.send(TerminalResponse(text.header.serial, MSG_TEXT, 0))  # answered twice: the second is unknown
    await eventually(lambda: gateway.rejects["unknown_reply"] == 1)
    gateway.command(DEVICE, payloads.encode_command(Command("c-1", now_ms(), "cancel", {"incident_id": "inc-7"})))
    cancel = await terminal.recv()
    assert isinstance(cancel.body, TextMessage)
    assert cancel.body.text == "cancelled: inc-7" and cancel.body.flags == TEXT_DISPLAY | TEXT_TTS
    await terminal.send(TerminalResponse(cancel.header.serial, MSG_TEXT, 0))
    await eventually(lambda: [e["cmd_id"] for e in recorder.on("event")] == ["d-1", "c-1"])
    for kind in ("ping", "video_start", "video_stop"):
        gateway.command(DEVICE, payloads.encode_command(Command(f"x-{kind}", now_ms(), kind, {})))
    gateway.command(DEVICE, b"{not json")
    gateway.command("truck-2", payloads.encode_command(Command("d-2", now_ms(), "dispatch", {"incident": {}})))
    assert gateway.counters["command_unsupported"] == 3 and gateway.counters["command_offline"] == 1
    assert sum(n for r, n in gateway.rejects.items() if r.startswith("command_")) == 1
    assert result_of(await terminal.ask(Heartbeat())) == 0  # nothing else was sent to the terminal
    assert gateway.can_sign(DEVICE) and gateway.owns(DEVICE) and not gateway.owns("truck-2")


async def test_a_new_connection_replaces_the_old(gateway: Jt808Gateway, logins: MemoryLogins,
                                                 recorder: Recorder) -> None:
    old = await authenticated(gateway, logins)
    new = await Terminal.connect(gateway.port)
    assert result_of(await new.ask(Authentication(CODE))) == 0
    assert await old.closed()
    assert gateway.counters["replaced"] == 1 and gateway.online(DEVICE)
    await eventually(lambda: gateway.connected == 1)
    assert [s["state"] for s in recorder.on("status")] == ["online", "online"]
    assert result_of(await new.ask(location(now_s()))) == 0
    gateway.kick(DEVICE)  # revoked
    assert await new.closed()
    await eventually(lambda: recorder.on("status")[-1]["state"] == "offline")
    assert not gateway.online(DEVICE)


async def test_idle_connection_is_closed(logins: MemoryLogins, recorder: Recorder) -> None:
    async with Jt808Gateway(host="127.0.0.1", port=0, logins=logins, submit=recorder, owns=bool,
                            idle_s=0.3) as gw:
        terminal = await authenticated(gw, logins)
        assert await terminal.closed(timeout=3)
        await eventually(lambda: recorder.on("status")[-1]["state"] == "offline")
        assert gw.drops["idle_close"] == 1


async def test_max_connections(logins: MemoryLogins, recorder: Recorder) -> None:
    async with Jt808Gateway(host="127.0.0.1", port=0, logins=logins, submit=recorder, owns=bool,
                            max_connections=2) as gw:
        first, second = await Terminal.connect(gw.port), await Terminal.connect(gw.port)
        await eventually(lambda: gw.connected == 2)
        third = await Terminal.connect(gw.port)
        assert await third.closed()
        assert gw.drops["too_many_connections"] == 1
        assert (await first.ask(REG)).result == 4 and (await second.ask(REG)).result == 4


async def test_gcj02_datum(logins: MemoryLogins, recorder: Recorder) -> None:
    async with Jt808Gateway(host="127.0.0.1", port=0, logins=logins, submit=recorder, owns=bool,
                            datum="gcj02") as gw:
        terminal = await authenticated(gw, logins)
        lat, lon = wgs84_to_gcj02(39.9, 116.4)
        assert result_of(await terminal.ask(location(now_s(), lat=lat, lon=lon))) == 0
        [fix] = recorder.on("telemetry")
        assert fix["lat"] == pytest.approx(39.9, abs=2e-6) and fix["lon"] == pytest.approx(116.4, abs=2e-6)
    with pytest.raises(ValueError):
        Jt808Gateway(host="127.0.0.1", port=0, logins=logins, submit=recorder, owns=bool, datum="bd09")


class FailingLogins(MemoryLogins):
    async def by_ident(self, protocol: str, ident: str) -> Login | None:
        raise ConnectionError("the database is down")


async def test_login_store_failure_is_contained(recorder: Recorder) -> None:
    logins = FailingLogins()
    async with Jt808Gateway(host="127.0.0.1", port=0, logins=logins, submit=recorder, owns=bool) as gw:
        terminal = await Terminal.connect(gw.port)
        await terminal.send(REG)
        await terminal.send(Authentication(CODE))
        assert result_of(await terminal.ask(Heartbeat())) == 1  # not authenticated, connection still served
        assert gw.counters["logins_failed"] == 2 and gw.server.counters["internal"] == 0
        assert recorder.messages == []


def test_pending_commands_expire_and_are_forgotten() -> None:
    now = [0.0]
    pending = PendingCommands(ttl_s=10, max_pending=3, clock=lambda: now[0])
    for serial in range(4):
        pending.add("a", serial, f"c{serial}")
    assert len(pending) == 3 and pending.take("a", 0) is None  # the oldest made room
    assert pending.take("a", 1) == "c1" and pending.take("a", 1) is None
    pending.add("b", 1, "b1")
    pending.forget("a")
    assert pending.take("a", 2) is None and pending.take("b", 1) == "b1"
    pending.add("b", 2, "b2")
    now[0] = 11.0
    assert pending.take("b", 2) is None


def test_text_fits_gbk() -> None:
    assert fit_text("a\x00b\x1bc") == "a b c"
    assert fit_text("emoji \U0001f600 ok") == "emoji ? ok"
    cut = fit_text("汉" * 600)
    assert cut == "汉" * 510 and len(cut.encode("gbk")) == 1020
    empty = command_text(Command("d", 0, "dispatch", {"incident": "not a dict"}))
    assert empty is not None and empty.flags == TEXT_DISPLAY | TEXT_TTS and empty.text == "dispatch []"


def test_a_long_dispatch_text_still_ends_with_the_incident_id() -> None:
    """Address and summary in Chinese (two GBK bytes a character) fill the 0x8300 body: the text is cut, never the id
    the officer and the demo read off its end."""
    from devices.payloads import Command
    from hub.gateways.jt808.commands import MAX_TEXT_BYTES, command_text

    incident = {"id": "INC-20261206-0042", "priority": 1, "category": "robbery", "address": "解放路" * 100,
                "summary": "商店被抢" * 75}
    text = command_text(Command("c1", 1, "dispatch", {"incident": incident}))
    assert text is not None and text.text.endswith(" [INC-20261206-0042]")
    assert len(text.text.encode("gbk")) <= MAX_TEXT_BYTES and text.flags & 0x01
