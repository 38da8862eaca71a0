"""PsMuxer's output against ffprobe, and PsDemuxer fed directly: whole pictures without waiting for the next
one, garbage between pictures, a bounded backlog, and a stop that never hangs."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gb28181.ps import PsDemuxer, PsMuxer, _crc32_mpeg, camera_chunk, program_stream_map
from gb28181.ps_pipe import PACK_START, sync_point
from tests.gb28181.media_support import decode, encode, ffmpeg_ps, split_packs


@pytest.fixture(scope="module")
def pictures() -> list[tuple[bytes, bool]]:
    muxer = PsMuxer(640, 360, 25)
    return [(muxer.mux(p), p.is_keyframe) for p in encode(50, 640, 360)]


def test_crc_and_psm() -> None:
    assert _crc32_mpeg(b"123456789") == 0x0376E6E7  # the CRC-32/MPEG-2 check value
    psm = program_stream_map({0xE0: 0x1B})
    assert psm[:6] == b"\x00\x00\x01\xbc\x00\x0e"
    assert psm[6:16] == b"\xe0\xff\x00\x00\x00\x04\x1b\xe0\x00\x00"
    assert _crc32_mpeg(psm) == 0  # a CRC over data and its own CRC leaves zero


def test_chunks_look_like_a_cameras(pictures: list[tuple[bytes, bool]], tmp_path: object) -> None:
    for chunk, keyframe in pictures:
        assert chunk.startswith(PACK_START + b"\x44")  # MPEG-2 pack header
        assert not chunk.endswith(b"\x00\x00\x01\xb9")
        head = chunk[14 : 14 + 4]
        if keyframe:
            assert head == b"\x00\x00\x01\xbb" and b"\x00\x00\x01\xbc" in chunk[:80]
            assert sync_point(chunk) == 0
        else:
            assert head == b"\x00\x00\x01\xe2"
    assert [k for _, k in pictures].count(True) == 2
    path = f"{tmp_path}/camera.ps"
    with open(path, "wb") as out:
        out.write(b"".join(c for c, _ in pictures))
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-of", "json", "-show_entries",
                            "stream=codec_name,width,height,nb_read_frames", path],
                           check=True, capture_output=True, text=True, timeout=60)
    (stream,) = json.loads(probe.stdout)["streams"]
    assert stream == {"codec_name": "h264", "width": 640, "height": 360, "nb_read_frames": "50"}


def test_camera_chunk_leaves_foreign_bytes_alone() -> None:
    assert camera_chunk(b"junk", keyframe=True) == b"junk"
    assert camera_chunk(PACK_START + b"\x44", keyframe=False) == PACK_START + b"\x44"


async def test_each_picture_is_delivered_before_the_next_is_fed(pictures: list[tuple[bytes, bool]]) -> None:
    got: asyncio.Queue[bytes] = asyncio.Queue()
    demuxer = PsDemuxer(lambda unit: got.put_nowait(unit.data))
    demuxer.start()
    units: list[bytes] = []
    on_time = 0
    try:
        for chunk, _ in pictures:
            demuxer.feed(chunk)
            try:
                units.append(await asyncio.wait_for(got.get(), 0.5))
                on_time += 1
            except TimeoutError:
                pass
    finally:
        await demuxer.stop()
    while not got.empty():
        units.append(got.get_nowait())
    assert on_time >= len(pictures) - 5  # the first few, until the sender has shown its chunks are pictures
    decoded = decode(units)
    assert (decoded.pictures, decoded.errors) == (50, 0)


async def test_unaligned_muxer_round_trip() -> None:
    muxer = PsMuxer(640, 360, 25, aligned=False)
    chunks = [muxer.mux(p) for p in encode(30, 640, 360)] + [muxer.close()]
    units: list[bytes] = []
    demuxer = PsDemuxer(lambda unit: units.append(unit.data))
    demuxer.start()
    for chunk in chunks:
        demuxer.feed(chunk)
    await asyncio.sleep(0.3)
    await demuxer.stop()
    assert decode(units).pictures == 30


async def test_garbage_between_pictures_is_survived(pictures: list[tuple[bytes, bool]]) -> None:
    rng = random.Random(7)
    units: list[bytes] = []
    demuxer = PsDemuxer(lambda unit: units.append(unit.data))
    demuxer.start()
    try:
        for i, (chunk, _) in enumerate(pictures):
            demuxer.feed(chunk)
            if 5 <= i < 20:
                demuxer.feed(rng.choice([PACK_START, b"\x00\x00\x01\xe2\x10\x00", b""]) + os.urandom(300))
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.3)
    finally:
        await demuxer.stop()
    assert not demuxer.running
    # Pictures after the garbage are whole again: the last GOP decodes cleanly.
    last_gop = decode(units[-25:])
    assert last_gop.errors == 0 and last_gop.pictures >= 24


async def test_a_stream_is_joined_only_at_a_sync_point_and_the_backlog_is_bounded() -> None:
    chunks = split_packs(ffmpeg_ps(size="640x360", seconds=1))
    demuxer = PsDemuxer(lambda unit: None, max_buffer=150_000)
    assert not demuxer.feed(chunks[1])  # mid-stream: no system header or PSM yet
    assert demuxer.feed(chunks[0])
    refused = sum(not demuxer.feed(c) for c in chunks[1:])  # nobody reads: the pipe fills up
    assert refused > 0
    assert demuxer.counters["resync_skipped"] >= 1 and demuxer.counters["demux_backlog"] == 1


async def test_stop_ends_a_thread_waiting_for_its_first_bytes() -> None:
    demuxer = PsDemuxer(lambda unit: None)
    demuxer.start()
    await asyncio.sleep(0.1)
    assert demuxer.running
    await asyncio.wait_for(demuxer.stop(), 3)
    assert not demuxer.running


async def _garbage_run(pictures: list[tuple[bytes, bool]], garbage: list[bytes]) -> PsDemuxer:
    units: list[bytes] = []
    demuxer = PsDemuxer(lambda unit: units.append(unit.data))
    demuxer.start()
    try:
        for chunk, _ in pictures[:25]:
            demuxer.feed(chunk)
        for piece in garbage:
            demuxer.feed(piece)
            await asyncio.sleep(0.001)
        demuxer.discontinuity()  # the receiver tells of the loss: start again at the next key frame's pack
        for chunk, _ in pictures[25:]:
            demuxer.feed(chunk)
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.3)
    finally:
        await asyncio.wait_for(demuxer.stop(), 5)
    assert not demuxer.running
    assert demuxer.counters["callback_errors"] == 0
    tail = decode(units[-25:])
    assert tail.errors == 0 and tail.pictures >= 24, demuxer.counters
    return demuxer


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # the pictures' repr is large
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from([b"", PACK_START, PACK_START + b"\x44\x00\x04\x00\x04\x01\x01\x89\xc3\xf8",
                                           b"\x00\x00\x01\xbb", b"\x00\x00\x01\xbc", b"\x00\x00\x01\xe2\xff\xff"]),
                          st.binary(max_size=3000)).map(lambda t: t[0] + t[1]), max_size=20))
def test_hostile_ps_chunks_never_break_the_demuxer(pictures: list[tuple[bytes, bool]], garbage: list[bytes]) -> None:
    asyncio.run(_garbage_run(pictures, garbage))
