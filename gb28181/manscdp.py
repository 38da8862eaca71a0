"""MANSCDP bodies (GB/T 28181-2016 annex A, tolerant of 2022 devices): bytes from a device into typed values.

:func:`parse_body` is the only way in. It checks the size before anything else, decodes the text as the XML
declaration says (GB2312 is read as GB18030, its superset, because devices label GB18030 text GB2312), parses it
with ``defusedxml`` (no DTD, no entity) and picks the class by the root element and ``<CmdType>``. A body it
does not handle is an :class:`Unsupported` value, not an error; a body it refuses is a :class:`ManscdpError`
with a reason of :data:`REASONS`. Nothing else escapes. Pure: no I/O, time passed in as a UTC offset.

Reasons: ``too_large``, ``bad_encoding``, ``bad_xml``, ``forbidden_xml`` (a DTD or an entity), ``bad_root``,
``missing_field``, ``bad_value``, ``bad_device_id``, ``bad_text``, ``no_fix`` (a position of 0, 0),
``too_many_items``; the assembler adds ``too_many_assemblies``; ``internal`` is a defect of this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as DefusedET

from devices.bounds import storable_text
from devices.payloads import Fix
from gb28181.manscdp_fields import (
    DEFAULT_UTC_OFFSET_MIN,
    REASONS,
    ManscdpError,
    check_device_id,
    child_text,
    optional_text,
    read_coordinates,
    read_device_id,
    read_float,
    read_int,
    read_time,
    required_text,
)

__all__ = [
    "DEFAULT_UTC_OFFSET_MIN", "MAX_BODY_BYTES", "MAX_ITEMS_PER_PAGE", "REASONS", "Ack", "Alarm", "Body",
    "CatalogItem", "CatalogResponse", "DeviceInfoResponse", "Keepalive", "ManscdpError", "MobilePosition",
    "QueryRequest", "Unsupported", "decode_text", "parse_body", "to_fix",
]

MAX_BODY_BYTES: Final = 64 * 1024
MAX_ITEMS_PER_PAGE: Final = 1000
MAX_SN: Final = 2**63 - 1
ROOTS: Final = frozenset({"Notify", "Response", "Query", "Control"})

# The encoding a declaration names -> the codec that reads it. GB2312 and GBK texts are GB18030 texts.
_CODECS: Final = {"utf-8": "utf-8", "utf8": "utf-8", "gb2312": "gb18030", "gbk": "gb18030", "gb18030": "gb18030",
                  "cp936": "gb18030"}
_DECLARATION: Final = re.compile(rb"\s*<\?xml\b[^>]{0,200}?\?>")
_ENCODING: Final = re.compile(rb"""encoding\s*=\s*["']([^"']{0,40})["']""")
_BOM: Final = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Keepalive:
    device_id: str
    sn: int
    ok: bool  # Status "OK"; "ERROR" means the device is up but reports a fault


@dataclass(frozen=True, slots=True)
class MobilePosition:
    device_id: str
    sn: int
    ts_ms: int
    lon: float
    lat: float
    speed_kmh: float | None
    direction_deg: float | None  # clockwise from north, 0 <= d < 360
    altitude_m: float | None


@dataclass(frozen=True, slots=True)
class Alarm:
    """An alarm notification. An SOS is not dropped for its clock or its fix: those fields are then None."""

    device_id: str
    sn: int
    priority: int  # 1 (first level) .. 4
    method: int  # 1 phone, 2 device, 3 SMS, 4 GPS, 5 video, 6 device fault, 7 other
    ts_ms: int | None
    description: str | None
    lon: float | None
    lat: float | None
    alarm_type: int | None  # <Info><AlarmType>, its meaning depends on the method


@dataclass(frozen=True, slots=True)
class CatalogItem:
    device_id: str  # 20 digits, or the civil code of a region node (2, 4, 6 or 8 digits)
    name: str | None
    manufacturer: str | None
    model: str | None
    parent_id: str | None
    online: bool | None  # Status ON/OFF (2022: ONLINE/OFFLINE); None when absent or unknown
    lon: float | None
    lat: float | None


@dataclass(frozen=True, slots=True)
class CatalogResponse:
    """One page of a device's catalog; :class:`~gb28181.manscdp_catalog.CatalogAssembler` joins the pages."""

    device_id: str
    sn: int
    sum_num: int
    items: tuple[CatalogItem, ...]


@dataclass(frozen=True, slots=True)
class DeviceInfoResponse:
    device_id: str
    sn: int
    ok: bool  # <Result>; a device may answer ERROR without the other fields
    device_name: str | None
    manufacturer: str | None
    model: str | None
    firmware: str | None
    channels: int | None


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """A ``<Query>`` (what the hub sends; parsed back in tests and from platforms that query the hub)."""

    cmd_type: str
    device_id: str
    sn: int
    interval_s: int | None  # MobilePosition subscriptions only


@dataclass(frozen=True, slots=True)
class Ack:
    """A ``<Response>`` that only says OK or ERROR (alarm acknowledgment, device control)."""

    cmd_type: str
    device_id: str
    sn: int
    ok: bool


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A well-formed body this module does not handle; the fields are storable text, None when absent."""

    root: str
    cmd_type: str | None
    device_id: str | None
    sn: str | None


Body = Keepalive | MobilePosition | Alarm | CatalogResponse | DeviceInfoResponse | QueryRequest | Ack | Unsupported


# ------------------------------------------------------------------ decoding
def decode_text(raw: bytes) -> str:
    """The body as text, its XML declaration removed (the text is already decoded, expat must not re-decode it)."""
    if len(raw) > MAX_BODY_BYTES:
        raise ManscdpError("too_large", f"{len(raw)} bytes, more than {MAX_BODY_BYTES}")
    if raw.startswith(_BOM):
        raw = raw[len(_BOM):]
    declared: str | None = None
    declaration = _DECLARATION.match(raw)
    if declaration is not None:
        named = _ENCODING.search(declaration.group())
        if named is not None:
            label = named.group(1).decode("ascii", "replace").strip().lower()
            declared = _CODECS.get(label)
            if declared is None:
                raise ManscdpError("bad_encoding", f"encoding {storable_text(repr(label), 40)} is not supported")
        raw = raw[declaration.end():]
    # No declaration means UTF-8; devices that declare UTF-8 and send GBK are common enough to read as GB18030.
    for codec in (declared,) if declared == "gb18030" else ("utf-8", "gb18030"):
        try:
            return raw.decode(codec or "utf-8")
        except UnicodeDecodeError:
            continue
    raise ManscdpError("bad_encoding", f"the body is not valid {declared or 'UTF-8'} nor GB18030")


def _parse_xml(text: str) -> Element:
    try:
        root: Element = DefusedET.fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise ManscdpError("forbidden_xml", type(exc).__name__) from None
    except ParseError as exc:
        raise ManscdpError("bad_xml", str(exc)) from None
    return root


def parse_body(raw: bytes, *, utc_offset_min: int = DEFAULT_UTC_OFFSET_MIN) -> Body:
    """Parse one MANSCDP body; times without a zone are local at ``utc_offset_min`` east of UTC (default +08:00).

    Returns a value of :data:`Body` or raises :class:`ManscdpError`; any other exception is a defect, turned
    into reason ``internal`` so that one body never stops the gateway.
    """
    try:
        return _parse(raw, utc_offset_min)
    except ManscdpError:
        raise
    except Exception as exc:  # contained: a body is refused, the caller's loop goes on
        raise ManscdpError("internal", f"{type(exc).__name__}: {exc}") from exc


def _parse(raw: bytes, utc_offset_min: int) -> Body:
    root = _parse_xml(decode_text(raw))
    if root.tag not in ROOTS:
        raise ManscdpError("bad_root", f"root element {storable_text(repr(root.tag), 40)}")
    cmd = required_text(root, "CmdType", 64)
    handler = _HANDLERS.get((root.tag, cmd))
    if handler is None:
        return Unsupported(root.tag, cmd, _loose(root, "DeviceID"), _loose(root, "SN"))
    return handler(root, utc_offset_min)


def _loose(root: Element, tag: str) -> str | None:
    text = child_text(root, tag)
    return None if text is None else storable_text(text, 64)


def _sn(root: Element) -> int:
    sn = read_int(root, "SN", 0, MAX_SN)
    assert sn is not None  # required
    return sn


def _result(root: Element) -> bool:
    """<Result> OK/ERROR; absent means OK (a DeviceInfo answer of a 2016 device may leave it out)."""
    text = child_text(root, "Result")
    if text is None or text.upper() == "OK":
        return True
    if text.upper() == "ERROR":
        return False
    raise ManscdpError("bad_value", f"<Result> {storable_text(repr(text), 40)} is not OK or ERROR")


def _keepalive(root: Element, _offset: int) -> Keepalive:
    status = required_text(root, "Status", 16).upper()
    if status not in ("OK", "ERROR"):
        raise ManscdpError("bad_value", f"<Status> {storable_text(repr(status), 40)} is not OK or ERROR")
    return Keepalive(read_device_id(root), _sn(root), status == "OK")


def _mobile_position(root: Element, offset: int) -> MobilePosition:
    device_id, sn = read_device_id(root), _sn(root)
    ts_ms = read_time(root, "Time", offset)
    position = read_coordinates(root, required=True)
    assert ts_ms is not None and position is not None  # required
    speed = read_float(root, "Speed", 0.0, 999.999, required=False)
    direction = read_float(root, "Direction", 0.0, 360.0, required=False)
    altitude = read_float(root, "Altitude", -1000.0, 100_000.0, required=False)
    if direction == 360.0:
        direction = 0.0
    return MobilePosition(device_id, sn, ts_ms, position[0], position[1], speed, direction, altitude)


def _alarm(root: Element, offset: int) -> Alarm:
    device_id, sn = read_device_id(root), _sn(root)
    priority = read_int(root, "AlarmPriority", 1, 4)
    method = read_int(root, "AlarmMethod", 1, 7)
    assert priority is not None and method is not None  # required
    try:
        ts_ms = read_time(root, "AlarmTime", offset, required=False)
    except ManscdpError:
        ts_ms = None  # a device with a wrong clock still raised an alarm
    try:
        position = read_coordinates(root, required=False)
    except ManscdpError:
        position = None
    info = root.find("Info")
    alarm_type = None if info is None else read_int(info, "AlarmType", 0, 99_999, required=False)
    description = optional_text(root, "AlarmDescription", 1024)
    lon, lat = position if position is not None else (None, None)
    return Alarm(device_id, sn, priority, method, ts_ms, description, lon, lat, alarm_type)


_CIVIL_CODE: Final = re.compile(r"[0-9]{2}|[0-9]{4}|[0-9]{6}|[0-9]{8}")
_ONLINE: Final = {"ON": True, "ONLINE": True, "OFF": False, "OFFLINE": False}


def _catalog_item(item: Element) -> CatalogItem:
    item_id = required_text(item, "DeviceID", 64)
    if _CIVIL_CODE.fullmatch(item_id) is None:
        check_device_id(item_id, "<Item><DeviceID>")
    parent = child_text(item, "ParentID")
    try:
        position = read_coordinates(item, required=False)
    except ManscdpError:
        position = None  # a channel with a garbled position is still a channel
    status = child_text(item, "Status")
    lon, lat = position if position is not None else (None, None)
    return CatalogItem(
        item_id, optional_text(item, "Name"), optional_text(item, "Manufacturer"), optional_text(item, "Model"),
        None if parent is None else storable_text(parent, 64),
        None if status is None else _ONLINE.get(status.upper()), lon, lat,
    )


def _catalog(root: Element, _offset: int) -> CatalogResponse:
    device_id, sn = read_device_id(root), _sn(root)
    sum_num = read_int(root, "SumNum", 0, 1_000_000)
    assert sum_num is not None  # required
    listing = root.find("DeviceList")
    elements = [] if listing is None else listing.findall("Item")
    if len(elements) > MAX_ITEMS_PER_PAGE:
        raise ManscdpError("too_many_items", f"{len(elements)} items in one page, more than {MAX_ITEMS_PER_PAGE}")
    if len(elements) > sum_num:
        raise ManscdpError("bad_value", f"{len(elements)} items in one page of a catalog of {sum_num}")
    return CatalogResponse(device_id, sn, sum_num, tuple(_catalog_item(e) for e in elements))


def _device_info(root: Element, _offset: int) -> DeviceInfoResponse:
    return DeviceInfoResponse(
        read_device_id(root), _sn(root), _result(root), optional_text(root, "DeviceName"),
        optional_text(root, "Manufacturer"), optional_text(root, "Model"), optional_text(root, "Firmware"),
        read_int(root, "Channel", 0, 100_000, required=False),
    )


def _query(root: Element, _offset: int) -> QueryRequest:
    cmd = required_text(root, "CmdType", 64)
    interval = read_int(root, "Interval", 1, 86_400, required=False) if cmd == "MobilePosition" else None
    return QueryRequest(cmd, read_device_id(root), _sn(root), interval)


def _ack(root: Element, _offset: int) -> Ack:
    return Ack(required_text(root, "CmdType", 64), read_device_id(root), _sn(root), _result(root))


_HANDLERS: Final[dict[tuple[str, str], Callable[[Element, int], Body]]] = {
    ("Notify", "Keepalive"): _keepalive,
    ("Notify", "MobilePosition"): _mobile_position,
    ("Notify", "Alarm"): _alarm,
    ("Response", "Catalog"): _catalog,
    ("Response", "DeviceInfo"): _device_info,
    ("Response", "Alarm"): _ack,
    ("Response", "DeviceControl"): _ack,
    ("Query", "Catalog"): _query,
    ("Query", "DeviceInfo"): _query,
    ("Query", "MobilePosition"): _query,
}


# ------------------------------------------------------------------ conversion
def to_fix(position: MobilePosition) -> Fix:
    """The hub's fix of a position: speed km/h -> m/s, heading in degrees, the SN kept as the sequence number."""
    speed = None if position.speed_kmh is None else position.speed_kmh / 3.6
    return Fix(ts=position.ts_ms, lat=position.lat, lon=position.lon, alt=position.altitude_m, speed=speed,
               heading=position.direction_deg, seq=position.sn)
