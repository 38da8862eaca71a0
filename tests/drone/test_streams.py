"""The stream keeper's pure decisions: when to (re-)request a message, its status, the one-sentence problem."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drone.streams import (
    WANTED,
    Request,
    message_status,
    overdue_after_s,
    problem_of,
    request_due,
    verify_window_s,
)

V = 3.0  # verify_s


def test_windows() -> None:
    assert overdue_after_s(4.0, V) == 3.0 and overdue_after_s(0.2, V) == 25.0
    assert verify_window_s(4.0, V) == 3.0 and verify_window_s(0.2, V) == 10.0


def test_a_pending_request_goes_out_at_once_and_at_most_once_per_verify_s() -> None:
    req = Request(4.0)
    assert request_due(req, None, 100.0, V, fresh=True)
    assert not request_due(req, None, 100.0, V, fresh=False)  # no heartbeat: nobody to ask
    req.requested_at = 99.0  # asked 1 s ago, then the autopilot rebooted
    assert not request_due(req, None, 100.0, V, fresh=True)
    assert request_due(req, None, 102.0, V, fresh=True)


def test_overdue_only_after_5_intervals_of_silence_since_arrival_or_request() -> None:
    req = Request(1.0, pending=False, requested_at=90.0, answer="accepted", answered_at=90.0)
    assert not request_due(req, 99.0, 103.0, V, fresh=True)  # 4 s quiet, 5 intervals = 5 s
    assert request_due(req, 99.0, 104.5, V, fresh=True)
    assert not request_due(req, 99.0, 104.5, V, fresh=False)  # quiet because the link is: the watchdog tells
    slow = Request(0.2, pending=False, requested_at=100.0, answer="accepted", answered_at=100.0)
    assert not request_due(slow, None, 120.0, V, fresh=True) and request_due(slow, None, 125.5, V, fresh=True)


def test_repeated_failures_back_off() -> None:
    req = Request(4.0, pending=False, requested_at=100.0, answer="refused: MAV_RESULT_DENIED", failures=0)
    assert request_due(req, None, 103.5, V, fresh=True)
    req.failures = 2
    assert not request_due(req, None, 111.0, V, fresh=True) and request_due(req, None, 112.0, V, fresh=True)
    req.failures = 50
    assert not request_due(req, None, 147.0, V, fresh=True) and request_due(req, None, 148.0, V, fresh=True)


@pytest.mark.parametrize(("req", "last_seen", "now", "status"), [
    (Request(4.0), None, 10.0, "not requested"),
    (Request(4.0, requested_at=10.0), None, 10.5, "requested"),
    (Request(4.0, requested_at=10.0, answer="accepted", answered_at=10.1), None, 12.0, "requested"),
    (Request(4.0, requested_at=10.0, answer="accepted", answered_at=10.1), None, 13.2,
     "missing (accepted, none arrived)"),
    (Request(4.0, requested_at=10.0, answer="accepted", answered_at=10.1), 13.0, 13.2, "ok"),
    (Request(4.0), 13.0, 13.2, "ok"),  # streamed unasked (a router asked): fine
    (Request(4.0, requested_at=10.0, answer="no answer", answered_at=12.0), None, 12.0, "no answer"),
    (Request(1.0, requested_at=10.0, answer="refused: MAV_RESULT_DENIED: Bad rate", answered_at=10.0), None, 11.0,
     "refused: MAV_RESULT_DENIED: Bad rate"),
    (Request(0.2, requested_at=10.0, answer="accepted", answered_at=10.0), None, 19.0, "requested"),  # 2 intervals
])
def test_message_status(req: Request, last_seen: float | None, now: float, status: str) -> None:
    assert message_status(req, last_seen, now, V) == status


def test_problem_names_position_first_then_the_wanted_order() -> None:
    statuses = dict.fromkeys(WANTED, "ok")
    assert problem_of(WANTED, statuses, V) is None
    statuses["SYS_STATUS"] = "refused: MAV_RESULT_FAILED"
    statuses["HOME_POSITION"] = "requested"
    assert problem_of(WANTED, statuses, V) == (
        "no health report: SYS_STATUS at 1 Hz refused by the autopilot (MAV_RESULT_FAILED)")
    statuses["GLOBAL_POSITION_INT"] = "missing (accepted, none arrived)"
    assert problem_of(WANTED, statuses, V) == (
        "no position: GLOBAL_POSITION_INT requested at 4 Hz, accepted, none arrived in 3 s")
    statuses["GLOBAL_POSITION_INT"] = "no answer"
    assert problem_of(WANTED, statuses, V) == (
        "no position: GLOBAL_POSITION_INT requested at 4 Hz, the autopilot did not answer")
    assert problem_of({"HOME_POSITION": 0.2}, {"HOME_POSITION": "missing (accepted, none arrived)"}, V) == (
        "no home: HOME_POSITION requested at 0.2 Hz, accepted, none arrived in 10 s")
    assert problem_of({"HOME_POSITION": 0.2}, {}, V) == (
        "no home: HOME_POSITION not requested yet (no heartbeat from the autopilot)")


request = st.builds(
    Request, hz=st.sampled_from([0.2, 1.0, 4.0, 50.0]), pending=st.booleans(),
    requested_at=st.none() | st.floats(0, 1000), answered_at=st.none() | st.floats(0, 1000),
    answer=st.none() | st.sampled_from(["accepted", "no answer", "refused: MAV_RESULT_DENIED", "not sent: x"]),
    failures=st.integers(0, 1000))


@given(req=request, last_seen=st.none() | st.floats(0, 1000), now=st.floats(0, 1000), fresh=st.booleans())
def test_never_more_than_once_per_verify_s_and_never_without_heartbeats(req: Request, last_seen: float | None,
                                                                      now: float, fresh: bool) -> None:
    due = request_due(req, last_seen, now, V, fresh)
    if due:
        assert fresh and (req.requested_at is None or now - req.requested_at >= V)
    status = message_status(req, last_seen, now, V)
    assert status in ("ok", "not requested", "requested", "missing (accepted, none arrived)", "no answer") \
        or status.startswith(("refused: ", "not sent: "))
