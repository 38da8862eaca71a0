"""Departure (出警): the first fix of sustained movement away from where the unit was at dispatch.

The *origin* is the unit's position at dispatch, or the first fix after dispatch
when that is unknown or disagrees with it by ``away_m`` or more (a stale position).
Departure is **confirmed** by a kept fix whose median distance from the origin is
at least ``away_m``, farther than parked noise and urban-canyon drift reach.

Its time is the **start** of the run that led there, found by walking back from
the confirming fix while fixes are *moving* (one standing fix inside the run is
bridged). A fix moves when it reports a speed of ``move_speed_mps`` or more, or
stands outside the parked cluster: farther than ``max(leave_m, leave_sigmas *
sigma)`` from its centre (the median of the fixes that stood near the origin), so
a unit waiting at a light 30 m on has still left. Without reported speed a fix
also moves when the median of its neighbourhood is out along the way the unit
left by ``along_sigmas`` of that median's error. A run that reaches back to the
first fix after dispatch means the unit was already moving (on patrol).

A unit already **moving at dispatch** (its first fix after dispatch reports at least
``2 * move_speed_mps``, which parked Doppler noise does not reach) that stops
briefly right after it, at a red light or in traffic, and then moves on away from
there departed with that first fix: it never stood where it was at dispatch, and
the stop was part of the movement away, not a wait to leave. This holds when the
run that confirms departure starts within ``hold_ms`` of the first fix; after a
longer stop (it pulled over) the departure is when it moves again. A unit that
was *standing* at dispatch (waiting at a light) departs when it moves on, as before.

A run counts only if it is *sustained movement*. Where fixes report speed, it must
hold moving ones and it starts at the first two in a row: parked fixes pushed out
of the cluster by drift report no speed and are trimmed. Where none do, the run
must have opened up half of ``away_m``.

Like arrival, the answer is a pure function of the set of fixes, whatever their
order and chunking; a departure is confirmed only once the fixes that could
re-decide its confirming fix are in, so a live feed in device-time order reports
it once and never changes it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from devices.payloads import Fix
from hub.domain.track import FixFilter, Point, Track, median

__all__ = ["DepartureDetector", "DepartureParams", "DepartureResult", "detect_departure", "first_kept"]

# The median of five Gaussian fixes has about 0.56 of one fix's standard deviation.
_MEDIAN_SIGMA = 0.56


@dataclass(frozen=True, slots=True)
class DepartureParams:
    """What sustained movement away from the dispatch position is."""

    # Distance from the origin that proves departure: beyond parked GPS noise (3-15 m) and drift,
    # reached about 7 s after pulling away by car, about 35 s on foot.
    away_m: float = 50.0
    # Reported (Doppler) speed of a moving unit: parked noise is about 0.3 m/s (0.8 is 2.7 sigma), a walk 1.4.
    move_speed_mps: float = 0.8
    # A parked unit's fixes stay within max(leave_m, leave_sigmas * sigma) of where it stands;
    # 2.5 sigma leaves about 4 % of parked fixes outside, harmless as only a run counts.
    leave_m: float = 5.0
    leave_sigmas: float = 2.5
    # Without reported speed, a fix also moves when it is this many sigma out along the way the
    # unit left (one axis of noise: 2 sigma leaves about 2 % of parked fixes out).
    along_sigmas: float = 2.0
    # A unit moving at dispatch that stops for at most this long (a red light: the simulator holds
    # up to 45 s) and then moves on away departed with its first fix after dispatch.
    hold_ms: int = 60_000
    # Fixes with a larger acc cannot show a move of away_m and are dropped.
    max_acc_m: float = 50.0
    fix_filter: FixFilter = field(default_factory=FixFilter)

    def __post_init__(self) -> None:
        if self.away_m <= 0 or self.max_acc_m <= 0 or self.hold_ms < 0:
            raise ValueError("away_m and max_acc_m must be > 0, hold_ms >= 0")
        if min(self.move_speed_mps, self.leave_m, self.leave_sigmas, self.along_sigmas) < 0:
            raise ValueError("move_speed_mps, leave_m, leave_sigmas and along_sigmas must be >= 0")


@dataclass(frozen=True, slots=True)
class DepartureResult:
    """The departure: ``ts``/``lat``/``lon`` of the run's first fix; ``confirmed_at_ts`` the fix that proved it."""

    ts: int
    lat: float
    lon: float
    confirmed_at_ts: int


def _origin(first: Point, given: bool, params: DepartureParams) -> tuple[float, float]:
    if given and first.distance_to(0.0, 0.0) < params.away_m:
        return 0.0, 0.0  # the plane's reference is the given origin
    return first.x, first.y


def _median_xy(points: list[Point]) -> tuple[float, float]:
    return median([p.x for p in points]), median([p.y for p in points])


def _parked_centre(
    track: Track, first: int, confirm: int, origin: tuple[float, float], params: DepartureParams
) -> tuple[float, float]:
    """Where the unit stood: the median of the standing fixes near the origin, which is one noisy fix at worst."""
    standing = [
        p
        for i, p in enumerate(track.points[first:confirm], first)
        if (p.speed is None or p.speed < params.move_speed_mps)
        and p.distance_to(*origin) < params.away_m / 2
        and track.kept(i)
    ]
    if not standing:
        return origin
    rough = _median_xy(standing)
    parked = [p for p in standing if p.distance_to(*rough) <= _still_m(p, params)]
    return _median_xy(parked) if parked else rough


def _still_m(p: Point, params: DepartureParams) -> float:
    return max(params.leave_m, params.leave_sigmas * p.sigma)


class _Leaving:
    """Tells a moving fix from a parked one, by its speed or its place against the parked centre."""

    def __init__(self, centre: tuple[float, float], towards: Point, params: DepartureParams) -> None:
        self.cx, self.cy = centre
        length = towards.distance_to(*centre) or 1.0
        self.ux, self.uy = (towards.x - self.cx) / length, (towards.y - self.cy) / length
        self.params = params

    def moving(self, track: Track, i: int) -> bool:
        params = self.params
        p = track.points[i]
        distance = p.distance_to(self.cx, self.cy)
        if (p.speed is not None and p.speed >= params.move_speed_mps) or distance > _still_m(p, params):
            return True  # a unit waiting at a light 30 m on has left, though it stands
        if p.speed is not None:
            return False
        # Out along the way the unit left: one axis of noise instead of two, and the median of the
        # neighbourhood, so movement shows a few metres earlier than by distance alone.
        along = median([(q.x - self.cx) * self.ux + (q.y - self.cy) * self.uy for q in track.neighbourhood(i)])
        return along > max(params.leave_m, params.along_sigmas * _MEDIAN_SIGMA * p.sigma)


def _sustained(run: list[Point], centre: tuple[float, float], params: DepartureParams) -> list[Point] | None:
    """The run from its real start if it is sustained movement, else None.

    Where fixes report speed, the run must hold moving ones (3, or half if it is shorter) and it
    starts with two in a row: standing fixes before them were parked ones pushed out by drift.
    Without speed, the run must have opened up half of ``away_m``.
    """
    speeds = [p.speed for p in run if p.speed is not None]
    if not speeds:
        return run if run[-1].distance_to(*centre) - run[0].distance_to(*centre) >= params.away_m / 2 else None
    if sum(1 for s in speeds if s >= params.move_speed_mps) < min(3, (len(speeds) + 1) // 2):
        return None
    moving = [p.speed is None or p.speed >= params.move_speed_mps for p in run]
    for i, (this, that) in enumerate(itertools.pairwise(moving)):
        if this and that:
            return run[i:]
    return run[-1:]


def _run_back(track: Track, first: int, confirm: int, leaving: _Leaving) -> list[Point]:
    """The kept fixes from the start of the run to ``confirm``; one standing fix inside the run is bridged."""
    run = [track.points[confirm]]
    bridged: Point | None = None
    for j in range(confirm - 1, first - 1, -1):
        if not track.kept(j):
            continue
        p = track.points[j]
        if leaving.moving(track, j):
            if bridged is not None:
                run.append(bridged)
                bridged = None
            run.append(p)
        elif bridged is None:
            bridged = p
        else:
            break
    run.reverse()
    return run


def _moving_at_dispatch(first: Point, params: DepartureParams) -> bool:
    """Whether the first kept fix after dispatch shows the unit driving (twice the speed parked noise reaches)."""
    return first.speed is not None and first.speed >= 2.0 * params.move_speed_mps


def first_kept(track: Track) -> int | None:
    """Index of the first fix after dispatch that survives the outlier vote: the origin when none is given."""
    return next((i for i in range(len(track)) if track.kept(i)), None)


def detect_departure(
    track: Track, origin_given: bool, params: DepartureParams, resume: int = 0
) -> tuple[DepartureResult, int] | None:
    """The first sustained departure on the track, and the index of the fix that confirmed it.

    ``origin_given`` says the track's reference point is the unit's position at dispatch.
    ``resume`` skips confirming fixes before it, for a caller that knows they failed and
    that nothing they read has changed since.
    """
    points = track.points
    first = first_kept(track)
    if first is None:
        return None
    origin = _origin(points[first], origin_given, params)
    for k in range(max(first + 1, resume), len(points)):
        p = points[k]
        if p.distance_to(*origin) < params.away_m or not track.kept(k):
            continue
        if track.median_distance(k, *origin) < params.away_m:
            continue
        if k + track.reach >= len(track):
            return None  # the next fixes can still re-decide this one: wait for them
        centre = _parked_centre(track, first, k, origin, params)
        run = _sustained(_run_back(track, first, k, _Leaving(centre, p, params)), centre, params)
        if run is not None:
            start = run[0]
            if _moving_at_dispatch(points[first], params) and start.ts - points[first].ts <= params.hold_ms:
                start = points[first]  # a stop on the way, right after dispatch: the movement away went on
            return DepartureResult(start.ts, start.fix.lat, start.fix.lon, p.ts), k
    return None


class DepartureDetector:
    """Departure of one unit after a dispatch at ``since_ms``, fed with fixes in any order and chunking.

    ``origin_lat``/``origin_lon`` is the unit's position at dispatch; None when unknown.
    """

    def __init__(
        self,
        origin_lat: float | None,
        origin_lon: float | None,
        since_ms: int,
        params: DepartureParams | None = None,
    ) -> None:
        self.params = params = params or DepartureParams()
        self._origin_given = origin_lat is not None and origin_lon is not None
        self._track = Track(
            origin_lat if self._origin_given else None,
            origin_lon if self._origin_given else None,
            since_ms=since_ms,
            max_acc_m=params.max_acc_m,
            fix_filter=params.fix_filter,
        )
        self._result: DepartureResult | None = None
        self._horizon_ts: int | None = None
        self._first: Point | None = None  # the first kept fix at the last scan, which the origin depends on

    @property
    def result(self) -> DepartureResult | None:
        return self._result

    def add(self, fixes: Iterable[Fix]) -> DepartureResult | None:
        """Take fixes; return the departure if this call confirmed it or moved its time, else None."""
        track = self._track
        earliest = track.add(fixes)
        if earliest is None or (self._horizon_ts is not None and earliest > self._horizon_ts):
            return None
        first = first_kept(track)
        same_origin = first is not None and track.points[first] is self._first
        self._first = None if first is None else track.points[first]
        # With the same origin and no departure yet, confirming fixes whose neighbourhood the new fixes
        # cannot reach failed last time and would again.
        resume = track.index_at(earliest) - track.reach if same_origin and self._result is None else 0
        found = detect_departure(track, self._origin_given, self.params, resume)
        previous, self._result = self._result, None if found is None else found[0]
        # The decision at the confirming fix read ``reach`` fixes further; nothing later can change it.
        self._horizon_ts = None if found is None else track.points[found[1] + track.reach].ts
        if self._result is None or (previous is not None and previous.ts == self._result.ts):
            return None
        return self._result
