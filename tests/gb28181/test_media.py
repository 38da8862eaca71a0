"""MediaReceiver end to end: Debian ffmpeg's MPEG-PS and PsMuxer's, over real UDP and TCP sockets, decoded by
PyAV's h264 decoder; and the same with garbage, foreign SSRCs, reordering and duplicates mixed in."""

from __future__ import annotations

import asyncio
import random
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gb28181.media import MediaReceiver
from gb28181.ps import PsMuxer
from gb28181.rtp import RtpPacket, build_rtp, parse_rtp
from tests.gb28181.media_support import (
    SSRC,
    Frames,
    decode,
    encode,
    ffmpeg_ps,
    rtp_packets,
    send_tcp,
    send_udp,
    split_packs,
)

_STREAMS: dict[tuple[str, float, str], bytes] = {}


def stream(size: str = "1280x720", seconds: float = 3, fmt: str = "mpeg") -> bytes:
    key = (size, seconds, fmt)
    if key not in _STREAMS:
        _STREAMS[key] = ffmpeg_ps(size=size, seconds=seconds, fmt=fmt)
    return _STREAMS[key]


@pytest.mark.parametrize("fmt", ["mpeg", "vob"])
async def test_ffmpeg_ps_over_udp_decodes(fmt: str) -> None:
    frames = Frames()
    receiver = MediaReceiver(host="127.0.0.1", transport="udp", ssrc=SSRC, on_frame=frames)
    port = await receiver.start()
    try:
        await send_udp(rtp_packets(split_packs(stream(fmt=fmt))), port)
        await frames.settle(expect=75)
    finally:
        await receiver.stop()
    decoded = decode([unit for unit, _, _ in frames.units])
    assert frames.units[0][2], "the first access unit is a key frame"
    assert decoded.size == (1280, 720)
    assert decoded.errors == 0
    assert 73 <= decoded.pictures <= 75
    pts = [p for _, p, _ in frames.units]
    assert pts == sorted(pts) and pts[1] - pts[0] == 3600
    counters = receiver.counters
    assert counters["frames"] == len(frames.units)
    assert counters["keyframes"] == 3
    assert not {"bad_rtp", "wrong_ssrc", "lost", "incomplete_frame", "demux_error"} & set(+counters)


async def test_ffmpeg_ps_over_tcp_passive_decodes_and_refuses_a_second_connection() -> None:
    frames = Frames()
    receiver = MediaReceiver(host="127.0.0.1", transport="tcp", ssrc=SSRC, on_frame=frames)
    port = await receiver.start()
    try:
        packets = rtp_packets(split_packs(stream()))
        _, camera = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        intruder_reader, intruder = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(intruder_reader.read(), 2) == b""  # closed on us
        intruder.close()
        from gb28181.rtp import frame_tcp

        camera.write(b"".join(frame_tcp(p) for p in packets))
        await camera.drain()
        await frames.settle(expect=75)
        camera.close()
    finally:
        await receiver.stop()
    decoded = decode([unit for unit, _, _ in frames.units])
    assert (decoded.size, decoded.errors) == ((1280, 720), 0)
    assert 73 <= decoded.pictures <= 75
    assert receiver.counters["tcp_refused"] == 1


async def test_tcp_bad_framing_closes_the_connection_and_a_new_one_works() -> None:
    frames = Frames()
    receiver = MediaReceiver(host="127.0.0.1", transport="tcp", ssrc=SSRC, on_frame=frames, max_packet=2048)
    port = await receiver.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\xff\xff" + bytes(100))
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        await asyncio.sleep(0.05)
        await send_tcp(rtp_packets(split_packs(stream(size="640x360", seconds=1))), port)
        await frames.settle(expect=25)
    finally:
        await receiver.stop()
    assert receiver.counters["tcp_oversize"] == 1
    assert decode([u for u, _, _ in frames.units]).pictures >= 24


async def test_psmuxer_round_trip_over_udp() -> None:
    encoded = encode(50, 640, 360)
    muxer = PsMuxer(640, 360, 25)
    chunks = [muxer.mux(p) for p in encoded]
    chunks.append(muxer.close())
    assert chunks[0].startswith(b"\x00\x00\x01\xba\x44"), "an MPEG-2 pack header first"
    assert b"\x00\x00\x01\xbb" in chunks[0], "a system header"
    frames = Frames()
    receiver = MediaReceiver(host="127.0.0.1", transport="udp", ssrc=SSRC, on_frame=frames)
    port = await receiver.start()
    try:
        await send_udp(rtp_packets([c for c in chunks if c]), port)
        await frames.settle(expect=50)
    finally:
        await receiver.stop()
    decoded = decode([u for u, _, _ in frames.units])
    assert (decoded.pictures, decoded.size, decoded.errors) == (50, (640, 360), 0)
    assert [k for _, _, k in frames.units].count(True) == 2
    assert [p for _, p, _ in frames.units][:3] == [frames.units[0][1] + 3600 * i for i in range(3)]


def _hostile_mix(good: list[bytes], garbage: list[bytes], rng: random.Random) -> list[bytes]:
    """The good stream reordered within small windows, 10 % duplicated, with garbage and foreign SSRCs between."""
    mixed: list[bytes] = []
    for start in range(0, len(good), 6):
        window = good[start : start + 6]
        rng.shuffle(window)
        for packet in window:
            mixed.append(packet)
            if rng.random() < 0.1:
                mixed.append(packet)
            if garbage and rng.random() < 0.3:
                mixed.append(garbage[rng.randrange(len(garbage))])
            if rng.random() < 0.05:
                p = parse_rtp(packet)
                mixed.append(build_rtp(RtpPacket(p.payload_type, p.sequence, p.timestamp, SSRC + 1, p.marker,
                                                 bytes(len(p.payload)))))
            if rng.random() < 0.03:
                p = parse_rtp(packet)
                mixed.append(build_rtp(RtpPacket(8, p.sequence, p.timestamp, SSRC, p.marker, b"audio")))
    return mixed


async def _hostile_run(garbage: list[bytes], seed: int) -> None:
    good = rtp_packets(split_packs(stream(size="640x360", seconds=2)))
    mixed = _hostile_mix(good, garbage, random.Random(seed))
    frames = Frames()
    receiver = MediaReceiver(host="127.0.0.1", transport="udp", ssrc=SSRC, on_frame=frames)
    port = await receiver.start()
    camera = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        await send_udp(mixed[:1], port, sock=camera)
        await send_udp(good[:5], port, sock=stranger)  # a second sender is never listened to
        await send_udp(mixed[1:], port, sock=camera)
        await frames.settle(expect=50)
    finally:
        camera.close()
        stranger.close()
        started = time.monotonic()
        await receiver.stop()
        assert time.monotonic() - started < 5
        assert not receiver.demuxer.running
    decoded = decode([u for u, _, _ in frames.units])
    counters = receiver.counters
    assert decoded.errors == 0
    assert decoded.pictures >= 49, counters
    assert counters["wrong_source"] >= 5
    assert counters["duplicate"] + counters["late"] > 0
    assert counters["wrong_ssrc"] > 0
    assert counters["lost"] == 0 and counters["incomplete_frame"] == 0


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.binary(max_size=1500), min_size=1, max_size=30), st.integers(0, 2**16))
def test_garbage_foreign_ssrc_reordering_and_duplicates_leave_the_good_stream_whole(garbage: list[bytes],
                                                                                     seed: int) -> None:
    # Garbage that happens to carry the session's SSRC and payload type is the camera as far as RTP can tell.
    def ours(data: bytes) -> bool:
        return len(data) >= 12 and data[1] & 0x7F == 96 and int.from_bytes(data[8:12], "big") == SSRC

    asyncio.run(_hostile_run([g for g in garbage if not ours(g)], seed))


async def test_a_port_in_use_fails_start_without_leaving_a_thread() -> None:
    first = MediaReceiver(host="127.0.0.1", transport="tcp", ssrc=None, on_frame=Frames())
    port = await first.start()
    second = MediaReceiver(host="127.0.0.1", transport="tcp", ssrc=None, on_frame=Frames(), port=port)
    try:
        with pytest.raises(OSError):
            await second.start()
        assert not second.demuxer.running
    finally:
        await first.stop()
        await second.stop()


async def test_ssrc_is_learnt_from_the_first_packet_and_others_are_refused() -> None:
    frames = Frames()
    receiver = MediaReceiver(host="127.0.0.1", transport="udp", ssrc=None, on_frame=frames)
    port = await receiver.start()
    try:
        good = rtp_packets(split_packs(stream(size="640x360", seconds=1)), ssrc=1234)
        other = rtp_packets(split_packs(stream(size="640x360", seconds=1)), ssrc=999)
        await send_udp([p for pair in zip(good, other, strict=False) for p in pair] + good[len(other):], port)
        await frames.settle(expect=25)
    finally:
        await receiver.stop()
    assert receiver.ssrc == 1234
    assert receiver.counters["wrong_ssrc"] == len(other)
    assert decode([u for u, _, _ in frames.units]).pictures >= 24
    assert receiver.last_packet_at is not None
