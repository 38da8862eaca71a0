"""The mean position of a stop and its standard error: assumed at first, then measured from block means."""

from __future__ import annotations

import math
import random

import pytest

from hub.domain.arrival import ArrivalParams
from hub.domain.stay_mean import MeanPosition
from hub.domain.track import SIGMA_PER_ACC, Point
from tests.hub.domain.test_track import ms

PARAMS = ArrivalParams()  # 10 s blocks, margin max(1 m, 3 standard errors)
ACC = 6.0
SIGMA = ACC * SIGMA_PER_ACC


def _mean(offsets: list[tuple[float, float]], every_s: float = 1.0) -> MeanPosition:
    mean = MeanPosition(PARAMS.error_correlation_ms)
    for k, (x, y) in enumerate(offsets):
        fix = None  # the mean reads position, time and acc only
        mean.add(Point(ms(k * every_s), x, y, ACC, 0.0, fix))  # type: ignore[arg-type]
    return mean


def _white(n: int, seed: int) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [(rng.gauss(0.0, SIGMA), 95.0 + rng.gauss(0.0, SIGMA)) for _ in range(n)]


def _wandering(n: int, seed: int, bias_m: float, keep: float = 0.98) -> list[tuple[float, float]]:
    """White noise plus a bias that keeps ``keep`` of itself per second (a first-order Gauss-Markov drift)."""
    rng = random.Random(seed)
    bx = by = 0.0
    step = bias_m * math.sqrt(1 - keep**2)
    out = []
    for _ in range(n):
        bx, by = keep * bx + rng.gauss(0.0, step), keep * by + rng.gauss(0.0, step)
        out.append((bx + rng.gauss(0.0, SIGMA), 95.0 + by + rng.gauss(0.0, SIGMA)))
    return out


def test_the_mean_and_its_distance() -> None:
    mean = _mean([(0.0, 94.0), (0.0, 96.0), (0.0, 95.0)])
    assert mean.distance() == pytest.approx(95.0)
    assert mean.n == 3


def test_under_four_blocks_the_fixes_of_a_block_count_as_one() -> None:
    mean = _mean(_white(30, 1))  # 30 s: three 10 s blocks, the third still open
    assumed = math.sqrt(SIGMA**2 / 3)  # one independent fix per started 10 s block
    assert mean.standard_error() == pytest.approx(assumed, rel=0.01)


@pytest.mark.parametrize("seed", range(5))
def test_white_noise_is_measured_as_such(seed: int) -> None:
    # Five minutes of independent errors: the measured error stays near sigma / sqrt(n), never below it.
    mean = _mean(_white(300, seed))
    independent = SIGMA / math.sqrt(300)
    assert independent <= mean.standard_error() < 2.0 * independent


def test_a_wandering_bias_widens_the_error() -> None:
    # A 3 m bias wandering over ~50 s: the measured error is several times the white-noise figure, as it must.
    ratios = []
    for seed in range(10):
        mean = _mean(_wandering(300, seed, 3.0))
        ratios.append(mean.standard_error() / (SIGMA / math.sqrt(300)))
    assert sorted(ratios)[len(ratios) // 2] > 2.0


def test_a_stop_tells_inside_from_outside_by_its_margin() -> None:
    inside = _mean([(0.0, 98.5)] * 120)  # margin: 3 standard errors of 120 fixes of acc 6 m, about 1.1 m
    assert inside.inside(100.0, PARAMS) and not inside.maybe_outside(100.0, PARAMS)
    on_the_edge = _mean([(0.0, 99.5)] * 120)
    assert not on_the_edge.inside(100.0, PARAMS)
