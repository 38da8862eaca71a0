"""OsmAnd / Traccar Client codec and Traccar forwarding: documented payloads, units, time forms, secrets, datum,
hostile input."""

from __future__ import annotations

import base64
import json
import math
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geo.gcj02 import wgs84_to_gcj02
from hub.gateways.credentials import basic_credentials, check_secret
from hub.gateways.errors import REASONS, CodecError
from hub.gateways.osmand.codec import (
    KNOT,
    MAX_PARAMS,
    MAX_PAYLOAD_BYTES,
    Report,
    decode_forward,
    decode_json,
    decode_query,
    secret_of,
)

QUICK = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = 1_800_000_000_000

# Traccar's own decoder test (traccar/traccar src/test/java/org/traccar/protocol/OsmAndProtocolDecoderTest.java,
# testDecodeQuery): request targets as apps send them.
TRACCAR_QUERIES = [
    "/?id=902064&lat=42.06288&lon=-88.23412&timestamp=2016-01-27T18%3A55%3A47Z&hdop=6.0&altitude=224.0&speed=0.0",
    "/?id=902064&lat=42.06288&lon=-88.23412&timestamp=1442068686579&hdop=6.0&altitude=224.0&speed=0.0",
    "/?lat=49.60688&lon=6.15788&timestamp=2014-06-04+09%3A10%3A11&altitude=384.7&speed=0.0&id=353861053849681",
    "/?id=123456&timestamp=1377177267&lat=60.0&lon=30.0&speed=0.0&bearing=0.0&altitude=0&hdop=0.0",
    "/?id=123456&timestamp=1377177267&lat=60.0&lon=30.0",
    "/?id=123456&timestamp=1377177267&location=60.0,30.0",
    "/?id=123456789012345&timestamp=1504763810&lat=40.7232948571&lon=-74.0061408571&bearing=7.19889788244"
    "&speed=40&ignition=true&rpm=933&fuel=24",
]
# Same test, testDecodeJson: Traccar Client 9 (its background-location SDK's JSON).
TRACCAR_CLIENT_JSON = (
    b'{"location":{"event":"motionchange","is_moving":false,"uuid":"0e9a2473-a9a7-4c00-997b-fb97d2154e75",'
    b'"timestamp":"2021-07-21T08:06:34.444Z","odometer":0,"coords":{"latitude":-6.1148096,"longitude":106.6837015,'
    b'"accuracy":3.8,"speed":18.67,"speed_accuracy":0.26,"heading":63,"heading_accuracy":0.28,"altitude":35.7,'
    b'"altitude_accuracy":3.8},"activity":{"type":"still","confidence":100},"battery":{"is_charging":false,'
    b'"level":0.79},"extras":{}},"device_id":"8737767034"}')
# traccar.org/osmand, "JSON format": the documented shape with its default values (comments removed).
TRACCAR_DOC_JSON = (
    b'{"location": {"timestamp": "2000-01-01T00:00:00.000Z", "coords": {"latitude": 0.0, "longitude": 0.0, '
    b'"accuracy": 0, "speed": 0, "heading": 0, "altitude": 0}, "is_moving": false, "odometer": 0, '
    b'"event": "motionchange", "battery": {"level": 1, "is_charging": false}, "activity": {"type": "still"}, '
    b'"extras": {}}, "device_id": "48241179"}')
# Position forwarding as jpmens.net/2018/09/14/position-and-event-forwarding-from-traccar/ shows it (its
# "position" and "device" members; the post's device is cut after "name", uniqueId added as Traccar's Device has).
TRACCAR_FORWARD = (
    b'{"position": {"id": 18336, "attributes": {"t": "i", "ignition": true, "distance": 449672.22}, "deviceId": 7,'
    b' "protocol": "owntracks", "deviceTime": "2018-09-14T15:34:17.000+0000",'
    b' "fixTime": "2018-09-14T15:34:17.000+0000",'
    b' "latitude": 49.0156556, "longitude": 8.3975169, "network": null},'
    b' "device": {"id": 7, "attributes": {"aaa": "AAAA", "mm": "1"}, "name": "jp-phone", "uniqueId": "jpm-7"}}')


def _reason(decode: object, raw: object, **kwargs: object) -> str:
    with pytest.raises(CodecError) as caught:
        decode(raw, **kwargs)  # type: ignore[operator]
    assert caught.value.reason in REASONS
    return caught.value.reason


@pytest.mark.parametrize("query", TRACCAR_QUERIES)
def test_traccar_documented_queries_decode(query: str) -> None:
    report = decode_query(query)
    assert isinstance(report, Report) and report.fix.lat and report.fix.lon


def test_query_units_and_time_forms() -> None:
    iso = decode_query(TRACCAR_QUERIES[0])
    assert iso.device_id == "902064" and iso.fix.ts == 1453920947_000
    assert iso.fix.alt == 224.0 and iso.fix.speed == 0.0 and iso.fix.attrs == {"hdop": 6.0}
    assert decode_query(TRACCAR_QUERIES[1]).fix.ts == 1442068686579  # ms
    assert decode_query(TRACCAR_QUERIES[2]).fix.ts == 1401873011_000  # "yyyy-MM-dd HH:mm:ss", read as UTC
    assert decode_query(TRACCAR_QUERIES[4]).fix.ts == 1377177267_000  # seconds
    assert decode_query("id=a&lat=1&lon=2&timestamp=1377177267.25").fix.ts == 1377177267_250
    assert (decode_query(TRACCAR_QUERIES[5]).fix.lat, decode_query(TRACCAR_QUERIES[5]).fix.lon) == (60.0, 30.0)
    moving = decode_query(TRACCAR_QUERIES[6])
    assert moving.fix.speed == pytest.approx(40 * 0.514444, rel=1e-5)  # knots
    assert moving.fix.heading == pytest.approx(7.19889788244)
    full = decode_query(b"deviceid=p-1&lat=1&lon=2&timestamp=1500000000&accuracy=12.5&batt=87&heading=90&charge=true")
    assert (full.device_id, full.fix.acc, full.fix.battery, full.fix.heading) == ("p-1", 12.5, 87.0, 90.0)
    assert full.fix.attrs == {"charge": True}


def test_query_without_timestamp_takes_the_hub_time() -> None:
    query = "/?lat=60.0&lon=30.0&speed=0.0&heading=0.0&vacc=0&hacc=0&altitude=0&deviceid=123456"  # Traccar's test
    assert decode_query(query, now_ms=NOW).fix.ts == NOW
    assert _reason(decode_query, query) == "missing_field"


@pytest.mark.parametrize(("query", "reason"), [
    ("timestamp=1377177267&lat=60.0&lon=30.0", "missing_field"),  # Traccar's test: no id, refused
    ("id=123456&timestamp=1377177267&cell=257,02,16,2224", "missing_field"),  # cell only: no position for us
    ("id=a&lat=nan&lon=2&timestamp=1500000000", "bad_value"),
    ("id=a&lat=1_0&lon=2&timestamp=1500000000", "bad_value"),
    ("id=a&lat=91&lon=2&timestamp=1500000000", "out_of_range"),
    ("id=a&lat=1&lon=2&timestamp=1500000000&speed=-3", "out_of_range"),
    ("id=a&lat=1&lon=2&timestamp=yesterday", "bad_time"),
    ("id=a&lat=1&lon=2&timestamp=99", "bad_time"),
    ("id=a&lat=1&lon=2&timestamp=1e999", "bad_time"),
    ("id=a&lat=1&lon=2&timestamp=-1e308", "bad_time"),
    ("id=a&lat=1&lon=2&timestamp=0001-01-01T00:00:00%2B05:00", "bad_time"),
    ("id=a&lat=1&lon=2&timestamp=2016-01-27T18:55:47Z%00", "bad_time"),
    ("id=a&lat=1&lon=2&timestamp=1500000000&valid=false", "invalid_fix"),
    ("id=a&lat=1&lon=2&timestamp=1500000000&valid=maybe", "bad_value"),
    ("id=a&id=b&lat=1&lon=2&timestamp=1500000000", "bad_value"),
    ("id=no%20spaces&lat=1&lon=2&timestamp=1500000000", "bad_id"),
    ("id=a&location=1&timestamp=1500000000", "bad_value"),
    ("&".join(f"x{i}=1" for i in range(MAX_PARAMS + 1)), "too_large"),
])
def test_bad_queries_are_refused_with_a_reason(query: str, reason: str) -> None:
    assert _reason(decode_query, query) == reason


def test_query_limits() -> None:
    assert _reason(decode_query, b"id=a&x=" + b"1" * MAX_PAYLOAD_BYTES) == "too_large"
    assert _reason(decode_query, b"id=\xff&lat=1&lon=2") == "bad_value"
    assert _reason(decode_query, "id=a&lat=1&lon=2&timestamp=1800000001", now_ms=NOW - 10**6) == "bad_time"


def test_traccar_client_json() -> None:
    report = decode_json(TRACCAR_CLIENT_JSON)
    assert report.device_id == "8737767034"
    fix = report.fix
    assert fix.ts == 1626854794444 and (fix.lat, fix.lon) == (-6.1148096, 106.6837015)
    assert (fix.acc, fix.speed, fix.heading, fix.alt) == (3.8, 18.67, 63.0, 35.7)  # speed already m/s
    assert fix.battery == pytest.approx(79.0)
    assert fix.attrs == {"charge": False, "moving": False, "activity": "still"}
    doc = decode_json(TRACCAR_DOC_JSON)
    assert doc.device_id == "48241179" and doc.fix.ts == 946684800000 and doc.fix.battery == 100.0


def test_json_unknown_readings_are_absent() -> None:
    # Traccar's test: iOS simulator, every unknown reading -1
    raw = (b'{"location":{"extras":{},"mock":true,"coords":{"speed_accuracy":-1,"speed":-1,"longitude":-122.406417,'
           b'"ellipsoidal_altitude":0,"floor":null,"heading_accuracy":-1,"latitude":37.785834000000001,"accuracy":5,'
           b'"altitude_accuracy":-1,"altitude":0,"heading":-1},"is_moving":false,"age":188,"odometer":0,'
           b'"uuid":"2FB04C65-99CF-42AB-8DD3-EBCB4B108BF8","event":"motionchange","battery":{"level":-1,'
           b'"is_charging":false},"activity":{"type":"unknown","confidence":100},'
           b'"timestamp":"2025-05-09T04:11:30.579Z"},"device_id":"658765"}')
    fix = decode_json(raw).fix
    assert (fix.speed, fix.heading, fix.battery, fix.acc) == (None, None, None, 5.0)


@pytest.mark.parametrize(("raw", "reason"), [
    (b'{"location": {}}', "missing_field"),
    (b'{"device_id": "a"}', "missing_field"),
    (b'{"device_id": "a", "location": {"timestamp": "2021-07-21T08:06:34Z"}}', "missing_field"),
    (b'{"device_id": "a", "location": [], "x": 1}', "wrong_type"),
    (b'{"device_id": true, "location": {}}', "wrong_type"),
    (b'{"device_id": "a", "location": {"timestamp": 5, "coords": {"latitude": 1, "longitude": 2}}}', "wrong_type"),
    (b'{"device_id": "a", "location": {"timestamp": "x", "coords": {"latitude": 1, "longitude": 2}}}', "bad_time"),
    (b'{"device_id": "a", "location": {"timestamp": "2021-07-21T08:06:34Z", '
     b'"coords": {"latitude": 100, "longitude": 2}}}', "out_of_range"),
    (b'[]', "not_object"),
    (b'{', "bad_json"),
])
def test_bad_json_is_refused_with_a_reason(raw: bytes, reason: str) -> None:
    assert _reason(decode_json, raw) == reason


def test_traccar_forwarding() -> None:
    report = decode_forward(TRACCAR_FORWARD)
    assert (report.device_id, report.name) == ("jpm-7", "jp-phone")
    assert report.fix.ts == 1536939257000 and (report.fix.lat, report.fix.lon) == (49.0156556, 8.3975169)
    moving = json.loads(TRACCAR_FORWARD)
    moving["position"].update(speed=10.0, course=180.0, accuracy=0.0, altitude=760.0, valid=True,
                              attributes={"batteryLevel": 85, "sat": 9, "hdop": 0.9})
    fix = decode_forward(json.dumps(moving).encode()).fix
    assert fix.speed == pytest.approx(10 * KNOT) and fix.heading == 180.0 and fix.acc is None  # 0 = unknown
    assert (fix.alt, fix.battery, fix.sats, fix.attrs) == (760.0, 85.0, 9, {"hdop": 0.9})
    moving["position"]["valid"] = False
    assert _reason(decode_forward, json.dumps(moving).encode()) == "invalid_fix"
    del moving["device"]["uniqueId"]
    assert _reason(decode_forward, json.dumps(moving).encode()) == "missing_field"
    assert _reason(decode_forward, b'{"event": {"type": "deviceOnline"}}') == "missing_field"


def test_gcj02_datum_in_every_form() -> None:
    wgs = (31.2304, 121.4737)  # Shanghai
    gcj = wgs84_to_gcj02(*wgs)
    assert math.dist(gcj, wgs) > 1e-3
    query = f"id=cn-1&lat={gcj[0]!r}&lon={gcj[1]!r}&timestamp=1700000000"
    body = json.dumps({"device_id": "cn-1", "location": {"timestamp": "2023-11-14T22:13:20Z",
                                                         "coords": {"latitude": gcj[0], "longitude": gcj[1]}}})
    fwd = json.dumps({"device": {"uniqueId": "cn-1"}, "position": {"fixTime": "2023-11-14T22:13:20.000+00:00",
                                                                   "latitude": gcj[0], "longitude": gcj[1]}})
    for report in (decode_query(query, datum="gcj02"), decode_json(body.encode(), datum="gcj02"),
                   decode_forward(fwd.encode(), datum="gcj02")):
        assert report.fix.lat == pytest.approx(wgs[0], abs=1e-7)
        assert report.fix.lon == pytest.approx(wgs[1], abs=1e-7)
    assert decode_query(query).fix.lat == gcj[0]


def test_secrets() -> None:
    assert secret_of("/?id=a&key=s3cret&lat=1&lon=2") == "s3cret"
    assert secret_of("id=a") is None
    check_secret("s3cret", "s3cret")
    for expected, presented in (("s3cret", "wrong"), ("s3cret", None), (None, "s3cret"), ("", ""),
                                ("s3cret", "x" * 1000), ("s3cret", "\ud800")):
        with pytest.raises(CodecError) as caught:
            check_secret(expected, presented)
        assert caught.value.reason == "bad_secret"
    header = "Basic " + base64.b64encode(b"jane:pa:ss").decode()
    assert basic_credentials(header) == ("jane", "pa:ss")
    for bad in (None, "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(), "Basic "):
        with pytest.raises(CodecError) as caught:
            basic_credentials(bad)
        assert caught.value.reason == "bad_secret"


_VALUE = st.one_of(st.text(max_size=12), st.floats().map(repr), st.integers().map(str),
                   st.sampled_from(["1e999", "-1e308", "nan", "Infinity", "1_0", "0001-01-01T00:00:00+14:00",
                                    "9999-12-31T23:59:59-14:00", "2016-01-27T18:55:47Z", " 1", "0x10"]))
_KEYS = st.sampled_from(["id", "deviceid", "lat", "lon", "location", "timestamp", "speed", "bearing", "heading",
                         "altitude", "accuracy", "batt", "hdop", "valid", "charge", "key", "cell", "x"])


@QUICK
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200),
                 st.lists(st.tuples(_KEYS, _VALUE), max_size=12).map(
                     lambda kv: "&".join(f"{k}={quote(v)}" for k, v in kv))))
def test_hostile_queries(query: str | bytes) -> None:
    try:
        report = decode_query(query, now_ms=NOW)
    except CodecError as exc:
        assert exc.reason in REASONS and exc.reason != "internal", exc
    else:
        assert -90 <= report.fix.lat <= 90 and -180 <= report.fix.lon <= 180
    assert decode_query(TRACCAR_QUERIES[4]).device_id == "123456"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=20,
)
_NUM = _JSON | st.floats(-400, 400)
_CLIENT = st.fixed_dictionaries({"device_id": _JSON | st.just("p1"), "location": st.fixed_dictionaries(
    {"timestamp": _JSON | st.just("2021-07-21T08:06:34.444Z"),
     "coords": st.fixed_dictionaries({}, optional={k: _NUM for k in ("latitude", "longitude", "speed", "heading",
                                                                      "accuracy", "altitude")})},
    optional={"battery": _JSON | st.fixed_dictionaries({}, optional={"level": _NUM, "is_charging": _JSON}),
              "activity": _JSON, "is_moving": _JSON})})
_FORWARD = st.fixed_dictionaries({"device": st.fixed_dictionaries({}, optional={"uniqueId": _JSON, "name": _JSON}),
                                  "position": st.fixed_dictionaries({}, optional={
                                      k: _NUM for k in ("latitude", "longitude", "speed", "course", "accuracy",
                                                        "altitude", "fixTime", "valid", "attributes")})})


@QUICK
@given(st.one_of(st.binary(max_size=200), _JSON.map(lambda v: json.dumps(v).encode()),
                 _CLIENT.map(lambda v: json.dumps(v).encode()), _FORWARD.map(lambda v: json.dumps(v).encode())))
def test_hostile_json(raw: bytes) -> None:
    for decode in (decode_json, decode_forward):
        try:
            report = decode(raw, now_ms=NOW)
        except CodecError as exc:
            assert exc.reason in REASONS and exc.reason != "internal", exc
        else:
            assert isinstance(report, Report)
    assert decode_json(TRACCAR_CLIENT_JSON).device_id == "8737767034"
