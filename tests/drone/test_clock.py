"""ClockSync: the autopilot's boot clock on the hub's clock, from samples with one-sided latency noise."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drone.clock import ClockSync

HUB_AT_BOOT = 1_780_000_000_000  # hub wall ms at the autopilot's boot


def test_no_estimate_before_a_sample() -> None:
    clock = ClockSync()
    assert clock.hub_ms(1000) is None and clock.offset_ms is None and clock.drone_offset_ms is None


def test_minimum_latency_sample_wins_and_unix_time_gives_the_drone_offset() -> None:
    clock = ClockSync()
    assert not clock.observe(1_000, HUB_AT_BOOT + 1_000 + 40)  # 40 ms late
    assert clock.hub_ms(1_000) == HUB_AT_BOOT + 1_040
    assert not clock.observe(2_000, HUB_AT_BOOT + 2_000 + 3, unix_ms=HUB_AT_BOOT + 2_000 - 2_650)  # 3 ms late
    assert not clock.observe(3_000, HUB_AT_BOOT + 3_000 + 900)  # a stalled radio: ignored
    assert clock.hub_ms(5_000) == HUB_AT_BOOT + 5_003
    assert clock.drone_offset_ms == -2_650 - 3  # smoothed by the same estimate: off by the smallest latency


def test_window_forgets_an_old_minimum() -> None:
    clock = ClockSync(window_ms=10_000)
    clock.observe(0, HUB_AT_BOOT)  # an exact sample...
    for t in range(1_000, 12_001, 1_000):  # ...then the hub's clock is stepped 500 ms later (NTP)
        clock.observe(t, HUB_AT_BOOT + t + 500)
    assert clock.offset_ms == HUB_AT_BOOT + 500


def test_reboot_restarts_the_estimate() -> None:
    clock = ClockSync()
    clock.observe(600_000, HUB_AT_BOOT + 600_000, unix_ms=HUB_AT_BOOT + 600_000)
    assert not clock.observe(599_500, HUB_AT_BOOT + 600_100)  # 500 ms back: UDP reordering, not a reboot
    rebooted_at = HUB_AT_BOOT + 700_000
    assert clock.observe(2_000, rebooted_at + 2_000)
    assert clock.hub_ms(2_000) == rebooted_at + 2_000
    assert clock.drone_offset_ms is None and clock.samples == 1  # the old wall clock went with the old boot


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ClockSync(window_ms=0)


latencies = st.lists(st.integers(0, 5_000), min_size=1, max_size=60)


@given(offset=st.integers(-(2**62), 2**62), latencies=latencies, step=st.integers(1, 1_000))
def test_jitter_moves_the_estimate_by_the_smallest_latency_only(offset: int, latencies: list[int], step: int) -> None:
    clock = ClockSync(window_ms=10**9)
    for i, latency in enumerate(latencies):
        boot = i * step
        assert not clock.observe(boot, offset + boot + latency)
    estimate = clock.hub_ms(0)
    assert estimate is not None and estimate - offset == min(latencies)


@given(latencies=latencies, boots=st.lists(st.integers(0, 2**40), min_size=2, max_size=10))
def test_monotone_in_boot_time(latencies: list[int], boots: list[int]) -> None:
    clock = ClockSync()
    for i, latency in enumerate(latencies):
        clock.observe(i * 100, HUB_AT_BOOT + i * 100 + latency)
    stamped = [clock.hub_ms(b) for b in sorted(boots)]
    assert all(a is not None and b is not None and a <= b for a, b in itertools.pairwise(stamped))


@given(before=st.integers(2_000, 2**32), back=st.integers(1_001, 2**32))
def test_any_jump_back_beyond_a_second_is_a_reboot(before: int, back: int) -> None:
    clock = ClockSync()
    clock.observe(before, HUB_AT_BOOT + before)
    after = before - back
    assert clock.observe(after, HUB_AT_BOOT + before + 5)
    assert clock.hub_ms(after) == HUB_AT_BOOT + before + 5 and clock.samples == 1


huge = st.integers(-(2**80), 2**80)


@given(st.lists(st.tuples(huge, huge, st.none() | huge), max_size=40), huge)
def test_never_crashes_on_any_ints(samples: list[tuple[int, int, int | None]], query: int) -> None:
    clock = ClockSync()
    for boot, recv, unix in samples:
        assert isinstance(clock.observe(boot, recv, unix), bool)
    result = clock.hub_ms(query)
    assert (result is None) == (not samples)
    assert clock.drone_offset_ms is None or isinstance(clock.drone_offset_ms, int)
