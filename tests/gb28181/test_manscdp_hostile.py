"""Generated hostile MANSCDP bodies (Hypothesis).

Invariants: :func:`parse_body` returns a value or raises ManscdpError with a known reason, never ``internal``
and never another exception; whatever it returns keeps the ranges it promises; entity tricks are refused before
anything expands; every builder's body parses back to what was built.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.fields import MAX_TS_MS, MIN_TS_MS
from gb28181.manscdp import (
    REASONS,
    Ack,
    Alarm,
    Body,
    CatalogResponse,
    ManscdpError,
    MobilePosition,
    QueryRequest,
    Unsupported,
    parse_body,
    to_fix,
)
from gb28181.manscdp_build import build_alarm_ack, build_mobile_position_subscription, build_query
from tests.gb28181.test_manscdp import ALARM, DEVICE_INFO, KEEPALIVE, POSITION, body, catalog_page

QUICK = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEV = "34020000001320000001"
VALID = [body(x, *enc) for x in (KEEPALIVE, POSITION, ALARM, DEVICE_INFO, catalog_page([(DEV, "名")], 2))
         for enc in (("GB2312", "gb18030"), ("UTF-8", "utf-8"))]


def parse_or_refuse(raw: bytes) -> Body | None:
    """The parse result, or None after checking the refusal is a known, foreseen one."""
    try:
        result = parse_body(raw)
    except ManscdpError as exc:
        assert exc.reason in REASONS and exc.reason != "internal", exc
        assert isinstance(exc.detail, str) and len(exc.detail) <= 200 and "\x00" not in exc.detail
        return None
    check_ranges(result)
    return result


def check_ranges(result: Body) -> None:
    if isinstance(result, MobilePosition):
        assert -180 <= result.lon <= 180 and -90 <= result.lat <= 90
        assert result.speed_kmh is None or 0 <= result.speed_kmh < 1000
        assert result.direction_deg is None or 0 <= result.direction_deg < 360
        assert all(math.isfinite(v) for v in (result.lon, result.lat))
        to_fix(result)  # converts without error
    if isinstance(result, Alarm) and result.lon is not None:
        assert result.lat is not None and -180 <= result.lon <= 180 and -90 <= result.lat <= 90
    if isinstance(result, CatalogResponse):
        assert len(result.items) <= result.sum_num
    if not isinstance(result, Unsupported):  # its fields are only reported, never trusted
        assert len(result.device_id) == 20 and all(c in "0123456789" for c in result.device_id)


@QUICK
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(raw: bytes) -> None:
    parse_or_refuse(raw)


XML_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="<&"), max_size=60)
TAGS = st.sampled_from(["CmdType", "SN", "DeviceID", "Status", "Time", "Longitude", "Latitude", "Speed",
                        "Direction", "Altitude", "AlarmPriority", "AlarmMethod", "AlarmTime", "SumNum",
                        "Channel", "Result", "Interval", "DeviceName"])
CMD = st.sampled_from(["Keepalive", "MobilePosition", "Alarm", "Catalog", "DeviceInfo", "DeviceControl", "X"])


@QUICK
@given(st.sampled_from(["Notify", "Response", "Query", "Control"]), CMD,
       st.lists(st.tuples(TAGS, XML_TEXT), max_size=12),
       st.sampled_from([("GB2312", "gb18030"), ("UTF-8", "utf-8"), ("GB18030", "gb18030")]))
def test_arbitrary_text_in_xml_shells(root: str, cmd: str, fields: list[tuple[str, str]],
                                      enc: tuple[str, str]) -> None:
    inner = "".join(f"<{tag}>{text}</{tag}>" for tag, text in fields)
    xml = f"<{root}><CmdType>{cmd}</CmdType><SN>1</SN><DeviceID>{DEV}</DeviceID>{inner}</{root}>"
    try:
        raw = body(xml, *enc)
    except UnicodeEncodeError:  # a character GB18030 cannot hold (a lone surrogate): nothing a device could send
        return
    parse_or_refuse(raw)


@QUICK
@given(st.sampled_from(VALID), st.data())
def test_mutated_valid_bodies(raw: bytes, data: st.DataObject) -> None:
    mutated = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = data.draw(st.integers(0, max(len(mutated) - 1, 0)))
        if kind == "flip" and mutated:
            mutated[at] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del mutated[at:at + data.draw(st.integers(1, 16))]
        else:
            del mutated[at:]
    parse_or_refuse(bytes(mutated))


@QUICK
@given(st.sampled_from(["Longitude", "Latitude", "Speed", "Direction", "Time", "SN", "DeviceID"]),
       st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), XML_TEXT,
                 st.sampled_from(["nan", "-inf", "1e309", "1_0", "0x10", "١٢", "2024-13-01T00:00:00", "+0",
                                  "9" * 400, "  12.5  ", "-0.0", "360.0", "2099-12-31T23:59:59.999999999Z"])))
def test_hostile_values_in_a_position(tag: str, value: str) -> None:
    start, end = POSITION.index(f"<{tag}>") + len(tag) + 2, POSITION.index(f"</{tag}>")
    try:
        raw = body(POSITION[:start] + value + POSITION[end:], "UTF-8", "utf-8")
    except UnicodeEncodeError:
        return
    parse_or_refuse(raw)


TIMES = st.builds(
    lambda y, mo, d, h, mi, s, frac, zone: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}{zone}",
    st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25), st.integers(0, 61),
    st.integers(0, 61), st.sampled_from(["", ".5", ".123456789", "."]),
    st.sampled_from(["", "Z", "+08:00", "-14:00", "+1400", "+99:99", "-00:00", "+14:01"]),
)


@QUICK
@given(TIMES, st.sampled_from([POSITION, ALARM]))
def test_hostile_times(value: str, template: str) -> None:
    tag = "<Time>" if "<Time>" in template else "<AlarmTime>"
    start = template.index(tag) + len(tag)
    end = template.index("</", start)
    result = parse_or_refuse(body(template[:start] + value + template[end:], "UTF-8", "utf-8"))
    if isinstance(result, MobilePosition):
        assert MIN_TS_MS <= result.ts_ms < MAX_TS_MS
    if template is ALARM:  # an alarm is never refused for its clock
        assert isinstance(result, Alarm)
        assert result.ts_ms is None or MIN_TS_MS <= result.ts_ms < MAX_TS_MS


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Notify><CmdType>&lol3;</CmdType></Notify>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE Notify [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>&xxe;</DeviceID><Status>OK</Status></Notify>"""
EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE Notify SYSTEM "http://127.0.0.1:1/evil.dtd">
<Notify><CmdType>Keepalive</CmdType></Notify>"""
PARAMETER = b"""<?xml version="1.0"?>
<!DOCTYPE Notify [<!ENTITY % p SYSTEM "http://127.0.0.1:1/p"> %p;]><Notify/>"""


@pytest.mark.parametrize("raw", [BILLION_LAUGHS, EXTERNAL, EXTERNAL_DTD, PARAMETER],
                         ids=["billion-laughs", "external-entity", "external-dtd", "parameter-entity"])
def test_entity_tricks_are_refused(raw: bytes) -> None:
    with pytest.raises(ManscdpError) as err:
        parse_body(raw)
    assert err.value.reason == "forbidden_xml"


DEVICE_IDS = st.text(alphabet="0123456789", min_size=20, max_size=20)
SNS = st.integers(0, 2**63 - 1)


@QUICK
@given(st.sampled_from(["Catalog", "DeviceInfo"]), SNS, DEVICE_IDS, st.booleans())
def test_query_round_trip(cmd: str, sn: int, device_id: str, utf8: bool) -> None:
    assert parse_body(build_query(cmd, sn, device_id, utf8=utf8)) == QueryRequest(cmd, device_id, sn, None)


@QUICK
@given(SNS, DEVICE_IDS, st.integers(1, 86_400), st.booleans())
def test_subscription_round_trip(sn: int, device_id: str, interval: int, utf8: bool) -> None:
    raw = build_mobile_position_subscription(sn, device_id, interval, utf8=utf8)
    assert parse_body(raw) == QueryRequest("MobilePosition", device_id, sn, interval)


@QUICK
@given(SNS, DEVICE_IDS, st.booleans())
def test_alarm_ack_round_trip(sn: int, device_id: str, utf8: bool) -> None:
    assert parse_body(build_alarm_ack(sn, device_id, utf8=utf8)) == Ack("Alarm", device_id, sn, True)


@pytest.mark.parametrize("build", [
    lambda: build_query("Catalog", 1, "3402000000132000000\u0661"),  # an Arabic-Indic digit is no digit here
    lambda: build_alarm_ack(2**63, DEV),
    lambda: build_mobile_position_subscription(1, DEV, 86_401),
])
def test_builders_refuse_what_no_device_could_read(build: Callable[[], bytes]) -> None:
    with pytest.raises(ValueError):
        build()
