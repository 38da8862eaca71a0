"""Hostile input: any bytes into the deframer and the decoders give packets, messages or a Jt808Error with a known
reason, never another exception; and a good frame after the garbage is still decoded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from jt808.codec import decode_message, encode_message
from jt808.errors import REASONS, Jt808Error
from jt808.frame import Deframer, decode_frame, encode_frame
from jt808.header import Header, build_packet, parse_packet
from jt808.location import Location, to_fix
from jt808.messages import Heartbeat
from jt808.subpackage import Reassembler

GOOD = encode_message(Heartbeat(), phone="13912344323", serial=1)
MSG_IDS = st.sampled_from([0x0001, 0x8001, 0x0002, 0x0100, 0x8100, 0x0102, 0x0200, 0x0704, 0x8300, 0x0900])


def _receive(stream: bytes, reassembler: Reassembler) -> list[str]:
    """What a gateway would do with the stream: deframe, reassemble, decode, make fixes. Returns the reasons."""
    reasons = []
    for item in Deframer(max_frame=2500).feed(stream):
        try:
            if isinstance(item, Jt808Error):
                raise item
            whole, _ = reassembler.push(parse_packet(item), 0.0)
            if whole is None:
                continue
            message = decode_message(whole)
            if isinstance(message.body, Location):
                to_fix(message.body)
        except Jt808Error as exc:
            reasons.append(exc.reason)
    return reasons


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_garbage_stream(data: bytes) -> None:
    reassembler = Reassembler()
    assert set(_receive(data, reassembler)) <= REASONS
    # Whatever the garbage, a flag and a good frame after it are read.
    assert Deframer().feed(data + b"\x7e" + GOOD)[-1] == decode_frame(GOOD[1:-1])


@settings(max_examples=500)
@given(MSG_IDS, st.integers(0, 0xFFFF), st.binary(max_size=300), st.booleans())
def test_any_body_under_a_good_header(msg_id: int, serial: int, body: bytes, is_2019: bool) -> None:
    """Well-framed, well-checked packets whose bodies are garbage: the decoders' own refusals only."""
    packet = build_packet(Header(msg_id, "13912344323", serial, int(is_2019)), body)
    frame = encode_frame(packet)
    reasons = _receive(frame + GOOD, Reassembler())
    assert set(reasons) <= REASONS and len(reasons) <= 1


@settings(max_examples=300)
@given(st.binary(min_size=12, max_size=120))
def test_any_packet_with_a_good_check(packet: bytes) -> None:
    """Random headers (any properties, versions, sub-package fields) behind a correct check code."""
    assert set(_receive(encode_frame(packet), Reassembler(max_parts=8))) <= REASONS
