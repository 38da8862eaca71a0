"""A unit's path over a stretch of its track, smoothed with the velocity its fixes report.

GPS places a car to a few metres per fix, but its Doppler speed and course are good to
a fraction of a metre per second. Carried from fix to fix by those velocities, the
positions of many fixes pin down where the car was at each of them far better than
any one fix can: a car braking to rest three metres inside the arrival zone crossed
the edge some twenty metres back along the road, and how far it drove since then is
known from its speed to well under a metre.

:func:`smooth` is a Rauch-Tung-Striebel smoother (a Kalman filter run forward, then
corrected backward) with the position as the state of each axis: a fix measures it
with the error its ``acc`` declares, and between two fixes the car moves by the
trapezoid of their reported velocities, with the variance that follows from the
velocity noise (``VelocityNoise``). A fix without speed says nothing about where the car
went (the step gets a wide variance); one moving without a course, only how far it could
have gone. :attr:`Smoothed.dead_reckoned` tells the caller whether the stretch was aided.

Pure: no clock, no I/O; the track's points are read, never changed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Final

from hub.domain.track import Point, Track

__all__ = ["Smoothed", "VelocityNoise", "smooth"]

# A fix that reports no course but a speed below this still aids the path (it crawled at most that far
# each second; receivers leave the course out when slow); faster without a course it says little.
_NO_COURSE_MPS: Final = 2.0
# The path counts as dead-reckoned when at most this share of its steps lacks a direction of travel.
_MAX_BLIND_SHARE: Final = 0.1


@dataclass(frozen=True, slots=True)
class VelocityNoise:
    """How far the reported velocity can be trusted; generous against the simulator's 0.3 m/s and 3 degrees."""

    speed_mps: float = 0.5
    course_deg: float = 5.0
    # Motion the trapezoid between two fixes misses (turns, changes of braking), per s^2 of the step.
    model_mps2: float = 0.3
    # The speed assumed when a fix reports none: the step's error is this times its duration.
    unknown_mps: float = 20.0

    def __post_init__(self) -> None:
        if min(self.speed_mps, self.course_deg, self.model_mps2) < 0 or self.unknown_mps <= 0:
            raise ValueError("noise figures must be >= 0 and unknown_mps > 0")


@dataclass(frozen=True, slots=True)
class Smoothed:
    """Smoothed positions of the kept points ``indices`` of a track, on its plane."""

    indices: list[int]
    x: list[float]
    y: list[float]
    dead_reckoned: bool  # nearly every step between the points knew the direction of travel at both ends

    def distance(self, k: int) -> float:
        """Distance of the ``k``-th smoothed point from the plane's origin (the incident)."""
        return math.hypot(self.x[k], self.y[k])


def _velocity(p: Point, noise: VelocityNoise) -> tuple[float, float, float] | None:
    """East and north velocity a fix reports and the variance of each axis; None when it says nothing."""
    if p.speed is None:
        return None
    heading = p.fix.heading
    if heading is None:  # which way is not known, but not farther than the speed
        spread = max(p.speed, noise.speed_mps)
        return 0.0, 0.0, spread * spread
    rad = math.radians(heading)
    lateral = p.speed * math.radians(noise.course_deg)
    return p.speed * math.sin(rad), p.speed * math.cos(rad), noise.speed_mps**2 + lateral * lateral


def _aiding(p: Point, velocity: tuple[float, float, float] | None) -> bool:
    """Whether the fix tells the direction of travel, or crawls too slowly for it to matter."""
    return velocity is not None and (p.fix.heading is not None or (p.speed or 0.0) < _NO_COURSE_MPS)


def smooth(track: Track, lo: int, hi: int, noise: VelocityNoise | None = None) -> Smoothed | None:
    """Smooth the kept points from index ``lo`` to ``hi`` (both included); None if fewer than two are kept."""
    noise = noise or VelocityNoise()
    indices = [i for i in range(lo, hi + 1) if track.kept(i)]
    if len(indices) < 2:
        return None
    points = [track.points[i] for i in indices]
    velocities = [_velocity(p, noise) for p in points]
    # Steps whose both ends know the direction of travel (or crawl): the others say little of the path.
    ends = [_aiding(p, v) for p, v in zip(points, velocities, strict=True)]
    blind = sum(1 for a, b in itertools.pairwise(ends) if not (a and b))
    # Per step: the displacement east and north, and its variance (the same on both axes).
    steps: list[tuple[float, float, float]] = []
    for k in range(1, len(points)):
        dt = (points[k].ts - points[k - 1].ts) / 1000.0
        a, b = velocities[k - 1], velocities[k]
        model = noise.model_mps2 * dt * dt
        if a is None or b is None:
            steps.append((0.0, 0.0, (noise.unknown_mps * dt) ** 2 + model * model))
        else:
            # The trapezoid cuts corners: through a turn it can miss by up to a quarter of the change of velocity.
            turn = math.hypot(b[0] - a[0], b[1] - a[1]) * dt / 4
            shift_var = dt * dt * (a[2] + b[2]) / 4 + model * model + turn * turn
            steps.append(((a[0] + b[0]) / 2 * dt, (a[1] + b[1]) / 2 * dt, shift_var))
    variances = [p.sigma * p.sigma for p in points]
    xs = _rts([p.x for p in points], variances, [(s[0], s[2]) for s in steps])
    ys = _rts([p.y for p in points], variances, [(s[1], s[2]) for s in steps])
    return Smoothed(indices, xs, ys, blind <= _MAX_BLIND_SHARE * (len(points) - 1))


def _rts(measured: list[float], variances: list[float], steps: list[tuple[float, float]]) -> list[float]:
    """One axis: positions ``measured`` with ``variances``; ``steps[k]`` moves from k to k+1 (shift, variance)."""
    n = len(measured)
    filtered = [0.0] * n
    filtered_var = [0.0] * n
    predicted = [0.0] * n
    predicted_var = [0.0] * n
    x, p = measured[0], variances[0]
    filtered[0], filtered_var[0] = x, p
    for k in range(1, n):
        shift, q = steps[k - 1]
        x, p = x + shift, p + q
        predicted[k], predicted_var[k] = x, p
        total = p + variances[k]
        gain = p / total if total > 0 else 1.0  # exact fixes (acc 0) after an exact step: take the fix
        x, p = x + gain * (measured[k] - x), (1.0 - gain) * p
        filtered[k], filtered_var[k] = x, p
    smoothed = filtered[:]
    for k in range(n - 2, -1, -1):
        c = filtered_var[k] / predicted_var[k + 1] if predicted_var[k + 1] > 0 else 0.0
        smoothed[k] = filtered[k] + c * (smoothed[k + 1] - predicted[k + 1])
    return smoothed
