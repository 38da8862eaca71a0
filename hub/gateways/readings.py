"""Field checks shared by the phone-app codecs (OwnTracks, OsmAnd / Traccar): bounded JSON, numbers, times, text.

Each check turns a value from an app into what :class:`devices.payloads.Fix` holds, or raises
:class:`~hub.gateways.errors.CodecError` with the reason. The apps mark an unknown reading with a negative
number (Traccar Client sends ``"heading": -1`` and ``"speed": -1``), so :func:`number` can read "below zero" as
"absent" instead of refusing the whole fix for it. Pure: no I/O, hub time passed in.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, ParamSpec, TypeVar

from devices import bounds
from devices.bounds import show, storable_text
from devices.errors import PayloadError
from devices.fields import MAX_FUTURE_SKEW_MS, MAX_TS_MS, MIN_TS_MS
from geo.gcj02 import Datum, to_wgs84
from hub.gateways.errors import CodecError

__all__ = [
    "MAX_FUTURE_SKEW_MS", "MAX_PAYLOAD_BYTES", "check_time", "contained", "iso_time_ms", "json_object", "number",
    "position", "required_number", "text",
]

MAX_PAYLOAD_BYTES: Final = 64 * 1024  # a phone's report is a few hundred bytes; refused before parsing beyond this
_MAX_TIME_TEXT: Final = 40
_NOT_ISO: Final = re.compile(r"[^0-9T:.+\- Z]")

# The contract's reasons (devices.bounds) -> this package's.
_FROM_CONTRACT: Final = {
    "oversized": "too_large", "invalid_json": "bad_json", "too_deep": "bad_json", "bad_text": "bad_text",
    "too_many_keys": "too_large", "too_long": "too_large",
}


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    """``raw`` parsed as one JSON object within the size, depth and text limits."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise CodecError("too_large", f"{len(raw)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        doc = bounds.parse(raw)
        # Every string and number storable (no NUL, no lone surrogate, no int beyond int64, no NaN) and the
        # structure bounded: whatever the codec keeps can then be stored as it is.
        bounds.Inspector().value(doc)
    except PayloadError as exc:
        raise CodecError(_FROM_CONTRACT.get(exc.reason, "bad_value"), exc.detail) from None
    if not isinstance(doc, dict):
        raise CodecError("not_object", f"{what} must be a JSON object, got {type(doc).__name__}")
    return doc


def number(obj: Mapping[str, Any], name: str, low: float, high: float, *,
           negative_is_unknown: bool = False) -> float | None:
    """An optional reading in ``[low, high]``; None when absent, null, or (if the app says so) negative."""
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CodecError("wrong_type", f"{name} must be a number, got {show(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise CodecError("bad_value", f"{name} is not finite")
    if negative_is_unknown and value < 0:
        return None
    if not low <= value <= high:
        raise CodecError("out_of_range", f"{name}={value!r} is outside [{low}, {high}]")
    return value


def required_number(obj: Mapping[str, Any], name: str, low: float, high: float) -> float:
    value = number(obj, name, low, high)
    if value is None:
        raise CodecError("missing_field", name)
    return value


def text(obj: Mapping[str, Any], name: str, max_len: int) -> str | None:
    """An optional short string the hub keeps (an id, a region name), cut to ``max_len`` characters."""
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise CodecError("wrong_type", f"{name} must be a string, got {show(value)}")
    return storable_text(value, max_len)


def check_time(ts_ms: int, now_ms: int | None, max_future_ms: int = MAX_FUTURE_SKEW_MS) -> int:
    """``ts_ms`` within 2000..2100, and (given the hub's clock) not further ahead than the skew margin."""
    if not MIN_TS_MS <= ts_ms <= MAX_TS_MS:
        raise CodecError("bad_time", f"time {ts_ms} ms is outside 2000..2100")
    if now_ms is not None and ts_ms > now_ms + max_future_ms:
        raise CodecError("bad_time", f"time is {ts_ms - now_ms} ms ahead of the hub's clock")
    return ts_ms


def iso_time_ms(value: str) -> int:
    """An ISO 8601 time as epoch ms. The apps write ``...Z``, ``+00:00`` or ``+0000``; no zone means UTC."""
    if len(value) > _MAX_TIME_TEXT or _NOT_ISO.search(value):
        raise CodecError("bad_time", f"not an ISO 8601 time: {show(value)}")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise CodecError("bad_time", f"not an ISO 8601 time: {show(value)}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return round(when.timestamp() * 1000)
    except (OverflowError, ValueError):  # year 1 with an eastern offset lands before year 1
        raise CodecError("bad_time", f"time out of range: {show(value)}") from None


def position(lat: float, lon: float, datum: Datum) -> tuple[float, float]:
    """The WGS-84 position of a checked ``lat``/``lon`` stated in ``datum``."""
    try:
        return to_wgs84(lat, lon, datum)
    except ValueError as exc:  # an unknown datum is the caller's configuration, still refused per message
        raise CodecError("bad_value", str(exc)) from None


_P = ParamSpec("_P")
_R = TypeVar("_R")


def contained(decode: Callable[_P, _R]) -> Callable[_P, _R]:
    """Let only CodecError out of ``decode``: a failure nobody foresaw is a counted ``internal`` refusal."""

    @functools.wraps(decode)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return decode(*args, **kwargs)
        except CodecError:
            raise
        except Exception as exc:
            raise CodecError("internal", storable_text(f"{type(exc).__name__}: {exc}", 200)) from None

    return wrapper
