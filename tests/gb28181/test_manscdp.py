"""MANSCDP bodies as devices send them (GB/T 28181-2016 annex A field lists), in UTF-8 and GB18030, and every
refusal reason."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gb28181.manscdp import (
    MAX_BODY_BYTES,
    REASONS,
    Ack,
    Alarm,
    CatalogResponse,
    DeviceInfoResponse,
    Keepalive,
    ManscdpError,
    MobilePosition,
    QueryRequest,
    Unsupported,
    parse_body,
    to_fix,
)
from gb28181.manscdp_build import build_alarm_ack, build_mobile_position_subscription, build_query
from gb28181.manscdp_catalog import CatalogAssembler

DEV = "34020000001320000001"
CAM = "34020000001310000001"


def body(xml: str, encoding: str = "GB2312", codec: str = "gb18030") -> bytes:
    return f'<?xml version="1.0" encoding="{encoding}"?>\r\n{xml}'.encode(codec)


def ms(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> int:
    """Epoch ms of a Beijing local time (UTC+8)."""
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp() * 1000) - 8 * 3_600_000


KEEPALIVE = f"""<Notify>
<CmdType>Keepalive</CmdType>
<SN>43</SN>
<DeviceID>{DEV}</DeviceID>
<Status>OK</Status>
</Notify>"""

POSITION = f"""<Notify>
<CmdType>MobilePosition</CmdType>
<SN>17</SN>
<DeviceID>{DEV}</DeviceID>
<Time>2024-03-05T14:20:31</Time>
<Longitude>116.397128</Longitude>
<Latitude>39.916527</Latitude>
<Speed>36.0</Speed>
<Direction>270.5</Direction>
<Altitude>52</Altitude>
</Notify>"""

ALARM = f"""<Notify>
<CmdType>Alarm</CmdType>
<SN>88</SN>
<DeviceID>{DEV}</DeviceID>
<AlarmPriority>1</AlarmPriority>
<AlarmMethod>2</AlarmMethod>
<AlarmTime>2024-03-05T14:21:00</AlarmTime>
<AlarmDescription>一键报警 SOS</AlarmDescription>
<Longitude>116.40</Longitude>
<Latitude>39.91</Latitude>
<Info>
<AlarmType>1</AlarmType>
</Info>
</Notify>"""


def catalog_page(items: list[tuple[str, str]], sum_num: int = 3, sn: int = 5) -> str:
    rows = "".join(f"""<Item>
<DeviceID>{item_id}</DeviceID>
<Name>{name}</Name>
<Manufacturer>海康威视</Manufacturer>
<Model>DS-MH2311</Model>
<Owner>Owner</Owner>
<CivilCode>340200</CivilCode>
<Address>Address</Address>
<Parental>0</Parental>
<ParentID>{DEV}</ParentID>
<SafetyWay>0</SafetyWay>
<RegisterWay>1</RegisterWay>
<Secrecy>0</Secrecy>
<Status>ON</Status>
<Longitude>116.1</Longitude>
<Latitude>39.2</Latitude>
</Item>""" for item_id, name in items)
    return f"""<Response>
<CmdType>Catalog</CmdType>
<SN>{sn}</SN>
<DeviceID>{DEV}</DeviceID>
<SumNum>{sum_num}</SumNum>
<DeviceList Num="{len(items)}">{rows}</DeviceList>
</Response>"""


DEVICE_INFO = f"""<Response>
<CmdType>DeviceInfo</CmdType>
<SN>6</SN>
<DeviceID>{DEV}</DeviceID>
<DeviceName>执法记录仪 01</DeviceName>
<Result>OK</Result>
<Manufacturer>Hikvision</Manufacturer>
<Model>DS-MH2311</Model>
<Firmware>V1.2.0 build 230101</Firmware>
<Channel>1</Channel>
</Response>"""


@pytest.mark.parametrize(("encoding", "codec"), [("GB2312", "gb18030"), ("gb18030", "gb18030"), ("UTF-8", "utf-8")])
def test_keepalive_in_each_encoding(encoding: str, codec: str) -> None:
    assert parse_body(body(KEEPALIVE, encoding, codec)) == Keepalive(DEV, 43, True)


def test_keepalive_error_status_is_a_device_still_alive() -> None:
    assert parse_body(body(KEEPALIVE.replace(">OK<", ">ERROR<"))) == Keepalive(DEV, 43, False)


def test_mobile_position_is_local_time_at_the_offset() -> None:
    pos = parse_body(body(POSITION))
    assert pos == MobilePosition(DEV, 17, ms(2024, 3, 5, 14, 20, 31), 116.397128, 39.916527, 36.0, 270.5, 52.0)
    utc = parse_body(body(POSITION), utc_offset_min=0)
    assert isinstance(pos, MobilePosition) and isinstance(utc, MobilePosition)
    assert utc.ts_ms == pos.ts_ms + 8 * 3_600_000


def test_mobile_position_tolerates_2022_times_and_direction_360() -> None:
    text = POSITION.replace("2024-03-05T14:20:31", "2024-03-05T14:20:31.250").replace("270.5", "360")
    pos = parse_body(body(text))
    assert isinstance(pos, MobilePosition)
    assert pos.ts_ms == ms(2024, 3, 5, 14, 20, 31) + 250 and pos.direction_deg == 0.0
    zoned = parse_body(body(POSITION.replace("14:20:31", "06:20:31Z")))
    assert isinstance(zoned, MobilePosition) and zoned.ts_ms == pos.ts_ms - 250


def test_to_fix_converts_km_per_hour_to_metres_per_second() -> None:
    pos = parse_body(body(POSITION))
    assert isinstance(pos, MobilePosition)
    fix = to_fix(pos)
    assert (fix.ts, fix.lat, fix.lon, fix.alt, fix.heading, fix.seq) == (pos.ts_ms, 39.916527, 116.397128, 52.0,
                                                                           270.5, 17)
    assert fix.speed == pytest.approx(10.0)


def test_alarm_with_chinese_description_in_gb18030() -> None:
    alarm = parse_body(body(ALARM))
    assert alarm == Alarm(DEV, 88, 1, 2, ms(2024, 3, 5, 14, 21), "一键报警 SOS", 116.40, 39.91, 1)
    assert parse_body(body(ALARM, "UTF-8", "utf-8")) == alarm


def test_alarm_is_kept_without_its_clock_or_fix() -> None:
    text = ALARM.replace("2024-03-05T14:21:00", "1970-01-01T08:00:00").replace("116.40", "nan")
    alarm = parse_body(body(text))
    assert isinstance(alarm, Alarm) and alarm.ts_ms is None and alarm.lon is None and alarm.lat is None


def test_catalog_in_two_pages_is_assembled() -> None:
    page1 = parse_body(body(catalog_page([(CAM, "前门 1"), ("34020000001310000002", "前门 2")])))
    page2 = parse_body(body(catalog_page([("34020000001310000003", "后门")]), "UTF-8", "utf-8"))
    assert isinstance(page1, CatalogResponse) and isinstance(page2, CatalogResponse)
    assert page1.sum_num == 3 and page1.items[0].name == "前门 1" and page1.items[0].manufacturer == "海康威视"
    assert page1.items[0].online is True and (page1.items[0].lon, page1.items[0].lat) == (116.1, 39.2)
    assembler = CatalogAssembler()
    assert assembler.add(page1, 1000) is None and assembler.add(page1, 1001) is None  # a page sent twice
    catalog = assembler.add(page2, 1002)
    assert catalog is not None and [i.name for i in catalog.items] == ["前门 1", "前门 2", "后门"]
    assert assembler.open_count == 0


def test_catalog_item_may_be_a_region_node() -> None:
    page = parse_body(body(catalog_page([("340200", "Region")], sum_num=1)))
    assert isinstance(page, CatalogResponse) and page.items[0].device_id == "340200"


def test_catalog_assembler_caps_and_expiry() -> None:
    page = parse_body(body(catalog_page([(CAM, "a")], sum_num=3)))
    assert isinstance(page, CatalogResponse)
    small = CatalogAssembler(max_items=2)
    with pytest.raises(ManscdpError) as err:
        small.add(page, 0)
    assert err.value.reason == "too_many_items"
    one = CatalogAssembler(max_open=1, ttl_ms=100)
    assert one.add(page, 0) is None
    other = parse_body(body(catalog_page([(CAM, "a")], sum_num=3, sn=6)))
    assert isinstance(other, CatalogResponse)
    with pytest.raises(ManscdpError) as err:
        one.add(other, 50)
    assert err.value.reason == "too_many_assemblies"
    assert one.add(other, 100) is None and one.expired == 1  # the first answer expired, room for the second
    changed = parse_body(body(catalog_page([("34020000001310000002", "b")], sum_num=4, sn=6)))
    assert isinstance(changed, CatalogResponse)
    with pytest.raises(ManscdpError) as err:
        one.add(changed, 101)
    assert err.value.reason == "bad_value" and one.open_count == 0


def test_device_info() -> None:
    info = parse_body(body(DEVICE_INFO))
    assert info == DeviceInfoResponse(DEV, 6, True, "执法记录仪 01", "Hikvision", "DS-MH2311", "V1.2.0 build 230101", 1)


def test_unknown_cmd_type_is_unsupported() -> None:
    text = f"<Notify><CmdType>MediaStatus</CmdType><SN>1</SN><DeviceID>{DEV}</DeviceID></Notify>"
    assert parse_body(body(text)) == Unsupported("Notify", "MediaStatus", DEV, "1")


def test_no_declaration_is_utf8_then_gb18030() -> None:
    assert isinstance(parse_body(DEVICE_INFO.encode("utf-8")), DeviceInfoResponse)
    info = parse_body(DEVICE_INFO.encode("gb18030"))
    assert isinstance(info, DeviceInfoResponse) and info.device_name == "执法记录仪 01"


def test_builders_round_trip() -> None:
    for utf8 in (False, True):
        assert parse_body(build_query("Catalog", 7, DEV, utf8=utf8)) == QueryRequest("Catalog", DEV, 7, None)
        assert parse_body(build_query("DeviceInfo", 8, DEV, utf8=utf8)) == QueryRequest("DeviceInfo", DEV, 8, None)
        sub = build_mobile_position_subscription(9, DEV, 5, utf8=utf8)
        assert parse_body(sub) == QueryRequest("MobilePosition", DEV, 9, 5)
        assert parse_body(build_alarm_ack(88, DEV, utf8=utf8)) == Ack("Alarm", DEV, 88, True)
    assert build_query("Catalog", 7, DEV).startswith(b'<?xml version="1.0" encoding="GB2312"?>')
    assert b"<Interval>5</Interval>" in build_mobile_position_subscription(9, DEV)
    for bad in (lambda: build_query("Alarm", 1, DEV), lambda: build_query("Catalog", -1, DEV),
                lambda: build_query("Catalog", 1, "123"), lambda: build_mobile_position_subscription(1, DEV, 0)):
        with pytest.raises(ValueError):
            bad()


BARE_ITEMS = f"<Item><DeviceID>{CAM}</DeviceID></Item>" * 1001  # one page past the cap, within the size limit
REFUSALS = [
    ("too_large", b"<Notify>" + b" " * MAX_BODY_BYTES + b"</Notify>"),
    ("bad_encoding", body(KEEPALIVE, "ISO-8859-5", "utf-8")),
    ("bad_encoding", b'<?xml version="1.0" encoding="GB2312"?>' + KEEPALIVE.encode() + b"\x81\x30"),
    ("bad_encoding", b"<Notify>\xff\xff\xff</Notify>"),
    ("bad_xml", body("<Notify><CmdType>Keepalive</CmdType>")),
    ("bad_xml", b""),
    ("forbidden_xml", body('<!DOCTYPE Notify [<!ENTITY a "x">]><Notify><CmdType>&a;</CmdType></Notify>')),
    ("bad_root", body(KEEPALIVE.replace("Notify", "Message"))),
    ("missing_field", body(KEEPALIVE.replace("<Status>OK</Status>", ""))),
    ("missing_field", body(KEEPALIVE.replace("<CmdType>Keepalive</CmdType>", ""))),
    ("missing_field", body(POSITION.replace("<Latitude>39.916527</Latitude>", ""))),
    ("bad_value", body(KEEPALIVE.replace("<SN>43</SN>", "<SN>-1</SN>"))),
    ("bad_value", body(KEEPALIVE.replace(">OK<", ">MAYBE<"))),
    ("bad_value", body(POSITION.replace("116.397128", "inf"))),
    ("bad_value", body(POSITION.replace("116.397128", "180.5"))),
    ("bad_value", body(POSITION.replace("39.916527", "-90.1"))),
    ("bad_value", body(POSITION.replace("<Speed>36.0", "<Speed>1000"))),
    ("bad_value", body(POSITION.replace("<Speed>36.0", "<Speed>-1"))),
    ("bad_value", body(POSITION.replace("270.5", "361"))),
    ("bad_value", body(POSITION.replace("2024-03-05T14:20:31", "2024-02-30T14:20:31"))),
    ("bad_value", body(POSITION.replace("2024-03-05T14:20:31", "1970-01-01T08:00:00"))),
    ("bad_value", body(POSITION.replace("2024-03-05T14:20:31", "yesterday"))),
    ("bad_value", body(ALARM.replace("<AlarmPriority>1", "<AlarmPriority>9"))),
    ("bad_value", body(catalog_page([(CAM, "a"), ("34020000001310000002", "b")], sum_num=1))),
    ("bad_device_id", body(KEEPALIVE.replace(DEV, "3402000000132000000X"))),
    ("bad_device_id", body(KEEPALIVE.replace(DEV, DEV + "1"))),
    ("bad_device_id", body(catalog_page([("123", "a")], sum_num=1))),
    ("bad_text", body(DEVICE_INFO.replace("执法记录仪 01", "x" * 300))),
    ("bad_text", body(ALARM.replace("一键报警 SOS", "报" * 1025))),
    ("no_fix", body(POSITION.replace("116.397128", "0").replace("39.916527", "0.0"))),
    ("too_many_items", body(catalog_page([], sum_num=2000).replace("</DeviceList>", BARE_ITEMS + "</DeviceList>"))),
]


@pytest.mark.parametrize(("reason", "raw"), REFUSALS, ids=[f"{i}-{r}" for i, (r, _) in enumerate(REFUSALS)])
def test_refusals(reason: str, raw: bytes) -> None:
    with pytest.raises(ManscdpError) as err:
        parse_body(raw)
    assert err.value.reason == reason, err.value


def test_every_parser_reason_is_exercised() -> None:
    # too_many_assemblies is the assembler's (test above); internal is the reason no test may reach
    assert {r for r, _ in REFUSALS} | {"too_many_assemblies", "internal"} == REASONS
