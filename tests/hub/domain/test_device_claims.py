"""The hub's rules for what a device may claim: ack and contact times, detected milestones, SOS positions, repeats."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.payloads import Fix
from geo.geodesy import offset
from hub.domain.arrival import ArrivalDetector
from hub.domain.departure import DepartureDetector
from hub.domain.device_claims import (
    ACK_AHEAD_TOLERANCE_MS,
    DEVICE_NOTE_CAP,
    Coalescer,
    ack_verdict,
    contact_verdict,
    detected_verdict,
    sos_place,
)
from hub.domain.events import Acknowledged, Arrived, Contacted, Dispatched, Noted
from hub.domain.incident import Incident
from tests.hub.domain.builders import T0, at, created

LAT, LON = 34.261, 117.186


def incident_with(*events: object) -> Incident:
    inc = Incident("I1")
    inc.apply(created())
    for e in events:
        inc.apply(e)  # type: ignore[arg-type]
    return inc


def dispatched(s: float, unit: str = "U1") -> Dispatched:
    return Dispatched(ts=at(s), source="api", unit_id=unit, cmd_id=f"d-{unit}")


# ------------------------------------------------------------------ ack
def test_ack_between_dispatch_and_receipt_keeps_the_device_time() -> None:
    v = ack_verdict(at(10), at(12), at(13))
    assert v.ts == at(12) and v.reason is None and not v.corrected


def test_ack_dated_before_the_dispatch_is_timed_at_its_receipt() -> None:
    v = ack_verdict(at(10), at(-3600), at(14))
    assert v.ts == at(14) and v.reason == "ack_ts_before_dispatch" and v.corrected
    assert "before the dispatch" in v.detail and str(at(14)) in v.detail


def test_ack_dated_after_its_receipt_beyond_the_tolerance_is_timed_at_its_receipt() -> None:
    assert ack_verdict(at(10), at(14) + ACK_AHEAD_TOLERANCE_MS, at(14)).ts == at(14) + ACK_AHEAD_TOLERANCE_MS
    v = ack_verdict(at(10), at(14) + ACK_AHEAD_TOLERANCE_MS + 1, at(14))
    assert v.ts == at(14) and v.reason == "ack_ts_after_receipt"


@given(dispatched_s=st.integers(0, 10_000), device=st.integers(-10**12, 10**12), delay=st.integers(0, 10**9))
def test_an_ack_is_never_recorded_before_its_dispatch(dispatched_s: int, device: int, delay: int) -> None:
    d = at(dispatched_s)
    received = d + delay
    v = ack_verdict(d, max(0, device), received)
    assert v.ts is not None and d <= v.ts <= received + ACK_AHEAD_TOLERANCE_MS


# -------------------------------------------------------------- contact
def test_contact_before_the_call_was_received_is_ignored() -> None:
    inc = incident_with(dispatched(5))
    v = contact_verdict(inc, "U1", T0 - 86_400_000)
    assert v.ts is None and v.reason == "contact_ts_before_received"


def test_contact_before_the_units_dispatch_is_ignored() -> None:
    inc = incident_with(dispatched(60))
    v = contact_verdict(inc, "U1", at(30))
    assert v.ts is None and v.reason == "contact_ts_before_dispatch"


def test_a_second_contact_never_moves_the_first() -> None:
    inc = incident_with(dispatched(5), Contacted(ts=at(100), source="device", unit_id="U1"))
    v = contact_verdict(inc, "U1", at(50))
    assert v.ts is None and v.reason == "contact_would_move"
    # A later one passes to the state machine, which refuses the repeat with its own reason.
    assert contact_verdict(inc, "U1", at(200)).ts == at(200)


def test_a_plausible_contact_and_one_of_an_undispatched_unit_pass_to_the_state_machine() -> None:
    inc = incident_with(dispatched(5))
    assert contact_verdict(inc, "U1", at(40)).ts == at(40)
    assert contact_verdict(inc, "NOBODY", at(40)).ts == at(40)


# ---------------------------------------------------- detected milestones
def test_a_late_batch_may_move_an_arrival_earlier_by_at_most_the_bound() -> None:
    inc = incident_with(dispatched(5), Arrived(ts=at(600), source="geofence", unit_id="U1"))
    a = inc.assignment("U1")
    assert detected_verdict(a, "arrived", at(300), 300_000).ts == at(300)
    v = detected_verdict(a, "arrived", at(299), 300_000)
    assert v.ts is None and v.reason == "milestone_shift_too_large" and "300 s" in v.detail


def test_nothing_detected_before_the_dispatch() -> None:
    inc = incident_with(dispatched(60))
    v = detected_verdict(inc.assignment("U1"), "departed", at(59), 300_000)
    assert v.ts is None and v.reason == "milestone_before_dispatch"
    assert detected_verdict(None, "departed", at(1), 300_000).ts == at(1)  # the state machine decides


def _drive_in(t0: int) -> list[Fix]:
    """Parked 1505 m south for 20 s, then north at 10 m/s to 35 m short of the point, then 180 s on scene."""
    fixes = [Fix(ts=t0 + i * 1000, lat=offset(LAT, LON, -1505.0, 0)[0], lon=LON, acc=5.0, speed=0.0)
             for i in range(20)]
    north = -1505.0
    while north < -35.0:
        north += 10.0
        lat, lon = offset(LAT, LON, north, 0)
        fixes.append(Fix(ts=t0 + len(fixes) * 1000, lat=lat, lon=lon, acc=5.0, speed=10.0))
    last = fixes[-1]
    fixes += [Fix(ts=last.ts + (i + 1) * 1000, lat=last.lat, lon=last.lon, acc=5.0, speed=0.0) for i in range(180)]
    return fixes


@settings(max_examples=40, deadline=None)
@given(since_s=st.integers(-30, 400), seed=st.integers(0, 2**32 - 1), chunk=st.integers(1, 400))
def test_the_detectors_never_answer_before_the_dispatch(since_s: int, seed: int, chunk: int) -> None:
    """Whatever the dispatch time relative to the drive, the chunking and the order the fixes come in."""
    t0 = T0
    fixes = _drive_in(t0)
    random.Random(seed).shuffle(fixes)
    since = t0 + since_s * 1000
    origin = offset(LAT, LON, -1505.0, 0)
    arrival = ArrivalDetector(LAT, LON, 100.0, since_ms=since)
    departure = DepartureDetector(*origin, since)
    for i in range(0, len(fixes), chunk):
        for result in (arrival.add(fixes[i:i + chunk]), departure.add(fixes[i:i + chunk])):
            assert result is None or result.ts >= since
    for final in (arrival.result, departure.result):
        assert final is None or final.ts >= since
    if since_s <= 0:  # the whole drive after the dispatch: both are found (the property is not vacuous)
        assert arrival.result is not None and departure.result is not None


# ------------------------------------------------------------------ SOS
def _fix(north_m: float, ts: int) -> Fix:
    lat, lon = offset(LAT, LON, north_m, 0)
    return Fix(ts=ts, lat=lat, lon=lon, acc=5.0)


def test_a_far_sos_position_is_replaced_by_the_fresh_last_fix() -> None:
    far = offset(LAT, LON, 5000, 0)
    place = sos_place(*far, _fix(0, at(100)), at(110), 120_000, 1000.0)
    assert place.replaced and abs(place.lat - LAT) < 1e-9 and 4900 < place.distance_m < 5100  # type: ignore[operator]


def test_a_near_sos_position_stands_and_a_stale_fix_cannot_replace_one() -> None:
    near = offset(LAT, LON, 900, 0)
    assert sos_place(*near, _fix(0, at(100)), at(110), 120_000, 1000.0).lat == near[0]
    far = offset(LAT, LON, 5000, 0)
    stale = sos_place(*far, _fix(0, at(100)), at(100) + 120_001, 120_000, 1000.0)
    assert stale.lat == far[0] and not stale.replaced


def test_an_sos_without_its_own_position_takes_the_last_fix_or_none() -> None:
    assert sos_place(None, None, _fix(0, at(0)), at(10_000), 120_000, 1000.0).lat == LAT
    assert sos_place(None, None, None, at(0), 120_000, 1000.0).lat is None


# ------------------------------------------------------------- repeats
def test_coalescer_reports_once_per_window_and_counts_the_rest_into_the_next() -> None:
    c = Coalescer(60_000)
    assert c.offer("U1", at(0)) == 0
    assert [c.offer("U1", at(s)) for s in (1, 2, 30)] == [None, None, None]
    assert c.offer("U2", at(30)) == 0  # keys are independent
    assert c.held("U1") == 3 and c.due(at(59)) == []
    assert c.offer("U1", at(60)) == 3
    assert c.offer("U1", at(61)) is None
    assert c.due(at(119)) == [] and c.due(at(120)) == [("U1", 1)] and c.held("U1") == 0
    c.forget("U1")
    assert c.offer("U1", at(121)) == 0


def test_coalescer_stays_bounded() -> None:
    c = Coalescer(60_000, max_keys=100)
    for i in range(1000):
        c.offer(f"K{i}", at(0))
    assert len(c._last) <= 100


# --------------------------------------------------- incident log bounds
def test_device_notes_are_counted_and_the_view_can_carry_only_the_newest_log_entries() -> None:
    inc = incident_with(dispatched(5), Acknowledged(ts=at(6), source="device", unit_id="U1", cmd_id="d-U1"))
    for i in range(DEVICE_NOTE_CAP):
        inc.apply(Noted(ts=at(10 + i), source="device", text=f"n{i}"))
    inc.apply(Noted(ts=at(100), source="manual", text="by hand"))
    inc.apply(Noted(ts=at(101), source="geofence", text="detector"))
    assert inc.device_notes == DEVICE_NOTE_CAP + 1
    full = inc.view(at(200))
    assert len(full["log"]) == full["log_size"] == len(inc.log) == DEVICE_NOTE_CAP + 5
    live = inc.view(at(200), log_limit=3)
    assert live["log_size"] == len(inc.log) and [e["text"] for e in live["log"]] == ["n49", "by hand", "detector"]
    assert inc.view(at(200), log_limit=0)["log"] == []
