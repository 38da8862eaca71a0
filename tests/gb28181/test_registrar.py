"""The registrar against SIPp (a third-party SIP agent, scenarios in ./scenarios) over UDP and TCP, against a small
Python device for what SIPp cannot easily play (requests from the server, a fake clock), and against garbage."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from aiosipua import SipMessage, SipRequest, SipResponse
from aiosipua.auth import SipDigestAuth, answer_challenge
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gb28181.presence import Presence
from gb28181.registrar import Registrar, RegistrarConfig, RequestTimeout, format_date
from gb28181.sip import Peer
from tests.gb28181.sipp import run_sipp

SERVER = "34020000002000000001"
DOMAIN = SERVER[:10]
DEV = "34020000001320000001"
OTHER = "34020000001320000099"  # not in the registry
PASSWORDS = {DEV: "s3cret"}
KEEPALIVE = b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>'

needs_sipp = pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (Debian sip-tester) is not installed")


class Events:
    def __init__(self) -> None:
        self.log: list[tuple[str, ...]] = []
        self.messages: list[tuple[str, bytes, str]] = []

    async def password_of(self, device_id: str) -> str | None:
        return PASSWORDS.get(device_id)

    def online(self, device_id: str) -> None:
        self.log.append(("online", device_id))

    def offline(self, device_id: str, reason: str) -> None:
        self.log.append(("offline", device_id, reason))

    async def message(self, device_id: str, body: bytes, content_type: str) -> None:
        self.messages.append((device_id, body, content_type))


def start(events: Events, **options: float) -> Registrar:
    config = RegistrarConfig(server_id=SERVER, host="127.0.0.1", udp_port=0, tcp_port=0, **options)  # type: ignore[arg-type]
    return Registrar(
        config,
        password_of=events.password_of,
        on_message=events.message,
        on_online=events.online,
        on_offline=events.offline,
    )


@pytest.fixture
async def events() -> Events:
    return Events()


@pytest.fixture
async def registrar(events: Events) -> AsyncIterator[Registrar]:
    async with start(events) as reg:
        yield reg


async def sipp(reg: Registrar, scenario: str, transport: str, tmp_path: Path, device: str, password: str) -> int:
    port = reg.udp_port if transport == "u1" else reg.tcp_port
    return await run_sipp(port, scenario, tmp_path, [device, DOMAIN, SERVER], transport=transport, user=device,
                          password=password)


async def eventually(condition: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.02)


# --- SIPp -------------------------------------------------------------------------------------------------------


@needs_sipp
@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_sipp_registers_with_digest_and_keeps_alive(
    registrar: Registrar, events: Events, transport: str, tmp_path: Path
) -> None:
    assert await sipp(registrar, "register.xml", transport, tmp_path, DEV, "s3cret") == 0
    binding = registrar.registration(DEV)
    assert binding is not None and binding.peer.transport == ("udp" if transport == "u1" else "tcp")
    assert events.log == [("online", DEV)]
    assert events.messages == [(DEV, events.messages[0][1], "Application/MANSCDP+xml")]
    assert b"<CmdType>Keepalive</CmdType>" in events.messages[0][1]
    assert registrar.counters["challenged"] == 1 and registrar.counters["registered"] == 1
    assert registrar.counters["auth_failed"] == 0


@needs_sipp
@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_sipp_wrong_password_is_refused_and_counted(
    registrar: Registrar, events: Events, transport: str, tmp_path: Path
) -> None:
    assert await sipp(registrar, "register_refused.xml", transport, tmp_path, DEV, "guess") == 0
    assert registrar.counters["auth_failed"] == 1
    assert registrar.registration(DEV) is None and events.log == []


@needs_sipp
@pytest.mark.parametrize(("transport", "device"), [("u1", OTHER), ("t1", OTHER), ("u1", "3402000000132")])
async def test_sipp_unknown_or_malformed_device_ids_are_refused(
    registrar: Registrar, events: Events, transport: str, device: str, tmp_path: Path
) -> None:
    assert await sipp(registrar, "register_unknown.xml", transport, tmp_path, device, "s3cret") == 0
    counter = "register_unknown_device" if device == OTHER else "register_bad_device_id"
    assert registrar.counters[counter] == 1 and registrar.counters["challenged"] == 0
    assert events.log == []


@needs_sipp
async def test_sipp_keepalive_from_an_unregistered_device_is_refused(
    registrar: Registrar, events: Events, tmp_path: Path
) -> None:
    assert await sipp(registrar, "keepalive_unregistered.xml", "u1", tmp_path, DEV, "s3cret") == 0
    assert registrar.counters["message_unregistered"] == 1 and events.messages == []


@needs_sipp
async def test_sipp_device_goes_offline_after_missed_keepalives(events: Events, tmp_path: Path) -> None:
    async with start(events, keepalive_interval_s=0.3, max_missed=3, check_interval_s=0.05) as reg:
        assert await sipp(reg, "register.xml", "u1", tmp_path, DEV, "s3cret") == 0
        seen = asyncio.get_running_loop().time()
        await eventually(lambda: len(events.log) == 2)
        assert asyncio.get_running_loop().time() - seen >= 0.9 - 0.1
        assert events.log == [("online", DEV), ("offline", DEV, "3 keepalives missed")]
        assert reg.registration(DEV) is not None  # still registered: a keepalive brings it back


# --- a Python device (aiosipua as the client), for a fake clock and for requests from the server ---------------


class UdpDevice(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[SipRequest | SipResponse] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.cseq = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a DatagramTransport (not by isinstance under uvloop)

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.inbox.put_nowait(SipMessage.parse(data))

    @classmethod
    async def open(cls, reg: Registrar) -> UdpDevice:
        _, device = await asyncio.get_running_loop().create_datagram_endpoint(
            cls, remote_addr=("127.0.0.1", reg.udp_port)
        )
        return device

    def request(
        self,
        method: str,
        *,
        device: str = DEV,
        expires: int = 3600,
        auth: tuple[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        assert self.transport is not None
        self.cseq += 1
        host, port = self.transport.get_extra_info("sockname")[:2]
        target = DEV if method == "REGISTER" else SERVER
        req = SipRequest(method=method, uri=f"sip:{target}@{DOMAIN}")
        req.headers.append("Via", f"SIP/2.0/UDP {host}:{port};rport;branch=z9hG4bK{self.cseq}x{method}")
        req.headers.append("From", f"<sip:{device}@{DOMAIN}>;tag=t1")
        req.headers.append("To", f"<sip:{device if method == 'REGISTER' else SERVER}@{DOMAIN}>")
        req.headers.append("Call-ID", f"call-{device}")
        req.headers.append("CSeq", f"{self.cseq} {method}")
        req.headers.append("Contact", f"<sip:{device}@{host}:{port}>")
        req.headers.append("Expires", str(expires))
        if auth:
            req.headers.append(*auth)
        req.body = body
        self.transport.sendto(bytes(req))

    async def response(self) -> SipResponse:
        message = await asyncio.wait_for(self.inbox.get(), 5)
        assert isinstance(message, SipResponse)
        return message

    async def register(self, password: str, *, expires: int = 3600) -> SipResponse:
        self.request("REGISTER", expires=expires)
        challenge = await self.response()
        assert challenge.status_code == 401
        auth = answer_challenge(SipDigestAuth(DEV, password), challenge, 401, "REGISTER", f"sip:{DEV}@{DOMAIN}")
        assert auth is not None
        self.request("REGISTER", expires=expires, auth=auth)
        return await self.response()


async def test_the_200_carries_date_expires_and_contact_and_expires_0_unregisters(
    registrar: Registrar, events: Events
) -> None:
    device = await UdpDevice.open(registrar)
    ok = await device.register("s3cret", expires=600)
    assert ok.status_code == 200 and ok.get_header("Expires") == "600"
    datetime.strptime(ok.get_header("Date") or "", "%Y-%m-%dT%H:%M:%S.%f")
    assert DEV in (ok.get_header("Contact") or "")
    gone = await device.register("s3cret", expires=0)
    assert gone.status_code == 200 and registrar.registration(DEV) is None
    assert events.log == [("online", DEV), ("offline", DEV, "unregistered")]
    assert format_date(datetime(2024, 1, 2, 3, 4, 5, 123456)) == "2024-01-02T03:04:05.123"


async def test_a_fake_clock_drives_keepalive_loss_and_registration_expiry(events: Events) -> None:
    now = [1000.0]
    reg = start(events, check_interval_s=3600)
    reg.clock = lambda: now[0]
    async with reg:
        device = await UdpDevice.open(reg)
        assert (await device.register("s3cret", expires=3600)).status_code == 200
        now[0] += 180.0
        reg.check()
        assert events.log == [("online", DEV)]  # 180 s of silence is exactly 3 intervals: not yet
        now[0] += 1.0
        reg.check()
        assert events.log[-1] == ("offline", DEV, "3 keepalives missed")
        device.request("MESSAGE", body=KEEPALIVE)
        assert (await device.response()).status_code == 200
        assert events.log[-1] == ("online", DEV)
        now[0] += 3600.0
        reg.check()
        assert events.log[-1] == ("offline", DEV, "registration expired")
        device.request("MESSAGE", body=KEEPALIVE)
        assert (await device.response()).status_code == 403


async def test_send_request_returns_the_devices_answer_and_times_out_without_one(registrar: Registrar) -> None:
    device = await UdpDevice.open(registrar)
    await device.register("s3cret")
    pending = asyncio.create_task(registrar.send_request(DEV, "MESSAGE", b"<Query/>"))
    query = await asyncio.wait_for(device.inbox.get(), 5)
    assert isinstance(query, SipRequest) and query.method == "MESSAGE" and query.body == b"<Query/>"
    assert query.get_header("Content-Type") == "Application/MANSCDP+xml"
    reply = SipResponse(status_code=200, reason_phrase="OK", headers=query.headers.copy())
    assert device.transport is not None
    device.transport.sendto(bytes(reply))
    assert (await pending).status_code == 200
    with pytest.raises(RequestTimeout):
        await registrar.send_request(DEV, "MESSAGE", b"<Query/>", timeout_s=1.2)
    assert device.inbox.qsize() >= 2  # retransmitted over UDP while unanswered


def test_presence_online_once_offline_once() -> None:
    presence = Presence(keepalive_interval_s=60, max_missed=3)
    peer = Peer("udp", "10.0.0.1", 5060)
    assert presence.heard(DEV, peer, 0.0) is None
    assert presence.register(DEV, peer, "<sip:x>", 3600, 0.0) is True
    assert presence.register(DEV, peer, "<sip:x>", 3600, 10.0) is False
    assert presence.heard(DEV, peer, 50.0) is False
    assert presence.sweep(230.0) == []
    assert presence.sweep(231.0) == [(DEV, "3 keepalives missed")]
    assert presence.sweep(232.0) == []
    assert presence.heard(DEV, peer, 240.0) is True
    assert presence.sweep(3610.0) == [(DEV, "registration expired")] and presence.get(DEV) is None


# --- garbage ----------------------------------------------------------------------------------------------------

GOOD_REGISTER = (
    f"REGISTER sip:{DEV}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKabc\r\n"
    f"From: <sip:{DEV}@{DOMAIN}>;tag=1\r\nTo: <sip:{DEV}@{DOMAIN}>\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\n"
    "Expires: 3600\r\nContent-Length: 0\r\n\r\n"
).encode()


@st.composite
def mutated_register(draw: st.DrawFn) -> bytes:
    data = bytearray(GOOD_REGISTER)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["delete", "insert", "flip", "truncate"]))
        if kind == "delete":
            del data[at : at + draw(st.integers(1, 40))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=40))
        elif kind == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        else:
            del data[at:]
    return bytes(data)


payloads = st.lists(st.one_of(st.binary(min_size=1, max_size=2000), mutated_register()), min_size=1, max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads)
def test_garbage_over_udp_and_tcp_is_counted_and_a_good_device_still_registers(garbage: list[bytes]) -> None:
    asyncio.run(_garbage_then_register(garbage))


async def _garbage_then_register(garbage: list[bytes]) -> None:
    events = Events()
    async with start(events) as reg:
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=("127.0.0.1", reg.udp_port))
        for data in garbage:
            udp.sendto(data)
        udp.close()
        meaningful = sum(1 for data in garbage if data.strip(b"\r\n"))

        def accounted() -> int:
            handled = ("request", "retransmission", "ack", "stray_response")
            return sum(reg.drops.values()) + sum(reg.counters[k] for k in handled)

        await eventually(lambda: accounted() >= meaningful)
        for data in garbage:  # each on its own connection, all at once: one bad stream is closed alone
            _, writer = await asyncio.open_connection("127.0.0.1", reg.tcp_port)
            writer.write(data)
            writer.write_eof()
            await writer.drain()
            writer.close()
        await eventually(lambda: accounted() >= 2 * meaningful)
        device = await UdpDevice.open(reg)
        assert (await device.register("s3cret")).status_code == 200
        assert ("online", DEV) in events.log


async def test_a_bad_tcp_stream_is_closed_alone(registrar: Registrar) -> None:
    good_reader, good = await asyncio.open_connection("127.0.0.1", registrar.tcp_port)
    bad_reader, bad = await asyncio.open_connection("127.0.0.1", registrar.tcp_port)
    bad.write(GOOD_REGISTER.replace(b"Content-Length: 0", b"Content-Length: x"))
    assert await asyncio.wait_for(bad_reader.read(), 5) == b""  # closed by the server
    assert registrar.drops["bad_content_length"] == 1
    good.write(GOOD_REGISTER.replace(b"UDP", b"TCP"))
    answer = await asyncio.wait_for(good_reader.readuntil(b"\r\n\r\n"), 5)
    assert answer.startswith(b"SIP/2.0 401 ")
    for data, reason in (
        (b"x" * 70_000, "too_large"),
        (GOOD_REGISTER.replace(b"Content-Length: 0\r\n", b""), "no_content_length"),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", registrar.tcp_port)
        writer.write(data)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert registrar.drops[reason] == 1
    good.close()


async def test_a_retransmitted_message_is_answered_again_but_handed_on_once(
    registrar: Registrar, events: Events
) -> None:
    device = await UdpDevice.open(registrar)
    await device.register("s3cret")
    assert device.transport is not None
    device.request("MESSAGE", body=KEEPALIVE)
    first = await device.response()
    sent = SipRequest(method="MESSAGE", uri=f"sip:{SERVER}@{DOMAIN}")
    sent.headers = first.headers.copy()  # same Via branch, Call-ID and CSeq: what a device's timer E resends
    sent.headers.remove("To")
    sent.headers.append("To", f"<sip:{SERVER}@{DOMAIN}>")
    sent.body = KEEPALIVE
    device.transport.sendto(bytes(sent))
    again = await device.response()
    assert (first.status_code, again.status_code) == (200, 200)
    assert registrar.counters["retransmission"] == 1 and len(events.messages) == 1


# --- what the message handler says is what the device is answered ---------------------------------------------


@pytest.mark.parametrize(("answer", "status", "reason"), [
    (None, 200, "OK"),
    ((400, "Bad Request (bad_xml)"), 400, "Bad Request (bad_xml)"),
    ((503, "Service Unavailable (store_timeout)"), 503, "Service Unavailable (store_timeout)"),
    (RuntimeError("defect"), 500, "Server Internal Error"),
])
async def test_the_handlers_answer_is_the_final_response(
    events: Events, answer: object, status: int, reason: str
) -> None:
    async def handler(device_id: str, body: bytes, content_type: str) -> tuple[int, str] | None:
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    reg = start(events)
    reg.on_message = handler
    async with reg:
        device = await UdpDevice.open(reg)
        await device.register("s3cret")
        device.request("MESSAGE", body=KEEPALIVE)
        response = await device.response()
        assert (response.status_code, response.reason_phrase) == (status, reason)
        assert reg.counters["message_handler_error"] == (1 if status == 500 else 0)


async def test_a_retransmission_while_the_handler_works_is_absorbed(events: Events) -> None:
    calls: list[bytes] = []

    async def slow(device_id: str, body: bytes, content_type: str) -> None:
        calls.append(body)
        await asyncio.sleep(0.6)

    reg = start(events)
    reg.on_message = slow
    async with reg:
        device = await UdpDevice.open(reg)
        await device.register("s3cret")
        device.request("MESSAGE", body=KEEPALIVE)
        device.cseq -= 1  # the same transaction again, as a device's timer E resends it
        device.request("MESSAGE", body=KEEPALIVE)
        assert (await device.response()).status_code == 200
        await asyncio.sleep(0.3)
        assert device.inbox.empty() and len(calls) == 1 and reg.counters["retransmission"] == 1
