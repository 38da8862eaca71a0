"""The fix buffer and outlier vote, and the synthetic-track generator the detector tests share.

The generator drives a point along straight legs with realistic acceleration and
braking, records the truth every 50 ms, and observes it like a GPS receiver:
``acc`` drawn from 3-10 m, a 2-D Gaussian error whose 68 % radius is that acc,
Doppler speed with 0.3 m/s noise, an optional slowly wandering bias. Everything
is seeded, so each case replays the same fixes.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random

import pytest

from devices.payloads import Fix
from geo.geodesy import haversine_m, offset
from hub.domain.track import SIGMA_PER_ACC, FixFilter, Track

BASE = (34.2610, 117.1859)  # the incident, and the origin of the generator's plane
T0 = 1_795_000_000_000  # device time of route time 0
ACCEL_MPS2 = 2.0
BRAKE_MPS2 = 2.5
STEP_S = 0.05


def ms(t_s: float) -> int:
    """Device time of route time ``t_s``."""
    return T0 + round(t_s * 1000)


def seconds(ts: int) -> float:
    return (ts - T0) / 1000


class Route:
    """The true motion of one unit, in metres north/east of :data:`BASE`."""

    def __init__(self, north: float, east: float) -> None:
        self.t: list[float] = [0.0]
        self.n: list[float] = [north]
        self.e: list[float] = [east]
        self.v: list[float] = [0.0]

    @property
    def end_s(self) -> float:
        return self.t[-1]

    def _sample(self, t: float, n: float, e: float, v: float) -> None:
        self.t.append(t)
        self.n.append(n)
        self.e.append(e)
        self.v.append(v)

    def hold(self, seconds: float) -> Route:
        self._sample(self.t[-1] + seconds, self.n[-1], self.e[-1], 0.0)
        return self

    def drive(self, north: float, east: float, speed: float, *, stop: bool = True) -> Route:
        """Drive straight to ``(north, east)`` at up to ``speed``; brake to a stop there if ``stop``."""
        t, n0, e0, v = self.t[-1], self.n[-1], self.e[-1], self.v[-1]
        length = math.hypot(north - n0, east - e0)
        s = 0.0
        while length - s > 0.02:
            rest = length - s
            cap = min(speed, math.sqrt(2 * BRAKE_MPS2 * rest)) if stop else speed
            v = min(cap, v + ACCEL_MPS2 * STEP_S) if v < cap else max(cap, v - BRAKE_MPS2 * STEP_S)
            v = max(v, 0.2) if stop else v  # creep the last centimetres instead of stalling
            s = min(length, s + v * STEP_S)
            t += STEP_S
            k = s / length
            self._sample(t, n0 + k * (north - n0), e0 + k * (east - e0), v)
        if stop:
            self._sample(t + STEP_S, north, east, 0.0)
        return self

    def at(self, t: float) -> tuple[float, float, float]:
        """True (north, east, speed) at route time ``t``."""
        i = min(max(bisect.bisect_right(self.t, t), 1), len(self.t) - 1)
        t0, t1 = self.t[i - 1], self.t[i]
        k = 0.0 if t1 == t0 else min(1.0, max(0.0, (t - t0) / (t1 - t0)))
        return (
            self.n[i - 1] + k * (self.n[i] - self.n[i - 1]),
            self.e[i - 1] + k * (self.e[i] - self.e[i - 1]),
            self.v[i],
        )

    def entries(self, radius_m: float) -> list[float]:
        """Times the true position crosses into the circle of ``radius_m`` around :data:`BASE`."""
        inside = [math.hypot(n, e) <= radius_m for n, e in zip(self.n, self.e, strict=True)]
        return [self.t[i] for i in range(1, len(inside)) if inside[i] and not inside[i - 1]]

    def starts(self) -> list[float]:
        """Times the unit starts moving from standstill."""
        return [self.t[i - 1] for i in range(1, len(self.v)) if self.v[i] > 0 and self.v[i - 1] == 0]


def observe(
    route: Route,
    seed: int,
    *,
    interval_s: float = 1.0,
    acc_m: tuple[float, float] = (3.0, 10.0),
    report_acc: bool = True,
    report_speed: bool = True,
    report_heading: bool = False,
    drift_m: float = 0.0,
    from_s: float = 0.0,
) -> list[Fix]:
    """The fixes a GPS receiver reports along ``route``, from a random phase on."""
    rng = random.Random(seed)
    fixes: list[Fix] = []
    bias_n = bias_e = 0.0
    t = from_s + rng.uniform(0.0, interval_s)
    while t <= route.end_s:
        north, east, speed = route.at(t)
        acc = rng.uniform(*acc_m)
        sigma = acc * SIGMA_PER_ACC
        if drift_m:
            bias_n = 0.95 * bias_n + rng.gauss(0.0, drift_m * math.sqrt(1 - 0.95**2))
            bias_e = 0.95 * bias_e + rng.gauss(0.0, drift_m * math.sqrt(1 - 0.95**2))
        lat, lon = offset(*BASE, north + bias_n + rng.gauss(0.0, sigma), east + bias_e + rng.gauss(0.0, sigma))
        fixes.append(
            Fix(
                ts=ms(t),
                lat=round(lat, 7),
                lon=round(lon, 7),
                acc=round(acc, 1) if report_acc else None,
                speed=round(max(0.0, speed + rng.gauss(0.0, 0.3)), 2) if report_speed else None,
                heading=_heading(route, t, rng) if report_speed and report_heading else None,
            )
        )
        t += interval_s
    return fixes


def _heading(route: Route, t: float, rng: random.Random) -> float | None:
    """The reported heading at route time ``t``: the way the unit moves, with 3 degrees of noise; None standing."""
    n0, e0, _ = route.at(t - 0.5)
    n1, e1, speed = route.at(t + 0.5)
    if speed < 1.0 or (n0, e0) == (n1, e1):
        return None
    return round((math.degrees(math.atan2(e1 - e0, n1 - n0)) + rng.gauss(0.0, 3.0)) % 360.0, 1)


def jump(fixes: list[Fix], at_s: float, north: float, east: float, *, acc: float = 5.0) -> list[Fix]:
    """Replace the fix nearest to route time ``at_s`` with one that claims ``(north, east)``."""
    i = min(range(len(fixes)), key=lambda k: abs(fixes[k].ts - ms(at_s)))
    lat, lon = offset(*BASE, north, east)
    out = list(fixes)
    out[i] = Fix(ts=fixes[i].ts, lat=lat, lon=lon, acc=acc, speed=fixes[i].speed)
    return out


def fix_at(t_s: float, north: float, east: float, *, acc: float | None = 5.0, speed: float | None = None) -> Fix:
    lat, lon = offset(*BASE, north, east)
    return Fix(ts=ms(t_s), lat=lat, lon=lon, acc=acc, speed=speed)


# ---------------------------------------------------------------- generator
def test_route_brakes_and_accelerates_like_a_car() -> None:
    route = Route(-500.0, 0.0).hold(10).drive(0.0, 0.0, 11.0).hold(30)
    assert route.starts() == [10.0]
    north, east, speed = route.at(route.end_s)
    assert (north, east, speed) == (0.0, 0.0, 0.0)
    # From standstill to 11 m/s at 2 m/s^2 takes 5.5 s; braking from 11 m/s at 2.5 m/s^2 covers 24.2 m.
    assert route.at(10 + 5.5)[2] == pytest.approx(11.0, abs=0.2)
    assert route.entries(100.0) == pytest.approx([10 + 5.5 + (500 - 30.25 - 100) / 11], abs=0.2)


def test_observe_noise_matches_the_reported_acc() -> None:
    route = Route(0.0, 0.0).hold(3000)
    fixes = observe(route, seed=7)
    within = sum(haversine_m(*BASE, f.lat, f.lon) <= (f.acc or 0.0) for f in fixes)
    assert within / len(fixes) == pytest.approx(0.68, abs=0.03)
    assert all(1000 - 1 <= b.ts - a.ts <= 1000 + 1 for a, b in itertools.pairwise(fixes))


# ---------------------------------------------------------------- the buffer
def _track(**kwargs: object) -> Track:
    options: dict[str, object] = {"since_ms": None, "max_acc_m": 100.0, "fix_filter": FixFilter()}
    options.update(kwargs)
    return Track(*BASE, **options)  # type: ignore[arg-type]


def test_track_sorts_dedupes_and_reports_the_earliest_change() -> None:
    track = _track()
    a, b, c = fix_at(0, 0, 0), fix_at(1, 5, 0), fix_at(2, 10, 0)
    assert track.add([c, a]) == a.ts
    assert track.add([b, b, a]) == b.ts  # a is held already; b once
    assert [p.ts for p in track.points] == [a.ts, b.ts, c.ts]
    assert track.add([a]) is None  # a replay changes nothing
    better = fix_at(1, 6, 0, acc=2.0)
    assert track.add([better]) == better.ts
    assert track.points[1].fix == better
    assert track.add([fix_at(1, 7, 0, acc=9.0)]) is None  # a worse fix with a held ts loses
    assert track.add([]) is None


def test_track_drops_fixes_before_since_and_too_inaccurate() -> None:
    track = _track(since_ms=ms(10), max_acc_m=50.0)
    assert track.add([fix_at(9.999, 0, 0), fix_at(20, 0, 0, acc=50.1)]) is None
    assert track.add([fix_at(10, 0, 0), fix_at(21, 0, 0, acc=50.0), fix_at(22, 0, 0, acc=None)]) == ms(10)
    assert len(track) == 3
    assert track.points[2].acc == FixFilter().default_acc_m


@pytest.mark.parametrize(("north", "east"), [(120.0, 0.0), (0.0, -750.0), (-3000.0, 4000.0)])
def test_track_plane_keeps_distances(north: float, east: float) -> None:
    track = _track()
    fix = fix_at(0, north, east)
    track.add([fix])
    point = track.points[0]
    assert math.hypot(point.x, point.y) == pytest.approx(haversine_m(*BASE, fix.lat, fix.lon), rel=1e-9)
    # offset() is a flat approximation; the two planes part by a few parts in 10,000 at 5 km.
    assert (point.y, point.x) == pytest.approx((north, east), abs=max(0.05, 5e-4 * math.hypot(north, east)))


def test_track_reference_defaults_to_the_first_fix() -> None:
    track = Track(None, None, since_ms=None, max_acc_m=100.0, fix_filter=FixFilter())
    track.add([fix_at(5, 100, 0), fix_at(6, 110, 0)])
    assert (track.points[0].x, track.points[0].y) == (0.0, 0.0)
    assert track.points[1].y == pytest.approx(10.0, abs=0.01)


# (name, positions of a 1 Hz track parked at the origin keyed by second, seconds voted out)
VOTES = [
    ("single jump", {10: (400.0, 0.0)}, {10}),
    ("jump and back twice", {10: (400.0, 0.0), 11: (405.0, 5.0)}, {10, 11}),
    ("burst of three", {10: (0.0, 300.0), 11: (0.0, 310.0), 12: (0.0, 305.0)}, {10, 11, 12}),
    ("jump at the start", {0: (500.0, 500.0)}, {0}),
    ("jump at the end", {19: (-500.0, 0.0)}, {19}),
    ("possible move is kept", {10: (50.0, 0.0)}, set()),
]


@pytest.mark.parametrize(("name", "jumps", "out"), VOTES, ids=[v[0] for v in VOTES])
def test_vote_rejects_jumps_but_not_their_neighbours(
    name: str, jumps: dict[int, tuple[float, float]], out: set[int]
) -> None:
    track = _track()
    track.add(fix_at(s, *jumps.get(s, (0.0, 0.0))) for s in range(20))
    assert {i for i in range(20) if not track.kept(i)} == out


def test_vote_uses_acc_but_caps_it() -> None:
    filt = FixFilter()
    track = _track()
    # 0.5 s apart: 70 m/s allows 35 m; two allowances of 2 * 10 m make 75 m plausible.
    track.add([fix_at(0, 0, 0, acc=10.0), fix_at(0.5, 74.0, 0, acc=10.0)])
    assert track.kept(0) and track.kept(1)
    # A claimed acc of 90 m is capped at max_slack_m: 150 m in 1 s is still a jump.
    track = _track()
    track.add([fix_at(0, 0, 0, acc=5.0), fix_at(1, 150.0, 0, acc=90.0), fix_at(2, 0, 0, acc=5.0)])
    assert not track.kept(1) and track.kept(0) and track.kept(2)
    assert filt.max_slack_m == 30.0


def test_vote_is_redecided_when_a_late_fix_lands_nearby() -> None:
    track = _track()
    track.add([fix_at(0, 0, 0), fix_at(1, 300, 0)])
    assert not track.kept(0) and not track.kept(1)  # two fixes that disagree: neither can be trusted
    track.add([fix_at(2, 0, 0), fix_at(3, 2, 0)])
    assert track.kept(0) and not track.kept(1)


def test_median_distance_ignores_outliers_and_far_neighbours_in_time() -> None:
    track = _track()
    track.add([fix_at(0, 0, 10), fix_at(1, 0, 12), fix_at(2, 0, 400), fix_at(3, 0, 14), fix_at(40, 0, 90)])
    assert not track.kept(2)
    assert track.median_distance(1, 0.0, 0.0) == pytest.approx(12.0, abs=0.05)
    assert track.median_distance(3, 0.0, 0.0) == pytest.approx(13.0, abs=0.05)  # (12 + 14) / 2; 40 s is too far
    assert track.median_xy(4) == pytest.approx((90.0, 0.0), abs=0.05)


def test_trend_distance_follows_a_moving_unit_and_shrugs_off_a_jump() -> None:
    # Driving north at 10 m/s towards the reference with 4 m of noise, and one plausible 60 m jump.
    rng = random.Random(5)
    errors = [rng.gauss(0.0, 4.0) for _ in range(60)]
    errors[30] = 60.0
    track = _track()
    track.add(fix_at(t, -600.0 + 10 * t + e, 0, acc=4.0) for t, e in enumerate(errors))
    assert all(track.kept(i) for i in range(60))  # 60 m in 1 s is possible: the vote lets it pass
    truth = [600.0 - 10 * t for t in range(60)]
    trend = [abs(track.trend_distance(i, 0.0, 0.0) - truth[i]) for i in range(2, 58) if i != 30]
    raw = [abs(errors[i]) for i in range(2, 58) if i != 30]
    median = [abs(track.median_distance(i, 0.0, 0.0) - truth[i]) for i in range(2, 58) if i != 30]
    assert sum(trend) < 0.7 * sum(raw)
    assert sum(median) > 0.9 * sum(raw)  # a driving unit's distances are sorted: their median is the raw one
    assert abs(track.trend_distance(30, 0.0, 0.0) - truth[30]) < 10.0
    # Fewer than three neighbours: the fix's own distance.
    lone = _track()
    lone.add([fix_at(0, 50, 0), fix_at(60, 80, 0)])
    assert lone.trend_distance(0, 0.0, 0.0) == pytest.approx(50.0, abs=0.05)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_speed_mps": 0.0}, {"default_acc_m": -1.0}, {"vote_fixes": 0}, {"smooth_fixes": -1}, {"max_slack_m": -1}],
)
def test_fix_filter_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FixFilter(**kwargs)  # type: ignore[arg-type]


def test_track_refuses_half_a_reference() -> None:
    with pytest.raises(ValueError):
        Track(1.0, None, since_ms=None, max_acc_m=10.0, fix_filter=FixFilter())
    with pytest.raises(ValueError):
        Track(None, None, since_ms=None, max_acc_m=0.0, fix_filter=FixFilter())
