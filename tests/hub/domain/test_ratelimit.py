"""Token buckets and drop summaries: pure, time passed in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.domain.ratelimit import DropSummaries, Limit, RateLimiter

T0 = 1_795_000_000_000


def test_a_full_bucket_passes_its_burst_then_its_rate() -> None:
    limiter = RateLimiter({"telemetry": Limit(2.0, 5)})
    assert [limiter.allow("telemetry", "d1", T0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert not limiter.allow("telemetry", "d1", T0 + 400)  # 0.8 token
    assert limiter.allow("telemetry", "d1", T0 + 500)  # 1 token after half a second at 2/s
    assert not limiter.allow("telemetry", "d1", T0 + 500)
    assert limiter.allow("telemetry", "d2", T0)  # every device has its own bucket


def test_refill_stops_at_the_burst_and_cost_takes_several_tokens() -> None:
    limiter = RateLimiter({"fixes": Limit(200.0, 10_000)})
    assert limiter.allow("fixes", "d1", T0, cost=1000)  # a store-and-forward batch within the burst
    assert limiter.allow("fixes", "d1", T0, cost=9000)
    assert not limiter.allow("fixes", "d1", T0, cost=1)
    assert not limiter.allow("fixes", "d1", T0 + 60_000_000, cost=10_001)  # an hour later: still only the burst
    assert limiter.allow("fixes", "d1", T0 + 60_000_000, cost=10_000)


def test_a_kind_without_a_limit_always_passes_and_bad_limits_are_refused() -> None:
    limiter = RateLimiter({"event": Limit(1.0, 1)})
    assert all(limiter.allow("status", "d1", T0) for _ in range(100))
    with pytest.raises(ValueError, match="status"):
        RateLimiter({"status": Limit(0.0, 10)})


def test_a_clock_going_backwards_gives_no_tokens() -> None:
    limiter = RateLimiter({"event": Limit(1.0, 1)})
    assert limiter.allow("event", "d1", T0)
    assert not limiter.allow("event", "d1", T0 - 10_000)
    assert not limiter.allow("event", "d1", T0 + 500)
    assert limiter.allow("event", "d1", T0 + 1000)


@given(st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 4), st.booleans()), max_size=200))
def test_evicting_idle_buckets_never_changes_a_decision(steps: list[tuple[int, int, bool]]) -> None:
    plain = RateLimiter({"telemetry": Limit(2.0, 5)})
    evicting = RateLimiter({"telemetry": Limit(2.0, 5)})
    now = T0
    for dt, cost, evict in steps:
        now += dt
        if evict:
            evicting.evict_idle(now)
        assert plain.allow("telemetry", "d", now, cost) == evicting.allow("telemetry", "d", now, cost)
    assert len(evicting) <= 1


def test_idle_and_forgotten_buckets_leave_the_map() -> None:
    limiter = RateLimiter({"telemetry": Limit(1.0, 2), "event": Limit(1.0, 2)})
    for n in range(100):
        limiter.allow("telemetry", f"d{n}", T0)
        limiter.allow("event", f"d{n}", T0)
    limiter.allow("telemetry", "busy", T0 + 1000, cost=2)
    assert len(limiter) == 201
    assert limiter.evict_idle(T0 + 1000) == 200  # refilled after 1 s at 1/s: as good as no bucket
    assert len(limiter) == 1
    limiter.forget({"other": 1})
    assert len(limiter) == 0


def test_drops_fold_into_one_summary_per_device_channel_and_window() -> None:
    drops = DropSummaries(window_ms=10_000, keep_bytes=4)
    for i in range(1000):
        drops.add("d1", "telemetry", "t/d1", b"first" if i == 0 else b"later", T0 + i)
    drops.add("d1", "event", "t/d1e", b"ev", T0 + 5)
    drops.add("d2", "telemetry", "t/d2", b"x", T0 + 9_000)
    assert drops.due(T0 + 9_999) == []
    closed = drops.due(T0 + 10_005)
    assert [(d.key, d.kind, d.count, d.first, d.size) for d in closed] == [
        ("d1", "telemetry", 1000, b"firs", 5), ("d1", "event", 1, b"ev", 2)]
    drops.add("d1", "telemetry", "t/d1", b"again", T0 + 10_006)  # a new window
    assert [(d.key, d.count) for d in drops.flush()] == [("d2", 1), ("d1", 1)]
    assert len(drops) == 0


def test_open_summaries_are_bounded() -> None:
    drops = DropSummaries(max_open=3)
    for n in range(5):
        drops.add(f"d{n}", "telemetry", "t", b"", T0)
    assert [d.key for d in drops.due(T0)] == ["d0", "d1"]  # the oldest close early rather than grow the map
    assert len(drops) == 3
