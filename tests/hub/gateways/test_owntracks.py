"""OwnTracks codec: the booklet's documented payloads, unit conversions, topics, the datum, hostile input."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geo.gcj02 import wgs84_to_gcj02
from hub.gateways.errors import REASONS, CodecError
from hub.gateways.owntracks.codec import (
    MAX_PAYLOAD_BYTES,
    Ignored,
    Location,
    Offline,
    Transition,
    command_topic,
    decode,
    encode_report_location,
    parse_topic,
)

QUICK = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# owntracks.org booklet, tech/json.md (owntracks/booklet docs/tech/json.md): the _type=location example with its
# placeholders (nnn, x.xxxxxx) filled in; the listed fields and units are the booklet's.
BOOKLET_LOCATION = {
    "_type": "location", "acc": 75, "alt": 13, "batt": 40, "cog": 270, "lat": 48.85833, "lon": 2.29513,
    "rad": 100, "t": "u", "tid": "YY", "tst": 1376715317, "vac": 10, "vel": 54, "p": 101, "conn": "w", "bs": 1,
}
# mqtt-pwn docs (akamai-threat-research/mqtt-pwn docs/plugins/owntracks.rst): a location as phones publish it.
PUBLISHED_LOCATION = (b'{"_type": "location", "tid": "n5", "acc": 17, "batt": 80, "conn": "m", '
                      b'"lat": -22.983600, "lon": -43.2178200, "t": "c", "tst": 1532102000}')
# booklet tech/json.md, _type=transition (comments removed).
BOOKLET_TRANSITION = (b'{"_type": "transition", "wtst": 1425042603, "lat": 12.34, "lon": 44.5, "tst": 1427634603, '
                      b'"acc": 130, "tid": "JP", "event": "enter", "desc": "my Indian restaurant", "t": "b"}')
# booklet tech/json.md, _type=lwt.
BOOKLET_LWT = b'{"_type":"lwt","tst": 1380738247}'
# booklet features/traccar.md: the minimal HTTP payload.
MINIMAL_HTTP = b'{"lon":2.29513,"lat":48.85833,"_type":"location","tst":1497476456, "tid":"JJ"}'


def _reason(raw: bytes, **kwargs: object) -> str:
    with pytest.raises(CodecError) as caught:
        decode(raw, **kwargs)  # type: ignore[arg-type]
    assert caught.value.reason in REASONS
    return caught.value.reason


def test_booklet_location_converts_units() -> None:
    msg = decode(json.dumps(BOOKLET_LOCATION).encode())
    assert isinstance(msg, Location)
    fix = msg.fix
    assert fix.ts == 1376715317_000
    assert (fix.lat, fix.lon) == (48.85833, 2.29513)
    assert fix.speed == pytest.approx(15.0)  # 54 km/h
    assert (fix.heading, fix.acc, fix.alt, fix.battery) == (270.0, 75.0, 13.0, 40.0)
    assert msg.tid == "YY" and msg.trigger == "u"
    assert fix.attrs == {"tid": "YY", "trigger": "u", "conn": "w", "battery_status": 1}


def test_published_and_minimal_locations() -> None:
    msg = decode(PUBLISHED_LOCATION)
    assert isinstance(msg, Location)
    assert (msg.fix.lat, msg.fix.lon, msg.fix.acc, msg.fix.battery) == (-22.9836, -43.21782, 17.0, 80.0)
    assert msg.fix.speed is None and msg.fix.heading is None and msg.trigger == "c"
    minimal = decode(MINIMAL_HTTP)
    assert isinstance(minimal, Location) and minimal.fix.ts == 1497476456_000 and minimal.fix.acc is None


def test_transition_is_a_geofence_event_with_its_fix() -> None:
    msg = decode(BOOKLET_TRANSITION)
    assert isinstance(msg, Transition)
    assert msg.event.type == "geofence" and msg.event.ts == 1427634603_000
    assert msg.event.data == {"event": "enter", "desc": "my Indian restaurant", "wtst": 1425042603_000,
                              "trigger": "b"}
    assert (msg.fix.lat, msg.fix.lon, msg.fix.acc) == (12.34, 44.5, 130.0)


def test_lwt_is_offline() -> None:
    msg = decode(BOOKLET_LWT)
    assert isinstance(msg, Offline)
    assert (msg.status.ts, msg.status.state, msg.status.kind) == (1380738247_000, "offline", "phone")


@pytest.mark.parametrize("kind", ["status", "waypoint", "card", "steps", "configuration", "cmd"])
def test_types_the_hub_does_not_use_are_ignored(kind: str) -> None:
    assert decode(json.dumps({"_type": kind}).encode()) == Ignored(kind)


def test_encrypted_unknown_and_missing_type_are_refused() -> None:
    # booklet tech/json.md, _type=encrypted (data shortened)
    assert _reason(b'{"_type": "encrypted", "data": "1Vu7OwpW4lMnh28FB+el22GsCrlnggvEcp4H8GR9iKJd"}') == "encrypted"
    assert _reason(b'{"_type": "teleport"}') == "unknown_type"
    assert _reason(b'{"lat": 1, "lon": 2, "tst": 1500000000}') == "missing_field"
    assert _reason(b'{"_type": 5}') == "wrong_type"


def test_negative_unknown_readings_are_absent_not_refused() -> None:
    msg = decode(b'{"_type":"location","lat":1,"lon":2,"tst":1500000000,"vel":-1,"cog":-1,"acc":-1,"batt":-1}')
    assert isinstance(msg, Location)
    assert (msg.fix.speed, msg.fix.heading, msg.fix.acc, msg.fix.battery) == (None, None, None, None)


@pytest.mark.parametrize(("patch", "reason"), [
    ({"lat": 91}, "out_of_range"), ({"lon": -180.5}, "out_of_range"), ({"lat": "48.8"}, "wrong_type"),
    ({"tst": 1e12}, "out_of_range"), ({"tst": 100}, "bad_time"), ({"vel": 4000}, "out_of_range"),
    ({"cog": 361}, "out_of_range"), ({"batt": 101}, "out_of_range"), ({"tst": None}, "missing_field"),
    ({"tid": 7}, "wrong_type"), ({"lat": True}, "wrong_type"),
])
def test_bad_fields_are_refused_with_a_reason(patch: dict[str, object], reason: str) -> None:
    assert _reason(json.dumps({**BOOKLET_LOCATION, **patch}).encode()) == reason


def test_time_ahead_of_the_hub_is_refused_only_with_a_clock() -> None:
    raw = json.dumps({**BOOKLET_LOCATION, "tst": 1_800_000_000}).encode()
    assert isinstance(decode(raw), Location)
    assert _reason(raw, now_ms=1_700_000_000_000) == "bad_time"


def test_size_and_json_limits() -> None:
    assert _reason(b" " * (MAX_PAYLOAD_BYTES + 1)) == "too_large"
    assert _reason(b"{not json") == "bad_json"
    assert _reason(b"[" * 5000) == "bad_json"
    assert _reason(b"[1, 2]") == "not_object"
    assert _reason(b'{"_type": "location", "tid": "\\u0000"}') == "bad_text"


def test_gcj02_datum_is_converted_to_wgs84() -> None:
    wgs = (39.9087, 116.3975)  # Tiananmen, Beijing
    gcj = wgs84_to_gcj02(*wgs)
    assert math.dist(gcj, wgs) > 1e-3  # a shift of hundreds of metres
    raw = json.dumps({"_type": "location", "lat": gcj[0], "lon": gcj[1], "tst": 1_700_000_000}).encode()
    msg = decode(raw, datum="gcj02")
    assert isinstance(msg, Location)
    assert msg.fix.lat == pytest.approx(wgs[0], abs=1e-7) and msg.fix.lon == pytest.approx(wgs[1], abs=1e-7)
    plain = decode(raw)
    assert isinstance(plain, Location) and (plain.fix.lat, plain.fix.lon) == gcj


def test_topics() -> None:
    topic = parse_topic("owntracks/jane/phone")
    assert (topic.user, topic.device, topic.subtopic) == ("jane", "phone", "")
    assert parse_topic("owntracks/jane/phone/event").subtopic == "event"
    for bad in ("owntracks/jane", "fieldhub/jane/phone", "owntracks/jane/phone/event/x", "owntracks/jane/phone/"):
        with pytest.raises(CodecError) as caught:
            parse_topic(bad)
        assert caught.value.reason == "bad_topic"
    for bad in ("owntracks/+/phone", "owntracks/jane/ph one", "owntracks//phone", "owntracks/-x/phone",
                "owntracks/" + "a" * 65 + "/phone"):
        with pytest.raises(CodecError) as caught:
            parse_topic(bad)
        assert caught.value.reason == "bad_id"


def test_report_location_command() -> None:
    # booklet tech/json.md, _type=cmd
    assert json.loads(encode_report_location()) == {"_type": "cmd", "action": "reportLocation"}
    assert command_topic("jane", "phone") == "owntracks/jane/phone/cmd"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=20,
)
_LOCATIONISH = st.fixed_dictionaries(
    {"_type": st.sampled_from(["location", "transition", "lwt", "status", "encrypted", "x"])},
    optional={k: _JSON | st.floats(-400, 400) for k in ("lat", "lon", "tst", "vel", "cog", "acc", "batt", "event",
                                                          "desc", "wtst", "tid", "t", "bs", "alt")},
)


@QUICK
@given(st.one_of(st.binary(max_size=200), _JSON.map(lambda v: json.dumps(v).encode()),
                 _LOCATIONISH.map(lambda v: json.dumps(v).encode())))
def test_hostile_input_is_a_message_or_a_codec_error(raw: bytes) -> None:
    try:
        msg = decode(raw, now_ms=1_800_000_000_000)
    except CodecError as exc:
        assert exc.reason in REASONS and exc.reason != "internal", exc
    else:
        assert isinstance(msg, (Location, Offline, Transition, Ignored))
    # the next good message still decodes
    assert isinstance(decode(MINIMAL_HTTP), Location)


@QUICK
@given(st.text(max_size=80))
def test_hostile_topics(topic: str) -> None:
    try:
        parsed = parse_topic(topic)
    except CodecError as exc:
        assert exc.reason in ("bad_topic", "bad_id")
    else:
        assert topic == "/".join(filter(None, ("owntracks", parsed.user, parsed.device, parsed.subtopic)))
