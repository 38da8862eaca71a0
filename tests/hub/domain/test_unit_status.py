"""The unit status machine: every status against every unit event, each refusal with its reason."""

from __future__ import annotations

import pytest

from hub.domain.errors import IllegalTransition
from hub.domain.unit_status import UNIT_EVENTS, UnitStatus, next_unit_status

S = UnitStatus
LEGAL_UNIT_MOVES: dict[tuple[UnitStatus, str], UnitStatus] = {
    (S.AVAILABLE, "dispatched"): S.DISPATCHED,
    (S.AVAILABLE, "offline"): S.OFFLINE,
    (S.AVAILABLE, "out_of_service"): S.OUT_OF_SERVICE,
    (S.DISPATCHED, "acknowledged"): S.ACKNOWLEDGED,
    (S.DISPATCHED, "departed"): S.EN_ROUTE,
    (S.DISPATCHED, "arrived"): S.ON_SCENE,
    (S.ACKNOWLEDGED, "departed"): S.EN_ROUTE,
    (S.ACKNOWLEDGED, "arrived"): S.ON_SCENE,
    (S.EN_ROUTE, "acknowledged"): S.EN_ROUTE,
    (S.EN_ROUTE, "arrived"): S.ON_SCENE,
    (S.ON_SCENE, "acknowledged"): S.ON_SCENE,
    (S.ON_SCENE, "departed"): S.ON_SCENE,
    **{(s, "contacted"): s for s in (S.DISPATCHED, S.ACKNOWLEDGED, S.EN_ROUTE, S.ON_SCENE)},
    **{(s, e): S.AVAILABLE for s in (S.DISPATCHED, S.ACKNOWLEDGED, S.EN_ROUTE, S.ON_SCENE)
       for e in ("cleared", "cancelled")},
    **{(s, "offline"): S.OFFLINE for s in (S.DISPATCHED, S.ACKNOWLEDGED, S.EN_ROUTE, S.ON_SCENE)},
    (S.OFFLINE, "online"): S.AVAILABLE,
    (S.OFFLINE, "out_of_service"): S.OUT_OF_SERVICE,
    (S.OUT_OF_SERVICE, "in_service"): S.AVAILABLE,
}
ALL_UNIT_MOVES = [(s, e) for s in UnitStatus for e in UNIT_EVENTS]


@pytest.mark.parametrize(("status", "event_type"), ALL_UNIT_MOVES, ids=[f"{s}-{e}" for s, e in ALL_UNIT_MOVES])
def test_unit_status_every_status_and_event(status: UnitStatus, event_type: str) -> None:
    expected = LEGAL_UNIT_MOVES.get((status, event_type))
    if expected is None:
        with pytest.raises(IllegalTransition, match=f"a unit that is {status} cannot take '{event_type}': "):
            next_unit_status(status, event_type)
    else:
        assert next_unit_status(str(status), event_type) is expected


@pytest.mark.parametrize(("status", "event_type", "reason"), [
    (S.ACKNOWLEDGED, "dispatched", "only an available unit can be dispatched"),
    (S.AVAILABLE, "arrived", "it has no active assignment"),
    (S.OFFLINE, "cleared", "it has no active assignment"),
    (S.EN_ROUTE, "departed", "it is already there"),
    (S.EN_ROUTE, "out_of_service", "clear or cancel its assignment first"),
    (S.OUT_OF_SERVICE, "out_of_service", "it already is"),
    (S.OUT_OF_SERVICE, "offline", "it is not in service"),
    (S.AVAILABLE, "online", "it is not offline"),
    (S.AVAILABLE, "in_service", "it is not out of service"),
])
def test_unit_status_refusals_say_why(status: UnitStatus, event_type: str, reason: str) -> None:
    with pytest.raises(IllegalTransition, match=reason):
        next_unit_status(status, event_type)


def test_unit_status_unknown_status_or_event() -> None:
    with pytest.raises(IllegalTransition, match="unknown unit status 'parked'"):
        next_unit_status("parked", "dispatched")
    with pytest.raises(IllegalTransition, match="unknown unit event 'teleported'"):
        next_unit_status("available", "teleported")

