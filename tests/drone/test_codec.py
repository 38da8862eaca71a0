"""Framing, encode/decode and signature checks on good and broken binary frames."""

from __future__ import annotations

import pytest

from drone.codec import DecodeError, Framer, decode, encode, frame_system_id, is_signed, mavlink, new_codec
from drone.errors import DroneError
from drone.signing import SigningKey, signature_valid, signing_timestamp
from drone.transport import parse_url

KEY = SigningKey(bytes(range(32)), link_id=3)


def _heartbeat(codec: object) -> bytes:
    return encode(codec, mavlink.MAVLink_heartbeat_message(2, 3, 1, 4, 4, 3))


def _signed_codec(system_id: int, key: SigningKey) -> object:
    codec = new_codec(system_id, 1)
    codec.signing.secret_key = key.secret
    codec.signing.link_id = key.link_id
    codec.signing.sign_outgoing = True
    codec.signing.timestamp = signing_timestamp()
    codec.signing.allow_unsigned_callback = lambda _mav, _id: False
    return codec


def test_round_trip_is_mavlink2_and_advances_seq() -> None:
    codec = new_codec(42, 1)
    first, second = _heartbeat(codec), _heartbeat(codec)
    assert first[0] == 0xFD and frame_system_id(first) == 42 and not is_signed(first)
    assert (first[4], second[4]) == (0, 1)  # seq
    msg = decode(new_codec(250, 190), first)
    assert msg.get_type() == "HEARTBEAT" and msg.custom_mode == 4 and msg.get_srcSystem() == 42


def test_framer_splits_streams_and_resyncs_after_garbage_and_bad_crc() -> None:
    codec = new_codec(5, 1)
    good1, good2 = _heartbeat(codec), _heartbeat(codec)
    corrupt = bytearray(_heartbeat(codec))
    corrupt[12] ^= 0xFF  # payload byte: the CRC no longer matches
    stream = b"\x00\x13garbage" + good1 + bytes(corrupt) + good2
    framer = Framer()
    # Fed in awkward chunks, as TCP would deliver it.
    frames = [f for i in range(0, len(stream), 7) for f in framer.feed(stream[i : i + 7])]
    assert frames == [good1, good2]
    assert framer.bad_crc == 1
    assert framer.skipped_bytes >= len(b"\x00\x13garbage")


def test_framer_keeps_an_incomplete_frame_for_later() -> None:
    frame = _heartbeat(new_codec(5, 1))
    framer = Framer()
    assert framer.feed(frame[:5]) == []
    assert framer.feed(frame[5:]) == [frame]


def test_signed_frame_verifies_and_decodes_with_the_key_only() -> None:
    frame = _heartbeat(_signed_codec(9, KEY))
    assert is_signed(frame) and len(frame) == 10 + frame[1] + 2 + 13
    assert frame[-13] == KEY.link_id
    assert signature_valid(KEY.secret, frame)
    assert not signature_valid(bytes(32), frame)
    msg = decode(_signed_codec(250, KEY), frame)
    assert msg.get_signed() and msg.get_link_id() == KEY.link_id


def test_wrongly_signed_and_unsigned_frames_are_refused_by_a_keyed_codec() -> None:
    forged = bytearray(_heartbeat(_signed_codec(9, KEY)))
    forged[-1] ^= 0x01
    assert not signature_valid(KEY.secret, bytes(forged))
    receiver = _signed_codec(250, KEY)
    with pytest.raises(DecodeError):
        decode(receiver, bytes(forged))
    with pytest.raises(DecodeError):
        decode(receiver, _heartbeat(new_codec(9, 1)))
    assert not signature_valid(KEY.secret, _heartbeat(new_codec(9, 1)))


def test_replayed_signed_frame_is_refused() -> None:
    frame = _heartbeat(_signed_codec(9, KEY))
    receiver = _signed_codec(250, KEY)
    decode(receiver, frame)
    with pytest.raises(DecodeError):
        decode(receiver, frame)  # same timestamp again


@pytest.mark.parametrize(("url", "expected"), [
    ("udpin:0.0.0.0:14550", ("udpin", "0.0.0.0", 14550)),
    ("udpin:127.0.0.1:0", ("udpin", "127.0.0.1", 0)),
    ("udpout:10.0.0.2:14555", ("udpout", "10.0.0.2", 14555)),
    ("tcp:localhost:5760", ("tcp", "localhost", 5760)),
    ("tcpin:[::1]:0", ("tcpin", "::1", 0)),
])
def test_parse_url(url: str, expected: tuple[str, str, int]) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize("url", ["udp:1.2.3.4:5", "udpin:1.2.3.4", "tcp:host:0", "udpout:h:70000", "udpin::5"])
def test_parse_url_refuses(url: str) -> None:
    with pytest.raises(DroneError):
        parse_url(url)
