"""The field checks of MANSCDP bodies: every value a device sends, read as hostile text and checked once here.

Each check returns the typed value or raises :class:`ManscdpError` with a short machine reason
(:data:`REASONS`), a detail that names the field, and nothing else. The reader functions take an
:class:`~xml.etree.ElementTree.Element` and the child's tag, so a missing and a malformed field are told apart.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Final
from xml.etree.ElementTree import Element

from devices.bounds import storable_text
from devices.fields import MAX_TS_MS, MIN_TS_MS

__all__ = [
    "DEFAULT_UTC_OFFSET_MIN", "MAX_TEXT", "REASONS", "ManscdpError", "check_device_id", "child_text",
    "optional_text", "read_coordinates", "read_device_id", "read_float", "read_int", "read_time", "required_text",
]

REASONS: Final = frozenset({
    "too_large", "bad_encoding", "bad_xml", "forbidden_xml", "bad_root", "missing_field", "bad_value",
    "bad_device_id", "bad_text", "no_fix", "too_many_items", "too_many_assemblies", "internal",
})
MAX_TEXT: Final = 256  # characters of one field; a name or a description, never a document
DEFAULT_UTC_OFFSET_MIN: Final = 8 * 60  # the standard's devices keep Beijing time

# The standard's code: centre 8 + industry 2 + type 3 + network 1 + serial 6, all decimal digits.
_DEVICE_ID: Final = re.compile(r"[0-9]{20}")
# A decimal number as devices write it; float() alone would also take "nan", "inf" and "1_0".
_DECIMAL: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
_INTEGER: Final = re.compile(r"\+?[0-9]{1,19}")
# Local time without a zone, as the standard writes it; 2022 devices may add fractions, a space for the T or a zone.
_TIME: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(Z|[+-][0-9]{2}:?[0-9]{2})?"
)
# C0 controls but tab/newline/CR, and what PostgreSQL cannot store; XML 1.0 refuses most, a decoder may not.
_BAD_TEXT: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class ManscdpError(ValueError):
    """A MANSCDP body refused: ``reason`` is one of :data:`REASONS`, ``detail`` a short storable explanation."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = storable_text(detail, 200)


def _show(text: str) -> str:
    return storable_text(repr(text), 40)


def child_text(parent: Element, tag: str) -> str | None:
    """The stripped text of ``parent``'s first ``tag`` child; None when the child is absent or empty."""
    child = parent.find(tag)
    if child is None or child.text is None:
        return None
    text = child.text.strip()
    return text or None


def required_text(parent: Element, tag: str, limit: int = MAX_TEXT) -> str:
    text = optional_text(parent, tag, limit)
    if text is None:
        raise ManscdpError("missing_field", f"<{tag}> is missing or empty")
    return text


def optional_text(parent: Element, tag: str, limit: int = MAX_TEXT) -> str | None:
    """A free-text field (a name, a description): storable, at most ``limit`` characters."""
    text = child_text(parent, tag)
    if text is None:
        return None
    if len(text) > limit:
        raise ManscdpError("bad_text", f"<{tag}> is {len(text)} characters long, more than {limit}")
    bad = _BAD_TEXT.search(text)
    if bad is not None:
        raise ManscdpError("bad_text", f"<{tag}> holds U+{ord(bad.group()):04X}")
    return text


def check_device_id(value: str, what: str = "DeviceID") -> str:
    if _DEVICE_ID.fullmatch(value) is None:
        raise ManscdpError("bad_device_id", f"{what} {_show(value)} is not 20 decimal digits")
    return value


def read_device_id(parent: Element, tag: str = "DeviceID") -> str:
    text = child_text(parent, tag)
    if text is None:
        raise ManscdpError("missing_field", f"<{tag}> is missing or empty")
    return check_device_id(text, f"<{tag}>")


def read_int(parent: Element, tag: str, low: int, high: int, *, required: bool = True) -> int | None:
    text = child_text(parent, tag)
    if text is None:
        if required:
            raise ManscdpError("missing_field", f"<{tag}> is missing or empty")
        return None
    if _INTEGER.fullmatch(text) is None:
        raise ManscdpError("bad_value", f"<{tag}> {_show(text)} is not an integer")
    value = int(text)
    if not low <= value <= high:
        raise ManscdpError("bad_value", f"<{tag}> {value} is outside {low}..{high}")
    return value


def read_float(parent: Element, tag: str, low: float, high: float, *, required: bool = True) -> float | None:
    """A decimal in ``low``..``high`` (both included); NaN and infinities are refused, never compared."""
    text = child_text(parent, tag)
    if text is None:
        if required:
            raise ManscdpError("missing_field", f"<{tag}> is missing or empty")
        return None
    if len(text) > 40 or _DECIMAL.fullmatch(text) is None:
        raise ManscdpError("bad_value", f"<{tag}> {_show(text)} is not a decimal number")
    value = float(text)
    if not math.isfinite(value) or not low <= value <= high:
        raise ManscdpError("bad_value", f"<{tag}> {_show(text)} is outside {low:g}..{high:g}")
    return value


def read_coordinates(parent: Element, *, required: bool) -> tuple[float, float] | None:
    """WGS-84 (lon, lat). Both or neither: a lone half is refused; (0, 0) is how devices say "no fix"."""
    lon = read_float(parent, "Longitude", -180.0, 180.0, required=required)
    lat = read_float(parent, "Latitude", -90.0, 90.0, required=required)
    if lon is None and lat is None:
        return None
    if lon is None or lat is None:
        raise ManscdpError("missing_field", "<Longitude> and <Latitude> come together")
    if lon == 0.0 and lat == 0.0:
        if required:
            raise ManscdpError("no_fix", "the position is 0, 0 (the device has no fix)")
        return None
    return lon, lat


def read_time(parent: Element, tag: str, utc_offset_min: int, *, required: bool = True) -> int | None:
    """A device time as epoch milliseconds. Without a zone it is local time at ``utc_offset_min`` east of UTC."""
    text = child_text(parent, tag)
    if text is None:
        if required:
            raise ManscdpError("missing_field", f"<{tag}> is missing or empty")
        return None
    match = _TIME.fullmatch(text)
    if match is None:
        raise ManscdpError("bad_value", f"<{tag}> {_show(text)} is not YYYY-MM-DDThh:mm:ss")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone = match.group(7), match.group(8)
    offset = utc_offset_min if zone is None else _zone_minutes(zone)
    if not -14 * 60 <= offset <= 14 * 60:
        raise ManscdpError("bad_value", f"<{tag}> zone {_show(zone or '')} is not a UTC offset")
    try:
        local = datetime(year, month, day, hour, minute, second, tzinfo=timezone(timedelta(minutes=offset)))
        seconds = int(local.timestamp())
    except (ValueError, OverflowError):
        raise ManscdpError("bad_value", f"<{tag}> {_show(text)} is not a calendar time") from None
    millis = seconds * 1000 + (int(fraction[:3].ljust(3, "0")) if fraction else 0)
    # The hub's window for device time: an unset clock says 1970, and such a time is no time.
    if not MIN_TS_MS <= millis < MAX_TS_MS:
        raise ManscdpError("bad_value", f"<{tag}> {_show(text)} is outside 2000..2099 UTC")
    return millis


def _zone_minutes(zone: str) -> int:
    if zone == "Z":
        return 0
    digits = zone[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + int(digits[2:])
    return -minutes if zone[0] == "-" else minutes
