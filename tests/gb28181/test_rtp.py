"""RTP packets, packetizing and RFC 4571 framing: good packets, broken ones, and garbage."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gb28181.rtp import RtpError, RtpPacket, TcpDeframer, build_rtp, frame_tcp, packetize, parse_rtp

PACKETS = st.builds(RtpPacket, payload_type=st.integers(0, 127), sequence=st.integers(0, 0xFFFF),
                    timestamp=st.integers(0, 2**32 - 1), ssrc=st.integers(0, 2**32 - 1), marker=st.booleans(),
                    payload=st.binary(max_size=300))


@given(PACKETS)
def test_round_trip(packet: RtpPacket) -> None:
    assert parse_rtp(build_rtp(packet)) == packet


def test_header_fields_on_the_wire() -> None:
    wire = build_rtp(RtpPacket(96, 65535, 3600, 100000001, True, b"ps"))
    assert wire[:2] == b"\x80\xe0"
    assert struct.unpack("!HII", wire[2:12]) == (65535, 3600, 100000001)


def test_csrc_extension_and_padding_are_skipped() -> None:
    header = bytes([0x80 | 0x20 | 0x10 | 2, 96]) + struct.pack("!HII", 7, 90, 5)
    csrcs = b"\x00\x00\x00\x01\x00\x00\x00\x02"
    extension = b"\xbe\xde\x00\x01" + b"\x10\xaa\x00\x00"
    packet = parse_rtp(header + csrcs + extension + b"payload" + b"\x00\x00\x03")
    assert (packet.sequence, packet.timestamp, packet.ssrc, packet.payload) == (7, 90, 5, b"payload")


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x80\x60\x00", "short"),
    (b"\x40\x60" + bytes(10), "version"),
    (b"\x8f\x60" + bytes(10) + bytes(8), "csrc"),
    (b"\x90\x60" + bytes(10) + b"\x00\x00", "extension"),
    (b"\x90\x60" + bytes(10) + b"\x00\x00\x00\x09", "extension"),
    (b"\xa0\x60" + bytes(10) + b"ab\x00", "padding"),
    (b"\xa0\x60" + bytes(10) + b"ab\x09", "padding"),
])
def test_broken_packets_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(RtpError) as caught:
        parse_rtp(data)
    assert caught.value.reason == reason


@given(st.binary(max_size=200))
def test_garbage_raises_only_rtp_error(data: bytes) -> None:
    try:
        packet = parse_rtp(data)
    except RtpError as exc:
        assert exc.reason in {"short", "version", "csrc", "extension", "padding"}
    else:
        assert len(packet.payload) <= len(data) - 12


@settings(max_examples=60)
@given(st.binary(min_size=0, max_size=9000), st.integers(0, 0xFFFF), st.integers(100, 1500))
def test_packetize_splits_wraps_and_marks_the_last(payload: bytes, start: int, mtu: int) -> None:
    wires = packetize(payload, ssrc=42, sequence=start, timestamp=3600, mtu=mtu)
    packets = [parse_rtp(w) for w in wires]
    assert all(len(w) <= mtu for w in wires)
    assert b"".join(p.payload for p in packets) == payload
    assert [p.sequence for p in packets] == [(start + i) % 65536 for i in range(len(packets))]
    assert [p.marker for p in packets] == [False] * (len(packets) - 1) + [True]
    assert {(p.ssrc, p.timestamp, p.payload_type) for p in packets} == {(42, 3600, 96)}


def test_packetize_refuses_an_mtu_without_room() -> None:
    with pytest.raises(ValueError, match="mtu"):
        packetize(b"x", ssrc=1, sequence=0, timestamp=0, mtu=12)


@settings(max_examples=60)
@given(st.lists(st.binary(min_size=1, max_size=3000), max_size=8), st.integers(1, 700))
def test_tcp_framing_survives_any_split(packets: list[bytes], step: int) -> None:
    stream = b"".join(frame_tcp(p) for p in packets)
    deframer = TcpDeframer()
    got = []
    for i in range(0, len(stream), step):
        got += deframer.feed(stream[i : i + step])
    assert got == packets
    assert deframer.pending == 0


def test_tcp_zero_and_oversized_lengths_are_refused() -> None:
    with pytest.raises(RtpError) as zero:
        TcpDeframer().feed(b"\x00\x00rest")
    assert zero.value.reason == "tcp_zero_length"
    deframer = TcpDeframer(max_packet=2048)
    with pytest.raises(RtpError) as big:
        deframer.feed(b"\x10\x00")
    assert big.value.reason == "oversize"
    with pytest.raises(ValueError):
        frame_tcp(b"")


@given(st.binary(max_size=500))
def test_tcp_garbage_gives_packets_or_rtp_error(data: bytes) -> None:
    deframer = TcpDeframer(max_packet=1024)
    try:
        packets = deframer.feed(data)
    except RtpError as exc:
        assert exc.reason in {"tcp_zero_length", "oversize"}
    else:
        assert sum(len(p) + 2 for p in packets) + deframer.pending == len(data)
