"""The status of a unit and the moves between statuses, as a pure function of the current status and an event.

The events are the incident event types that concern a unit, plus the unit's own offline/online and
out_of_service/in_service. A move that is not allowed raises `IllegalTransition` with the reason.
"""

from __future__ import annotations

from enum import StrEnum

from hub.domain.errors import IllegalTransition

__all__ = ["UNIT_EVENTS", "UnitStatus", "next_unit_status"]


class UnitStatus(StrEnum):
    AVAILABLE = "available"
    DISPATCHED = "dispatched"
    ACKNOWLEDGED = "acknowledged"
    EN_ROUTE = "en_route"
    ON_SCENE = "on_scene"
    OFFLINE = "offline"
    OUT_OF_SERVICE = "out_of_service"


_DUTY = (UnitStatus.DISPATCHED, UnitStatus.ACKNOWLEDGED, UnitStatus.EN_ROUTE, UnitStatus.ON_SCENE)
_DUTY_EVENTS = {
    "acknowledged": UnitStatus.ACKNOWLEDGED, "departed": UnitStatus.EN_ROUTE, "arrived": UnitStatus.ON_SCENE,
}
UNIT_EVENTS = ("dispatched", *_DUTY_EVENTS, "contacted", "cleared", "cancelled", "offline", "online",
               "out_of_service", "in_service")


def next_unit_status(current: str, event_type: str) -> UnitStatus:
    """The unit's status after `event_type` (an incident event type, or offline/online/out_of_service/in_service).

    Milestones may come out of order: a late one never moves the unit back (acknowledged after
    arrived keeps on_scene). `online` returns to available: a unit that went offline during a
    response gets its status back from its assignment (`Assignment.unit_status`)."""
    try:
        status = UnitStatus(current)
    except ValueError:
        raise IllegalTransition(f"unknown unit status {current!r}") from None

    def refuse(why: str) -> IllegalTransition:
        return IllegalTransition(f"a unit that is {status} cannot take {event_type!r}: {why}")

    on_duty = status in _DUTY
    if event_type == "dispatched":
        if status is UnitStatus.AVAILABLE:
            return UnitStatus.DISPATCHED
        raise refuse("only an available unit can be dispatched")
    if event_type in _DUTY_EVENTS or event_type in ("contacted", "cleared", "cancelled"):
        if not on_duty:
            raise refuse("it has no active assignment")
        if event_type in ("cleared", "cancelled"):
            return UnitStatus.AVAILABLE
        if event_type == "contacted":
            return status
        target = _DUTY_EVENTS[event_type]
        if target is status:
            raise refuse("it is already there")
        return max(status, target, key=_DUTY.index)
    if event_type == "offline":
        if status is UnitStatus.AVAILABLE or on_duty:
            return UnitStatus.OFFLINE
        raise refuse("it is not in service")
    if event_type == "online":
        if status is UnitStatus.OFFLINE:
            return UnitStatus.AVAILABLE
        raise refuse("it is not offline")
    if event_type == "out_of_service":
        if status in (UnitStatus.AVAILABLE, UnitStatus.OFFLINE):
            return UnitStatus.OUT_OF_SERVICE
        raise refuse("clear or cancel its assignment first" if on_duty else "it already is")
    if event_type == "in_service":
        if status is UnitStatus.OUT_OF_SERVICE:
            return UnitStatus.AVAILABLE
        raise refuse("it is not out of service")
    raise IllegalTransition(f"unknown unit event {event_type!r} (known: {', '.join(UNIT_EVENTS)})")
