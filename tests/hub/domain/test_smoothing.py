"""The velocity-aided smoother the arrival detector walks back along."""

from __future__ import annotations

import math
import statistics

import pytest

from hub.domain.smoothing import VelocityNoise, smooth
from hub.domain.track import FixFilter, Track
from tests.hub.domain.test_track import BASE, Route, observe, seconds


def _track(route: Route, seed: int, **options: object) -> Track:
    track = Track(*BASE, since_ms=None, max_acc_m=100.0, fix_filter=FixFilter())
    track.add(observe(route, seed, **options))  # type: ignore[arg-type]
    return track


def _errors(track: Track, route: Route) -> tuple[list[float], list[float]]:
    """Per kept point: the smoothed and the raw position's distance from the truth."""
    path = smooth(track, 0, len(track) - 1)
    assert path is not None
    smoothed, raw = [], []
    for k, i in enumerate(path.indices):
        p = track.points[i]
        north, east, _ = route.at(seconds(p.ts))
        smoothed.append(math.hypot(path.x[k] - east, path.y[k] - north))
        raw.append(math.hypot(p.x - east, p.y - north))
    return smoothed, raw


@pytest.mark.parametrize("seed", range(6))
def test_velocities_pin_the_path_far_better_than_single_fixes(seed: int) -> None:
    # Drive, brake to rest, stand, one receiver at 1 Hz: the fixes are off by 5-6 m on average, the
    # smoothed path by about a metre (most at the ends of the stretch, where fixes are on one side only).
    route = Route(-600, 97).drive(0, 97, 11.1).hold(120)
    track = _track(route, seed, report_heading=True)
    smoothed, raw = _errors(track, route)
    assert statistics.fmean(raw) > 4.0
    assert statistics.fmean(smoothed) < statistics.fmean(raw) / 3.5
    assert statistics.median(smoothed) < 1.5
    assert max(smoothed) < 5.0


def test_a_path_without_a_direction_of_travel_is_not_dead_reckoned() -> None:
    route = Route(-600, 0).drive(0, 0, 11.1).hold(60)
    with_course = smooth(_track(route, 1, report_heading=True), 0, 100)
    without_course = smooth(_track(route, 1, report_heading=False), 0, 100)
    without_speed = smooth(_track(route, 1, report_speed=False), 0, 100)
    assert with_course is not None and with_course.dead_reckoned
    assert without_course is not None and not without_course.dead_reckoned
    assert without_speed is not None and not without_speed.dead_reckoned


def test_a_standing_unit_without_course_is_still_aided() -> None:
    # Receivers leave the course out when standing; a stop is a stop whichever way it faces.
    path = smooth(_track(Route(-50, 0).hold(120), 2), 0, 100)
    assert path is not None and path.dead_reckoned
    assert all(abs(path.distance(k) - 50.0) < 2.5 for k in range(len(path.indices)))


def test_too_few_kept_points() -> None:
    track = _track(Route(-50, 0).hold(10), 3)
    assert smooth(track, 0, 0) is None
    assert smooth(track, 3, 2) is None


def test_velocity_noise_is_validated() -> None:
    with pytest.raises(ValueError, match="noise"):
        VelocityNoise(speed_mps=-1.0)
    with pytest.raises(ValueError, match="unknown_mps"):
        VelocityNoise(unknown_mps=0.0)
