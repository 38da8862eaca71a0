"""The events of an incident's log: value objects with their JSON form.

Each change to an incident is one frozen event, validated on construction (a malformed one raises
`InvalidEvent`). `to_dict` writes the JSON form stored in the log and `from_dict` / `event_from_dict`
parse it back, refusing unknown, missing or mistyped fields. Whether an event is allowed in the
incident's current state is not decided here but by `hub.domain.incident.Incident.apply`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar, Self, TypeAlias

from hub.domain.errors import InvalidEvent

__all__ = [
    "DEFAULT_RADIUS_M", "EVENT_TYPES", "MAX_RADIUS_M", "MIN_RADIUS_M", "SOURCES", "Acknowledged", "Arrived",
    "Cancelled", "Cleared", "Closed", "Contacted", "Created",
    "Departed", "Dispatched", "Diverted", "Event", "HandedOver", "Noted", "Reassigned", "Supported",
    "event_from_dict",
]

DEFAULT_RADIUS_M = 100.0  # SPEC 4: the default arrival zone
MIN_RADIUS_M, MAX_RADIUS_M = 10.0, 5000.0
SOURCES = ("device", "geofence", "motion", "manual", "api", "system")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

_TYPE_CHECKS: dict[str, Callable[[object], bool]] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
}


@dataclass(frozen=True, kw_only=True)
class _Event:
    type: ClassVar[str]
    unit_required: ClassVar[bool] = False
    ts: int
    source: str
    unit_id: str | None = None

    def __post_init__(self) -> None:
        if self.ts < 0:
            raise InvalidEvent(f"{self.type}: ts must be epoch milliseconds, got {self.ts}")
        if self.source not in SOURCES:
            raise InvalidEvent(f"{self.type}: source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.unit_id is None and self.unit_required:
            raise InvalidEvent(f"{self.type}: unit_id is required")
        if self.unit_id is not None and not _ID.match(self.unit_id):
            raise InvalidEvent(f"{self.type}: invalid unit_id {self.unit_id!r}")
        self._validate()

    def _validate(self) -> None:
        """Type-specific value checks."""

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Parse the JSON form written by `to_dict`; unknown, missing or mistyped fields are refused."""
        if data.get("type") != cls.type:
            raise InvalidEvent(f"expected a {cls.type!r} event, got type {data.get('type')!r}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known) - {"type"})
        if unknown:
            raise InvalidEvent(f"{cls.type}: unknown fields {unknown}")
        kwargs: dict[str, Any] = {}
        for name, f in known.items():
            if name not in data:
                if f.default is MISSING:
                    raise InvalidEvent(f"{cls.type}: missing field {name!r}")
                continue
            value, kind = data[name], str(f.type)  # the annotation's text ("int | None"): see __future__ import
            base = kind.removesuffix(" | None")
            if value is None and base != kind:
                kwargs[name] = None
            elif _TYPE_CHECKS[base](value):
                kwargs[name] = float(value) if base == "float" else value
            else:
                raise InvalidEvent(f"{cls.type}: {name!r} must be {kind}, got {value!r}")
        return cls(**kwargs)


@dataclass(frozen=True, kw_only=True)
class Created(_Event):
    type: ClassVar[str] = "created"
    category: str
    priority: int
    lat: float
    lon: float
    address: str = ""
    summary: str = ""
    received_at: int | None = None
    policy: str | None = None  # the resolved policy name (explicit or by rule), so replay never re-selects
    arrival_radius_m: float | None = None  # the arrival zone as resolved at creation (None: the 100 m default)

    def _validate(self) -> None:
        if not self.category:
            raise InvalidEvent("created: category must not be empty")
        if not 1 <= self.priority <= 4:
            raise InvalidEvent(f"created: priority must be 1 (highest)..4, got {self.priority}")
        if not (-90 <= self.lat <= 90 and -180 <= self.lon <= 180):
            raise InvalidEvent(f"created: coordinates out of range: lat {self.lat}, lon {self.lon}")
        if self.received_at is not None and not 0 <= self.received_at <= self.ts:
            raise InvalidEvent(f"created: received_at {self.received_at} must not be after creation at {self.ts}")
        if self.policy == "":
            raise InvalidEvent("created: policy must be a name or null")
        if self.arrival_radius_m is not None and not MIN_RADIUS_M <= self.arrival_radius_m <= MAX_RADIUS_M:
            raise InvalidEvent(f"created: arrival_radius_m must be {MIN_RADIUS_M:g}..{MAX_RADIUS_M:g} m, "
                               f"got {self.arrival_radius_m}")


@dataclass(frozen=True, kw_only=True)
class Dispatched(_Event):
    type: ClassVar[str] = "dispatched"
    unit_required: ClassVar[bool] = True
    cmd_id: str | None = None
    # A drone sent over MAVLink: its milestones are its assignment's, not the incident's (see Incident.milestones).
    aerial: bool = False


@dataclass(frozen=True, kw_only=True)
class Acknowledged(_Event):
    type: ClassVar[str] = "acknowledged"
    unit_required: ClassVar[bool] = True
    cmd_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class Departed(_Event):
    type: ClassVar[str] = "departed"
    unit_required: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True)
class Contacted(_Event):
    """With a unit_id it is that assignment's contact; without, an incident-level (manual) entry."""

    type: ClassVar[str] = "contacted"


@dataclass(frozen=True, kw_only=True)
class Supported(_Event):
    """Support/intelligence attached by an analyst (研判赋能); incident-level, unit_id is informative."""

    type: ClassVar[str] = "supported"


@dataclass(frozen=True, kw_only=True)
class Arrived(_Event):
    """With a unit_id it is that assignment's arrival; without, an incident-level (manual) entry."""

    type: ClassVar[str] = "arrived"


@dataclass(frozen=True, kw_only=True)
class Cleared(_Event):
    """The unit is released from the incident (the incident itself stays open)."""

    type: ClassVar[str] = "cleared"
    unit_required: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True)
class Cancelled(_Event):
    """The assignment is withdrawn; its recorded times stay, no further milestone is accepted on it."""

    type: ClassVar[str] = "cancelled"
    unit_required: ClassVar[bool] = True
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class Reassigned(_Event):
    """A log entry: the response moves from `unit_id` (e.g. no ack in time: `escalated`) to `to_unit_id`.
    The moves themselves are the `cancelled` and `dispatched` events around it."""

    type: ClassVar[str] = "reassigned"
    unit_required: ClassVar[bool] = True
    reason: str
    to_unit_id: str | None = None
    escalated: bool = False

    def _validate(self) -> None:
        if not self.reason:
            raise InvalidEvent("reassigned: a reason is required")
        if self.to_unit_id is not None and not _ID.match(self.to_unit_id):
            raise InvalidEvent(f"reassigned: invalid to_unit_id {self.to_unit_id!r}")


@dataclass(frozen=True, kw_only=True)
class Noted(_Event):
    type: ClassVar[str] = "note"
    text: str

    def _validate(self) -> None:
        if not self.text:
            raise InvalidEvent("note: text must not be empty")


@dataclass(frozen=True, kw_only=True)
class Closed(_Event):
    """Clear and close: active assignments are cleared at this time; the `cleared` milestone."""

    type: ClassVar[str] = "closed"
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class Diverted(_Event):
    """Non-emergency/non-police (双非): handed to the 12345 government hotline; active assignments are cancelled."""

    type: ClassVar[str] = "diverted"
    reason: str

    def _validate(self) -> None:
        if not self.reason:
            raise InvalidEvent("diverted: a reason is required")


@dataclass(frozen=True, kw_only=True)
class HandedOver(_Event):
    """The 12345 hotline accepted the diverted incident at `ts`; `ref` is its ticket, if any."""

    type: ClassVar[str] = "handed_over"
    ref: str = ""


Event: TypeAlias = (
    Created | Dispatched | Acknowledged | Departed | Contacted | Supported | Arrived | Cleared | Cancelled
    | Reassigned | Noted | Closed | Diverted | HandedOver
)
EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (Created, Dispatched, Acknowledged, Departed, Contacted, Supported, Arrived, Cleared, Cancelled,
                Reassigned, Noted, Closed, Diverted, HandedOver)
}


def event_from_dict(data: Mapping[str, Any]) -> Event:
    cls = EVENT_TYPES.get(str(data.get("type")))
    if cls is None:
        raise InvalidEvent(f"unknown event type {data.get('type')!r}")
    return cls.from_dict(data)
