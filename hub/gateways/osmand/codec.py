"""OsmAnd protocol as Traccar Client speaks it (traccar.org/osmand), and Traccar server's position forwarding.

Three forms, each into a :class:`Report` (the device's id and its Fix):

* **Query / form** (:func:`decode_query`): ``id`` or ``deviceid``, ``lat``/``lon`` or ``location=lat,lon``,
  ``timestamp`` (epoch seconds, epoch ms - Traccar's rule: below 2^31 is seconds - ISO 8601, or
  ``yyyy-MM-dd HH:mm:ss`` read as UTC), ``speed`` in **knots**, ``bearing``/``heading``, ``altitude``,
  ``accuracy``, ``batt`` (percent), ``hdop`` and ``charge`` kept as attributes, ``valid=false`` refused
  (``invalid_fix``). No timestamp: the hub's time, if given. Other parameters are ignored.
* **JSON** of Traccar Client 9+ (:func:`decode_json`): ``{"device_id", "location": {"timestamp" (ISO),
  "coords": {latitude, longitude, accuracy, speed (m/s), heading, altitude}, "battery": {"level" 0..1,
  "is_charging"}, ...}}``; the SDK's -1 for an unknown reading is read as absent.
* **Traccar forwarding** (:func:`decode_forward`): ``{"position": {fixTime, latitude, longitude, altitude,
  speed (knots), course, accuracy, valid, attributes: {batteryLevel, sat, hdop...}}, "device": {uniqueId, name}}``.

The device's own secret is not part of the app's protocol: the hub's convention is a ``key`` parameter in the
server URL configured in the app (the app keeps the URL's query), read by :func:`secret_of`. Every refusal is a
:class:`~hub.gateways.errors.CodecError`; nothing else escapes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

from devices.bounds import show, storable_text
from devices.payloads import Fix
from devices.topics import is_valid_id
from geo.gcj02 import Datum
from hub.gateways.errors import CodecError
from hub.gateways.readings import (
    MAX_FUTURE_SKEW_MS,
    MAX_PAYLOAD_BYTES,
    check_time,
    contained,
    iso_time_ms,
    json_object,
    number,
    position,
    required_number,
    text,
)

__all__ = ["KNOT", "MAX_PARAMS", "MAX_PAYLOAD_BYTES", "Report", "decode_forward", "decode_json", "decode_query",
           "secret_of"]

KNOT: Final = 1852 / 3600  # m/s
MAX_PARAMS: Final = 64
_DECIMAL: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,3})?")
_INTEGER: Final = re.compile(r"\d{1,15}")
_MAX_NUMBER_TEXT: Final = 32
_SECONDS_BELOW: Final = 2**31 - 1  # Traccar's rule: an epoch below Integer.MAX_VALUE is seconds, else ms
# Query parameters read as one value each (a second copy is refused, not silently picked).
_SINGLE: Final = ("id", "deviceid", "lat", "lon", "location", "timestamp", "speed", "bearing", "heading",
                  "altitude", "accuracy", "batt", "hdop", "valid", "charge", "key")


@dataclass(frozen=True, slots=True)
class Report:
    device_id: str  # the app's identifier (Traccar's uniqueId), a valid hub id
    fix: Fix
    name: str | None = None  # the device's name in Traccar (forwarding only)


def _device_id(value: Any, name: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)  # a JSON number id is the same id as its digits
    if not isinstance(value, str):
        raise CodecError("wrong_type", f"{name} must be a string")
    if not is_valid_id(value):
        raise CodecError("bad_id", f"{name} {show(value)} must be 1-64 of A-Z a-z 0-9 _ . - (first a letter or digit)")
    return value


# ------------------------------------------------------------------ query / form
def _params(query: str | bytes) -> dict[str, str]:
    if len(query) > MAX_PAYLOAD_BYTES:
        raise CodecError("too_large", f"{len(query)} bytes > {MAX_PAYLOAD_BYTES}")
    if isinstance(query, bytes):
        try:
            query = query.decode("utf-8")
        except UnicodeDecodeError:
            raise CodecError("bad_value", "the query is not UTF-8") from None
    query = query.split("?", 1)[1] if "?" in query else query  # a whole request target "/?id=..." is fine
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=MAX_PARAMS)
    except ValueError:
        raise CodecError("too_large", f"more than {MAX_PARAMS} parameters") from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in _SINGLE and key in params:
            raise CodecError("bad_value", f"parameter {show(key)} given twice")
        params.setdefault(key, value)
    return params


def secret_of(query: str | bytes) -> str | None:
    """The device's secret (``key`` parameter) in a request's query, if any."""
    return _params(query).get("key")


def _decimal(params: dict[str, str], name: str, low: float, high: float) -> float | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    # float() also reads "nan", "inf" and "1_0"; the apps write plain decimals only.
    if len(raw) > _MAX_NUMBER_TEXT or not _DECIMAL.fullmatch(raw.strip()):
        raise CodecError("bad_value", f"{name} is not a number: {show(raw)}")
    value = float(raw)
    if not math.isfinite(value) or not low <= value <= high:
        raise CodecError("out_of_range", f"{name}={raw} is outside [{low}, {high}]")
    return value


def _query_time(raw: str | None, now_ms: int | None) -> int:
    if raw is None or raw == "":
        if now_ms is None:
            raise CodecError("missing_field", "timestamp")
        return now_ms  # Traccar too takes its own time when the app sends none
    if _INTEGER.fullmatch(raw):
        epoch = int(raw)
        return epoch * 1000 if epoch < _SECONDS_BELOW else epoch
    if _DECIMAL.fullmatch(raw) and len(raw) <= _MAX_NUMBER_TEXT:
        seconds = float(raw)  # fractional epoch seconds
        if not 0 <= seconds < _SECONDS_BELOW:
            raise CodecError("bad_time", f"timestamp {show(raw)} is not epoch seconds")
        return round(seconds * 1000)
    return iso_time_ms(raw)


def _bool(params: dict[str, str], name: str) -> bool | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise CodecError("bad_value", f"{name} must be true, false, 1 or 0, got {show(raw)}")


def _query_position(params: dict[str, str]) -> tuple[float, float]:
    if "location" in params and "lat" not in params:
        parts = params["location"].split(",")
        if len(parts) != 2:
            raise CodecError("bad_value", "location must be lat,lon")
        params = {**params, "lat": parts[0], "lon": parts[1]}
    lat = _decimal(params, "lat", -90.0, 90.0)
    lon = _decimal(params, "lon", -180.0, 180.0)
    if lat is None or lon is None:
        raise CodecError("missing_field", "lat" if lat is None else "lon")
    return lat, lon


@contained
def decode_query(query: str | bytes, *, datum: Datum = "wgs84", now_ms: int | None = None,
                 max_future_ms: int = MAX_FUTURE_SKEW_MS) -> Report:
    """A query string or form body (``id=...&lat=...``), or a whole request target ``/?id=...``."""
    params = _params(query)
    raw_id = params.get("id", params.get("deviceid"))
    if raw_id is None:
        raise CodecError("missing_field", "id")
    device_id = _device_id(raw_id, "id")
    if _bool(params, "valid") is False:
        raise CodecError("invalid_fix", "the app marked the position invalid")
    lat, lon = position(*_query_position(params), datum)
    ts = check_time(_query_time(params.get("timestamp"), now_ms), now_ms, max_future_ms)
    speed = _decimal(params, "speed", 0.0, 1000.0 / KNOT)
    heading = _decimal(params, "bearing", 0.0, 360.0)
    attrs = {"hdop": _decimal(params, "hdop", 0.0, 100.0), "charge": _bool(params, "charge")}
    fix = Fix(
        ts=ts, lat=lat, lon=lon,
        alt=_decimal(params, "altitude", -1000.0, 100_000.0),
        acc=_decimal(params, "accuracy", 0.0, 1_000_000.0),
        speed=None if speed is None else speed * KNOT,
        heading=heading if heading is not None else _decimal(params, "heading", 0.0, 360.0),
        battery=_decimal(params, "batt", 0.0, 100.0),
        attrs={k: v for k, v in attrs.items() if v is not None} or None,
    )
    return Report(device_id, fix)


# ------------------------------------------------------------------ JSON (Traccar Client 9+)
def _member(obj: dict[str, Any], name: str, required: bool = False) -> dict[str, Any]:
    value = obj.get(name)
    if value is None:
        if required:
            raise CodecError("missing_field", name)
        return {}
    if not isinstance(value, dict):
        raise CodecError("wrong_type", f"{name} must be an object")
    return value


def _iso(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name)
    if value is None:
        raise CodecError("missing_field", name)
    if not isinstance(value, str):
        raise CodecError("wrong_type", f"{name} must be an ISO 8601 string")
    return iso_time_ms(value)


@contained
def decode_json(raw: bytes, *, datum: Datum = "wgs84", now_ms: int | None = None,
                max_future_ms: int = MAX_FUTURE_SKEW_MS) -> Report:
    """The JSON body Traccar Client 9+ posts (its background-location SDK's location object)."""
    obj = json_object(raw, "a Traccar Client location")
    if obj.get("device_id") is None:
        raise CodecError("missing_field", "device_id")
    device_id = _device_id(obj["device_id"], "device_id")
    location = _member(obj, "location", required=True)
    coords = _member(location, "coords", required=True)
    ts = check_time(_iso(location, "timestamp"), now_ms, max_future_ms)
    lat, lon = position(required_number(coords, "latitude", -90.0, 90.0),
                        required_number(coords, "longitude", -180.0, 180.0), datum)
    battery = _member(location, "battery")
    level = number(battery, "level", 0.0, 1.0, negative_is_unknown=True)
    charging = battery.get("is_charging")
    attrs: dict[str, Any] = {"charge": charging if isinstance(charging, bool) else None,
                             "moving": location.get("is_moving") if isinstance(location.get("is_moving"), bool)
                             else None,
                             "activity": text(_member(location, "activity"), "type", 32)}
    fix = Fix(
        ts=ts, lat=lat, lon=lon,
        alt=number(coords, "altitude", -1000.0, 100_000.0),
        acc=number(coords, "accuracy", 0.0, 1_000_000.0, negative_is_unknown=True),
        speed=number(coords, "speed", 0.0, 1000.0, negative_is_unknown=True),
        heading=number(coords, "heading", 0.0, 360.0, negative_is_unknown=True),
        battery=None if level is None else level * 100.0,
        attrs={k: v for k, v in attrs.items() if v is not None} or None,
    )
    return Report(device_id, fix)


# ------------------------------------------------------------------ Traccar server forwarding
@contained
def decode_forward(raw: bytes, *, datum: Datum = "wgs84", now_ms: int | None = None,
                   max_future_ms: int = MAX_FUTURE_SKEW_MS) -> Report:
    """A position Traccar forwards (``forward.type`` json): its device's ``uniqueId`` and the Fix."""
    obj = json_object(raw, "a Traccar forwarded position")
    pos = _member(obj, "position", required=True)
    device = _member(obj, "device", required=True)
    if device.get("uniqueId") is None:
        raise CodecError("missing_field", "device.uniqueId")
    device_id = _device_id(device["uniqueId"], "device.uniqueId")
    if pos.get("valid") is False:
        raise CodecError("invalid_fix", "Traccar marked the position invalid")
    ts = check_time(_iso(pos, "fixTime"), now_ms, max_future_ms)
    lat, lon = position(required_number(pos, "latitude", -90.0, 90.0),
                        required_number(pos, "longitude", -180.0, 180.0), datum)
    attributes = _member(pos, "attributes")
    speed = number(pos, "speed", 0.0, 1000.0 / KNOT, negative_is_unknown=True)
    accuracy = number(pos, "accuracy", 0.0, 1_000_000.0, negative_is_unknown=True)
    sats = number(attributes, "sat", 0, 1000)
    hdop = number(attributes, "hdop", 0.0, 100.0)
    fix = Fix(
        ts=ts, lat=lat, lon=lon,
        alt=number(pos, "altitude", -1000.0, 100_000.0),
        acc=accuracy or None,  # Traccar writes 0 when the device gave no accuracy
        speed=None if speed is None else speed * KNOT,
        heading=number(pos, "course", 0.0, 360.0, negative_is_unknown=True),
        battery=number(attributes, "batteryLevel", 0.0, 100.0, negative_is_unknown=True),
        sats=None if sats is None else int(sats),
        attrs={"hdop": hdop} if hdop is not None else None,
    )
    name = device.get("name")
    return Report(device_id, fix, storable_text(name, 128) if isinstance(name, str) else None)
