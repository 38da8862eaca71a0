"""Payload codecs of the contract: fix, status, event, command (SPEC section 2).

Validation lives here once and is shared by the hub and the simulators. Decoding
never trusts the input: every failure becomes a :class:`PayloadError` with a
stable ``reason`` code (used as a metric label and stored with the reject).

Reason codes (:data:`REASONS`): ``oversized``, ``invalid_json``, ``not_object``,
``empty_batch``, ``batch_too_large``, ``missing_field``, ``wrong_type``,
``out_of_range``, ``non_finite``, ``attrs_too_large``, ``ts_out_of_window`` (before
2000), ``ts_in_future`` (beyond the skew margin), ``bad_value``, and the limits of
:mod:`devices.bounds`: ``bad_text``, ``too_deep``, ``too_many_keys``, ``too_long``,
``number_too_large``; ``internal`` if decoding failed in a way nobody foresaw.

Every decode function returns or raises :class:`PayloadError`, nothing else, and
whatever it returns can be stored in PostgreSQL as it is. The per-field checks and
their limits are in :mod:`devices.fields`.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec

from devices import bounds
from devices.bounds import MAX_PAYLOAD_BYTES, Inspector, show, storable_text
from devices.errors import PayloadError
from devices.fields import (
    MAX_ATTRS_BYTES,
    MAX_FUTURE_SKEW_MS,
    MAX_TS_MS,
    MIN_TS_MS,
    check_extras,
    check_ts,
    contained,
    integer,
    internal_error,
    json_object,
    number,
    require,
    string,
)
from devices.topics import is_valid_id

__all__ = [
    "COMMAND_TYPES", "DEVICE_KINDS", "MAX_ATTRS_BYTES", "MAX_BATCH", "MAX_FUTURE_SKEW_MS", "MAX_PAYLOAD_BYTES",
    "MAX_TS_MS", "MIN_TS_MS", "REASONS", "Command", "Event", "Fix", "Status", "decode_command", "decode_event",
    "decode_fixes", "decode_json", "decode_status", "encode_command", "encode_event", "encode_fixes", "encode_json",
    "encode_status", "fix_from_obj", "fix_to_obj", "storable_text",
]

MAX_BATCH: Final = 1000
# The limits of the fields (MAX_ATTRS_BYTES, MAX_FUTURE_SKEW_MS, MIN_TS_MS, MAX_TS_MS) are in devices.fields.

# "camera": a camera that is not worn, such as a drone's gimbal camera with its own 4G/5G module.
DEVICE_KINDS: Final = frozenset({"bodycam", "camera", "radio", "vehicle", "drone", "phone"})
COMMAND_TYPES: Final = frozenset({"dispatch", "cancel", "video_start", "video_stop", "ping"})
REASONS: Final = frozenset({
    "oversized", "invalid_json", "not_object", "empty_batch", "batch_too_large", "missing_field", "wrong_type",
    "out_of_range", "non_finite", "attrs_too_large", "ts_out_of_window", "ts_in_future", "bad_value", "bad_text",
    "too_deep", "too_many_keys", "too_long", "number_too_large", "internal",
})

_encoder = msgspec.json.Encoder()


def _range(low: float, high: float) -> msgspec.Meta:
    return msgspec.Meta(ge=low, le=high)


class Fix(msgspec.Struct, frozen=True, gc=False, omit_defaults=True, forbid_unknown_fields=True):
    """One GPS fix of one device. ``ts`` is device time in epoch milliseconds.

    The constraints mirror :data:`_FIX_FIELDS` and apply only when the fast
    decoder builds a Fix straight from JSON (see :func:`decode_fixes`).
    """

    ts: Annotated[int, _range(0, MAX_TS_MS)]
    lat: Annotated[float, _range(-90.0, 90.0)]
    lon: Annotated[float, _range(-180.0, 180.0)]
    alt: Annotated[float, _range(-1000.0, 100_000.0)] | None = None
    acc: Annotated[float, _range(0.0, 1_000_000.0)] | None = None
    speed: Annotated[float, _range(0.0, 1000.0)] | None = None
    heading: Annotated[float, _range(0.0, 360.0)] | None = None
    battery: Annotated[float, _range(0.0, 100.0)] | None = None
    sats: Annotated[int, _range(0, 1000)] | None = None
    seq: Annotated[int, _range(0, 2**63 - 1)] | None = None
    attrs: dict[str, Any] | None = None


# Fast path: typed decoding straight into Fix structs. Anything it refuses (a bad
# value, an unknown key to keep as an attribute, NaN...) goes to the slow path,
# which finds the exact reason or keeps the attributes.
_fast_fix_decoder = msgspec.json.Decoder(Fix | Annotated[list[Fix], msgspec.Meta(min_length=1, max_length=MAX_BATCH)])


class Status(msgspec.Struct, frozen=True, omit_defaults=True):
    ts: int
    state: str
    kind: str | None = None
    unit_id: str | None = None
    recording: bool | None = None
    battery: float | None = None
    fw: str | None = None


class Event(msgspec.Struct, frozen=True, omit_defaults=True):
    """A device event. ``data`` holds every field but ``ts`` and ``type``."""

    ts: int
    type: str
    data: dict[str, Any] = {}


class Command(msgspec.Struct, frozen=True, omit_defaults=True):
    """A hub -> device command. ``body`` holds the type-specific fields."""

    cmd_id: str
    ts: int
    type: str
    body: dict[str, Any] = {}


# ---------------------------------------------------------------- field checks
# (name, kind, low, high); kind "num" accepts int or float, "int" only int.
_FIX_FIELDS: Final[tuple[tuple[str, str, float | None, float | None], ...]] = (
    ("alt", "num", -1000.0, 100_000.0),
    ("acc", "num", 0.0, 1_000_000.0),
    ("speed", "num", 0.0, 1000.0),
    ("heading", "num", 0.0, 360.0),
    ("battery", "num", 0.0, 100.0),
    ("sats", "int", 0, 1000),
    ("seq", "int", 0, 2**63 - 1),
)
_FIX_KNOWN: Final = frozenset({"ts", "lat", "lon"} | {f[0] for f in _FIX_FIELDS})


# ------------------------------------------------------------------- decoding
@contained
def decode_json(raw: bytes) -> Any:
    """Parse ``raw`` as JSON within the contract's limits, every string, key and number storable."""
    doc = bounds.parse(raw)
    Inspector().value(doc)
    return doc


@contained
def fix_from_obj(obj: Any, now_ms: int | None = None, *, max_future_ms: int = MAX_FUTURE_SKEW_MS) -> Fix:
    """Validate one decoded fix object. ``now_ms`` (hub time) enables the ts window check."""
    return _fix(obj, now_ms, max_future_ms, 1)


def _fix(obj: Any, now_ms: int | None, max_future_ms: int, depth: int) -> Fix:
    """One fix object found inside ``depth - 1`` containers (2 for a batch element)."""
    obj = json_object(obj, "a fix")
    require(obj, "ts", "lat", "lon")
    ts = check_ts(obj, now_ms, max_future_ms)
    lat = number(obj, "lat", -90.0, 90.0)
    lon = number(obj, "lon", -180.0, 180.0)
    optional: dict[str, Any] = {}
    for name, kind, low, high in _FIX_FIELDS:
        if obj.get(name) is not None:
            if kind == "int":
                optional[name] = integer(obj, name, int(low or 0), None if high is None else int(high))
            else:
                optional[name] = number(obj, name, low, high)
    attrs = None
    if len(obj) > 3:
        # "attrs": null is absent, as the fast decoder (which has a field of that name) reads it.
        attrs = {k: v for k, v in obj.items() if k not in _FIX_KNOWN and (k != "attrs" or v is not None)} or None
        if attrs is not None:
            check_extras(attrs, depth, "unknown keys")
    return Fix(ts, lat, lon, attrs=attrs, **optional)


def decode_fixes(raw: bytes, now_ms: int | None = None, *,
                 max_future_ms: int = MAX_FUTURE_SKEW_MS) -> tuple[list[Fix], list[tuple[int, PayloadError]]]:
    """Decode a telemetry payload: one fix or a batch of up to 1000.

    Returns the good fixes and, for a batch, the index and error of every bad
    element: one bad fix never costs the good ones beside it. A payload that is
    bad as a whole raises :class:`PayloadError`. ``now_ms`` (hub time) enables
    the ts window: before 2000, or more than ``max_future_ms`` ahead, is refused.
    """
    try:
        if len(raw) <= MAX_PAYLOAD_BYTES:
            # Fast path: plain fixes hold numbers only, checked by the typed
            # decoder; no tree walk. Anything else (attributes, a bad value, a
            # document too deep or too strange) goes to the checked path.
            try:
                decoded = _fast_fix_decoder.decode(raw)
            except Exception:
                decoded = None
            if decoded is not None:
                fixes = decoded if isinstance(decoded, list) else [decoded]
                for fix in fixes:
                    if fix.attrs is not None or (
                            now_ms is not None and not MIN_TS_MS <= fix.ts <= now_ms + max_future_ms):
                        break
                else:
                    return fixes, []
        return _decode_fixes_checked(raw, now_ms, max_future_ms)
    except PayloadError:
        raise
    except Exception as exc:
        raise internal_error(exc) from None


def _decode_fixes_checked(raw: bytes, now_ms: int | None, max_future_ms: int = MAX_FUTURE_SKEW_MS
                          ) -> tuple[list[Fix], list[tuple[int, PayloadError]]]:
    """The slow path: field by field, with a reason for every refusal."""
    doc = bounds.parse(raw)
    if not isinstance(doc, list):
        return [_fix(doc, now_ms, max_future_ms, 1)], []
    if not doc:
        raise PayloadError("empty_batch", "a batch must hold at least one fix")
    if len(doc) > MAX_BATCH:
        raise PayloadError("batch_too_large", f"{len(doc)} fixes > {MAX_BATCH}")
    fixes: list[Fix] = []
    bad: list[tuple[int, PayloadError]] = []
    for index, item in enumerate(doc):
        try:
            fixes.append(_fix(item, now_ms, max_future_ms, 2))
        except PayloadError as exc:
            bad.append((index, exc))
        except Exception as exc:  # one element's surprise is that element's reject
            bad.append((index, internal_error(exc)))
    return fixes, bad


_STATUS_KNOWN: Final = frozenset({"ts", "state", "kind", "unit_id", "recording", "battery", "fw"})


@contained
def decode_status(raw: bytes, now_ms: int | None = None, *, max_future_ms: int = MAX_FUTURE_SKEW_MS) -> Status:
    """A status; the hub stores its payload whole, so unknown keys are held to the attribute limits."""
    obj = json_object(bounds.parse(raw), "a status")
    require(obj, "ts", "state")
    ts = check_ts(obj, now_ms, max_future_ms)
    state = obj["state"]
    if state not in ("online", "offline"):
        raise PayloadError("bad_value", f"state must be online or offline, got {show(state)}")
    kind = obj.get("kind")
    if kind is not None and not (isinstance(kind, str) and kind in DEVICE_KINDS):
        raise PayloadError("bad_value", f"unknown device kind {show(kind)}")
    unit_id = obj.get("unit_id")
    if unit_id is not None and not (isinstance(unit_id, str) and is_valid_id(unit_id)):
        raise PayloadError("bad_value", "unit_id is not a valid id")
    recording = obj.get("recording")
    if recording is not None and not isinstance(recording, bool):
        raise PayloadError("wrong_type", "recording must be a boolean")
    battery = number(obj, "battery", 0.0, 100.0) if obj.get("battery") is not None else None
    fw = string(obj, "fw") if obj.get("fw") is not None else None
    extra = {k: v for k, v in obj.items() if k not in _STATUS_KNOWN}
    if extra:
        check_extras(extra, 1, "unknown status keys")
    return Status(ts, state, kind, unit_id, recording, battery, fw)


# Event types with required fields and their Python types.
_EVENT_FIELDS: Final[dict[str, tuple[tuple[str, type], ...]]] = {
    "ack": (("cmd_id", str),),
    "contact": (("incident_id", str),),
    "ptt": (("on", bool),),
    "video": (("state", str), ("stream_id", str)),
    "sos": (),
}


@contained
def decode_event(raw: bytes, now_ms: int | None = None, *, max_future_ms: int = MAX_FUTURE_SKEW_MS) -> Event:
    obj = json_object(bounds.parse(raw), "an event")
    require(obj, "ts", "type")
    ts = check_ts(obj, now_ms, max_future_ms)
    etype = string(obj, "type", 32)
    for name, ftype in _EVENT_FIELDS.get(etype, ()):
        require(obj, name)
        if not isinstance(obj[name], ftype):
            raise PayloadError("wrong_type", f"{etype}.{name} must be {ftype.__name__}")
    if etype == "video" and obj["state"] not in ("started", "stopped"):
        raise PayloadError("bad_value", "video.state must be started or stopped")
    data = {k: v for k, v in obj.items() if k not in ("ts", "type")}
    if data:
        check_extras(data, 1, "event fields")
    return Event(ts, etype, data)


@contained
def decode_command(raw: bytes) -> Command:
    """A command from the hub. Its body is held to the structural limits only:
    a dispatch must not be lost on a device over a long summary."""
    obj = json_object(bounds.parse(raw), "a command")
    require(obj, "cmd_id", "ts", "type")
    cmd_id = string(obj, "cmd_id", 128)
    ts = integer(obj, "ts", 0, MAX_TS_MS)
    ctype = string(obj, "type", 32)
    if ctype not in COMMAND_TYPES:
        raise PayloadError("bad_value", f"unknown command type {show(ctype)}")
    body = {k: v for k, v in obj.items() if k not in ("cmd_id", "ts", "type")}
    Inspector(strict_text=False).items(body, 1)
    return Command(cmd_id, ts, ctype, body)


# ------------------------------------------------------------------- encoding
_FIX_WIRE: Final = ("ts", "lat", "lon", *(f[0] for f in _FIX_FIELDS))


def fix_to_obj(fix: Fix) -> dict[str, Any]:
    """The wire object of a fix: known fields flat, attributes (null values too) merged back in."""
    obj: dict[str, Any] = dict(fix.attrs) if fix.attrs else {}
    for name in _FIX_WIRE:
        value = getattr(fix, name)
        if value is not None:
            obj[name] = value
    return obj


def encode_fixes(fixes: list[Fix]) -> bytes:
    """One fix as an object, several as a batch array."""
    if len(fixes) == 1:
        return _encoder.encode(fix_to_obj(fixes[0]))
    return _encoder.encode([fix_to_obj(f) for f in fixes])


def encode_status(status: Status) -> bytes:
    return _encoder.encode(status)


def encode_event(event: Event) -> bytes:
    obj: dict[str, Any] = dict(event.data)
    obj["ts"] = event.ts
    obj["type"] = event.type
    return _encoder.encode(obj)


def encode_command(command: Command) -> bytes:
    obj: dict[str, Any] = dict(command.body)
    obj.update(cmd_id=command.cmd_id, ts=command.ts, type=command.type)
    return _encoder.encode(obj)


def encode_json(value: Any) -> bytes:
    """Shared JSON encoder for everything else the project sends."""
    return _encoder.encode(value)
