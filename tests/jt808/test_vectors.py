"""Published example frames (hex test vectors as facts): each decodes to the values its source states.

Sources, as found with the project's search tool:
- HUABAO: huabaotelematics.com, "JT808 common message parsing of GPS electronic lock" (blog, 2013 headers),
  https://huabaotelematics.com/blog/jt808-common-message-parsing-of-gps-electronic-lock-huabaotelematics-com_b9
- XTREAM: github.com/makeclan/xtream-codec (a Java JT/T 808 codec), its debug UI's sample messages with their
  decoded values, debug/jt/jt-808-server-spring-boot-starter-debug-ui/src/utils/codec-utils.ts (2013 and 2019).
- ECOM: e-com-net.com/article/1727706242857644032.htm, "JT808终端注册应答详细解析" (a 2013 0x8100).
No published 0x0100 frame with a correct check code was found (a Google-Sheets example has 46 body bytes under a
length of 45 and a check code that does not match): the registration vectors in test_messages.py are built by
hand from the standard's field table (JT/T 808-2013 table 8, -2019 table 9) and say so.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from jt808.codec import Message, decode_message, encode_message
from jt808.errors import Jt808Error
from jt808.frame import Deframer, decode_frame
from jt808.location import CHINA_TZ, BatchLocation, Location, to_fix
from jt808.messages import Authentication, Body, PlatformResponse, RegistrationResponse, TextMessage


def _wire(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def _decode(text: str) -> Message:
    wire = _wire(text)
    assert wire[0] == wire[-1] == 0x7E
    return decode_message(decode_frame(wire[1:-1]))


def _ms(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    """Epoch ms of a terminal's time, which is Beijing time."""
    return int(datetime(year, month, day, hour, minute, second, tzinfo=CHINA_TZ).timestamp()) * 1000


HUABAO_0200 = ("7E 02 00 00 52 00 20 02 60 43 23 00 A4 00 02 00 00 00 0C 00 02 01 58 B9 1B 06 CB 70 61 00 46 00"
               "00 00 59 21 09 22 16 37 58 01 04 00 00 00 01 03 02 00 00 25 04 00 00 00 01 30 01 11 31 01 10 E3"
               "01 00 D5 1B 02 20 02 60 43 23 27 95 93 78 61 60 00 12 20 00 00 12 34 27 95 93 78 61 58 00 12 86 7E")
HUABAO_0102 = "7E 01 02 00 0D 00 20 02 60 43 25 00 01 38 33 30 30 32 30 30 32 36 30 34 33 32 13 7E"
HUABAO_8001 = "7E 80 01 00 05 00 20 02 60 43 23 00 09 00 EE 02 00 00 43 7E"
XTREAM_0200_2019 = ("7e02004026010000000001391234432900000000006f0000001601dc9a0707456246007b004200032501292233440202"
                    "006401040000000c417e")
XTREAM_0704_2019 = ("7e0704403f01000000000139123443290000000200001c000000010000000101d907f2073d336c029a0021005924102921"
                    "3903001c000000010000000101d907f3073d336d03090043005a241029213903f87e")
XTREAM_8001_2019 = "7e8001400501000000000139123443290000006f020000dc7e"
XTREAM_8100_2019 = "7e8100400d01000000000139123443290000006f006f6b2e2e6f6b2e2e6f6bd27e"
XTREAM_8300_2013 = "7e8300001901391234432300000148656c6c6f576f726c6420babad7d62047424b20b1e0c2ebf27e"
XTREAM_8300_2019 = "7e8300401a01000000000139123443290000010148656c6c6f576f726c6420babad7d62047424b20b1e0c2ebbb7e"
ECOM_8100_2013 = "7E 81 00 00 0C 04 04 57 10 31 66 00 30 00 30 00 73 68 75 61 6E 67 77 65 69 E0 7E"


def test_huabao_location_with_the_common_items() -> None:
    message = _decode(HUABAO_0200)
    assert message.header.msg_id == 0x0200 and message.header.phone == "2002604323"
    assert message.header.serial == 0xA4 and message.header.version == 0
    loc = message.body
    assert isinstance(loc, Location)
    # The source's table: alarm 00020000, state 000C0002, lat 0158B91B, lon 06CB7061, altitude 0x46, speed 0,
    # direction 0x59, time 21-09-22 16:37:58, mileage 1, recorder speed 0, vehicle signal 1, signal 0x11, GNSS 0x10.
    assert (loc.alarm, loc.status) == (0x00020000, 0x000C0002)
    assert (loc.lat, loc.lon) == (22.591771, 113.995873)
    assert (loc.altitude_m, loc.speed_dkmh, loc.direction) == (70, 0, 89)
    assert loc.ts_ms == _ms(2021, 9, 22, 16, 37, 58)
    assert (loc.mileage, loc.recorder_speed, loc.vehicle_signal, loc.signal, loc.satellites) == (1, 0, 1, 0x11, 0x10)
    assert loc.fuel is None and not loc.emergency
    # Items the codec does not know (0xE3 reserved, 0xD5 the lock vendor's data, 0x1B bytes) are kept as sent.
    assert [item_id for item_id, _ in loc.extra] == [0xE3, 0xD5]
    assert loc.extra[0][1] == b"\x00" and len(loc.extra[1][1]) == 0x1B
    fix = to_fix(loc)
    assert (fix.lat, fix.lon, fix.speed, fix.heading, fix.sats, fix.alt) == (22.591771, 113.995873, 0.0, 89.0, 16,
                                                                             70.0)


def test_huabao_authentication_2013() -> None:
    message = _decode(HUABAO_0102)
    assert message.header.phone == "2002604325" and message.header.serial == 1
    assert message.body == Authentication("8300200260432")


def test_huabao_platform_response_and_its_encoding() -> None:
    message = _decode(HUABAO_8001)
    assert message.header.serial == 9
    assert message.body == PlatformResponse(reply_serial=0xEE, reply_id=0x0200, result=0)
    # The platform's encoder writes the same bytes (the phone is kept without leading zeros and padded back).
    assert encode_message(message.body, phone="2002604323", serial=9) == _wire(HUABAO_8001)


def test_xtream_location_2019() -> None:
    message = _decode(XTREAM_0200_2019)
    assert message.header.version == 1 and message.header.phone == "13912344329"
    loc = message.body
    assert isinstance(loc, Location)
    assert (loc.alarm, loc.status, loc.lat_e6, loc.lon_e6) == (111, 22, 31234567, 121987654)
    assert (loc.altitude_m, loc.speed_dkmh, loc.direction) == (123, 66, 3)
    assert loc.ts_ms == _ms(2025, 1, 29, 22, 33, 44)
    assert (loc.mileage, loc.fuel) == (12, 100)
    assert loc.emergency  # alarm 111 has bit 0 set
    # The terminal sent item 0x02 before 0x01; the encoder writes items in id order, so compare values.
    again = encode_message(loc, phone="13912344329", serial=0, version=1)
    assert decode_message(decode_frame(again[1:-1])) == message


def test_xtream_batch_2019() -> None:
    batch = _decode(XTREAM_0704_2019).body
    assert isinstance(batch, BatchLocation) and batch.kind == 0 and batch.rejected == ()
    assert [(x.lat_e6, x.lon_e6, x.altitude_m, x.speed_dkmh, x.direction) for x in batch.locations] == [
        (31000562, 121451372, 666, 33, 89), (31000563, 121451373, 777, 67, 90)]
    assert {x.ts_ms for x in batch.locations} == {_ms(2024, 10, 29, 21, 39, 3)}
    assert encode_message(batch, phone="13912344329", serial=0, version=1) == _wire(XTREAM_0704_2019)


@pytest.mark.parametrize(("wire", "body", "version"), [
    (XTREAM_8001_2019, PlatformResponse(111, 0x0200, 0), 1),
    (XTREAM_8100_2019, RegistrationResponse(111, 0, "ok..ok..ok"), 1),
    (XTREAM_8300_2013, TextMessage(1, "HelloWorld 汉字 GBK 编码"), 0),
    (XTREAM_8300_2019, TextMessage(1, "HelloWorld 汉字 GBK 编码", 1), 1),
])
def test_platform_messages_encode_to_the_published_bytes(wire: str, body: Body, version: int) -> None:
    message = _decode(wire)
    assert message.body == body
    phone = "13912344323" if version == 0 else "13912344329"
    assert encode_message(message.body, phone=phone, serial=0, version=version) == _wire(wire)


def test_ecom_registration_response_2013() -> None:
    message = _decode(ECOM_8100_2013)
    assert message.header.phone == "40457103166" and message.header.serial == 0x30
    assert message.body == RegistrationResponse(0x30, 0, "shuangwei")


def test_every_vector_comes_out_of_one_stream() -> None:
    vectors = [HUABAO_0200, HUABAO_0102, HUABAO_8001, XTREAM_0200_2019, XTREAM_0704_2019, XTREAM_8001_2019,
               XTREAM_8100_2019, XTREAM_8300_2013, XTREAM_8300_2019, ECOM_8100_2013]
    stream = b"".join(_wire(v) for v in vectors)
    deframer = Deframer()
    out = [item for i in range(0, len(stream), 7) for item in deframer.feed(stream[i : i + 7])]
    assert not [x for x in out if isinstance(x, Jt808Error)]
    assert [decode_message(p).header.msg_id for p in out if isinstance(p, bytes)] == [
        0x0200, 0x0102, 0x8001, 0x0200, 0x0704, 0x8001, 0x8100, 0x8300, 0x8300, 0x8100]
