"""Cursor-on-Target events: the hub's units, incidents and SOS as CoT XML out, TAK users' events parsed in.

Out: a unit is a friendly ground unit ``a-f-G-U-C`` (uid ``fieldhub-unit-<unit_id>``, ``<contact callsign>`` its
name, ``<__group name role>`` a TAK team from its kind or station, ``<status battery>``, ``<track speed course>``);
an incident a point ``a-n-X-i`` (CoT's "Other/Incident", uid ``fieldhub-incident-<id>``, remarks with category,
priority, status, address), sent with ``stale`` = now once closed so the clients drop it; an SOS ATAK's emergency
beacon ``b-a-o-tbl`` ("911 Alert", uid ``<unit uid>-9-1-1``, ``<link>`` to the unit, ``<emergency>``) and its end
``b-a-o-can`` (``<emergency cancel="true">``).

In: :func:`decode` reads one event, XML (with defusedxml: no DTD, no entities) or TAK Protocol v1 protobuf (mesh
``bf 01 bf`` or stream ``bf``): a friendly atom with ``__group`` or ``takv`` (a TAK user's own report) becomes a
:class:`TakPosition` holding a Fix, an emergency beacon a :class:`TakEmergency`, anything else (chat, markers,
pings) :class:`Ignored`. A refusal is a :class:`~hub.gateways.errors.CodecError` with one of :data:`REASONS`;
nothing else escapes :func:`decode`.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from xml.etree.ElementTree import Element, ParseError, SubElement, tostring

import defusedxml
import defusedxml.ElementTree as DefusedET

from devices.bounds import show, storable_text
from devices.fields import MAX_FUTURE_SKEW_MS
from devices.payloads import Fix
from hub.gateways.errors import CodecError
from hub.gateways.readings import check_time, contained, iso_time_ms

__all__ = [
    "INCIDENT_TYPE", "MAX_EVENT_BYTES", "OWN_UID_PREFIX", "REASONS", "SOS_CANCEL_TYPE", "SOS_TYPE", "UNIT_TYPE",
    "Ignored", "IncidentReport", "Message", "TakEmergency", "TakPosition", "UnitReport", "decode",
    "device_id_for", "incident_event", "sos_event", "team_of", "unit_event", "unit_uid",
]

# forbidden_xml: a DTD or entity. bad_proto: a TAK protobuf that does not parse. no_fix: the client has no position
# (ATAK sends 0,0 with unknown error). own_uid: our own event echoed back (multicast loops). internal: our defect.
REASONS: Final = frozenset({"too_large", "bad_xml", "forbidden_xml", "bad_proto", "not_event", "missing_field",
                            "bad_value", "out_of_range", "bad_time", "bad_text", "no_fix", "stale", "own_uid",
                            "internal"})
MAX_EVENT_BYTES: Final = 32 * 1024  # an ATAK position report is about 1 KB
OWN_UID_PREFIX: Final = "fieldhub-"
UNIT_TYPE: Final = "a-f-G-U-C"
INCIDENT_TYPE: Final = "a-n-X-i"
SOS_TYPE: Final = "b-a-o-tbl"
SOS_CANCEL_TYPE: Final = "b-a-o-can"
UNKNOWN: Final = 9_999_999.0  # CoT's "not known" for hae, ce and le
_EMERGENCY_TYPES: Final = frozenset({"b-a-o-tbl", "b-a-o-pan", "b-a-o-opn", "b-a-o-c", "b-a-g", SOS_CANCEL_TYPE})
# TAK's team colours, and the one each kind of unit shows as; other kinds get one from their station.
TEAMS: Final = ("White", "Yellow", "Orange", "Magenta", "Red", "Maroon", "Purple", "Dark Blue", "Blue", "Cyan",
                "Teal", "Green", "Dark Green", "Brown")
_KIND_TEAMS: Final = {"patrol": "Blue", "foot": "Cyan", "vehicle": "Dark Blue", "drone": "Purple", "fire": "Red",
                      "ambulance": "Green", "medic": "Green", "traffic": "Yellow", "k9": "Brown"}
_KIND_ROLES: Final = {"ambulance": "Medic", "medic": "Medic", "k9": "K9", "drone": "Forward Observer",
                      "command": "HQ"}
_XML_UNSAFE: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_UID_TEXT: Final = re.compile(r"[^\x21-\x7e\u00a0-\ud7ff\ue000-\ufffd]")
_ID_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.-]+")
_MESH_HEADER: Final = b"\xbf\x01\xbf"


# ------------------------------------------------------------------ out: the hub's view as CoT
@dataclass(frozen=True, slots=True)
class UnitReport:
    """A unit's last position as the feed sends it (see the gateway's docstring for the dict it comes from)."""

    unit_id: str
    name: str
    kind: str
    lat: float
    lon: float
    ts: int
    station: str | None = None
    status: str | None = None
    alt: float | None = None
    acc: float | None = None
    speed: float | None = None  # m/s
    heading: float | None = None
    battery: float | None = None


@dataclass(frozen=True, slots=True)
class IncidentReport:
    incident_id: str
    category: str
    priority: str
    status: str  # "closed" removes the marker
    lat: float
    lon: float
    address: str | None = None
    summary: str | None = None


def unit_uid(unit_id: str) -> str:
    return f"{OWN_UID_PREFIX}unit-{unit_id}"


def team_of(kind: str, station: str | None) -> tuple[str, str]:
    """The TAK team (``__group`` name) and role a unit shows as: its kind's colour, else one its station picks."""
    team = _KIND_TEAMS.get(kind.lower())
    if team is None:
        key = (station or kind).encode("utf-8", "surrogatepass")
        team = TEAMS[int.from_bytes(hashlib.sha256(key).digest()[:2], "big") % len(TEAMS)]
    return team, _KIND_ROLES.get(kind.lower(), "Team Member")


def unit_event(unit: UnitReport, *, now_ms: int, stale_ms: int) -> bytes:
    uid = unit_uid(unit.unit_id)
    event = _event(uid, UNIT_TYPE, "m-g", now_ms, unit.ts, stale_ms)
    _point(event, unit.lat, unit.lon, unit.alt, unit.acc)
    detail = SubElement(event, "detail")
    SubElement(detail, "contact", callsign=_text(unit.name, 80))
    team, role = team_of(unit.kind, unit.station)
    SubElement(detail, "__group", name=team, role=role)
    SubElement(detail, "precisionlocation", geopointsrc="GPS", altsrc="GPS" if unit.alt is not None else "???")
    if unit.battery is not None:
        SubElement(detail, "status", battery=str(round(unit.battery)))
    if unit.speed is not None or unit.heading is not None:
        SubElement(detail, "track", speed=f"{unit.speed or 0.0:.1f}", course=f"{unit.heading or 0.0:.1f}")
    parts = [f"{k}: {v}" for k, v in (("kind", unit.kind), ("station", unit.station), ("status", unit.status)) if v]
    SubElement(detail, "remarks").text = _text("; ".join(parts), 400)
    return _serialize(event)


def incident_event(incident: IncidentReport, *, now_ms: int, stale_ms: int) -> bytes:
    """The incident's marker; a closed incident's event is stale now, so the clients drop it."""
    closed = incident.status == "closed"
    event = _event(f"{OWN_UID_PREFIX}incident-{incident.incident_id}", INCIDENT_TYPE, "h-e", now_ms, now_ms,
                   now_ms if closed else stale_ms)
    _point(event, incident.lat, incident.lon, None, None)
    detail = SubElement(event, "detail")
    SubElement(detail, "contact", callsign=_text(f"{incident.category} {incident.incident_id}", 80))
    lines = [f"category: {incident.category}", f"priority: {incident.priority}", f"status: {incident.status}"]
    if incident.address:
        lines.append(f"address: {incident.address}")
    if incident.summary:
        lines.append(incident.summary)
    SubElement(detail, "remarks").text = _text("\n".join(lines), 2000)
    return _serialize(event)


def sos_event(unit: UnitReport, *, now_ms: int, stale_ms: int, cancel: bool = False) -> bytes:
    """ATAK's emergency beacon for ``unit`` (``b-a-o-tbl``), or its cancellation (``b-a-o-can``)."""
    uid = unit_uid(unit.unit_id)
    event = _event(f"{uid}-9-1-1", SOS_CANCEL_TYPE if cancel else SOS_TYPE, "h-e", now_ms, now_ms, stale_ms)
    _point(event, unit.lat, unit.lon, unit.alt, unit.acc)
    detail = SubElement(event, "detail")
    callsign = _text(unit.name, 80)
    if cancel:
        SubElement(detail, "emergency", cancel="true").text = callsign
    else:
        SubElement(detail, "link", uid=uid, type=UNIT_TYPE, relation="p-p")
        SubElement(detail, "contact", callsign=callsign)
        SubElement(detail, "emergency", type="911 Alert").text = callsign
    return _serialize(event)


def _event(uid: str, cot_type: str, how: str, now_ms: int, start_ms: int, stale_ms: int) -> Element:
    return Element("event", version="2.0", uid=_text(uid, 200), type=cot_type, how=how, time=_cot_time(now_ms),
                   start=_cot_time(start_ms), stale=_cot_time(stale_ms))


def _point(event: Element, lat: float, lon: float, alt: float | None, acc: float | None) -> None:
    SubElement(event, "point", lat=f"{lat:.7f}", lon=f"{lon:.7f}", hae=f"{UNKNOWN if alt is None else alt:.1f}",
               ce=f"{UNKNOWN if acc is None else acc:.1f}", le=f"{UNKNOWN:.1f}")


def _serialize(event: Element) -> bytes:
    body: bytes = tostring(event, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>' + body


def _cot_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _text(value: str, limit: int) -> str:
    """Text XML 1.0 can carry: a control character in a unit's name must not make the whole event unreadable."""
    return _XML_UNSAFE.sub("\ufffd", value[:limit])


# ------------------------------------------------------------------ in: TAK users' events
@dataclass(frozen=True, slots=True)
class TakPosition:
    uid: str
    callsign: str
    team: str | None
    role: str | None
    cot_type: str
    fix: Fix


@dataclass(frozen=True, slots=True)
class TakEmergency:
    user_uid: str  # the user whose beacon it is (the <link>, else the uid without "-9-1-1")
    callsign: str | None
    cot_type: str
    cancel: bool
    ts: int
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Ignored:
    cot_type: str


Message = TakPosition | TakEmergency | Ignored


def device_id_for(uid: str) -> str:
    """The hub's device id of the TAK user ``uid``: ``tak-`` + the uid's safe characters + a hash of the whole uid,
    stable and distinct for uids that differ only in characters the id cannot hold."""
    digest = hashlib.sha256(uid.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    slug = _ID_UNSAFE.sub("_", uid)[:48].strip("_.-")
    return f"tak-{slug}-{digest}" if slug else f"tak-{digest}"


@dataclass(slots=True)
class _Cot:
    """The fields of one event the hub reads, from XML or protobuf alike."""

    uid: str
    cot_type: str
    time_ms: int
    stale_ms: int
    lat: float
    lon: float
    hae: float
    ce: float
    is_user: bool = False  # has __group or takv: a TAK client's own report
    callsign: str | None = None
    team: str | None = None
    role: str | None = None
    battery: float = UNKNOWN  # UNKNOWN when not reported, as hae and ce
    speed: float = UNKNOWN
    course: float = UNKNOWN
    link_uid: str | None = None
    emergency_cancel: bool = False


@contained
def decode(raw: bytes, *, now_ms: int, max_future_ms: int = MAX_FUTURE_SKEW_MS,
           own_prefix: str = OWN_UID_PREFIX) -> Message:
    """One CoT event from the network (XML, or TAK protobuf mesh/stream); ``now_ms`` is the hub's clock."""
    if len(raw) > MAX_EVENT_BYTES:
        raise CodecError("too_large", f"{len(raw)} bytes > {MAX_EVENT_BYTES}")
    cot = _from_proto(raw) if raw[:1] == b"\xbf" else _from_xml(raw)
    if cot.uid.startswith(own_prefix):
        raise CodecError("own_uid", f"our own event {show(cot.uid)}")
    check_time(cot.time_ms, now_ms, max_future_ms)
    if cot.stale_ms < now_ms:
        raise CodecError("stale", f"stale {now_ms - cot.stale_ms} ms ago")
    if cot.cot_type in _EMERGENCY_TYPES:
        cancel = cot.cot_type == SOS_CANCEL_TYPE or cot.emergency_cancel
        user = cot.link_uid or cot.uid.removesuffix("-9-1-1")
        return TakEmergency(user, cot.callsign, cot.cot_type, cancel, cot.time_ms, cot.lat, cot.lon)
    if cot.cot_type.startswith("a-f-") and cot.is_user:
        return _position(cot)
    return Ignored(cot.cot_type[:40])


def _position(cot: _Cot) -> TakPosition:
    if cot.lat == 0.0 and cot.lon == 0.0 and cot.ce >= UNKNOWN:
        raise CodecError("no_fix", "the client reports no position (0, 0)")
    fix = Fix(ts=cot.time_ms, lat=cot.lat, lon=cot.lon,
              alt=_reading("hae", cot.hae, -1000.0, 100_000.0), acc=_reading("ce", cot.ce, 0.0, 1_000_000.0),
              speed=_reading("speed", cot.speed, 0.0, 1000.0), heading=_reading("course", cot.course, 0.0, 360.0),
              battery=_reading("battery", cot.battery, 0.0, 100.0), attrs={"tak_uid": cot.uid})
    return TakPosition(cot.uid, cot.callsign or cot.uid, cot.team, cot.role, cot.cot_type, fix)


def _reading(name: str, value: float, low: float, high: float) -> float | None:
    """An optional reading: unknown (CoT's 9999999, or negative) is None; otherwise within its range."""
    if value >= UNKNOWN or value < 0 <= low:
        return None
    if not low <= value <= high:
        raise CodecError("out_of_range", f"{name}={value!r} is outside [{low}, {high}]")
    return value


def _from_xml(raw: bytes) -> _Cot:
    try:
        root: Element = DefusedET.fromstring(raw.lstrip(), forbid_dtd=True, forbid_entities=True,
                                             forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise CodecError("forbidden_xml", type(exc).__name__) from None
    except (ParseError, UnicodeError, ValueError, LookupError) as exc:  # LookupError: an unknown encoding
        raise CodecError("bad_xml", storable_text(str(exc), 120)) from None
    if root.tag != "event":
        raise CodecError("not_event", f"root element {show(root.tag, 40)}")
    point = root.find("point")
    if point is None:
        raise CodecError("missing_field", "point")
    cot = _Cot(uid=_uid(_attr(root, "uid")), cot_type=_kind(_attr(root, "type")),
               time_ms=iso_time_ms(_attr(root, "time")),
               stale_ms=iso_time_ms(_attr(root, "stale")), lat=_coord(point, "lat", 90.0),
               lon=_coord(point, "lon", 180.0), hae=_float(point, "hae"), ce=_float(point, "ce"))
    if (detail := root.find("detail")) is not None:
        _read_detail(cot, detail)
    return cot


def _read_detail(cot: _Cot, detail: Element) -> None:
    contact, group, link = detail.find("contact"), detail.find("__group"), detail.find("link")
    cot.is_user = group is not None or detail.find("takv") is not None
    if contact is not None and contact.get("callsign"):
        cot.callsign = _label(contact.get("callsign", ""))
    if group is not None:
        cot.team, cot.role = _label(group.get("name") or "") or None, _label(group.get("role") or "") or None
    status, track, emergency = detail.find("status"), detail.find("track"), detail.find("emergency")
    if status is not None:
        cot.battery = _float(status, "battery")
    if track is not None:
        cot.speed, cot.course = _float(track, "speed"), _float(track, "course")
    if link is not None and link.get("uid"):
        cot.link_uid = _uid(link.get("uid", ""))
    if emergency is not None:
        cot.emergency_cancel = (emergency.get("cancel") or "").lower() == "true"
        cot.callsign = cot.callsign or _label(emergency.text or "") or None


def _from_proto(raw: bytes) -> _Cot:
    import takproto  # the protobuf classes load only when a client speaks TAK protocol

    try:
        message: Any = takproto.parse_mesh(raw) if raw.startswith(_MESH_HEADER) else takproto.parse_stream(raw)
    except Exception as exc:  # protobuf's DecodeError, or a varint that runs past the end
        raise CodecError("bad_proto", f"{type(exc).__name__}") from None
    if message is None or not message.HasField("cotEvent"):
        raise CodecError("missing_field", "cotEvent")
    ev, det = message.cotEvent, message.cotEvent.detail
    cot = _Cot(uid=_uid(ev.uid), cot_type=_kind(ev.type), time_ms=int(ev.sendTime), stale_ms=int(ev.staleTime),
               lat=_in_range("lat", _finite(ev.lat, "lat"), 90.0), lon=_in_range("lon", _finite(ev.lon, "lon"), 180.0),
               hae=_finite(ev.hae, "hae"), ce=_finite(ev.ce, "ce"),
               is_user=bool(det.group.name or det.takv.platform or det.takv.device))
    cot.callsign = _label(det.contact.callsign) or None
    cot.team, cot.role = _label(det.group.name) or None, _label(det.group.role) or None
    cot.battery = float(det.status.battery) if det.status.battery else UNKNOWN
    if det.HasField("track"):
        cot.speed, cot.course = _finite(det.track.speed, "speed"), _finite(det.track.course, "course")
    return cot


def _attr(element: Element, name: str) -> str:
    value = element.get(name)
    if value is None or not value.strip():
        raise CodecError("missing_field", f"{element.tag}/@{name}")
    return value


def _uid(value: str) -> str:
    if not value or len(value) > 200 or _UID_TEXT.search(value):
        raise CodecError("bad_text", f"uid {show(value, 60)} must be 1-200 printable characters")
    return value


def _kind(value: str) -> str:
    if not value or len(value) > 80 or not value.isascii() or not value.isprintable():
        raise CodecError("bad_value", f"type {show(value, 60)}")
    return value


def _label(value: str) -> str:
    """A callsign or team name as the hub keeps it: storable, printable, short."""
    return "".join(ch for ch in storable_text(value, 80) if ch.isprintable()).strip()


def _float(element: Element, name: str, default: float = UNKNOWN) -> float:
    value = element.get(name)
    if value is None or not value.strip():
        return default
    try:
        return _finite(float(value) if len(value) <= 40 else math.nan, name)
    except ValueError:
        raise CodecError("bad_value", f"{name}={show(value, 40)} is not a number") from None


def _finite(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise CodecError("bad_value", f"{name} is not finite")
    return float(value)


def _coord(point: Element, name: str, limit: float) -> float:
    _attr(point, name)  # required
    return _in_range(name, _float(point, name), limit)


def _in_range(name: str, value: float, limit: float) -> float:
    if not -limit <= value <= limit:
        raise CodecError("out_of_range", f"{name}={value!r} is outside [{-limit}, {limit}]")
    return value
