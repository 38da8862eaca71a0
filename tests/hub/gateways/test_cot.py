"""Cursor-on-Target events (hub.gateways.tak.cot): what the hub sends, and what it makes of TAK clients' events,
good (ATAK-shaped vectors, TAK protobuf) and hostile (Hypothesis: nothing but CodecError ever escapes)."""

from __future__ import annotations

import time
from typing import Any

import defusedxml.ElementTree as DefusedET
import pytest
import takproto
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.payloads import encode_fixes
from devices.topics import is_valid_id
from hub.gateways.errors import CodecError
from hub.gateways.tak import cot
from hub.gateways.tak.cot import IncidentReport, UnitReport

NOW = 1_795_000_000_000
UNIT = UnitReport("p-7", "Patrol 7", "patrol", 34.2611, 117.1859, NOW - 2000, station="North", status="available",
                  alt=41.0, acc=5.0, speed=8.3, heading=92.0, battery=64.0)


def stamp(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def event(uid: str = "ANDROID-4eb92ff46e615c21", cot_type: str = "a-f-G-U-C", *, point: str | None = None,
          detail: str | None = None, time_ms: int = NOW - 1000, stale_ms: int = NOW + 60_000) -> bytes:
    point = point if point is not None else "<point lat='34.25' lon='117.2' hae='52.1' ce='4.9' le='9999999.0'/>"
    if detail is None:
        detail = ("<detail><takv os='34' version='4.10.0.5 (CIV)' device='SAMSUNG SM-G991B' platform='ATAK-CIV'/>"
                  "<contact endpoint='*:-1:stcp' callsign='VIPER 1'/><uid Droid='VIPER 1'/>"
                  "<precisionlocation altsrc='GPS' geopointsrc='GPS'/><__group role='Team Lead' name='Cyan'/>"
                  "<status battery='77'/><track course='87.5' speed='1.4'/></detail>")
    return (f"<?xml version='1.0' encoding='UTF-8' standalone='yes'?>\n<event version='2.0' uid='{uid}' "
            f"type='{cot_type}' time='{stamp(time_ms)}' start='{stamp(time_ms)}' stale='{stamp(stale_ms)}' "
            f"how='m-g'>{point}{detail}</event>").encode()


def refused(raw: bytes, **kwargs: Any) -> str:
    with pytest.raises(CodecError) as caught:
        cot.decode(raw, now_ms=NOW, **kwargs)
    assert caught.value.reason in cot.REASONS and caught.value.reason != "internal", caught.value
    return caught.value.reason


# ------------------------------------------------------------------ in: ATAK-shaped vectors
def test_an_atak_position_report_becomes_a_fix() -> None:
    message = cot.decode(event(), now_ms=NOW)
    assert isinstance(message, cot.TakPosition)
    assert (message.uid, message.callsign, message.team, message.role) == (
        "ANDROID-4eb92ff46e615c21", "VIPER 1", "Cyan", "Team Lead")
    fix = message.fix
    assert (fix.ts, fix.lat, fix.lon, fix.alt, fix.acc) == (NOW - 1000, 34.25, 117.2, 52.1, 4.9)
    assert (fix.speed, fix.heading, fix.battery) == (1.4, 87.5, 77.0)
    assert fix.attrs == {"tak_uid": "ANDROID-4eb92ff46e615c21"}


def test_unknown_readings_are_left_out() -> None:
    raw = event(point="<point lat='34.25' lon='117.2' hae='9999999.0' ce='9999999.0' le='9999999.0'/>",
                detail="<detail><__group name='Red' role='Medic'/><contact callsign='M1'/>"
                       "<track speed='-1' course='-1'/></detail>")
    message = cot.decode(raw, now_ms=NOW)
    assert isinstance(message, cot.TakPosition)
    assert (message.fix.alt, message.fix.acc, message.fix.speed, message.fix.heading, message.fix.battery) == (
        None, None, None, None, None)


def test_atak_emergency_beacon_and_its_cancellation() -> None:
    alert = event("ANDROID-4eb92ff46e615c21-9-1-1", "b-a-o-tbl", detail=(
        "<detail><link uid='ANDROID-4eb92ff46e615c21' type='a-f-G-U-C' relation='p-p'/>"
        "<contact callsign='VIPER 1'/><emergency type='911 Alert'>VIPER 1</emergency></detail>"))
    message = cot.decode(alert, now_ms=NOW)
    assert message == cot.TakEmergency("ANDROID-4eb92ff46e615c21", "VIPER 1", "b-a-o-tbl", False, NOW - 1000,
                                       34.25, 117.2)
    cancel = event("ANDROID-4eb92ff46e615c21-9-1-1", "b-a-o-can",
                   detail="<detail><emergency cancel='true'>VIPER 1</emergency></detail>")
    message = cot.decode(cancel, now_ms=NOW)
    assert isinstance(message, cot.TakEmergency)
    assert (message.user_uid, message.cancel, message.callsign) == ("ANDROID-4eb92ff46e615c21", True, "VIPER 1")


@pytest.mark.parametrize(("cot_type", "detail"), [
    ("a-u-G", "<detail><contact callsign='U.16.135057'/><usericon iconsetpath='COT_MAPPING_2525B/a-u/a-u-G'/>"
              "<link uid='ANDROID-1' type='a-f-G-U-C' relation='p-p'/></detail>"),  # a marker a user dropped
    ("a-f-G", "<detail><contact callsign='friendly pin'/></detail>"),  # a friendly marker, not a user's own report
    ("b-t-f", "<detail><__chat chatroom='All Chat Rooms' senderCallsign='VIPER 1'/><remarks>hi</remarks></detail>"),
    ("t-x-c-t", "<detail/>"),  # ping
    ("u-d-c-c", "<detail><shape/></detail>"),
])
def test_other_events_are_ignored(cot_type: str, detail: str) -> None:
    assert cot.decode(event(cot_type=cot_type, detail=detail), now_ms=NOW) == cot.Ignored(cot_type)


def test_tak_protobuf_mesh_and_stream() -> None:
    xml = event().decode()
    for version in (takproto.TAKProtoVer.MESH, takproto.TAKProtoVer.STREAM):
        message = cot.decode(bytes(takproto.xml2proto(xml, version)), now_ms=NOW)
        assert isinstance(message, cot.TakPosition)
        assert (message.uid, message.callsign, message.team) == ("ANDROID-4eb92ff46e615c21", "VIPER 1", "Cyan")
        assert (message.fix.lat, message.fix.lon, message.fix.battery, message.fix.speed) == (34.25, 117.2, 77.0,
                                                                                              1.4)


# ------------------------------------------------------------------ in: refusals
@pytest.mark.parametrize(("raw", "reason"), [
    (b"<event", "bad_xml"),
    (b"\xff\xfe<event/>", "bad_xml"),
    (event().replace(b"encoding='UTF-8'", b"encoding='U-TF-8'"), "bad_xml"),  # found by Hypothesis
    (b'<!DOCTYPE e [<!ENTITY a "aaaa">]><event>&a;</event>', "forbidden_xml"),
    (b"<chat/>", "not_event"),
    (event(point=""), "missing_field"),
    (event(point="<point lat='91' lon='117.2'/>"), "out_of_range"),
    (event(point="<point lat='34' lon='-180.5'/>"), "out_of_range"),
    (event(point="<point lat='NaN' lon='117.2'/>"), "bad_value"),
    (event(point="<point lat='34' lon='east'/>"), "bad_value"),
    (event(point="<point lon='117.2'/>"), "missing_field"),
    (event(point="<point lat='0' lon='0' hae='9999999.0' ce='9999999.0' le='9999999.0'/>"), "no_fix"),
    (event(detail="<detail><__group name='Cyan'/><status battery='140'/></detail>"), "out_of_range"),
    (event(detail="<detail><__group name='Cyan'/><track speed='fast' course='1'/></detail>"), "bad_value"),
    (event(time_ms=NOW + 3_600_000, stale_ms=NOW + 7_200_000), "bad_time"),
    (event(time_ms=NOW - 120_000, stale_ms=NOW - 60_000), "stale"),
    (event("fieldhub-unit-p-7"), "own_uid"),
    (event("bad\tuid"), "bad_text"),
    (event().replace(b"time='", b"time='yesterday"), "bad_time"),
    (event() + b" " * cot.MAX_EVENT_BYTES, "too_large"),
    (b"\xbf\x01\xbf\xff\xff\xff", "bad_proto"),
    (b"\xbf\x05\x12", "bad_proto"),
])
def test_refusals_carry_their_reason(raw: bytes, reason: str) -> None:
    assert refused(raw) == reason


# ------------------------------------------------------------------ out
def test_unit_round_trip() -> None:
    raw = cot.unit_event(UNIT, now_ms=NOW, stale_ms=NOW + 30_000)
    assert refused(raw) == "own_uid"  # our own event echoed back is never taken for a TAK user
    message = cot.decode(raw.replace(b"fieldhub-unit-p-7", b"other-7"), now_ms=NOW)
    assert isinstance(message, cot.TakPosition)
    assert (message.callsign, message.team, message.role, message.cot_type) == ("Patrol 7", "Blue", "Team Member",
                                                                               cot.UNIT_TYPE)
    fix = message.fix
    assert (fix.lat, fix.lon, fix.alt, fix.acc, fix.speed, fix.heading, fix.battery) == (
        34.2611, 117.1859, 41.0, 5.0, 8.3, 92.0, 64.0)
    root = DefusedET.fromstring(raw)
    assert (root.get("start"), root.get("stale")) == (stamp(NOW - 2000), stamp(NOW + 30_000))
    assert "station: North" in (root.findtext("detail/remarks") or "")


def test_incident_marker_and_its_removal() -> None:
    incident = IncidentReport("inc-1", "fire", "1", "open", 34.27, 117.19, "12 Huaihai Rd", "smoke")
    root = DefusedET.fromstring(cot.incident_event(incident, now_ms=NOW, stale_ms=NOW + 600_000))
    assert (root.get("uid"), root.get("type"), root.get("stale")) == ("fieldhub-incident-inc-1", cot.INCIDENT_TYPE,
                                                                     stamp(NOW + 600_000))
    assert root.findtext("detail/remarks") == ("category: fire\npriority: 1\nstatus: open\naddress: 12 Huaihai Rd\n"
                                               "smoke")
    closed = IncidentReport("inc-1", "fire", "1", "closed", 34.27, 117.19)
    root = DefusedET.fromstring(cot.incident_event(closed, now_ms=NOW, stale_ms=NOW + 600_000))
    assert root.get("stale") == root.get("time") == stamp(NOW)


def test_sos_is_atak_s_emergency_beacon() -> None:
    root = DefusedET.fromstring(cot.sos_event(UNIT, now_ms=NOW, stale_ms=NOW + 30_000))
    assert (root.get("uid"), root.get("type"), root.get("how")) == ("fieldhub-unit-p-7-9-1-1", "b-a-o-tbl", "h-e")
    assert root.find("detail/link").attrib == {"uid": "fieldhub-unit-p-7", "type": "a-f-G-U-C", "relation": "p-p"}
    assert (root.find("detail/emergency").get("type"), root.findtext("detail/emergency")) == ("911 Alert",
                                                                                              "Patrol 7")
    root = DefusedET.fromstring(cot.sos_event(UNIT, now_ms=NOW, stale_ms=NOW + 30_000, cancel=True))
    assert (root.get("type"), root.find("detail/emergency").get("cancel")) == ("b-a-o-can", "true")


def test_teams() -> None:
    assert cot.team_of("patrol", None) == ("Blue", "Team Member")
    assert cot.team_of("ambulance", "East") == ("Green", "Medic")
    team, role = cot.team_of("bicycle", "Station 3")
    assert team in cot.TEAMS and role == "Team Member" and cot.team_of("bicycle", "Station 3")[0] == team


def test_device_ids_are_valid_stable_and_distinct() -> None:
    ids = {cot.device_id_for(uid) for uid in ("ANDROID-1", "ANDROID/1", "ANDROID 1", "ANDROID_1", "x" * 300)}
    assert len(ids) == 5 and all(is_valid_id(i) and i.startswith("tak-") for i in ids)
    assert cot.device_id_for("ANDROID-1") == cot.device_id_for("ANDROID-1")


# ------------------------------------------------------------------ hostile input
def _decode_or_refuse(raw: bytes) -> cot.Message | None:
    try:
        message = cot.decode(raw, now_ms=NOW)
    except CodecError as exc:
        assert exc.reason in cot.REASONS and exc.reason != "internal", exc  # "internal" would be our defect
        return None
    if isinstance(message, cot.TakPosition):
        encode_fixes([message.fix])  # whatever is accepted is a fix the contract can carry and store
    return message


HOSTILE_TEXT = st.one_of(st.text(max_size=30), st.sampled_from(
    ["\x00", "\ud800", "NaN", "inf", "-1e999", "1e309", "9999999", "-0", "", " ", "&amp;", "&lt;x", "1" * 60,
     "2026-13-45T99:99:99Z", "0001-01-01T00:00:00+23:59", "\u202e", "<", "'\""]))


def _attr(value: str) -> str:
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;")
            .encode("utf-8", "surrogatepass").decode("utf-8", "replace"))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_refused_or_read(raw: bytes) -> None:
    _decode_or_refuse(raw)
    _decode_or_refuse(b"\xbf\x01\xbf" + raw)
    _decode_or_refuse(b"\xbf" + raw)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2000), st.binary(min_size=1, max_size=8), st.booleans())
def test_mangled_atak_reports_are_refused_or_read(at: int, junk: bytes, cut: bool) -> None:
    raw = event()
    at = at % len(raw)
    _decode_or_refuse(raw[:at] if cut else raw[:at] + junk + raw[at:])


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({name: HOSTILE_TEXT for name in (
    "uid", "type", "time", "stale", "lat", "lon", "hae", "ce", "callsign", "team", "battery", "speed", "course")}))
def test_hostile_field_values_are_refused_or_read(f: dict[str, str]) -> None:
    a = {k: _attr(v) for k, v in f.items()}
    raw = (f"<event version='2.0' uid='{a['uid']}' type='{a['type']}' time='{a['time']}' start='{a['time']}' "
           f"stale='{a['stale']}'><point lat='{a['lat']}' lon='{a['lon']}' hae='{a['hae']}' ce='{a['ce']}'/>"
           f"<detail><contact callsign='{a['callsign']}'/><__group name='{a['team']}' role='x'/>"
           f"<status battery='{a['battery']}'/><track speed='{a['speed']}' course='{a['course']}'/>"
           f"<link uid='{a['uid']}'/><emergency cancel='{a['team']}'>{a['callsign']}</emergency></detail></event>")
    _decode_or_refuse(raw.encode())
    _decode_or_refuse(raw.replace(f"type='{a['type']}'", "type='a-f-G-U-C'").encode())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), st.text(max_size=30))
def test_any_unit_name_makes_readable_xml(name: str, kind: str) -> None:
    report = UnitReport("u-1", name, kind or "x", 10.0, 20.0, NOW, station=name)
    for raw in (cot.unit_event(report, now_ms=NOW, stale_ms=NOW + 1000),
                cot.sos_event(report, now_ms=NOW, stale_ms=NOW + 1000)):
        DefusedET.fromstring(raw)
    message = cot.decode(cot.unit_event(report, now_ms=NOW, stale_ms=NOW + 1000).replace(
        b"fieldhub-unit-u-1", b"u-1"), now_ms=NOW)
    assert isinstance(message, cot.TakPosition)
