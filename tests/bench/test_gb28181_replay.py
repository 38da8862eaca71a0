"""The GB/T 28181 benchmark's replay: PS chunks muxed once, re-timed on the way out, sent as RTP over UDP."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.gb28181_replay import PsLoop, PsReplayStream, load_loop, mux_loop, retime, save_loop, timestamp_fields
from bench.video_load import EncodedLoop, encode_loop
from gb28181.rtp import parse_rtp
from gb28181.sdp import ssrc_number
from gb28181.sip import Transport
from sim.framecode import read_code
from sim.gb28181_stream import StreamTarget

TICK = 90_000 // 25


@pytest.fixture(scope="module")
def h264() -> EncodedLoop:
    return encode_loop(frames=12, gop=6, kbit_per_s=400, width=320, height=240, codec="H264")


@pytest.fixture(scope="module")
def ps(h264: EncodedLoop) -> PsLoop:
    return mux_loop(h264, 25)


def _codes(stream: bytes) -> tuple[list[int], list[int]]:
    """(PTS of each demuxed picture, loop index read from each decoded picture)."""
    pts = [int(p.pts or 0) for p in av.open(io.BytesIO(stream), "r", format="mpeg").demux(video=0) if p.size]
    decoder = av.CodecContext.create("h264", "r")
    codes: list[int] = []
    for packet in av.open(io.BytesIO(stream), "r", format="mpeg").demux(video=0):
        for frame in decoder.decode(packet):
            plane = frame.planes[0]
            luma = np.frombuffer(memoryview(plane), np.uint8).reshape(frame.height, plane.line_size)[:, :frame.width]
            code = read_code(luma)
            assert code is not None
            codes.append(code[0])
    return pts, codes


def test_the_h264_loop_has_key_frames_where_the_replay_can_start(h264: EncodedLoop) -> None:
    assert h264.codec == "H264" and len(h264.frames) == 12 and h264.keyframes == [0, 6]
    assert all(h264.frames[k].startswith(b"\x00\x00\x00\x01\x67") for k in h264.keyframes)  # SPS first


def test_retimed_chunks_make_one_timeline_across_the_loops_restart(ps: PsLoop) -> None:
    n = len(ps.chunks)
    order = [(6 + k) % n for k in range(2 * n)]  # from the second key frame, through the wrap, twice
    stream = b"".join(retime(ps.chunks[i], ps.fields[i], (k + n) * TICK - i * TICK) for k, i in enumerate(order))
    pts, codes = _codes(stream)
    assert pts == [(k + n) * TICK for k in range(2 * n)]
    assert codes == order


def test_retiming_keeps_every_field_where_it_was(ps: PsLoop) -> None:
    for chunk, fields in zip(ps.chunks, ps.fields, strict=True):
        assert fields and timestamp_fields(retime(chunk, fields, 123_456_789)) == fields
    assert retime(ps.chunks[3], ps.fields[3], 0) == ps.chunks[3]


def test_the_loop_file_round_trips(ps: PsLoop, tmp_path: Path) -> None:
    save_loop(ps, tmp_path / "loop.ps")
    again = load_loop(tmp_path / "loop.ps")
    assert again.chunks == ps.chunks and again.fields == ps.fields and again.keyframes == ps.keyframes


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_is_refused_with_value_error_only(data: bytes) -> None:
    try:
        fields = timestamp_fields(data)
    except ValueError:
        return
    assert all(0 <= at < len(data) for at, _ in fields)


def test_a_cut_chunk_is_refused(ps: PsLoop) -> None:
    with pytest.raises(ValueError):
        timestamp_fields(ps.chunks[0][:-5])


async def test_the_stream_sends_rtp_paced_with_its_send_times(ps: PsLoop) -> None:
    received: list[bytes] = []

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            received.append(data)

    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    udp: Transport = "udp"
    stream = PsReplayStream(ps, StreamTarget("127.0.0.1", port, udp, ssrc_number("0100000001")), start=1)
    try:
        await stream.open()
        assert stream.local_port > 0
        task = asyncio.create_task(stream.run())
        await asyncio.sleep(0.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0.05)
    finally:
        transport.close()
    sends = list(stream.sends)
    indexes = [int(k) for k in sends[1::2]]
    assert 10 <= stream.frames_sent <= 15 and indexes[:3] == [6, 7, 8]  # starts at the key frame after 1
    assert all(0.02 < b - a < 0.06 for a, b in zip(sends[0:-2:2], sends[2::2], strict=False))
    packets = [parse_rtp(d) for d in received]
    assert len(packets) == stream.packets_sent
    assert [p.sequence for p in packets] == list(range(len(packets)))
    stamps = sorted({p.timestamp for p in packets})
    assert stamps == [(k + len(ps.chunks)) * TICK for k in range(stream.frames_sent)]
    stream.close()  # run() closed it already: idempotent
