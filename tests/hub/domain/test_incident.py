"""The incident state machine: legal flows, every refused move with its reason, replay, first-unit milestones."""

from __future__ import annotations

import json
import re

import pytest

from hub.domain.errors import DomainError, IllegalTransition
from hub.domain.events import (
    Acknowledged,
    Arrived,
    Cancelled,
    Cleared,
    Closed,
    Contacted,
    Created,
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
from hub.domain.incident import Incident, Milestone
from hub.domain.unit_status import UnitStatus
from tests.hub.domain.builders import T0, at, created


def dispatched(s: float, unit: str, cmd: str | None = None) -> Dispatched:
    return Dispatched(ts=at(s), source="system", unit_id=unit, cmd_id=cmd or f"c-{unit}")


def acked(s: float, unit: str, cmd: str | None = None) -> Acknowledged:
    return Acknowledged(ts=at(s), source="device", unit_id=unit, cmd_id=cmd)


def departed(s: float, unit: str) -> Departed:
    return Departed(ts=at(s), source="motion", unit_id=unit)


def arrived(s: float, unit: str | None, source: str = "geofence") -> Arrived:
    return Arrived(ts=at(s), source=source, unit_id=unit)


def contacted(s: float, unit: str | None) -> Contacted:
    return Contacted(ts=at(s), source="device" if unit else "manual", unit_id=unit)


def supported(s: float) -> Supported:
    return Supported(ts=at(s), source="manual")


def cleared(s: float, unit: str) -> Cleared:
    return Cleared(ts=at(s), source="api", unit_id=unit)


def cancelled(s: float, unit: str) -> Cancelled:
    return Cancelled(ts=at(s), source="api", unit_id=unit, reason="not needed")


def closed(s: float) -> Closed:
    return Closed(ts=at(s), source="api")


def diverted(s: float) -> Diverted:
    return Diverted(ts=at(s), source="api", reason="noise complaint: non-police")


def incident(*events: Event, first: Created | None = None) -> Incident:
    inc = Incident("I-1")
    for event in (first or created(), *events):
        inc.apply(event)
    return inc


# --- every refused move, with its reason -------------------------------------------------------------

ILLEGAL: list[tuple[str, list[Event], Event, str]] = [
    ("ack of a unit never dispatched", [], acked(5, "P1"), "unit P1 was never dispatched"),
    ("ack of another unit", [dispatched(1, "P2")], acked(5, "P1"), "unit P1 was never dispatched"),
    ("departure never dispatched", [], departed(5, "P1"), "never dispatched"),
    ("arrival never dispatched", [], arrived(5, "P1"), "never dispatched"),
    ("contact never dispatched", [], contacted(5, "P1"), "never dispatched"),
    ("clear never dispatched", [], cleared(5, "P1"), "never dispatched"),
    ("cancel never dispatched", [], cancelled(5, "P1"), "never dispatched"),
    ("reassign never dispatched", [], Reassigned(ts=at(5), source="system", unit_id="P1", reason="no ack"),
     "never dispatched"),
    ("arrival on a cancelled assignment", [dispatched(1, "P1"), cancelled(3, "P1")], arrived(9, "P1"),
     "assignment of unit P1 was cancelled at"),
    ("late arrival before the cancel is still refused", [dispatched(1, "P1"), cancelled(30, "P1")],
     arrived(9, "P1"), "was cancelled at"),
    ("ack on a cancelled assignment", [dispatched(1, "P1"), cancelled(3, "P1")], acked(4, "P1"), "was cancelled"),
    ("departure on a cancelled assignment", [dispatched(1, "P1"), cancelled(3, "P1")], departed(4, "P1"),
     "was cancelled"),
    ("contact on a cancelled assignment", [dispatched(1, "P1"), cancelled(3, "P1")], contacted(4, "P1"),
     "was cancelled"),
    ("cancel twice", [dispatched(1, "P1"), cancelled(3, "P1")], cancelled(4, "P1"), "was cancelled"),
    ("clear a cancelled assignment", [dispatched(1, "P1"), cancelled(3, "P1")], cleared(4, "P1"), "was cancelled"),
    ("dispatch the same unit twice", [dispatched(1, "P1")], dispatched(2, "P1"),
     "unit P1 is already assigned to incident I-1 (dispatched)"),
    ("dispatch a unit already on scene", [dispatched(1, "P1"), arrived(60, "P1")], dispatched(70, "P1"),
     "already assigned to incident I-1 (on_scene)"),
    ("ack of another command", [dispatched(1, "P1", cmd="c-7")], acked(2, "P1", cmd="c-8"),
     "ack of command c-8, but unit P1 was dispatched by c-7"),
    ("repeated ack", [dispatched(1, "P1"), acked(2, "P1")], acked(3, "P1"), "unit P1 already acknowledged at"),
    ("repeated arrival at the same time", [dispatched(1, "P1"), arrived(60, "P1")], arrived(60, "P1"),
     "unit P1 already arrived at"),
    ("repeated incident-level support", [supported(40)], supported(50), "incident I-1 already supported at"),
    ("clear twice", [dispatched(1, "P1"), cleared(90, "P1")], cleared(95, "P1"), "unit P1 was already cleared at"),
    ("cancel after clear", [dispatched(1, "P1"), cleared(90, "P1")], cancelled(95, "P1"), "already cleared"),
    ("arrival after the unit was cleared", [dispatched(1, "P1"), cleared(90, "P1")], arrived(95, "P1"),
     "unit P1 was cleared at"),
    ("clear before the recorded arrival", [dispatched(1, "P1"), arrived(60, "P1")], cleared(30, "P1"),
     "cannot be cleared at"),
    ("cancel before the recorded ack", [dispatched(1, "P1"), acked(20, "P1")], cancelled(10, "P1"),
     "cannot be cancelled at"),
    ("dispatch before received", [], dispatched(-1, "P1"), "is before the call was received at"),
    ("arrival before received", [dispatched(1, "P1")], arrived(-0.001, "P1"), "before the call was received"),
    ("note before received", [], Noted(ts=at(-5), source="api", text="x"), "before the call was received"),
    ("dispatch after close", [closed(100)], dispatched(101, "P1"), "incident I-1 was closed at"),
    ("arrival after close", [dispatched(1, "P1"), closed(100)], arrived(90, "P1"), "was closed at"),
    ("note after close", [closed(100)], Noted(ts=at(101), source="api", text="late"), "was closed at"),
    ("close twice", [closed(100)], closed(101), "was closed at"),
    ("divert after close", [closed(100)], diverted(101), "was closed at"),
    ("dispatch after diversion", [diverted(10)], dispatched(11, "P1"), "diverted to the 12345 hotline"),
    ("support after diversion", [diverted(10)], supported(11), "diverted to the 12345 hotline"),
    ("divert twice", [diverted(10)], diverted(11), "diverted to the 12345 hotline"),
    ("hand over without diversion", [], HandedOver(ts=at(5), source="system"), "was not diverted"),
    ("hand over twice", [diverted(10), HandedOver(ts=at(20), source="system")],
     HandedOver(ts=at(30), source="system"), "already handed over at"),
]


@pytest.mark.parametrize(("prior", "event", "reason"), [c[1:] for c in ILLEGAL], ids=[c[0] for c in ILLEGAL])
def test_illegal_move_is_refused_with_its_reason_and_changes_nothing(
    prior: list[Event], event: Event, reason: str
) -> None:
    inc = incident(*prior)
    before = inc.view(at(1000))
    with pytest.raises(IllegalTransition, match=re.escape(reason)) as err:
        inc.apply(event)
    assert reason in err.value.reason
    assert isinstance(err.value, DomainError)
    assert inc.view(at(1000)) == before
    assert len(inc.log) == len(prior) + 1


def test_nothing_before_created_and_created_once() -> None:
    with pytest.raises(IllegalTransition, match="does not exist yet"):
        Incident("I-1").apply(dispatched(1, "P1"))
    with pytest.raises(IllegalTransition, match="does not exist yet"):
        Incident("I-1").view(T0)
    with pytest.raises(IllegalTransition, match="already created"):
        incident().apply(created())


def test_received_at_given_is_the_reference_for_before_received() -> None:
    inc = incident(first=created(ts=at(30), received_at=at(0)))
    inc.apply(dispatched(10, "P1"))  # before creation, after the call: legal
    assert inc.milestones()["received"] == Milestone(at(0), "api", None)
    with pytest.raises(IllegalTransition, match="before the call was received"):
        inc.apply(acked(-1, "P1"))


# --- legal flows -----------------------------------------------------------------------------------------


def test_whole_response_of_one_unit() -> None:
    inc = incident(dispatched(20, "P1", "c-1"), acked(21, "P1", "c-1"), departed(80, "P1"), contacted(150, "P1"),
                   supported(200), arrived(400, "P1"), closed(900))
    view = inc.view(at(1000))
    assert view["status"] == "closed"
    assert view["milestones"] == {
        "received": {"ts": T0, "source": "api", "unit_id": None},
        "dispatched": {"ts": at(20), "source": "system", "unit_id": "P1"},
        "acknowledged": {"ts": at(21), "source": "device", "unit_id": "P1"},
        "departed": {"ts": at(80), "source": "motion", "unit_id": "P1"},
        "contacted": {"ts": at(150), "source": "device", "unit_id": "P1"},
        "supported": {"ts": at(200), "source": "manual", "unit_id": None},
        "arrived": {"ts": at(400), "source": "geofence", "unit_id": "P1"},
        "cleared": {"ts": at(900), "source": "api", "unit_id": None},
    }
    assert view["assignments"] == [{
        "unit_id": "P1", "status": "cleared", "dispatched": at(20), "acknowledged": at(21), "departed": at(80),
        "contacted": at(150), "arrived": at(400), "cleared": at(900), "cancelled": None, "cmd_id": "c-1",
        "sources": {"dispatched": "system", "acknowledged": "device", "departed": "motion", "contacted": "device",
                    "arrived": "geofence", "cleared": "api"},
        "aerial": False,
    }]
    assert [t["met"] for t in view["sla"]] == [True] * 5
    assert {k: view[k] for k in ("id", "category", "priority", "lat", "lon", "address", "summary", "policy")} == {
        "id": "I-1", "category": "robbery", "priority": 1, "lat": 34.261, "lon": 117.186,
        "address": "1 Huaihai Rd", "summary": "shop robbed", "policy": "rapid_12358"}
    assert [e["type"] for e in view["log"]] == ["created", "dispatched", "acknowledged", "departed", "contacted",
                                                "supported", "arrived", "closed"]


STATUS_CHAIN: list[tuple[list[Event], str]] = [
    ([dispatched(1, "P1")], "dispatched"),
    ([dispatched(1, "P1"), acked(2, "P1")], "acknowledged"),
    ([dispatched(1, "P1"), acked(2, "P1"), departed(30, "P1")], "en_route"),
    ([dispatched(1, "P1"), departed(30, "P1")], "en_route"),  # the ack was lost: departure still counts
    ([dispatched(1, "P1"), acked(2, "P1"), contacted(20, "P1")], "acknowledged"),  # contact is off the chain
    ([dispatched(1, "P1"), arrived(300, "P1")], "on_scene"),
    ([dispatched(1, "P1"), arrived(300, "P1"), departed(30, "P1")], "on_scene"),  # late departure: no step back
    ([dispatched(1, "P1"), arrived(300, "P1"), acked(2, "P1")], "on_scene"),
    ([dispatched(1, "P1"), cleared(5, "P1")], "cleared"),
    ([dispatched(1, "P1"), arrived(300, "P1"), cancelled(400, "P1")], "cancelled"),
]


@pytest.mark.parametrize(("events", "status"), STATUS_CHAIN)
def test_assignment_status_is_the_furthest_milestone_reached(events: list[Event], status: str) -> None:
    assert incident(*events).view(T0)["assignments"][0]["status"] == status


def test_out_of_order_milestones_keep_their_own_times_and_nothing_is_invented() -> None:
    inc = incident(dispatched(10, "P1"), arrived(300, "P1"))
    a = inc.view(at(301))["assignments"][0]
    assert (a["acknowledged"], a["departed"], a["arrived"]) == (None, None, at(300))
    inc.apply(departed(95, "P1"))  # the fixes of the departure came in late
    a = inc.view(at(301))["assignments"][0]
    assert (a["acknowledged"], a["departed"], a["arrived"], a["status"]) == (None, at(95), at(300), "on_scene")
    assert inc.milestones()["acknowledged"] is None
    assert inc.milestones()["contacted"] is None


def test_late_data_from_before_the_release_still_counts() -> None:
    inc = incident(dispatched(10, "P1"), cleared(600, "P1"))
    inc.apply(arrived(500, "P1"))  # the dead-zone batch arrives after the dispatcher cleared the unit
    assert inc.view(at(700))["assignments"][0]["arrived"] == at(500)
    assert inc.view(at(700))["assignments"][0]["status"] == "cleared"


def test_first_unit_semantics_with_two_units_and_a_late_batch() -> None:
    inc = incident(dispatched(10, "A"), dispatched(12, "B"), acked(14, "B"), acked(15, "A"), departed(60, "A"),
                   arrived(300, "A"))
    ms = inc.milestones()
    assert (ms["dispatched"].ts, ms["dispatched"].unit_id) == (at(10), "A")  # type: ignore[union-attr]
    assert (ms["acknowledged"].ts, ms["acknowledged"].unit_id) == (at(14), "B")  # type: ignore[union-attr]
    assert (ms["departed"].ts, ms["departed"].unit_id) == (at(60), "A")  # type: ignore[union-attr]
    assert (ms["arrived"].ts, ms["arrived"].unit_id) == (at(300), "A")  # type: ignore[union-attr]
    # B was in a dead zone: its batch shows it departed later but arrived before A.
    inc.apply(departed(70, "B"))
    inc.apply(arrived(250, "B"))
    view = inc.view(at(400))
    assert view["milestones"]["departed"] == {"ts": at(60), "source": "motion", "unit_id": "A"}
    assert view["milestones"]["arrived"] == {"ts": at(250), "source": "geofence", "unit_id": "B"}
    assert {a["unit_id"]: a["arrived"] for a in view["assignments"]} == {"A": at(300), "B": at(250)}
    arrived_target = next(t for t in view["sla"] if t["milestone"] == "arrived")
    assert arrived_target["actual"] == at(250)


def test_an_earlier_time_for_the_same_unit_replaces_the_mark_with_its_source() -> None:
    inc = incident(dispatched(10, "A"), arrived(300, "A", source="manual"))
    inc.apply(arrived(280, "A", source="geofence"))
    assert inc.milestones()["arrived"] == Milestone(at(280), "geofence", "A")


def test_incident_level_entries_without_a_unit_compete_for_the_first_time() -> None:
    inc = incident(dispatched(10, "A"), contacted(200, "A"))
    inc.apply(contacted(120, None))  # the dispatcher reached the caller by phone first
    assert inc.view(at(300))["milestones"]["contacted"] == {"ts": at(120), "source": "manual", "unit_id": None}
    inc.apply(arrived(250, None, source="manual"))
    assert inc.view(at(300))["milestones"]["arrived"]["unit_id"] is None
    assert inc.view(at(300))["assignments"][0]["arrived"] is None


def test_times_of_a_cancelled_assignment_stay_and_count() -> None:
    inc = incident(dispatched(10, "A"), acked(12, "A"), cancelled(40, "A"),
                   Reassigned(ts=at(40), source="system", unit_id="A", to_unit_id="B", reason="A broke down"),
                   dispatched(41, "B"))
    view = inc.view(at(50))
    assert view["milestones"]["acknowledged"]["unit_id"] == "A"
    assert [(a["unit_id"], a["status"], a["cancelled"]) for a in view["assignments"]] == [
        ("A", "cancelled", at(40)), ("B", "dispatched", None)]


def test_a_unit_can_be_dispatched_again_after_cancel_and_events_go_to_the_new_assignment() -> None:
    inc = incident(dispatched(10, "A", "c-1"), cancelled(20, "A"), dispatched(30, "A", "c-2"), acked(31, "A", "c-2"))
    assert [(a.cmd_id, a.status) for a in inc.assignments] == [("c-1", "cancelled"), ("c-2", "acknowledged")]
    assert inc.assignment("A") is inc.assignments[1]
    assert inc.assignment("Z") is None


def test_escalation_after_no_ack_is_in_the_log() -> None:
    inc = incident(dispatched(10, "A"), cancelled(40, "A"),
                   Reassigned(ts=at(40), source="system", unit_id="A", to_unit_id="B", reason="no ack in 30 s",
                              escalated=True),
                   dispatched(40, "B"))
    entry = inc.view(at(50))["log"][3]
    assert entry == {"type": "reassigned", "ts": at(40), "source": "system", "unit_id": "A", "reason": "no ack in 30 s",
                     "to_unit_id": "B", "escalated": True}


def test_close_clears_the_active_assignments_and_keeps_cancelled_ones() -> None:
    inc = incident(dispatched(10, "A"), dispatched(11, "B"), cancelled(20, "B"), dispatched(12, "C"),
                   cleared(200, "C"), closed(900))
    view = inc.view(at(1000))
    assert [(a["unit_id"], a["status"], a["cleared"]) for a in view["assignments"]] == [
        ("A", "cleared", at(900)), ("B", "cancelled", None), ("C", "cleared", at(200))]
    assert view["milestones"]["cleared"] == {"ts": at(900), "source": "api", "unit_id": None}
    assert view["closed_at"] == at(900)
    assert inc.active_assignments() == []


def test_a_unit_release_is_not_the_incident_cleared_milestone() -> None:
    inc = incident(dispatched(10, "A"), cleared(200, "A"))
    assert inc.milestones()["cleared"] is None
    assert inc.status == "open"


def test_diversion_to_12345_cancels_units_and_records_the_hand_over() -> None:
    inc = incident(dispatched(10, "A"), diverted(30))
    view = inc.view(at(40))
    assert view["status"] == "diverted"
    assert view["assignments"][0]["status"] == "cancelled"
    assert view["sla"] == []  # police targets no longer apply
    assert view["diversion"] == {"reason": "noise complaint: non-police", "diverted_at": at(30),
                                 "handed_over_at": None, "ref": ""}
    inc.apply(Noted(ts=at(50), source="system", text="webhook refused, retrying"))
    inc.apply(HandedOver(ts=at(95), source="system", ref="12345-778"))
    inc.apply(closed(100))
    view = inc.view(at(200))
    assert view["status"] == "closed"
    assert view["diversion"]["handed_over_at"] == at(95)
    assert view["diversion"]["ref"] == "12345-778"


def test_an_unknown_or_missing_policy_gives_no_sla() -> None:
    assert incident(first=created(policy=None)).view(at(10))["sla"] == []
    assert incident(first=created(policy="gone")).view(at(10))["sla"] == []


# --- replay ------------------------------------------------------------------------------------------------

ONE_OF_EACH: list[Event] = [
    created(received_at=T0 - 5000),
    dispatched(10, "A", "c-1"),
    acked(11, "A", "c-1"),
    departed(60, "A"),
    contacted(100, "A"),
    supported(150),
    arrived(300, "A"),
    dispatched(12, "B"),
    cancelled(20, "B"),
    Reassigned(ts=at(20), source="system", unit_id="B", to_unit_id="C", reason="no ack", escalated=True),
    cleared(500, "A"),
    Noted(ts=at(510), source="api", text="all quiet"),
    closed(600),
]


def test_replaying_the_stored_log_rebuilds_the_identical_view() -> None:
    live = Incident.replay("I-9", ONE_OF_EACH)
    stored = json.dumps([e.to_dict() for e in live.log])
    rebuilt = Incident.replay("I-9", [event_from_dict(d) for d in json.loads(stored)])
    for now in (at(0), at(100), at(10_000)):
        assert rebuilt.view(now) == live.view(now)
    assert rebuilt.log == live.log


def test_replay_of_a_refused_event_is_refused_again() -> None:
    log: list[Event] = [created(), dispatched(10, "A")]
    inc = Incident.replay("I-1", log)
    with pytest.raises(IllegalTransition):
        inc.apply(dispatched(11, "A"))
    assert Incident.replay("I-1", inc.log).view(at(20)) == inc.view(at(20))


# --- the unit status an assignment implies ------------------------------------------------------------------


def test_assignment_gives_the_unit_status_to_restore() -> None:
    inc = incident(dispatched(10, "A"), departed(30, "A"), dispatched(11, "B"), cancelled(20, "B"))
    assert inc.assignment("A").unit_status is UnitStatus.EN_ROUTE  # type: ignore[union-attr]
    assert inc.assignment("B").unit_status is UnitStatus.AVAILABLE  # type: ignore[union-attr]


def test_a_drone_assignment_has_its_milestones_but_does_not_meet_the_incidents_targets() -> None:
    incident = Incident.replay("I-9", [
        Created(ts=at(0), source="api", category="robbery", priority=1, lat=34.261, lon=117.186),
        Dispatched(ts=at(20), source="api", unit_id="UAV-01", cmd_id="d-1", aerial=True),
        Acknowledged(ts=at(22), source="device", unit_id="UAV-01", cmd_id="d-1"),
        Departed(ts=at(40), source="motion", unit_id="UAV-01"),
        Arrived(ts=at(150), source="geofence", unit_id="UAV-01"),
    ])
    a = incident.assignment("UAV-01")
    assert a is not None and a.aerial and a.status == "on_scene" and a.to_dict()["aerial"] is True
    assert {k: v for k, v in incident.milestones().items() if v is not None} == {
        "received": incident.milestones()["received"]}
    # The flag survives the log's JSON form.
    again = Incident.replay("I-9", [event_from_dict(e.to_dict()) for e in incident.log])
    assert again.assignment("UAV-01").aerial  # type: ignore[union-attr]
