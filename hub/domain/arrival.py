"""Arrival on scene (到场): the first fix inside the incident's arrival zone that starts a stay.

The zone is a circle around the incident. A fix is *inside* when its distance
from the centre at its time is at most the radius, read off its neighbours carried
to that time by the velocity the fixes report (:meth:`Track.aided_distance`; without
speed and heading, a robust line through them, :meth:`Track.trend_distance`): the
noise of several fixes averages out, a jumped fix the vote let through cannot flip
it, and a unit that grazes the edge for a few seconds shows it.

Inside fixes form a *visit*. Outside fixes do not end it while they are edge noise
(an officer stepping out, a parked unit's jitter): nearer the edge than
``max(edge_margin_m, exit_sigmas * sigma)``, fewer than ``exit_fixes`` in a row that
report driving, and for up to ``exit_ms`` after the last inside fix — or for as long
as the unit stands where its current stop began (a car parked a few metres inside the
edge can show a minute of outside fixes; whether it stands inside is for the stop's
mean position to decide, not for a run of noise to cut short). An exit beyond that
(farther out, or driving out and on) ends the visit, so a unit that grazed the zone
shortly before its final entry arrives with that entry. Neither does a gap in the
data end it across which the unit stood still, as far as the fixes on both sides
show. A visit also ends when the unit drives off from a stop of ``split_stop_ms`` or
more (counted from when it began to stand, before the visit too) whose mean position
is not inside by ``edge_sigmas`` standard errors: a red light or a parking spot just
outside the edge. What follows is a visit of its own, so waiting at the edge cannot
start the stay early, and a unit parked just outside a zone whose way out crosses it
cannot make parked jitter plus drive-through one stay (the drive-through fixes would
pull the mean inside). A visit becomes a *stay*, and its first inside fix the arrival,
once it holds

- a **stop**: fixes that stay within ``stop_radius_m`` (plus 3 sigma of each fix)
  of where the stop began, with reported speed at most ``stop_speed_mps``, for
  ``stop_ms``; or
- a **dwell**: ``dwell_ms`` in total between consecutive inside fixes;

and the mean position of those fixes lies inside the circle by at least
``max(edge_margin_m, edge_sigmas * standard error)``. The standard error is the
larger of what the fixes' ``acc`` allows and what the scatter of the stop's 10 s
block means shows, widened by how much neighbouring blocks lean the same way (see
``hub.domain.stay_mean``). That test is how accuracy decides the boundary: a unit parked at the
edge has fixes on both sides, but its mean position is outside (or too close to
call), so it never arrives. Its limit: a bias of several metres that wanders
over tens of seconds (an urban canyon) is only partly seen in a minute of fixes,
and can still make a unit parked a metre or two outside arrive.

The arrival is then the first fix of the stay on the unit's path smoothed with the
velocity its fixes report (:mod:`hub.domain.smoothing`): walking back from where
it came to rest while that path is inside. A car braking to rest a few metres
inside the edge along a road square to the radius crossed it twenty or thirty
metres back, where single fixes cannot place it to the second; its Doppler speed
can. The same walk carries a stay back across a red light just inside the edge on
the way in (which the visit rule above splits off, unable to place 20 s of fixes).
Without a direction of travel on nearly the whole stretch, the visit's first
inside fix stands.

Accuracy counts three times: a fix whose ``acc`` exceeds the radius cannot tell
inside from outside and is dropped; the jump test allows each fix its error
(:mod:`hub.domain.track`); and the margin above.

The answer is a pure function of the *set* of fixes, whatever their order and
chunking: each change recomputes it (from a checkpoint, so a live fix costs a
short rescan). A stay is confirmed only once the fixes that could still re-decide
its confirming fix (its voters and neighbours) are in, so while fixes come
in device-time order a confirmed arrival never changes: edge jitter yields one
arrival. Late fixes from before the confirmation re-decide it: a store-and-forward
batch from a dead zone normally reveals an earlier start of the same stay and moves
the time back. Only late fixes that contradict the stay (it was a drive-by after
all) move it later or withdraw it; a caller keeps the earliest time it was told.

The parameters and the answer are in :mod:`hub.domain.arrival_params` (and importable from here).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

from devices.payloads import Fix
from hub.domain.arrival_params import ArrivalParams, ArrivalResult
from hub.domain.smoothing import smooth
from hub.domain.stay_mean import MeanPosition
from hub.domain.track import Point, Track

__all__ = ["ArrivalDetector", "ArrivalParams", "ArrivalResult", "detect_arrival"]

# Fixes farther than this beyond the circle are outside whatever their neighbours say (skipped cheaply).
_FAR_M = 250.0
# The detector keeps the scan's state every so many points, so a new fix rescans only the last stretch.
_CHECKPOINT_EVERY = 32


class _Visit:
    """One visit to the zone while the scan walks the track."""

    def __init__(self, first: Point, params: ArrivalParams) -> None:
        self.first = first
        self.last_inside = first
        self.prev = first  # the last kept point of the visit, inside or not
        self.dwell_ms = 0
        # Of every kept point of the visit, so that picking inside ones cannot bias it.
        self.mean = MeanPosition(params.error_correlation_ms)
        self.mean.add(first)
        self.anchor: tuple[float, float] | None = None  # where the current stop began
        self.stop_ms = 0
        self.stop = MeanPosition(params.error_correlation_ms)
        self.driven_out = 0  # outside fixes in a row since the last inside one, driving
        self.stood_from = first.ts  # since when the unit stood where the current stop is, before the visit too

    def copy(self) -> _Visit:
        twin = copy.copy(self)
        twin.mean, twin.stop = copy.copy(self.mean), copy.copy(self.stop)
        return twin


def _still(p: Point, anchor: tuple[float, float], params: ArrivalParams) -> bool:
    if p.speed is not None and p.speed > params.stop_speed_mps:
        return False
    return p.distance_to(*anchor) <= params.stop_radius_m + 3.0 * p.sigma


def _speed_blip(track: Track, i: int, anchor: tuple[float, float], params: ArrivalParams) -> bool:
    """Whether point ``i`` reads a speed above a stop's but stands on the spot, and the next kept fix stands
    still again: one noisy Doppler reading (about 0.3 m/s of noise) does not end a stop."""
    p = track.points[i]
    if p.distance_to(*anchor) > params.stop_radius_m + 3.0 * p.sigma:
        return False
    for j in range(i + 1, min(len(track), i + 1 + track.reach)):  # within what the scan may read ahead
        if track.kept(j):
            return _still(track.points[j], anchor, params)
    return False


def _standing_outside(visit: _Visit, radius_m: float, params: ArrivalParams) -> bool:
    """Whether the unit has stood for ``split_stop_ms`` where it stands now, and that may be outside."""
    return (
        visit.anchor is not None
        and visit.stop.n >= params.min_fixes
        and visit.stop.last_ts - visit.stood_from >= params.split_stop_ms
        and visit.stop.maybe_outside(radius_m, params)
    )


def _follow_stop(visit: _Visit, track: Track, i: int, step_ms: int, radius_m: float, params: ArrivalParams) -> bool:
    """Follow the current stop over point ``i``; whether it ended a stop that may have stood outside."""
    p = track.points[i]
    if visit.anchor is not None and (_still(p, visit.anchor, params) or _speed_blip(track, i, visit.anchor, params)):
        visit.stop_ms += step_ms
        visit.stop.add(p)
        return False
    ended_outside = _standing_outside(visit, radius_m, params)
    visit.stop_ms, visit.stop = 0, MeanPosition(params.error_correlation_ms)
    visit.anchor = None
    if p.speed is None or p.speed <= params.stop_speed_mps:
        visit.anchor = anchor = track.median_xy(i)
        visit.stop.add(p)
        visit.stood_from = p.ts
        for j in range(i - 1, -1, -1):  # back to where the unit began to stand, as far as a split needs
            q = track.points[j]
            if p.ts - q.ts > params.split_stop_ms:
                break
            if track.kept(j):
                if not _still(q, anchor, params):
                    break
                visit.stood_from = q.ts
    return ended_outside


def _step(
    visit: _Visit | None, track: Track, i: int, radius_m: float, params: ArrivalParams
) -> tuple[_Visit | None, bool]:
    """Walk the scan over point ``i``: the visit after it, and whether it confirmed a stay."""
    p = track.points[i]
    if visit is None and math.hypot(p.x, p.y) > radius_m + _FAR_M:
        return None, False
    if not track.kept(i):
        return visit, False
    inside = track.aided_distance(i, 0.0, 0.0) <= radius_m
    if visit is None and not inside:
        return None, False
    if visit is not None:
        step_ms = p.ts - visit.prev.ts
        if inside:
            exited = visit.prev is not visit.last_inside and p.ts - visit.last_inside.ts > params.exit_ms
            # Across a gap in the data the visit goes on only if the unit stood, and stands where it stood.
            moved_unseen = step_ms > params.max_gap_ms and not (
                _still(p, (visit.prev.x, visit.prev.y), params)
                and (visit.prev.speed is None or visit.prev.speed <= params.stop_speed_mps)
            )
            if not (exited or moved_unseen):
                if visit.prev is visit.last_inside:
                    visit.dwell_ms += min(step_ms, params.max_gap_ms)
                visit.last_inside = p
                visit.driven_out = 0
                stay = _extend(visit, track, i, min(step_ms, params.max_gap_ms), radius_m, params)
                return visit if stay is not None else _restart(track, i, radius_m, params), bool(stay)
        elif _clearly_outside(track, i, radius_m, params) or (
                p.ts - visit.last_inside.ts > params.exit_ms and not _standing_by(visit, p, params)):
            return None, False
        elif p.speed is not None and p.speed > params.stop_speed_mps and visit.driven_out + 1 >= params.exit_fixes:
            return None, False  # it drove out and on: grazing the edge, not noise about a spot inside
        else:
            visit.driven_out = visit.driven_out + 1 if p.speed is not None and p.speed > params.stop_speed_mps else 0
            stay = _extend(visit, track, i, min(step_ms, params.max_gap_ms), radius_m, params)
            return visit if stay is not None else None, bool(stay)
    return _restart(track, i, radius_m, params), False


def _standing_by(visit: _Visit, p: Point, params: ArrivalParams) -> bool:
    """Whether the unit still stands where its current stop began: its outside fixes are noise about that spot."""
    return visit.anchor is not None and _still(p, visit.anchor, params)


def _clearly_outside(track: Track, i: int, radius_m: float, params: ArrivalParams) -> bool:
    """Whether point ``i`` is outside beyond its noise: an exit that far ends the visit however short."""
    p = track.points[i]
    return track.aided_distance(i, 0.0, 0.0) > radius_m + max(params.edge_margin_m, params.exit_sigmas * p.sigma)


def _restart(track: Track, i: int, radius_m: float, params: ArrivalParams) -> _Visit:
    """A new visit from inside point ``i``."""
    visit = _Visit(track.points[i], params)
    _follow_stop(visit, track, i, 0, radius_m, params)
    return visit


def _extend(visit: _Visit, track: Track, i: int, step_ms: int, radius_m: float, params: ArrivalParams) -> bool | None:
    """Add kept point ``i`` to the visit; whether the visit is a stay now, None if the visit is over.

    A visit ends when the unit drives off from a stop that may have stood outside (at a red light
    just short of the edge, parked just outside it): what follows is a visit of its own, so neither
    an early start nor parked jitter plus a drive-through on the way out can make it a stay.
    """
    p = track.points[i]
    visit.mean.add(p)
    visit.prev = p
    if _follow_stop(visit, track, i, step_ms, radius_m, params):
        return None
    stopped = visit.stop_ms >= params.stop_ms and visit.stop.n >= params.min_fixes
    if stopped and visit.stop.inside(radius_m, params):
        return True
    dwelt = visit.dwell_ms >= params.dwell_ms and visit.mean.n >= params.min_fixes
    # The stationary part decides: fixes driven in on the way cannot pull a unit parked outside inside.
    return dwelt and visit.mean.inside(radius_m, params) and not _standing_outside(visit, radius_m, params)


def detect_arrival(track: Track, radius_m: float, params: ArrivalParams) -> tuple[ArrivalResult, int] | None:
    """The first stay in the circle of ``radius_m`` around the track's reference, and the index that confirmed it."""
    return _scan(track, radius_m, params, 0, None, None)


def _scan(
    track: Track,
    radius_m: float,
    params: ArrivalParams,
    start: int,
    visit: _Visit | None,
    checkpoints: list[tuple[int, _Visit | None]] | None,
) -> tuple[ArrivalResult, int] | None:
    """Scan from point ``start`` with the visit the scan had there; record checkpoints on the way."""
    for i in range(start, len(track)):
        if checkpoints is not None and i % _CHECKPOINT_EVERY == 0 and (not checkpoints or checkpoints[-1][0] < i):
            checkpoints.append((i, visit and visit.copy()))
        visit, confirmed = _step(visit, track, i, radius_m, params)
        if confirmed and visit is not None:
            if i + track.reach >= len(track):
                return None  # the next fixes can still re-decide this one: wait for them
            first = _entry(visit, track, i, radius_m, params)
            return ArrivalResult(first.ts, first.fix.lat, first.fix.lon, track.points[i].ts), i
    return None


def _entry(visit: _Visit, track: Track, i: int, radius_m: float, params: ArrivalParams) -> Point:
    """The first point of the stay that point ``i`` confirmed.

    From where the unit came to rest, back along its path smoothed with the velocities its fixes
    report, while that path is inside the circle: a car braking to rest a few metres inside the edge,
    or held at a red light just inside it on the way in, crossed the edge where the smoothed path
    does, which single noisy fixes cannot show. (A stay made by dwelling walks back from the fix that
    confirmed it.) Without a direction of travel on nearly the whole stretch the visit's first inside
    fix stands.
    """
    first = visit.first
    rest_ts = visit.stop.first_ts if visit.anchor is not None and visit.stop.n else track.points[i].ts
    lo = track.index_at(first.ts - params.lookback_ms)  # the stop, or point i, is never before the visit
    path = smooth(track, lo, i, params.velocity_noise)
    if path is None or not path.dead_reckoned:
        return first
    k = next((k for k, j in enumerate(path.indices) if track.points[j].ts >= rest_ts), len(path.indices))
    if k == len(path.indices) or path.distance(k) > radius_m:
        return first
    points = track.points
    while (k > 0 and path.distance(k - 1) <= radius_m
           and points[path.indices[k]].ts - points[path.indices[k - 1]].ts <= params.max_gap_ms):
        k -= 1
    if k == 0 and lo > 0:
        return first  # inside all the way back to the start of the stretch: it cannot say where the stay began
    return points[path.indices[k]]


class ArrivalDetector:
    """Arrival of one unit at one incident, fed with the unit's fixes in any order and chunking.

    ``since_ms`` is the dispatch time: earlier fixes are ignored.
    """

    def __init__(
        self,
        zone_lat: float,
        zone_lon: float,
        radius_m: float = 100.0,
        params: ArrivalParams | None = None,
        since_ms: int | None = None,
    ) -> None:
        if not radius_m > 0:
            raise ValueError("radius_m must be > 0")
        self.params = params = params or ArrivalParams()
        self.radius_m = radius_m
        max_acc = radius_m if params.max_acc_m is None else params.max_acc_m
        self._track = Track(zone_lat, zone_lon, since_ms=since_ms, max_acc_m=max_acc, fix_filter=params.fix_filter)
        self._result: ArrivalResult | None = None
        # Once confirmed, fixes after this device time cannot change the answer.
        self._horizon_ts: int | None = None
        # (index, the scan's visit before that point): a change rescans from the last one it cannot reach.
        self._checkpoints: list[tuple[int, _Visit | None]] = []

    @property
    def result(self) -> ArrivalResult | None:
        return self._result

    def add(self, fixes: Iterable[Fix]) -> ArrivalResult | None:
        """Take fixes; return the arrival if this call confirmed it or moved its time, else None."""
        track = self._track
        earliest = track.add(fixes)
        if earliest is None or (self._horizon_ts is not None and earliest > self._horizon_ts):
            return None
        unchanged = track.index_at(earliest) - track.reach
        while self._checkpoints and self._checkpoints[-1][0] > unchanged:
            self._checkpoints.pop()
        start, visit = self._checkpoints[-1] if self._checkpoints else (0, None)
        found = _scan(track, self.radius_m, self.params, start, visit and visit.copy(), self._checkpoints)
        previous, self._result = self._result, None if found is None else found[0]
        # The decision at the confirming point read ``reach`` points further; nothing later can change it.
        self._horizon_ts = None if found is None else track.points[found[1] + track.reach].ts
        if self._result is None or (previous is not None and previous.ts == self._result.ts):
            return None
        return self._result
