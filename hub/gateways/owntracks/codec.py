"""OwnTracks JSON (owntracks.org booklet, "JSON"): app messages into the hub's fixes, status and events.

The app publishes to ``owntracks/{user}/{device}`` (``location``, ``lwt``) and to sub-topics of it (``/event``
for ``transition``, ``/status``, ``/step``...); in HTTP mode it POSTs the same JSON. What the hub uses:

* ``location`` -> :class:`Location` holding a Fix: ``tst`` epoch seconds -> ms, ``vel`` km/h -> m/s, ``cog`` ->
  heading, ``acc``/``alt``/``batt`` as they are; the tracker id, trigger and connection kept as attributes.
* ``lwt`` -> :class:`Offline`: the broker published the app's last will, the phone is gone.
* ``transition`` -> :class:`Transition`, an Event of type ``"geofence"`` (data: ``event`` enter/leave, ``desc``
  the region, ``wtst`` its creation time in ms, ``trigger``) plus the Fix of where it fired.
* other known types (``status``, ``waypoint``, ``card``, ``steps``...) -> :class:`Ignored` (counted, no error).
* ``encrypted`` is refused ("encrypted"): libsodium secret-box payloads are not supported this round.

The hub asks a phone for a fresh fix (at dispatch) with :func:`encode_report_location` on :func:`command_topic`.
Every refusal is a :class:`~hub.gateways.errors.CodecError`; nothing else escapes :func:`decode` or
:func:`parse_topic`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from devices.bounds import show
from devices.payloads import Event, Fix, Status, encode_json
from devices.topics import is_valid_id
from geo.gcj02 import Datum
from hub.gateways.errors import CodecError
from hub.gateways.readings import (
    MAX_FUTURE_SKEW_MS,
    MAX_PAYLOAD_BYTES,
    check_time,
    contained,
    json_object,
    number,
    position,
    required_number,
    text,
)

__all__ = [
    "IGNORED_TYPES", "MAX_PAYLOAD_BYTES", "SUBTOPICS", "Ignored", "Location", "Message", "Offline", "Topic",
    "Transition", "command_topic", "decode", "encode_report_location", "parse_topic",
]

ROOT: Final = "owntracks"
# The sub-topics the apps publish to below owntracks/{user}/{device} ("" is the device topic itself).
SUBTOPICS: Final = frozenset({"", "event", "status", "step", "beacon", "dump", "waypoint", "waypoints", "info", "cmd"})
# Types the booklet lists that carry nothing the hub uses (cmd: our own command echoed back by the broker).
IGNORED_TYPES: Final = frozenset({
    "status", "waypoint", "waypoints", "card", "steps", "beacon", "configuration", "request", "cmd", "msg",
})
_KMH: Final = 1 / 3.6
_MAX_TST_S: Final = 4_102_444_800  # 2100-01-01, as the contract's MAX_TS_MS


@dataclass(frozen=True, slots=True)
class Topic:
    user: str
    device: str
    subtopic: str  # "" for the device topic itself


@dataclass(frozen=True, slots=True)
class Location:
    fix: Fix
    tid: str | None  # the app's two-letter tracker id
    trigger: str | None  # "t": p ping, c/b region, r reportLocation answer, u user, t timer; None = automatic


@dataclass(frozen=True, slots=True)
class Offline:
    status: Status  # state "offline", kind "phone"; ts is when the app connected (the booklet says so)


@dataclass(frozen=True, slots=True)
class Transition:
    event: Event  # type "geofence"
    fix: Fix  # where the phone was when the region fired


@dataclass(frozen=True, slots=True)
class Ignored:
    type: str  # the _type, for the counter's label


Message = Location | Offline | Transition | Ignored


@contained
def parse_topic(topic: str) -> Topic:
    """Split ``owntracks/{user}/{device}[/{subtopic}]``; user and device follow the hub's id rule."""
    parts = topic.split("/")
    if len(parts) not in (3, 4) or parts[0] != ROOT:
        raise CodecError("bad_topic", f"not an OwnTracks topic: {_quoted(topic)}")
    subtopic = parts[3] if len(parts) == 4 else ""
    if subtopic not in SUBTOPICS or (len(parts) == 4 and not subtopic):
        raise CodecError("bad_topic", f"unknown OwnTracks sub-topic: {_quoted(topic)}")
    for what, value in (("user", parts[1]), ("device", parts[2])):
        if not is_valid_id(value):
            raise CodecError("bad_id", f"{what} {_quoted(value)} must be 1-64 of A-Z a-z 0-9 _ . - "
                                       "(first a letter or digit)")
    return Topic(parts[1], parts[2], subtopic)


def _quoted(value: str) -> str:
    return repr(value[:80])


def command_topic(user: str, device: str) -> str:
    """Where the app listens for remote commands (it must have them enabled)."""
    return f"{ROOT}/{user}/{device}/cmd"


def encode_report_location() -> bytes:
    """The command that makes the app publish its location now (it answers with trigger ``"r"``)."""
    return encode_json({"_type": "cmd", "action": "reportLocation"})


@contained
def decode(raw: bytes, *, datum: Datum = "wgs84", now_ms: int | None = None,
           max_future_ms: int = MAX_FUTURE_SKEW_MS) -> Message:
    """One OwnTracks message. ``datum`` is what the phone's coordinates are in; ``now_ms`` enables the
    future-time check."""
    obj = json_object(raw, "an OwnTracks message")
    kind = obj.get("_type")
    if kind is None:
        raise CodecError("missing_field", "_type")
    if not isinstance(kind, str):
        raise CodecError("wrong_type", "_type must be a string")
    if kind == "location":
        return _location(obj, datum, now_ms, max_future_ms)
    if kind == "transition":
        return _transition(obj, datum, now_ms, max_future_ms)
    if kind == "lwt":
        return Offline(Status(_ts(obj, now_ms, max_future_ms), "offline", kind="phone"))
    if kind == "encrypted":
        raise CodecError("encrypted", "encrypted payloads (libsodium secret box) are not supported")
    if kind in IGNORED_TYPES:
        return Ignored(kind)
    raise CodecError("unknown_type", f"unknown _type {show(kind)}")


def _ts(obj: dict[str, Any], now_ms: int | None, max_future_ms: int, name: str = "tst") -> int:
    seconds = required_number(obj, name, 0, _MAX_TST_S)
    return check_time(round(seconds * 1000), now_ms, max_future_ms)


def _fix(obj: dict[str, Any], now_ms: int | None, max_future_ms: int, datum: Datum, attrs: dict[str, Any]) -> Fix:
    ts = _ts(obj, now_ms, max_future_ms)
    lat, lon = position(required_number(obj, "lat", -90.0, 90.0), required_number(obj, "lon", -180.0, 180.0), datum)
    # iOS leaves out a reading it does not have; an older app or a third party may send -1 for it instead.
    vel = number(obj, "vel", 0.0, 3600.0, negative_is_unknown=True)
    return Fix(
        ts=ts, lat=lat, lon=lon,
        alt=number(obj, "alt", -1000.0, 100_000.0),
        acc=number(obj, "acc", 0.0, 1_000_000.0, negative_is_unknown=True),
        speed=None if vel is None else vel * _KMH,
        heading=number(obj, "cog", 0.0, 360.0, negative_is_unknown=True),
        battery=number(obj, "batt", 0.0, 100.0, negative_is_unknown=True),
        attrs={k: v for k, v in attrs.items() if v is not None} or None,
    )


def _location(obj: dict[str, Any], datum: Datum, now_ms: int | None, max_future_ms: int) -> Location:
    tid, trigger = text(obj, "tid", 8), text(obj, "t", 4)
    bs = number(obj, "bs", 0, 3)
    attrs = {"tid": tid, "trigger": trigger, "conn": text(obj, "conn", 4),
             "battery_status": None if bs is None else int(bs)}
    return Location(_fix(obj, now_ms, max_future_ms, datum, attrs), tid, trigger)


def _transition(obj: dict[str, Any], datum: Datum, now_ms: int | None, max_future_ms: int) -> Transition:
    action = obj.get("event")
    if action is None:
        raise CodecError("missing_field", "event")
    if action not in ("enter", "leave"):
        raise CodecError("bad_value", f"event must be enter or leave, got {show(action)}")
    fix = _fix(obj, now_ms, max_future_ms, datum, {"tid": text(obj, "tid", 8), "trigger": text(obj, "t", 4)})
    data: dict[str, Any] = {"event": action}
    desc = text(obj, "desc", 200)
    if desc is not None:
        data["desc"] = desc
    wtst = number(obj, "wtst", 0, _MAX_TST_S)
    if wtst is not None:
        data["wtst"] = round(wtst * 1000)
    trigger = text(obj, "t", 4)
    if trigger is not None:
        data["trigger"] = trigger
    return Transition(Event(fix.ts, "geofence", data), fix)
