"""Headers (2013 and 2019) and bodies: hand-built vectors from the standard's field tables, round trips of every
message in both versions, refusals with a reason, and a location as the hub's fix."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jt808.codec import Message, decode_message, encode_message
from jt808.errors import Jt808Error
from jt808.frame import checksum, decode_frame
from jt808.header import Header, build_packet, parse_packet
from jt808.location import CHINA_TZ, BatchLocation, Location, to_fix
from jt808.messages import (
    Authentication,
    Body,
    Heartbeat,
    PlatformResponse,
    Registration,
    RegistrationResponse,
    TerminalResponse,
    TextMessage,
    Unsupported,
    message_id,
)

T0 = int(datetime(2026, 12, 6, 10, 30, 15, tzinfo=CHINA_TZ).timestamp()) * 1000
LOCATION = Location(alarm=0, status=0x3, lat_e6=31_230_416, lon_e6=121_473_701, altitude_m=12, speed_dkmh=456,
                    direction=271, ts_ms=T0, mileage=123_456, fuel=789, recorder_speed=450, vehicle_signal=0x1,
                    signal=25, satellites=11, extra=((0xE1, b"\x7e\x7d"),))


def _read(frame: bytes) -> Message:
    return decode_message(decode_frame(frame[1:-1]))


def test_2013_header_by_hand() -> None:
    # JT/T 808-2013 table 2: id 0x0002, properties 0 (empty body), BCD[6] 013912344323, serial 0x0102.
    packet = bytes.fromhex("0002" "0000" "013912344323" "0102")
    parsed = parse_packet(packet)
    assert parsed.header == Header(0x0002, "13912344323", 0x0102)
    assert not parsed.header.is_2019 and not parsed.header.subpackaged
    assert build_packet(parsed.header, b"") == packet


def test_2019_header_by_hand() -> None:
    # JT/T 808-2019 table 2: properties 0x4000 | length 5, protocol version 1, BCD[10] phone, serial.
    packet = bytes.fromhex("8001" "4005" "01" "00000000013912344323" "0003" "0007" "0200" "00")
    parsed = parse_packet(packet)
    assert parsed.header == Header(0x8001, "13912344323", 3, version=1)
    assert decode_message(packet).body == PlatformResponse(7, 0x0200, 0)
    assert build_packet(parsed.header, parsed.body) == packet


def test_subpackage_header_fields() -> None:
    header = Header(0x0704, "13912344323", 9, packet_count=3, packet_index=2)
    packet = build_packet(header, b"abc")
    assert packet[2:4] == bytes.fromhex("2003")  # bit 13 set, length 3
    assert packet[-7:-3] == bytes.fromhex("00030002")
    assert parse_packet(packet).header == header


def test_registration_2013_by_hand() -> None:
    # Table 8 (2013): province WORD (41, Henan, of GB/T 2260), city WORD, manufacturer BYTE[5], model BYTE[20]
    # and terminal id BYTE[7] NUL-padded, plate colour BYTE, plate STRING (GBK).
    body = (bytes.fromhex("0029" "0101") + b"FH001" + b"PATROL-1".ljust(20, b"\x00") + b"T000042"
            + b"\x02" + "豫A12345".encode("gbk"))
    packet = bytes.fromhex("0100") + len(body).to_bytes(2, "big") + bytes.fromhex("013800000042" "0001") + body
    message = decode_message(packet)
    assert message.body == Registration(0x29, 0x0101, "FH001", "PATROL-1", "T000042", 2, "豫A12345")
    assert build_packet(message.header, body) == packet
    assert encode_message(message.body, phone="13800000042", serial=1) == (
        b"\x7e" + packet + bytes([checksum(packet)]) + b"\x7e")


def test_registration_2019_field_sizes() -> None:
    body = Registration(0x29, 0x0101, "FIELDHUB-MF", "PATROL-CAR-TERMINAL-2019", "ID-" + "7" * 27, 1, "LFV2A2150A")
    wire = encode_message(body, phone="13800000042", serial=1, version=1)
    packet = decode_frame(wire[1:-1])
    assert len(packet) - 17 == 2 + 2 + 11 + 30 + 30 + 1 + 10
    assert decode_message(packet).body == body
    with pytest.raises(ValueError):
        encode_message(body, phone="13800000042", serial=1)  # 2013 fields are too small for these values


def test_authentication_2019_by_hand() -> None:
    # Table 12 (2019): code length BYTE, code, IMEI BYTE[15], software version BYTE[20].
    body = b"\x06" + b"ab12cd" + b"861234567890123" + b"V1.2.3".ljust(20, b"\x00")
    header = Header(0x0102, "13800000042", 2, version=1)
    assert decode_message(build_packet(header, body)).body == Authentication("ab12cd", "861234567890123", "V1.2.3")


BODIES: list[Body] = [
    TerminalResponse(65535, 0x8300, 0), PlatformResponse(12, 0x0200, 4), Heartbeat(),
    Registration(0, 0, "", "", "", 0, ""), Registration(44, 300, "ABCDE", "M" * 20, "1234567", 1, "京A00001"),
    RegistrationResponse(5, 0, "auth-code-1"), RegistrationResponse(5, 3, ""), Authentication("code"),
    LOCATION, Location(1, 0, 0, 0, 0, 0, 0, None),
    BatchLocation(1, (LOCATION, Location(1, 2, 3, 4, 5, 6, 7, T0 + 1000))), BatchLocation(0, ()),
    TextMessage(0x0C, "请前往 人民路 12号 处置警情 #1234"), Unsupported(0x0900, b"\x01\x7e\x7d"),
]


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("body", BODIES, ids=lambda body: type(body).__name__)
def test_round_trip(body: Body, version: int) -> None:
    wire = encode_message(body, phone="13912344323", serial=300, version=version)
    assert _read(wire) == Message(Header(message_id(body), "13912344323", 300, version), body)


def test_2019_authentication_round_trip() -> None:
    body = Authentication("code", "861234567890123", "SW 2.0")
    assert _read(encode_message(body, phone="1", serial=0, version=1)).body == body


def test_text_type_is_written_in_2019_only() -> None:
    body = TextMessage(0x04, "hi", 2)
    assert decode_frame(encode_message(body, phone="1", serial=0)[1:-1])[12:] == b"\x04hi"
    assert decode_frame(encode_message(body, phone="1", serial=0, version=1)[1:-1])[17:] == b"\x04\x02hi"


@pytest.mark.parametrize(("packet", "reason"), [
    ("0002 0001 013912344323 0001", "body_length"),
    ("0002 0000 013912344323 00", "truncated"),
    ("0002 0000 0139123443a3 0001", "bad_bcd"),
    ("0002 4000 00 00000000013912344323 0001", "unknown_version"),
    ("0002 8000 013912344323 0001", "unknown_version"),
    ("0002 0800 013912344323 0001", "bad_encryption"),
    ("0002 2000 013912344323 0001 0002 0003", "bad_subpackage"),
    ("0002 2000 013912344323 0001 0000 0000", "bad_subpackage"),
    ("0002 0400 013912344323 0001", "encrypted"),
    ("0002 0001 013912344323 0001 00", "body_length"),
    ("0001 0004 013912344323 0001 0001 0002", "truncated"),
    ("0200 0004 013912344323 0001 00000000", "truncated"),
    ("0200 001e 013912344323 0001" + " 00" * 16 + "0000 0000 0000 261306123000 0105", "truncated"),
    ("0200 001c 013912344323 0001" + " 00" * 16 + "0000 0000 0000 2613061230f0", "bad_bcd"),
    ("0704 0003 013912344323 0001 0002 00", "bad_count"),
    ("8300 0003 013912344323 0001 01 0041", "bad_text"),
    ("8300 0003 013912344323 0001 01 ff41", "bad_text"),
])
def test_refused_with_a_reason(packet: str, reason: str) -> None:
    with pytest.raises(Jt808Error) as caught:
        decode_message(bytes.fromhex(packet.replace(" ", "")))
    assert caught.value.reason == reason


def test_bad_batch_item_costs_only_itself() -> None:
    good = encode_message(BatchLocation(0, (LOCATION,)), phone="1", serial=0)
    body = decode_frame(good[1:-1])[12:]
    item = body[3:]
    broken = (2).to_bytes(2, "big") + b"\x00" + (3).to_bytes(2, "big") + b"\x00\x00\x00" + item
    batch = decode_message(build_packet(Header(0x0704, "1", 0), broken)).body
    assert isinstance(batch, BatchLocation)
    assert batch.locations == (LOCATION,) and batch.rejected == ((0, "truncated"),)


def test_location_without_a_calendar_time_keeps_its_alarm() -> None:
    body = Location(alarm=1, status=2, lat_e6=1, lon_e6=1, altitude_m=0, speed_dkmh=0, direction=0, ts_ms=None)
    location = _read(encode_message(body, phone="1", serial=0)).body
    assert isinstance(location, Location) and location.emergency and location.ts_ms is None
    with pytest.raises(Jt808Error, match="bad_time"):
        to_fix(location)


def test_to_fix() -> None:
    fix = to_fix(LOCATION)
    assert fix.ts == T0 and (fix.lat, fix.lon) == (31.230416, 121.473701)
    assert fix.speed == pytest.approx(45.6 / 3.6) and fix.heading == 271.0 and fix.alt == 12.0 and fix.sats == 11
    assert fix.attrs == {"alarm": 0, "status": 3, "mileage": 123_456, "fuel": 789, "signal": 25}
    south_west = to_fix(Location(0, 0x2 | 0x4 | 0x8, 33_868_820, 151_209_290, 0, 0, 0, T0))
    assert (south_west.lat, south_west.lon) == (-33.86882, -151.20929)
    assert not LOCATION.emergency and Location(0x1, 0, 0, 0, 0, 0, 0, T0).emergency


@pytest.mark.parametrize("location", [
    Location(0, 0x1, 31_000_000, 121_000_000, 0, 0, 0, T0),  # ACC on, not positioned
    Location(0, 0x2, 91_000_000, 121_000_000, 0, 0, 0, T0),
    Location(0, 0x2, 31_000_000, 181_000_000, 0, 0, 0, T0),
])
def test_to_fix_refuses_no_position(location: Location) -> None:
    with pytest.raises(Jt808Error, match="no_fix"):
        to_fix(location)


def test_utc_plus_8() -> None:
    body = bytes(16) + bytes(6) + bytes.fromhex("260101000000")  # 2026-01-01 00:00:00 in Beijing
    location = decode_message(build_packet(Header(0x0200, "1", 0), body)).body
    assert isinstance(location, Location)
    assert location.ts_ms == int(datetime(2025, 12, 31, 16, 0, 0, tzinfo=CHINA_TZ.utc).timestamp()) * 1000


LOCATIONS = st.builds(
    Location, alarm=st.integers(0, 2**32 - 1), status=st.integers(0, 2**32 - 1), lat_e6=st.integers(0, 2**32 - 1),
    lon_e6=st.integers(0, 2**32 - 1), altitude_m=st.integers(0, 0xFFFF), speed_dkmh=st.integers(0, 0xFFFF),
    direction=st.integers(0, 0xFFFF),
    ts_ms=st.one_of(st.none(), st.integers(946_656_000, 4_102_415_999).map(lambda s: s * 1000)),
    mileage=st.one_of(st.none(), st.integers(0, 2**32 - 1)), fuel=st.one_of(st.none(), st.integers(0, 0xFFFF)),
    signal=st.one_of(st.none(), st.integers(0, 255)), satellites=st.one_of(st.none(), st.integers(0, 255)),
    extra=st.lists(st.tuples(st.integers(0x80, 0xFF), st.binary(max_size=20)), max_size=3).map(tuple))


@given(LOCATIONS, st.booleans())
def test_location_round_trip(location: Location, is_2019: bool) -> None:
    wire = encode_message(location, phone="13912344323", serial=1, version=int(is_2019))
    assert _read(wire).body == location


# GBK-encodable text without NUL (GB18030 encodes every code point but lone surrogates; no byte of it is 0x00).
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=60)
ASCII = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", max_size=5)
WORD = st.integers(0, 0xFFFF)
BYTE = st.integers(0, 0xFF)
OTHER_BODIES = st.one_of(
    st.builds(TerminalResponse, WORD, WORD, BYTE), st.builds(PlatformResponse, WORD, WORD, BYTE),
    st.builds(RegistrationResponse, WORD, st.just(0), TEXT), st.builds(Authentication, TEXT),
    st.builds(TextMessage, BYTE, TEXT, st.sampled_from([1, 2])),
    st.builds(Registration, WORD, WORD, ASCII, ASCII, ASCII, BYTE, TEXT),
)


@given(OTHER_BODIES, st.booleans(), WORD)
def test_every_body_round_trips(body: Body, is_2019: bool, serial: int) -> None:
    if isinstance(body, TextMessage) and not is_2019:
        body = TextMessage(body.flags, body.text)  # the text type exists in 2019 only
    wire = encode_message(body, phone="13912344323", serial=serial, version=int(is_2019))
    assert _read(wire) == Message(Header(message_id(body), "13912344323", serial, int(is_2019)), body)
