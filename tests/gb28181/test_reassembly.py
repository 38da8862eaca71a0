"""FrameAssembler (RTP -> PS chunks) and AccessUnitSplitter (ES -> H.264 access units): pure, fed by hand."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor

from hypothesis import given, settings
from hypothesis import strategies as st

from gb28181.h264 import AccessUnitSplitter, starts_access_unit
from gb28181.ps_pipe import PACK_START, ChunkPipe
from gb28181.reassembly import FrameAssembler
from gb28181.rtp import RtpPacket


def frames(count: int, parts: int = 3, first_seq: int = 0) -> list[RtpPacket]:
    """``count`` chunks of ``parts`` packets each; chunk i is PACK_START + b"<i>..."."""
    packets = []
    seq = first_seq
    for i in range(count):
        body = [PACK_START + bytes([i])] + [bytes([i, j]) for j in range(1, parts)]
        for j, payload in enumerate(body):
            packets.append(RtpPacket(96, seq & 0xFFFF, i * 3600, 1, j == parts - 1, payload))
            seq += 1
    return packets


def chunk(i: int, parts: int = 3) -> bytes:
    return PACK_START + bytes([i]) + b"".join(bytes([i, j]) for j in range(1, parts))


def run(packets: list[RtpPacket], assembler: FrameAssembler | None = None, dt: float = 0.001) -> list[bytes]:
    assembler = assembler or FrameAssembler()
    out = []
    now = 0.0
    for packet in packets:
        now += dt
        out += [c.data for c in assembler.push(packet, now)]
    out += [c.data for c in assembler.expire(now + 10)]
    return out


def test_in_order_across_the_sequence_wrap() -> None:
    assert run(frames(30, first_seq=65500)) == [chunk(i) for i in range(30)]


def test_reordered_and_duplicated_packets_are_put_right() -> None:
    packets = frames(20)
    rng = random.Random(1)
    mixed = []
    for start in range(0, len(packets), 5):
        window = packets[start : start + 5]
        rng.shuffle(window)
        mixed += window + window[:1]
    assembler = FrameAssembler()
    assert run(mixed, assembler) == [chunk(i) for i in range(20)]
    assert assembler.drops["duplicate"] + assembler.drops["late"] == len(mixed) - len(packets)
    assert assembler.drops["lost"] == 0


def test_a_lost_packet_drops_its_chunk_and_the_next_whole_one_follows() -> None:
    packets = frames(6)
    del packets[7]  # the middle of chunk 2
    assembler = FrameAssembler()
    assert run(packets, assembler) == [chunk(i) for i in (0, 1, 3, 4, 5)]
    assert (assembler.drops["lost"], assembler.drops["incomplete_frame"]) == (1, 1)


def test_a_lost_chunk_start_skips_to_the_next_pack_header() -> None:
    packets = frames(6)
    del packets[8:10]  # the end of chunk 2 and the start of chunk 3 (with its pack header)
    assembler = FrameAssembler()
    assert run(packets, assembler) == [chunk(i) for i in (0, 1, 4, 5)]
    assert assembler.drops["incomplete_frame"] == 2


def test_loss_is_given_up_after_the_delay_even_when_the_stream_pauses() -> None:
    assembler = FrameAssembler(reorder_delay=0.05)
    packets = frames(3)
    del packets[4]
    assert [c.data for p in packets[:4] for c in assembler.push(p, 1.0)] == []  # held while warming up
    assert [c.data for c in assembler.expire(1.06)] == [chunk(0)]
    assert [c.data for p in packets[4:] for c in assembler.push(p, 1.1)] == []
    assert [c.data for c in assembler.expire(1.12)] == []
    assert [c.data for c in assembler.expire(1.2)] == [chunk(2)]


def test_a_jump_is_believed_only_when_the_next_packet_continues_it() -> None:
    assembler = FrameAssembler()
    good = frames(10)
    forged = RtpPacket(96, 30000, 0, 1, True, PACK_START + b"forged")
    assert run([*good[:3], forged, *good[3:20], forged, *good[20:]], assembler) == [chunk(i) for i in range(10)]
    assert assembler.drops["seq_jump"] == 2
    restarted = frames(2, first_seq=40000)
    assert run(restarted, assembler) == [chunk(1)]  # the first packet is the probe, then the sender restarted
    assert assembler.restarts == 1


def test_oversized_chunks_are_dropped() -> None:
    assembler = FrameAssembler(max_frame_bytes=10)
    big = [RtpPacket(96, i, 0, 1, i == 3, PACK_START + bytes(8)) for i in range(4)]
    assert run([*big, *frames(2, first_seq=4)], assembler) == [chunk(0), chunk(1)]
    assert assembler.drops["oversize_frame"] == 1


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.booleans(),
                          st.binary(max_size=20)), max_size=60))
def test_any_packet_sequence_is_taken_without_error(raw: list[tuple[int, int, bool, bytes]]) -> None:
    assembler = FrameAssembler(reorder_packets=8)
    out = run([RtpPacket(96, s, t, 1, m, p) for s, t, m, p in raw], assembler)
    assert sum(len(c) for c in out) <= sum(len(p) for *_, p in raw)
    assert len(assembler.pending_sequences()) == 0


AUD, SPS, PPS, IDR, P_SLICE = b"\x09\xf0", b"\x67\x42\xc0\x1f", b"\x68\xce\x3c\x80", b"\x65\x88\x84", b"\x41\x9a\x02"


def annexb(*nals: bytes) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


def test_access_units_split_however_the_bytes_arrive() -> None:
    stream = annexb(AUD, SPS, PPS, IDR) + annexb(AUD, P_SLICE) + annexb(P_SLICE) + annexb(SPS, IDR)
    for step in (1, 2, 3, 5, 7, 1000):
        splitter = AccessUnitSplitter()
        units = []
        for i in range(0, len(stream), step):
            units += splitter.push(stream[i : i + step], None)
        units += splitter.flush()
        assert [u.data for u in units] == [annexb(AUD, SPS, PPS, IDR), annexb(AUD, P_SLICE), annexb(P_SLICE),
                                           annexb(SPS, IDR)]
        assert [u.keyframe for u in units] == [True, False, False, True]


def test_pts_is_that_of_the_pes_the_unit_began_in() -> None:
    splitter = AccessUnitSplitter()
    first, second = annexb(SPS, IDR), annexb(P_SLICE)
    units = splitter.push(first + second[:3], 900)  # the PES holding the start of the next unit has no pts
    units += splitter.push(second[3:], None)
    units += splitter.push(annexb(P_SLICE), 8100)
    units += splitter.flush()
    assert [u.pts for u in units] == [900, 900, 8100]


def test_starts_access_unit() -> None:
    assert not starts_access_unit(P_SLICE, au_has_picture=False)
    assert starts_access_unit(AUD, au_has_picture=True)
    assert starts_access_unit(P_SLICE, au_has_picture=True)
    assert not starts_access_unit(b"\x41\x1a", au_has_picture=True)  # first_mb_in_slice != 0: same picture


@given(st.lists(st.binary(max_size=64), max_size=30))
def test_splitter_garbage_never_raises_and_stays_bounded(pieces: list[bytes]) -> None:
    splitter = AccessUnitSplitter(max_bytes=256)
    for piece in pieces:
        for unit in splitter.push(piece, 1):
            assert len(unit.data) <= 256 + 64
    splitter.flush()


def test_pipe_bounds_resyncs_and_unblocks() -> None:
    drained = []
    pipe = ChunkPipe(100, on_drain=lambda: drained.append(1))
    assert not pipe.feed(b"no pack header here")
    assert pipe.feed(b"junk" + PACK_START + b"\x00\x00\x01\xbb" + bytes(10))
    assert pipe.read(4) == PACK_START
    assert not pipe.feed(bytes(200)) and pipe.last_refusal == "demux_backlog"
    assert pipe.read(100) == b"\x00\x00\x01\xbb" + bytes(10)
    reader = ThreadPoolExecutor(1)
    blocked = reader.submit(pipe.read, 10)  # empty: tells the drain, then waits
    time.sleep(0.1)
    assert drained == [1] and not blocked.done()
    pipe.close()
    assert blocked.result(timeout=2) == b""
    reader.shutdown()


def test_a_closed_pipe_gives_what_is_queued_then_the_end() -> None:
    pipe = ChunkPipe(100)
    assert pipe.feed(PACK_START + b"\x00\x00\x01\xbc" + b"tail")
    pipe.close()
    assert not pipe.feed(PACK_START + b"\x00\x00\x01\xbb") and pipe.last_refusal == "closed"
    assert pipe.read(100) == PACK_START + b"\x00\x00\x01\xbc" + b"tail"
    assert pipe.read(100) == b""
