"""The simulated GB/T 28181 camera's video: its PS/RTP stream decoded by PyAV (UDP and TCP), and INVITE/ACK/BYE
against the hub's real registrar and calls (gb28181.calls); no socket or SIP agent is mocked."""

from __future__ import annotations

import asyncio
import io
import itertools
from typing import Any

import av
import pytest

from gb28181.registrar import Registrar
from gb28181.rtp import parse_rtp
from sim.framecode import read_code
from sim.gb28181_camera import GbCamera
from sim.gb28181_stream import StreamSettings
from tests.sim.gb28181_support import CHANNEL, DEV, SERVER, config, eventually, platform, registrar

__all__ = ["platform", "registrar"]  # fixtures


class _Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.packets.append(data)


def decode_ps_over_rtp(packets: list[bytes], ssrc: int) -> tuple[list[int], list[int]]:
    """RTP stripped (checked: SSRC, PT 96, no gap), PS demuxed and H.264 decoded by PyAV; the frame codes read and
    the RTP timestamps seen."""
    rtp = [parse_rtp(p) for p in packets]
    assert {p.ssrc for p in rtp} == {ssrc} and {p.payload_type for p in rtp} == {96}
    assert [(p.sequence - rtp[0].sequence) & 0xFFFF for p in rtp] == list(range(len(rtp)))
    timestamps = sorted({p.timestamp for p in rtp})
    assert all(p.marker for p, q in itertools.pairwise(rtp) if q.timestamp != p.timestamp)
    with av.open(io.BytesIO(b"".join(p.payload for p in rtp)), mode="r", format="mpeg") as container:
        codes = [read_code(frame.to_ndarray(format="gray")) for frame in container.decode(video=0)]
    return [c[0] for c in codes if c is not None], timestamps


async def test_stream_over_udp_decodes_to_the_frame_codes() -> None:
    from sim.gb28181_stream import PsRtpStream, StreamTarget

    loop = asyncio.get_running_loop()
    sink, collect = await loop.create_datagram_endpoint(_Collect, local_addr=("127.0.0.1", 0))
    port = sink.get_extra_info("sockname")[1]
    stream = PsRtpStream(StreamTarget("127.0.0.1", port, "udp", 123456789), StreamSettings(320, 240, 10.0, 1.0),
                         label=CHANNEL, local_host="127.0.0.1")
    task = asyncio.create_task(stream.run())
    try:
        await asyncio.sleep(2.0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        sink.close()
    assert 15 <= stream.frames_sent <= 25  # paced at 10 fps
    frames, timestamps = decode_ps_over_rtp(collect.packets, 123456789)
    # 90 kHz, 9000 per picture at 10 fps. PsMuxer writes whole 4096-byte packs, so a small picture may go out
    # with the next one's timestamp: not every multiple is present.
    assert timestamps[0] == 0 and all(t % 9000 == 0 for t in timestamps) and len(timestamps) >= 5
    assert len(frames) >= stream.frames_sent - 2  # the muxer holds the tail of the last picture or two
    assert frames == list(range(len(frames)))


async def test_stream_over_tcp_is_rfc4571_framed() -> None:
    from gb28181.rtp import TcpDeframer
    from sim.gb28181_stream import PsRtpStream, StreamTarget

    received: list[bytes] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        deframer = TcpDeframer()
        while chunk := await reader.read(65536):
            received.extend(deframer.feed(chunk))
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stream = PsRtpStream(StreamTarget("127.0.0.1", port, "tcp", 200000001), StreamSettings(320, 240, 10.0, 1.0))
    task = asyncio.create_task(stream.run())
    await asyncio.sleep(1.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    server.close()
    frames, _ = decode_ps_over_rtp(received, 200000001)
    assert len(frames) >= 10 and frames == list(range(len(frames)))


# --- INVITE end to end, with the hub's calls (gb28181.calls) ----------------------------------------------------


@pytest.mark.parametrize("hangs_up", ["platform", "camera"])
async def test_invite_streams_until_bye(registrar: Registrar, hangs_up: str) -> None:
    from gb28181.calls import Calls
    from gb28181.sdp import build_offer, parse_answer

    remote_byes: list[str] = []
    calls = Calls(registrar, on_remote_bye=remote_byes.append)
    loop = asyncio.get_running_loop()
    sink, collect = await loop.create_datagram_endpoint(_Collect, local_addr=("127.0.0.1", 0))
    port = sink.get_extra_info("sockname")[1]
    try:
        async with GbCamera(config(registrar)) as camera:
            await asyncio.wait_for(camera.registered.wait(), 5)
            offer = build_offer(server_id=SERVER, host="127.0.0.1", port=port, transport="udp", ssrc="0200000001")
            call = await calls.invite(DEV, CHANNEL, offer)
            answer = parse_answer(call.answer_sdp)
            assert answer.ssrc == "0200000001" and answer.port == camera.media.calls[call.call_id].stream.local_port
            await eventually(lambda: camera.counters.streams_started == 1 and len(collect.packets) > 20)
            await asyncio.sleep(1.0)
            if hangs_up == "platform":
                await calls.bye(call)
            else:
                assert await camera.stop_stream() == 1
                await eventually(lambda: remote_byes == [call.call_id])
            assert camera.media.calls == {}
            count = len(collect.packets)
            await asyncio.sleep(0.5)
            assert len(collect.packets) == count  # the stream stopped with the BYE
            frames, _ = decode_ps_over_rtp(collect.packets, 200000001)
            assert len(frames) >= 8 and frames == list(range(len(frames)))
            assert camera.counters.invites == 1 and camera.counters.frames_sent >= 8
    finally:
        sink.close()
        await calls.close()


async def test_tcp_media_connects_to_the_platforms_passive_port(registrar: Registrar) -> None:
    from gb28181.calls import Calls
    from gb28181.rtp import TcpDeframer
    from gb28181.sdp import build_offer, parse_answer

    received: list[bytes] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        deframer = TcpDeframer()
        while chunk := await reader.read(65536):
            received.extend(deframer.feed(chunk))
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    calls = Calls(registrar)
    try:
        async with GbCamera(config(registrar, "tcp")) as camera:
            await asyncio.wait_for(camera.registered.wait(), 5)
            offer = build_offer(server_id=SERVER, host="127.0.0.1", port=server.sockets[0].getsockname()[1],
                                transport="tcp", ssrc="0200000002")
            call = await calls.invite(DEV, CHANNEL, offer)
            answer = parse_answer(call.answer_sdp)
            assert (answer.transport, answer.setup, answer.ssrc) == ("tcp", "active", "0200000002")
            await eventually(lambda: len(received) > 20)
            await asyncio.sleep(1.0)
            await calls.bye(call)
            await eventually(lambda: camera.media.calls == {})
        frames, _ = decode_ps_over_rtp(received, 200000002)
        assert len(frames) >= 5 and frames == list(range(len(frames)))
    finally:
        await calls.close()
        server.close()


async def test_an_unacked_200_is_resent_unchanged_then_the_call_dropped(registrar: Registrar) -> None:
    """A platform (a raw socket here) that never ACKs: the same 200 again and again, then no call, no stream."""
    from aiosipua import SipMessage, SipRequest

    from gb28181.sdp import build_offer

    loop = asyncio.get_running_loop()
    platform_sock, inbox = await loop.create_datagram_endpoint(_Collect, local_addr=("127.0.0.1", 0))
    host, port = platform_sock.get_extra_info("sockname")[:2]
    cfg = config(registrar, server_port=port, sip_t1_s=0.05, register_retry_s=60.0)
    async with GbCamera(cfg) as camera:
        await eventually(lambda: inbox.packets)  # its REGISTER: never answered, we only want its socket
        invite = SipRequest(method="INVITE", uri=f"sip:{CHANNEL}@127.0.0.1:{camera.ua.local_port}")
        for name, value in (("Via", f"SIP/2.0/UDP {host}:{port};branch=z9hG4bKnoack"),
                            ("From", f"<sip:{SERVER}@3402000000>;tag=p1"), ("To", f"<sip:{CHANNEL}@3402000000>"),
                            ("Call-ID", "noack@test"), ("CSeq", "1 INVITE"), ("Content-Type", "application/sdp")):
            invite.headers.append(name, value)
        invite.body = build_offer(server_id=SERVER, host="127.0.0.1", port=9, transport="udp",
                                  ssrc="0200000003").encode()
        inbox.packets.clear()
        platform_sock.sendto(bytes(invite), ("127.0.0.1", camera.ua.local_port))
        await eventually(lambda: camera.counters.rejected["invite_not_acked"] == 1)
        answers = [m for m in map(SipMessage.parse, inbox.packets) if m.headers.get_first("call-id") == "noack@test"]
        assert len(answers) >= 4 and len({bytes(a) for a in answers}) == 1  # byte for byte the same 200
        assert camera.media.calls == {} and camera.counters.streams_started == 0
    platform_sock.close()
