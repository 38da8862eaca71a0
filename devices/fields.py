"""The field checks every payload decoder shares (:mod:`devices.payloads`), and the limits they apply.

Each check reads one field of a decoded JSON object and either returns it in its stored type or raises
:class:`PayloadError` with a stable reason code; :func:`contained` makes a whole decoder do the same for
a failure nobody foresaw.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, Final, ParamSpec, TypeVar

import msgspec

from devices import bounds
from devices.bounds import Inspector, check_text, show, storable_text
from devices.errors import PayloadError

__all__ = [
    "MAX_ATTRS_BYTES", "MAX_FUTURE_SKEW_MS", "MAX_TS_MS", "MIN_TS_MS", "check_extras", "check_ts", "contained",
    "integer", "internal_error", "json_object", "number", "require", "string",
]

MAX_ATTRS_BYTES: Final = 4096
# Device clocks drift, but a fix from the future would order the live picture
# wrongly; further ahead than this it is refused (the hub passes its setting).
MAX_FUTURE_SKEW_MS: Final = 300_000
# Nothing older than 2000-01-01 is a real fix (a device with no clock sends 0 or 1970).
MIN_TS_MS: Final = 946_684_800_000
MAX_TS_MS: Final = 4_102_444_800_000  # 2100-01-01

_encoder = msgspec.json.Encoder()


def number(obj: Mapping[str, Any], name: str, low: float | None, high: float | None) -> float:
    value = obj[name]
    if type(value) is float:
        if not math.isfinite(value):
            raise PayloadError("non_finite", f"{name} is {value}")
    elif type(value) is not int:  # bool is an int subclass and is refused here
        raise PayloadError("wrong_type", f"{name} must be a number, got {type(value).__name__}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise PayloadError("out_of_range", f"{name}={show(value)} outside {low}..{high}")
    return float(value)


def integer(obj: Mapping[str, Any], name: str, low: int | None, high: int | None) -> int:
    value = obj[name]
    if type(value) is not int:
        if type(value) is float and not math.isfinite(value):
            raise PayloadError("non_finite", f"{name} is {value}")
        raise PayloadError("wrong_type", f"{name} must be an integer, got {type(value).__name__}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise PayloadError("out_of_range", f"{name}={show(value)} outside {low}..{high}")
    return value


def require(obj: Mapping[str, Any], *names: str) -> None:
    for name in names:
        if name not in obj or obj[name] is None:
            raise PayloadError("missing_field", name)


def json_object(doc: Any, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise PayloadError("not_object", f"{what} must be a JSON object, got {type(doc).__name__}")
    if len(doc) > bounds.MAX_KEYS:  # before any per-key work
        raise PayloadError("too_many_keys", f"{len(doc)} keys > {bounds.MAX_KEYS}")
    return doc


def check_ts(obj: Mapping[str, Any], now_ms: int | None, max_future_ms: int) -> int:
    ts = integer(obj, "ts", 0, MAX_TS_MS)
    if now_ms is not None:
        if ts < MIN_TS_MS:
            raise PayloadError("ts_out_of_window", f"ts={ts} is before 2000-01-01")
        if ts > now_ms + max_future_ms:
            raise PayloadError("ts_in_future", f"ts={ts} is {ts - now_ms} ms ahead of the hub's clock "
                                               f"(margin {max_future_ms} ms)")
    return ts


def check_extras(extra: dict[Any, Any], depth: int, what: str) -> None:
    """Free-form fields stored as jsonb: storable, and at most MAX_ATTRS_BYTES of JSON."""
    Inspector(budget=MAX_ATTRS_BYTES).items(extra, depth)
    if len(_encoder.encode(extra)) > MAX_ATTRS_BYTES:
        raise PayloadError("attrs_too_large", f"{what} take more than {MAX_ATTRS_BYTES} bytes")


def string(obj: Mapping[str, Any], name: str, max_len: int = 64) -> str:
    value = obj[name]
    if not isinstance(value, str):
        raise PayloadError("wrong_type", f"{name} must be a string")
    if not 0 < len(value) <= max_len:
        raise PayloadError("out_of_range", f"{name} must have 1..{max_len} characters")
    check_text(value, name)
    return value


def internal_error(exc: Exception) -> PayloadError:
    """A failure nobody foresaw still becomes a reject, never an exception that escapes."""
    if isinstance(exc, RecursionError):
        return bounds.too_deep()
    return PayloadError("internal", storable_text(f"{type(exc).__name__}: {exc}", 200))


_P = ParamSpec("_P")
_R = TypeVar("_R")


def contained(decode: Callable[_P, _R]) -> Callable[_P, _R]:
    """Let only PayloadError out of ``decode`` (decode_fixes does the same inline: it is the hot path)."""

    @functools.wraps(decode)
    def contained(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return decode(*args, **kwargs)
        except PayloadError:
            raise
        except Exception as exc:
            raise internal_error(exc) from None

    return contained
