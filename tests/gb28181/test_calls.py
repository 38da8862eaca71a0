"""INVITE/ACK/BYE calls against SIPp playing the camera (its INVITE answers are out-of-call scenarios: SIPp registers
in its main call, the hub's INVITE arrives outside it), and against a small Python device for hostile answers and
for the device going away."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiosipua import SipRequest, SipResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gb28181.calls import Call, CallRefused, Calls, ssrc_of
from gb28181.invite import contact_uri
from gb28181.registrar import Registrar, RegistrarConfig, RequestTimeout
from gb28181.sip import SipError
from tests.gb28181.sipp import SCENARIOS
from tests.gb28181.test_registrar import DEV, DOMAIN, SERVER, Events, UdpDevice, eventually

CHANNEL = "34020000001310000001"
SSRC = "0100000001"

needs_sipp = pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (Debian sip-tester) is not installed")


def offer(session: str = "Play", ssrc: str = SSRC) -> str:
    """An offer as the media side writes it (only its s= and y= lines matter here)."""
    return (f"v=0\r\no={SERVER} 0 0 IN IP4 127.0.0.1\r\ns={session}\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=video 30000 RTP/AVP 96\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\ny={ssrc}\r\n")


class Ends:
    def __init__(self) -> None:
        self.remote_byes: list[str] = []
        self.ended: list[tuple[str, str]] = []

    def remote_bye(self, call_id: str) -> None:
        self.remote_byes.append(call_id)

    def end(self, call_id: str, reason: str) -> None:
        self.ended.append((call_id, reason))


def start(events: Events, **options: float) -> Registrar:
    config = RegistrarConfig(server_id=SERVER, host="127.0.0.1", udp_port=0, tcp_port=0, **options)  # type: ignore[arg-type]
    return Registrar(config, password_of=events.password_of, on_message=events.message, on_online=events.online,
                     on_offline=events.offline)


@pytest.fixture
async def hub() -> AsyncIterator[tuple[Registrar, Calls, Ends]]:
    ends = Ends()
    async with start(Events()) as reg:
        calls = Calls(reg, on_remote_bye=ends.remote_bye, on_ended=ends.end, bye_timeout_s=1.0, linger_s=2.0)
        yield reg, calls, ends
        await calls.close()


async def start_sipp(port: int, tmp_path: Path, fields: list[str], *, scenario: str = "device_registered.xml",
                     ooc: str | None = None, transport: str = "u1") -> asyncio.subprocess.Process:
    """SIPp as DEV playing ``scenario`` (fields from an injection file), answering requests that arrive outside its
    call with the out-of-call scenario ``ooc``; not awaited (see :func:`sipp_result`)."""
    (tmp_path / "device.csv").write_text("SEQUENTIAL\n" + ";".join(fields) + ";\n")
    args = ["sipp", f"127.0.0.1:{port}", "-sf", str(SCENARIOS / scenario), "-inf", str(tmp_path / "device.csv"),
            "-m", "1", "-t", transport, "-i", "127.0.0.1", "-p", "0", "-au", DEV, "-ap", "s3cret", "-nostdin",
            "-timeout", "15s", "-timeout_error", "-trace_err"]
    if ooc is not None:
        args += ["-oocsf", str(SCENARIOS / ooc)]
    return await asyncio.create_subprocess_exec(*args, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)


async def sipp_device(reg: Registrar, tmp_path: Path, ooc: str, *, transport: str = "u1",
                      exchanges: int = 1) -> asyncio.subprocess.Process:
    """SIPp registered as DEV, answering what the hub sends it with the out-of-call ``ooc`` and staying until
    ``exchanges`` of them have played to their end (else it fails at its time-out)."""
    port = reg.udp_port if transport == "u1" else reg.tcp_port
    proc = await start_sipp(port, tmp_path, [DEV, DOMAIN, SERVER, str(exchanges)], ooc=ooc, transport=transport)
    await eventually(lambda: reg.registration(DEV) is not None)
    return proc


async def sipp_result(proc: asyncio.subprocess.Process, tmp_path: Path) -> int:
    """SIPp's exit code, or 99 when an out-of-call scenario failed (aborted calls do not always change the code)."""
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    errors = b"".join(p.read_bytes() for p in tmp_path.glob("*_errors.log"))
    failed = any(word in errors for word in (b"Aborting call", b"Dead call", b"Unexpected", b"unexpected"))
    if proc.returncode != 0 or failed:
        print(err.decode(errors="replace"), errors.decode(errors="replace"))
    assert proc.returncode is not None
    return 99 if failed else proc.returncode


# --- SIPp as the camera -----------------------------------------------------------------------------------------


@needs_sipp
@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_sipp_camera_answers_and_the_hub_hangs_up(
    hub: tuple[Registrar, Calls, Ends], transport: str, tmp_path: Path
) -> None:
    reg, calls, ends = hub
    proc = await sipp_device(reg, tmp_path, "device_answers_invite.xml", transport=transport)
    call = await calls.invite(DEV, CHANNEL, offer())
    assert isinstance(call, Call) and call.device_id == DEV and call.channel_id == CHANNEL and call.ssrc == SSRC
    assert "a=rtpmap:96 PS/90000" in call.answer_sdp and ssrc_of(call.answer_sdp) == SSRC
    assert call.to_tag.startswith("cam") and call.from_tag and call.remote_target.startswith("sip:camera@127.0.0.1:")
    assert calls.active() == [call]
    await calls.bye(call)
    assert calls.counters["bye_ok"] == 1 and calls.active() == [] and ends.remote_byes == []
    await calls.bye(call)  # twice: nothing sent, counted
    assert calls.counters["bye_not_active"] == 1
    assert await sipp_result(proc, tmp_path) == 0


@needs_sipp
async def test_sipp_camera_hangs_up_itself(hub: tuple[Registrar, Calls, Ends], tmp_path: Path) -> None:
    reg, calls, ends = hub
    proc = await sipp_device(reg, tmp_path, "device_answers_invite.xml")
    call = await calls.invite(DEV, CHANNEL, offer("PlayByeFromDevice"))
    await eventually(lambda: ends.remote_byes == [call.call_id])
    assert calls.active() == [] and calls.counters["remote_bye"] == 1
    assert await sipp_result(proc, tmp_path) == 0  # SIPp got its 200 to the BYE
    await calls.bye(call)
    assert calls.counters["bye_not_active"] == 1 and calls.counters["bye_ok"] == 0


@needs_sipp
async def test_sipp_busy_camera_is_a_call_refused_and_the_486_is_acked(
    hub: tuple[Registrar, Calls, Ends], tmp_path: Path
) -> None:
    reg, calls, _ = hub
    proc = await sipp_device(reg, tmp_path, "device_refuses_invite.xml")
    with pytest.raises(CallRefused) as refused:
        await calls.invite(DEV, CHANNEL, offer())
    assert (refused.value.status, refused.value.reason) == (486, "Busy Here")
    assert calls.active() == [] and calls.counters["invite_refused"] == 1
    assert await sipp_result(proc, tmp_path) == 0  # SIPp received the ACK of the 486


# --- a Python device: retransmissions, CANCEL, the device going away, hostile answers --------------------------


def answer(invite: SipRequest, status: int, *, tag: str | None = "dev1", body: bytes = b"") -> SipResponse:
    reply = SipResponse(status_code=status, reason_phrase="X", headers=invite.headers.copy())
    reply.headers.remove("To")
    to = invite.headers.get_first("to") or ""
    reply.headers.append("To", f"{to};tag={tag}" if tag else to)
    reply.headers.set_single("Contact", f"<sip:{CHANNEL}@127.0.0.1:1>")
    reply.body = body
    return reply


async def next_request(device: UdpDevice, method: str, timeout: float = 5.0, *, not_call: str = "") -> SipRequest:
    """The next ``method`` request the device receives (of another call than ``not_call``); others are skipped."""
    async with asyncio.timeout(timeout):
        while True:
            message = await device.inbox.get()
            if (isinstance(message, SipRequest) and message.method == method
                    and message.headers.get_first("call-id") != not_call):
                return message


def drain(device: UdpDevice) -> list[SipRequest | SipResponse]:
    taken = []
    while not device.inbox.empty():
        taken.append(device.inbox.get_nowait())
    return taken


def send(device: UdpDevice, message: SipRequest | SipResponse | bytes) -> None:
    assert device.transport is not None
    device.transport.sendto(message if isinstance(message, bytes) else bytes(message))


async def test_invite_is_retransmitted_until_a_1xx_and_a_retransmitted_200_is_acked_again(
    hub: tuple[Registrar, Calls, Ends],
) -> None:
    reg, calls, _ = hub
    device = await UdpDevice.open(reg)
    await device.register("s3cret")
    pending = asyncio.create_task(calls.invite(DEV, CHANNEL, offer(), timeout_s=5))
    first = await next_request(device, "INVITE")
    again = await next_request(device, "INVITE", timeout=1.0)  # timer A: 0.5 s
    assert again.headers.get_first("via") == first.headers.get_first("via")
    assert first.headers.get_first("subject") == f"{CHANNEL}:{SSRC},{SERVER}:0"
    assert first.uri.startswith(f"sip:{CHANNEL}@") and first.headers.get_first("content-type") == "APPLICATION/SDP"
    send(device, answer(first, 100))
    await asyncio.sleep(1.2)
    assert not any(isinstance(m, SipRequest) and m.method == "INVITE" for m in drain(device))
    ok = answer(first, 200, body=b"v=0\r\ny=0100000001\r\n")
    send(device, ok)
    call = await pending
    ack = await next_request(device, "ACK")
    assert ack.headers.get_first("cseq") == f"{call.cseq} ACK" and ack.uri == f"sip:{CHANNEL}@127.0.0.1:1"
    assert ack.headers.get_first("via") != first.headers.get_first("via")  # a 2xx's ACK has a new branch
    assert "tag=dev1" in (ack.headers.get_first("to") or "")
    send(device, ok)  # the device did not get our ACK
    await next_request(device, "ACK")
    assert calls.counters["invite_2xx_retransmission"] == 1


async def test_no_answer_after_a_1xx_is_cancelled_and_the_487_acked(hub: tuple[Registrar, Calls, Ends]) -> None:
    reg, calls, _ = hub
    device = await UdpDevice.open(reg)
    await device.register("s3cret")
    pending = asyncio.create_task(calls.invite(DEV, CHANNEL, offer(), timeout_s=1.0))
    invite = await next_request(device, "INVITE")
    send(device, answer(invite, 180))
    cancel = await next_request(device, "CANCEL")
    assert cancel.headers.get_first("via") == invite.headers.get_first("via")
    send(device, answer(cancel, 200))
    send(device, answer(invite, 487))
    with pytest.raises(RequestTimeout):
        await pending
    ack = await next_request(device, "ACK")
    assert ack.headers.get_first("via") == invite.headers.get_first("via")  # inside the INVITE transaction
    # A 200 crossing the CANCEL: ACKed and hung up, not left streaming.
    send(device, answer(invite, 200))
    await next_request(device, "ACK")
    bye = await next_request(device, "BYE")
    send(device, answer(bye, 200))
    await eventually(lambda: calls.counters["bye_ok"] == 1)
    assert calls.counters["late_answer_hung_up"] == 1 and calls.active() == []


async def test_a_device_that_unregisters_ends_its_calls(hub: tuple[Registrar, Calls, Ends]) -> None:
    reg, calls, ends = hub
    device = await UdpDevice.open(reg)
    await device.register("s3cret")
    pending = asyncio.create_task(calls.invite(DEV, CHANNEL, offer()))
    send(device, answer(await next_request(device, "INVITE"), 200))
    call = await pending
    await next_request(device, "ACK")
    await device.register("s3cret", expires=0)
    assert ends.ended == [(call.call_id, "unregistered")] and calls.active() == []
    bye = await next_request(device, "BYE")  # best effort, in case it still streams
    assert bye.headers.get_first("cseq") == f"{call.cseq + 1} BYE" and bye.uri == f"sip:{CHANNEL}@127.0.0.1:1"


async def test_a_bye_for_an_unknown_call_is_481(hub: tuple[Registrar, Calls, Ends]) -> None:
    reg, calls, ends = hub
    device = await UdpDevice.open(reg)
    await device.register("s3cret")
    device.request("BYE")
    assert (await device.response()).status_code == 481
    assert calls.counters["bye_unknown_call"] == 1 and ends.remote_byes == []


# --- hostile answers ----------------------------------------------------------------------------------------------

hostile = st.lists(
    st.one_of(
        st.tuples(st.just("status"), st.integers(100, 699), st.booleans()),  # status, with a To tag or not
        st.tuples(st.just("cseq"), st.sampled_from(["999 INVITE", "1 BYE", "x INVITE", ""]), st.just(True)),
        st.tuples(st.just("call-id"), st.sampled_from(["other", ""]), st.just(True)),
        st.tuples(st.just("bytes"), st.binary(max_size=300), st.just(True)),
    ),
    min_size=1, max_size=5,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile)
def test_hostile_answers_never_break_the_registrar_and_the_next_call_works(steps: list[tuple[str, object, bool]],
                                                                          ) -> None:
    asyncio.run(_hostile_then_good(steps))


async def _hostile_then_good(steps: list[tuple[str, object, bool]]) -> None:
    async with start(Events()) as reg:
        calls = Calls(reg, bye_timeout_s=0.3, linger_s=0.5)
        device = await UdpDevice.open(reg)
        await device.register("s3cret")
        pending = asyncio.create_task(calls.invite(DEV, CHANNEL, offer(), timeout_s=0.8))
        invite = await next_request(device, "INVITE")
        for kind, value, tagged in steps:
            if kind == "bytes":
                send(device, value)  # type: ignore[arg-type]
                continue
            reply = answer(invite, value if kind == "status" else 200, tag="dev1" if tagged else None)  # type: ignore[arg-type]
            if kind in ("cseq", "call-id"):
                reply.headers.set_single(kind, str(value))
            send(device, reply)
        with contextlib.suppress(SipError):  # refused or timed out; anything else is a defect
            await pending
        good = asyncio.create_task(calls.invite(DEV, CHANNEL, offer(), timeout_s=3))
        second = await next_request(device, "INVITE", not_call=invite.headers.get_first("call-id") or "")
        send(device, answer(second, 200, body=b"v=0\r\n"))
        call = await good
        assert call.answer_sdp == "v=0\r\n" and call in calls.active()
        await calls.close()


async def test_a_bye_with_the_wrong_tags_or_from_another_host_does_not_end_the_call(
    hub: tuple[Registrar, Calls, Ends],
) -> None:
    reg, calls, ends = hub
    device = await UdpDevice.open(reg)
    await device.register("s3cret")
    pending = asyncio.create_task(calls.invite(DEV, CHANNEL, offer()))
    invite = await next_request(device, "INVITE")
    send(device, answer(invite, 200))
    call = await pending
    await next_request(device, "ACK")

    def bye(from_tag: str, to_tag: str, n: int) -> bytes:
        return (f"BYE sip:{SERVER}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5999;branch=z9hG4bK{n}"
                f"\r\nFrom: <sip:{CHANNEL}@{DOMAIN}>;tag={from_tag}\r\nTo: <sip:{SERVER}@{DOMAIN}>;tag={to_tag}\r\n"
                f"Call-ID: {call.call_id}\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n").encode()

    send(device, bye("dev1", "wrong", 1))
    assert (await device.response()).status_code == 481
    loop = asyncio.get_running_loop()
    stranger = UdpDevice()
    await loop.create_datagram_endpoint(lambda: stranger, local_addr=("127.0.0.2", 0),
                                        remote_addr=("127.0.0.1", reg.udp_port))
    send(stranger, bye("dev1", call.from_tag, 2))
    assert (await stranger.response()).status_code == 403
    assert calls.active() == [call] and ends.remote_byes == []
    send(device, bye("dev1", call.from_tag, 3))
    assert (await device.response()).status_code == 200
    assert ends.remote_byes == [call.call_id] and calls.active() == []


@given(st.text(max_size=300))
def test_contact_uri_takes_only_a_sip_uri_and_never_raises(value: str) -> None:
    uri = contact_uri(value)
    assert uri is None or (uri.lower().startswith(("sip:", "sips:")) and not any(c.isspace() for c in uri))


def test_contact_uri_forms() -> None:
    assert contact_uri("<sip:cam@10.0.0.5:5060>;expires=3600") == "sip:cam@10.0.0.5:5060"
    assert contact_uri('"Cam" <sip:cam@10.0.0.5>') == "sip:cam@10.0.0.5"
    assert contact_uri("sip:cam@10.0.0.5;transport=udp") == "sip:cam@10.0.0.5"
    assert contact_uri("<http://x>") is None and contact_uri("<sip:a b>") is None and contact_uri(None) is None
