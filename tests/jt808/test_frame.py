"""Framing: the escape rule, the XOR check, broken frames refused with a reason, and a TCP stream cut into packets
whatever the reads look like, a bad frame costing only itself."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jt808.codec import encode_message
from jt808.errors import REASONS, Jt808Error
from jt808.frame import MAX_PACKET, Deframer, checksum, decode_frame, encode_frame, escape, unescape
from jt808.messages import Heartbeat

# A 2013 heartbeat of terminal 013912344323, serial 7, built by hand from the header table: 0002 0000
# 013912344323 0007, check code = XOR of those 12 bytes.
HEARTBEAT = bytes.fromhex("00020000013912344323" + "0007")
HEARTBEAT_FRAME = b"\x7e" + HEARTBEAT + bytes([checksum(HEARTBEAT)]) + b"\x7e"


def test_escape_rule_of_the_standard() -> None:
    # The standard's own example (JT/T 808-2013 4.4.2): 30 7E 08 7D 55 is sent as 30 7D 02 08 7D 01 55.
    assert escape(bytes.fromhex("307e087d55")) == bytes.fromhex("307d02087d0155")
    assert unescape(bytes.fromhex("307d02087d0155")) == bytes.fromhex("307e087d55")
    assert escape(b"\x7d\x02") == b"\x7d\x01\x02"  # an escape-looking pair in the data is not confused


@given(st.binary(max_size=300))
def test_escape_round_trip_and_no_flag_inside(data: bytes) -> None:
    escaped = escape(data)
    assert 0x7E not in escaped
    assert unescape(escaped) == data


def test_xor_check() -> None:
    assert checksum(b"") == 0
    assert checksum(b"\x01\x02\x04") == 0x07
    assert checksum(b"\xff\xff") == 0
    assert encode_message(Heartbeat(), phone="13912344323", serial=7) == HEARTBEAT_FRAME


def test_check_code_is_escaped_too() -> None:
    packet = HEARTBEAT[:-1] + bytes([HEARTBEAT[-1] ^ checksum(HEARTBEAT) ^ 0x7E])  # makes the check code 0x7E
    assert checksum(packet) == 0x7E
    frame = encode_frame(packet)
    assert frame.endswith(b"\x7d\x02\x7e")
    assert decode_frame(frame[1:-1]) == packet


@pytest.mark.parametrize(("inner", "reason"), [
    (HEARTBEAT + bytes([checksum(HEARTBEAT) ^ 1]), "bad_check"),
    (HEARTBEAT + b"\x7d\x03", "bad_escape"),
    (HEARTBEAT + b"\x7d", "bad_escape"),
    (HEARTBEAT[:5], "truncated"),
    (b"", "truncated"),
    (bytes(MAX_PACKET + 2), "oversized"),
])
def test_broken_frames_are_refused_with_a_reason(inner: bytes, reason: str) -> None:
    with pytest.raises(Jt808Error) as caught:
        decode_frame(inner)
    assert caught.value.reason == reason


def test_deframer_across_reads_and_back_to_back() -> None:
    stream = HEARTBEAT_FRAME * 3
    deframer = Deframer()
    out = [item for byte in stream for item in deframer.feed(bytes([byte]))]
    assert out == [HEARTBEAT] * 3
    assert deframer.pending == 0


def test_shared_flag_between_frames() -> None:
    # Some terminals close one frame and open the next with a single 0x7E.
    assert Deframer().feed(HEARTBEAT_FRAME + HEARTBEAT_FRAME[1:]) == [HEARTBEAT, HEARTBEAT]


def test_garbage_then_a_good_frame() -> None:
    out = Deframer().feed(b"GET / HTTP/1.1\r\n" + HEARTBEAT_FRAME)
    assert [x.reason if isinstance(x, Jt808Error) else x for x in out] == ["garbage", HEARTBEAT]


def test_bad_frame_costs_only_itself() -> None:
    bad = HEARTBEAT_FRAME[:-2] + bytes([HEARTBEAT_FRAME[-2] ^ 0x55]) + b"\x7e"
    out = Deframer().feed(bad + HEARTBEAT_FRAME)
    assert [x.reason if isinstance(x, Jt808Error) else x for x in out] == ["bad_check", HEARTBEAT]


def test_oversized_frame_is_dropped_and_reading_resumes_at_the_next_flag() -> None:
    deframer = Deframer(max_frame=64)
    out = deframer.feed(b"\x7e" + b"\x01" * 50)
    assert out == []
    out = deframer.feed(b"\x01" * 50)
    assert [x.reason for x in out if isinstance(x, Jt808Error)] == ["oversized"]
    assert deframer.pending == 0  # nothing of the oversized frame is held
    assert deframer.feed(b"\x01" * 1000) == []
    assert deframer.pending == 0
    assert deframer.feed(b"\x7e" + HEARTBEAT_FRAME) == [HEARTBEAT]


STREAMS = st.lists(st.one_of(st.binary(max_size=40), st.just(HEARTBEAT_FRAME), st.just(b"\x7e"),
                             st.just(b"\x7d"), st.just(b"\x7d\x02")), max_size=12)


@given(STREAMS, st.integers(1, 64))
def test_any_bytes_give_packets_or_reasons_and_the_next_good_frame_is_decoded(chunks: list[bytes],
                                                                               step: int) -> None:
    deframer = Deframer(max_frame=300)
    stream = b"".join(chunks)
    out: list[bytes | Jt808Error] = []
    for i in range(0, len(stream), step):
        out += deframer.feed(stream[i : i + step])
    for item in out:
        assert isinstance(item, bytes | Jt808Error)
        if isinstance(item, Jt808Error):
            assert item.reason in REASONS
    assert deframer.pending <= 300
    # Whatever came before, a flag and a good frame are read: the receiver resynchronises at 0x7E.
    assert deframer.feed(b"\x7e" + HEARTBEAT_FRAME)[-1] == HEARTBEAT
