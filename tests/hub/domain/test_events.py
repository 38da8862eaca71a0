"""Incident events: validation on construction, malformed JSON refused with its reason, the JSON round trip."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub.domain.errors import InvalidEvent
from hub.domain.events import (
    EVENT_TYPES,
    Acknowledged,
    Arrived,
    Cancelled,
    Cleared,
    Closed,
    Contacted,
    Departed,
    Dispatched,
    Diverted,
    Event,
    HandedOver,
    Noted,
    Reassigned,
    Supported,
    event_from_dict,
)
from tests.hub.domain.builders import T0, at, created

# --- malformed events ----------------------------------------------------------------------------------

INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("unknown source", {"type": "note", "ts": T0, "source": "radio", "text": "x"}, "source must be one of"),
    ("bad unit id", {"type": "arrived", "ts": T0, "source": "device", "unit_id": "-P1"}, "invalid unit_id"),
    ("dispatch without unit", {"type": "dispatched", "ts": T0, "source": "api"}, "unit_id is required"),
    ("cancel without unit", {"type": "cancelled", "ts": T0, "source": "api"}, "unit_id is required"),
    ("negative ts", {"type": "note", "ts": -1, "source": "api", "text": "x"}, "epoch milliseconds"),
    ("ts as string", {"type": "note", "ts": "1795000000000", "source": "api", "text": "x"}, "'ts' must be int"),
    ("ts as bool", {"type": "note", "ts": True, "source": "api", "text": "x"}, "'ts' must be int"),
    ("unknown type", {"type": "teleported", "ts": T0, "source": "api"}, "unknown event type"),
    ("no type", {"ts": T0, "source": "api"}, "unknown event type"),
    ("unknown field", {"type": "note", "ts": T0, "source": "api", "text": "x", "mood": 1}, "unknown fields"),
    ("missing field", {"type": "note", "ts": T0, "source": "api"}, "missing field 'text'"),
    ("empty note", {"type": "note", "ts": T0, "source": "api", "text": ""}, "text must not be empty"),
    ("reassign without reason", {"type": "reassigned", "ts": T0, "source": "system", "unit_id": "P1", "reason": ""},
     "a reason is required"),
    ("divert without reason", {"type": "diverted", "ts": T0, "source": "api", "reason": ""}, "a reason is required"),
    ("priority 0", created(priority=1).to_dict() | {"priority": 0}, "priority must be 1"),
    ("priority 5", created().to_dict() | {"priority": 5}, "priority must be 1"),
    ("priority not int", created().to_dict() | {"priority": 1.5}, "'priority' must be int"),
    ("latitude out of range", created().to_dict() | {"lat": 90.5}, "coordinates out of range"),
    ("longitude out of range", created().to_dict() | {"lon": -181}, "coordinates out of range"),
    ("lat as string", created().to_dict() | {"lat": "34.2"}, "'lat' must be float"),
    ("empty category", created().to_dict() | {"category": ""}, "category must not be empty"),
    ("received after creation", created().to_dict() | {"received_at": T0 + 1}, "must not be after creation"),
    ("empty policy name", created().to_dict() | {"policy": ""}, "policy must be a name or null"),
]


@pytest.mark.parametrize(("data", "reason"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_malformed_event_is_refused(data: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        event_from_dict(data)


def test_from_dict_of_the_wrong_class_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="expected a 'arrived' event"):
        Arrived.from_dict(Departed(ts=T0, source="motion", unit_id="P1").to_dict())

# --- the JSON round trip ------------------------------------------------------------------------------------

# One of each type, with the optional fields set and unset.
ONE_OF_EACH: list[Event] = [
    created(received_at=T0 - 5000),
    Dispatched(ts=at(10), source="system", unit_id="A", cmd_id="c-1"),
    Acknowledged(ts=at(11), source="device", unit_id="A", cmd_id="c-1"),
    Departed(ts=at(60), source="motion", unit_id="A"),
    Contacted(ts=at(100), source="device", unit_id="A"),
    Supported(ts=at(150), source="manual"),
    Arrived(ts=at(300), source="geofence", unit_id="A"),
    Dispatched(ts=at(12), source="system", unit_id="B", cmd_id="c-B"),
    Cancelled(ts=at(20), source="api", unit_id="B", reason="not needed"),
    Reassigned(ts=at(20), source="system", unit_id="B", to_unit_id="C", reason="no ack", escalated=True),
    Cleared(ts=at(500), source="api", unit_id="A"),
    Noted(ts=at(510), source="api", text="all quiet"),
    Closed(ts=at(600), source="api"),
    Diverted(ts=at(5), source="api", reason="noise complaint: non-police"),
    HandedOver(ts=at(6), source="system", ref="t-1"),
]


def test_every_event_type_round_trips_through_json() -> None:
    events = ONE_OF_EACH
    assert {e.type for e in events} == set(EVENT_TYPES)
    for event in events:
        data = json.loads(json.dumps(event.to_dict()))
        assert event_from_dict(data) == event
        assert type(event).from_dict(data) == event
