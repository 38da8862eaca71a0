"""A unit's fixes in device-time order, with GPS outliers voted out: the input of the detectors.

The arrival and departure detectors both work on the *set* of fixes received so
far, never on the order they came in: a store-and-forward batch that lands after
newer fixes is simply inserted where its device times put it. Positions are
projected once, on insertion, to metres east/north of a reference point (an
azimuthal-equidistant plane built from :mod:`geo.geodesy`), which is exact for
distances from the reference and good to centimetres between neighbouring fixes.

Outliers are decided locally, so a late fix only re-decides its neighbours:

- a fix whose ``acc`` exceeds the detector's limit cannot decide anything and is
  not kept at all;
- a fix is an outlier when more than half of its neighbours (up to
  ``vote_fixes`` on each side) could only be reached from it faster than
  ``max_speed_mps``, after each fix's own error allowance is subtracted. A burst
  of up to ``vote_fixes`` jumped fixes is voted out; the good fixes next to it
  are not, because most of their neighbours agree with them.

Noise that is physically possible (a jump of 150 m between fixes 5 s apart) is
left to the robust estimates over a fix's neighbourhood (:meth:`Track.median_distance`,
:meth:`Track.trend_distance`, :meth:`Track.aided_distance`), on which the detectors decide inside/outside and
away/not away.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from devices.payloads import Fix
from geo.geodesy import bearing_deg, haversine_m

__all__ = ["SIGMA_PER_ACC", "FixFilter", "Point", "Track", "median"]

# ``acc`` is the 68 % radius of a 2-D Gaussian error (how phones, trackers and the
# simulator report it), so the error of each axis has sigma = acc * SIGMA_PER_ACC.
SIGMA_PER_ACC: Final = 1.0 / math.sqrt(-2.0 * math.log(0.32))


@dataclass(frozen=True, slots=True)
class FixFilter:
    """How fixes are cleaned before detection; shared by both detectors."""

    # No unit moves faster (250 km/h); a fix that implies more than this is a GPS jump.
    max_speed_mps: float = 70.0
    # Assumed for a fix without ``acc``: a pessimistic phone or vehicle tracker.
    default_acc_m: float = 10.0
    # A fix's error allowance in the jump test is 2 * acc (about 3 sigma), but never more
    # than this: a receiver that admits a 300 m error must not thereby excuse a 300 m jump.
    max_slack_m: float = 30.0
    # Neighbours on each side that vote on a fix: bursts of up to this many jumped fixes are voted out.
    vote_fixes: int = 3
    # Neighbours on each side in the median, and how far in device time the median may reach.
    smooth_fixes: int = 2
    smooth_ms: int = 12_000
    # The robust line of trend_distance spans at most this much either side: straight enough for a car.
    trend_ms: int = 3_000

    def __post_init__(self) -> None:
        if self.max_speed_mps <= 0 or self.default_acc_m <= 0 or self.max_slack_m < 0:
            raise ValueError("max_speed_mps and default_acc_m must be > 0, max_slack_m >= 0")
        if self.vote_fixes < 1 or min(self.smooth_fixes, self.smooth_ms, self.trend_ms) < 0:
            raise ValueError("vote_fixes must be >= 1, smooth_fixes, smooth_ms and trend_ms >= 0")


@dataclass(frozen=True, slots=True)
class Point:
    """One fix on the track's plane: ``x`` metres east and ``y`` metres north of the reference."""

    ts: int
    x: float
    y: float
    acc: float  # the fix's acc, or the filter's default when the fix has none
    speed: float | None
    fix: Fix

    @property
    def sigma(self) -> float:
        """Standard deviation of each axis of this fix's error, metres."""
        return self.acc * SIGMA_PER_ACC

    def distance_to(self, x: float, y: float) -> float:
        return math.hypot(self.x - x, self.y - y)


def _rank(fix: Fix) -> tuple[float, float, float]:
    """Which of two different fixes with the same ``ts`` is kept: the more accurate, then any fixed order."""
    return (math.inf if fix.acc is None else fix.acc, fix.lat, fix.lon)


def _velocity(p: Point) -> tuple[float, float] | None:
    """East and north velocity the fix reports; a standing fix without heading stands still; None if unknown."""
    if p.speed is None:
        return None
    heading = p.fix.heading
    if heading is None:
        return (0.0, 0.0) if p.speed < 1.0 else None
    rad = math.radians(heading)
    return p.speed * math.sin(rad), p.speed * math.cos(rad)


def median(values: list[float]) -> float:
    """The median of a non-empty list (sorted in place)."""
    values.sort()
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


class Track:
    """The fixes of one unit since ``since_ms``, unique per ``ts`` and sorted by it.

    ``ref_lat``/``ref_lon`` is the origin of the plane; ``None`` takes the first
    fix ever added (only the plane depends on it, not any decision).
    """

    def __init__(
        self,
        ref_lat: float | None,
        ref_lon: float | None,
        *,
        since_ms: int | None,
        max_acc_m: float,
        fix_filter: FixFilter,
    ) -> None:
        if (ref_lat is None) != (ref_lon is None):
            raise ValueError("give both reference coordinates or neither")
        if max_acc_m <= 0:
            raise ValueError("max_acc_m must be > 0")
        self._ref = None if ref_lat is None or ref_lon is None else (ref_lat, ref_lon)
        self.since_ms = since_ms
        self.max_acc_m = max_acc_m
        self.filter = fix_filter
        self.points: list[Point] = []
        self._ts: list[int] = []
        self._kept: list[bool | None] = []  # the vote, cached; None = not decided since the last change nearby

    def __len__(self) -> int:
        return len(self.points)

    @property
    def reach(self) -> int:
        """How many points on each side a point's decision reads: votes, then the median of kept points."""
        return self.filter.vote_fixes + self.filter.smooth_fixes

    def add(self, fixes: Iterable[Fix]) -> int | None:
        """Insert fixes; return the earliest ``ts`` that changed the track, or None if nothing did.

        Fixes before ``since_ms`` and fixes less accurate than ``max_acc_m`` are
        dropped; a fix whose ``ts`` is already held replaces it only if it ranks
        better, so duplicates and replays change nothing.
        """
        earliest: int | None = None
        reach = self.filter.vote_fixes
        for fix in fixes:
            if self.since_ms is not None and fix.ts < self.since_ms:
                continue
            if fix.acc is not None and fix.acc > self.max_acc_m:
                continue
            i = bisect.bisect_left(self._ts, fix.ts)
            if i < len(self._ts) and self._ts[i] == fix.ts:
                if _rank(fix) >= _rank(self.points[i].fix):
                    continue
                self.points[i] = self._project(fix)
            else:
                self.points.insert(i, self._project(fix))
                self._ts.insert(i, fix.ts)
                self._kept.insert(i, None)
            for j in range(max(0, i - reach), min(len(self._kept), i + reach + 1)):
                self._kept[j] = None
            earliest = fix.ts if earliest is None else min(earliest, fix.ts)
        return earliest

    def _project(self, fix: Fix) -> Point:
        if self._ref is None:
            self._ref = (fix.lat, fix.lon)
        lat0, lon0 = self._ref
        distance = haversine_m(lat0, lon0, fix.lat, fix.lon)
        bearing = math.radians(bearing_deg(lat0, lon0, fix.lat, fix.lon)) if distance > 0.0 else 0.0
        acc = self.filter.default_acc_m if fix.acc is None else fix.acc
        return Point(fix.ts, distance * math.sin(bearing), distance * math.cos(bearing), acc, fix.speed, fix)

    # ------------------------------------------------------------- outliers
    def kept(self, i: int) -> bool:
        """Whether point ``i`` survives the neighbours' vote."""
        decided = self._kept[i]
        if decided is None:
            decided = not self._outvoted(i)
            self._kept[i] = decided
        return decided

    def _outvoted(self, i: int) -> bool:
        f = self.filter
        p = self.points[i]
        slack_p = min(2.0 * p.acc, f.max_slack_m)
        against = voters = 0
        for j in range(max(0, i - f.vote_fixes), min(len(self.points), i + f.vote_fixes + 1)):
            if j == i:
                continue
            q = self.points[j]
            voters += 1
            gap = p.distance_to(q.x, q.y) - slack_p - min(2.0 * q.acc, f.max_slack_m)
            if gap > f.max_speed_mps * abs(q.ts - p.ts) / 1000.0:
                against += 1
        return 2 * against > voters

    # ------------------------------------------------------------- smoothing
    def neighbourhood(self, i: int) -> list[Point]:
        """The kept points within ``smooth_fixes`` indices and ``smooth_ms`` of point ``i`` (itself included)."""
        f = self.filter
        ts = self.points[i].ts
        return [
            self.points[j]
            for j in range(max(0, i - f.smooth_fixes), min(len(self.points), i + f.smooth_fixes + 1))
            if abs(self.points[j].ts - ts) <= f.smooth_ms and self.kept(j)
        ]

    def median_distance(self, i: int, x: float, y: float) -> float:
        """Median distance of point ``i``'s neighbourhood from ``(x, y)``: noise shrinks, edges stay sharp."""
        return median([q.distance_to(x, y) for q in self.neighbourhood(i)])

    def trend_distance(self, i: int, x: float, y: float) -> float:
        """Distance from ``(x, y)`` at point ``i``'s time, on a robust line through its neighbours.

        Theil-Sen over the neighbourhood within ``trend_ms``: the median of the pairwise slopes,
        then the median of the intercepts. A driving unit's distances are sorted, so their median
        is just the fix's own; the line halves the noise, and a jumped fix cannot tilt it. With
        fewer than three fixes that close (sparse reporting), the median of the neighbourhood.
        """
        t0 = self.points[i].ts
        around = self.neighbourhood(i)
        near = [((q.ts - t0) / 1000.0, q.distance_to(x, y)) for q in around if abs(q.ts - t0) <= self.filter.trend_ms]
        if len(near) < 3:
            # Sparse fixes: a line through a stop or a turn would bend; the median still drops a jump.
            return median([q.distance_to(x, y) for q in around])
        slope = median([(d2 - d1) / (t2 - t1) for k, (t1, d1) in enumerate(near) for t2, d2 in near[k + 1 :]])
        return median([d - slope * t for t, d in near])

    def aided_distance(self, i: int, x: float, y: float) -> float:
        """Distance from ``(x, y)`` at point ``i``'s time, its neighbours carried there by their reported velocity.

        Each neighbour within ``trend_ms`` is moved to point ``i``'s time along the velocity the fixes
        report (speed and heading, integrated between consecutive fixes), and the per-axis median of
        those positions is taken: the noise of several fixes averages out without the bend a line
        through a turn or a braking unit has, and a jumped fix is outvoted. Doppler velocity is far
        more precise than position, so a unit that grazes the edge for a few seconds shows it.
        Without speed or heading, :meth:`trend_distance`.
        """
        t0 = self.points[i].ts
        near = [q for q in self.neighbourhood(i) if abs(q.ts - t0) <= self.filter.trend_ms]
        velocities = [_velocity(q) for q in near]
        if len(near) < 3 or not self.kept(i) or any(v is None for v in velocities):
            return self.trend_distance(i, x, y)
        # Displacement of each neighbour from the first, by the trapezoid rule over the reported velocities.
        east = north = 0.0
        shifted: list[tuple[float, float]] = [(0.0, 0.0)]
        for (q1, v1), (q2, v2) in itertools.pairwise(zip(near, velocities, strict=True)):
            assert v1 is not None and v2 is not None
            dt = (q2.ts - q1.ts) / 1000.0
            east += (v1[0] + v2[0]) / 2.0 * dt
            north += (v1[1] + v2[1]) / 2.0 * dt
            shifted.append((east, north))
        at = next(k for k, q in enumerate(near) if q.ts == t0)
        ex, ey = shifted[at]
        xs = [q.x + ex - sx for q, (sx, sy) in zip(near, shifted, strict=True)]
        ys = [q.y + ey - sy for q, (sx, sy) in zip(near, shifted, strict=True)]
        return math.hypot(median(xs) - x, median(ys) - y)

    def median_xy(self, i: int) -> tuple[float, float]:
        """Per-axis median position of point ``i``'s neighbourhood."""
        near = self.neighbourhood(i)
        return median([q.x for q in near]), median([q.y for q in near])

    def index_at(self, ts: int) -> int:
        """Index of the first point with ``ts`` at or after the given time."""
        return bisect.bisect_left(self._ts, ts)
