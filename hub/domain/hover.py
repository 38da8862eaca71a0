"""Aerial arrival (issue 14): a drone is over the scene once it hovers in the zone at altitude.

The ground rule (:mod:`hub.domain.arrival`) waits for a minute's stop or a minute and a half inside,
because a car held at a red light is not on scene. A copter flying to a scene slows to a hover over
its target and stays there, and passing over a scene it keeps cruise speed, so its rule can decide in
seconds: the drone has arrived when, inside the radius and at or above ``min_alt_m`` (``Fix.alt``,
metres above home), its ground speed stays at or below ``hover_speed_mps`` for ``hover_ms`` over at
least three fixes. Ground speed is the fix's own (the autopilot's velocity estimate), or, without one,
the distance from the last fix at least a second before, over the time between them.

The arrival is the first fix of the unbroken run of inside-at-altitude fixes that holds the hover:
the drone entered the zone then (SPEC: the first fix inside the zone that starts a stay), so a drone
that cruised in and then hovered arrived when it crossed the edge, not when it stopped.

- A single outlier is ignored: it neither starts nor breaks a run, nor counts in a hover or a speed.
  First a *jump*: a fix that neither neighbour could reach at ``_MAX_SPEED_MPS`` plus both fixes'
  error allowance (the GPS jump, whose neighbours both agree with each other). Then, among the other
  fixes, one whose inside-at-altitude reading differs from both its neighbours' (one bad altitude, a
  smaller jump across the edge). Both tests read the next fix, so the newest fix is read once it is
  near the one before it and agrees with it, or when the next one is in.
- A gap of more than ``max_gap_ms`` between the fixes of a run ends it: the drone may have left unseen.
- Fixes less accurate than the radius, and fixes before ``since_ms`` (the dispatch), are dropped.

Limits: without a reported speed, speed from positions a second apart suits the autopilot's filtered
position (centimetres of noise in a hover); raw GPS with metres of noise reads as more than 1.5 m/s and
such a drone would not arrive. A drone hovering in the zone before the dispatch arrives as soon as the
hover is seen again, at the first fix after the dispatch.

The answer is a pure function of the *set* of fixes, whatever their order and chunking. The detector
keeps the scan's state after every fix read, so a new fix rescans only from just before it, and a fix
after what the confirmation read changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from devices.payloads import Fix
from hub.domain.arrival import ArrivalResult
from hub.domain.track import FixFilter, Point, Track

__all__ = ["HoverArrivalDetector"]

# Speed from positions is measured over at least this long: GPS noise over a fifth of a second reads
# as several metres per second.
_SPEED_BASELINE_MS: Final = 1000
# Fixes needed in a hover, however long it lasts: one or two fixes prove nothing.
_MIN_HOVER_FIXES: Final = 3
# No copter the hub sends flies faster (ArduCopter's WPNAV_SPEED tops out at 20 m/s): a fix that implies
# more from both its neighbours is a GPS jump.
_MAX_SPEED_MPS: Final = 30.0
# The error allowance of a fix in the jump test is 2 * acc, at most _MAX_SLACK_M; without acc, of
# _DEFAULT_ACC_M (GLOBAL_POSITION_INT is the autopilot's filtered estimate and carries no accuracy).
_DEFAULT_ACC_M: Final = 5.0
_MAX_SLACK_M: Final = 30.0


@dataclass(frozen=True, slots=True)
class _Scan:
    """The scan's state after a fix: the run it is in (``entry``, its first fix) and the hover in that run."""

    entry: int | None = None  # index of the run's first fix; None outside any run
    last: int | None = None  # index of the run's latest fix
    hover_from: int | None = None  # index of the first fix of the current slow stretch
    hover_fixes: int = 0


class HoverArrivalDetector:
    """Arrival of one drone over one scene, fed with its fixes in any order and chunking.

    Same contract as :class:`hub.domain.arrival.ArrivalDetector`: :meth:`add` returns the arrival when the
    call confirmed it or moved its time, else None; :attr:`result` holds the current answer.
    """

    def __init__(
        self,
        lat: float,
        lon: float,
        radius_m: float,
        *,
        since_ms: int,
        min_alt_m: float,
        hover_speed_mps: float = 1.5,
        hover_ms: int = 3000,
        max_gap_ms: int = 10_000,
    ) -> None:
        if not radius_m > 0 or not math.isfinite(min_alt_m) or not hover_speed_mps >= 0:
            raise ValueError("radius_m must be > 0, min_alt_m finite and hover_speed_mps >= 0")
        if hover_ms <= 0 or max_gap_ms <= 0:
            raise ValueError("hover_ms and max_gap_ms must be > 0")
        self.radius_m = radius_m
        self.min_alt_m = min_alt_m
        self.hover_speed_mps = hover_speed_mps
        self.hover_ms = hover_ms
        self.max_gap_ms = max_gap_ms
        self._track = Track(lat, lon, since_ms=since_ms, max_acc_m=radius_m, fix_filter=FixFilter())
        self._states: list[_Scan] = []  # the scan's state after each fix read so far, by index
        self._result: ArrivalResult | None = None
        self._confirmed: int | None = None  # index of the fix that confirmed the hover (its state is the last)

    @property
    def result(self) -> ArrivalResult | None:
        return self._result

    def add(self, fixes: Iterable[Fix]) -> ArrivalResult | None:
        """Take fixes; return the arrival if this call confirmed it or moved its time, else None."""
        earliest = self._track.add(fixes)
        if earliest is None:
            return None
        self._forget_from(self._track.index_at(earliest))
        if self._confirmed is not None and self._confirmed < len(self._states):
            return None  # what confirmed the hover has not changed
        found = self._scan()
        previous, self._result = self._result, None if found is None else self._arrival(*found)
        self._confirmed = None if found is None else found[1]
        if self._result is None or (previous is not None and previous.ts == self._result.ts):
            return None
        return self._result

    # ---------------------------------------------------------------- the scan
    def _forget_from(self, e: int) -> None:
        """Drop the scan's states that a change at index ``e`` may alter.

        It alters whether ``e - 1``, ``e`` and ``e + 1`` are jumps (their neighbours changed) and so the
        neighbours of the last fix before ``e - 1`` that is not one; the states before that fix stand.
        """
        k = e - 2
        while k > 0 and self._jump(k):
            k -= 1
        del self._states[max(0, k):]

    def _scan(self) -> tuple[int, int] | None:
        """Read on from the last state kept; (the run's first fix, the fix that confirmed its hover) or None."""
        points = self._track.points
        state = self._states[-1] if self._states else _Scan()
        for i in range(len(self._states), len(points)):
            kept = self._kept(i)
            if kept is None:
                return None  # the next fix decides: wait for it
            state = self._step(state, i) if kept else state
            self._states.append(state)
            if state.hover_from is not None and state.entry is not None and (
                    state.hover_fixes >= _MIN_HOVER_FIXES
                    and points[i].ts - points[state.hover_from].ts >= self.hover_ms):
                return state.entry, i
        return None

    def _step(self, state: _Scan, i: int) -> _Scan:
        """The scan's state after kept fix ``i``."""
        if not self._in_zone(i):
            return _Scan()
        points = self._track.points
        if state.entry is None or state.last is None or points[i].ts - points[state.last].ts > self.max_gap_ms:
            state = _Scan(entry=i)
        speed = self._speed(i)
        if speed is None or speed > self.hover_speed_mps:
            return _Scan(entry=state.entry, last=i)
        hover_from = i if state.hover_from is None else state.hover_from
        return _Scan(entry=state.entry, last=i, hover_from=hover_from, hover_fixes=state.hover_fixes + 1)

    # ------------------------------------------------------------- fix readings
    def _in_zone(self, i: int) -> bool:
        """Whether fix ``i`` reads inside the radius at or above the minimum altitude (no altitude: not)."""
        p = self._track.points[i]
        alt = p.fix.alt
        return alt is not None and alt >= self.min_alt_m and math.hypot(p.x, p.y) <= self.radius_m

    def _far(self, i: int, j: int) -> bool:
        """Whether fixes ``i`` and ``j`` are farther apart than a copter flies between them, errors allowed."""
        p, q = self._track.points[i], self._track.points[j]
        slack = sum(min(2.0 * (_DEFAULT_ACC_M if f.acc is None else f.acc), _MAX_SLACK_M) for f in (p.fix, q.fix))
        return _distance(p, q) > slack + _MAX_SPEED_MPS * abs(p.ts - q.ts) / 1000.0

    def _jump(self, i: int) -> bool | None:
        """Whether fix ``i`` is a GPS jump (too far from both neighbours); None until its next fix is in."""
        if i == 0 or not self._far(i, i - 1):
            return False
        if i + 1 >= len(self._track):
            return None
        return self._far(i, i + 1)

    def _kept(self, i: int) -> bool | None:
        """Whether fix ``i`` is read: neither a jump nor reading differently from both its neighbours (the
        nearest fixes that are not jumps); None until the fixes that decide it are in."""
        jump = self._jump(i)
        if jump is None or jump:
            return None if jump is None else False
        here = self._in_zone(i)
        before = next((j for j in range(i - 1, -1, -1) if not self._jump(j)), None)
        if before is None or self._in_zone(before) == here:
            return True
        for j in range(i + 1, len(self._track)):
            jump = self._jump(j)
            if jump is None:
                return None
            if not jump:
                return self._in_zone(j) == here
        return None

    def _speed(self, i: int) -> float | None:
        """Ground speed at fix ``i``: its own, else from the last kept fix a second or more before."""
        points = self._track.points
        p = points[i]
        if p.speed is not None:
            return p.speed
        for j in range(i - 1, -1, -1):
            q = points[j]
            dt = p.ts - q.ts
            if dt > self.max_gap_ms:
                return None
            if dt >= _SPEED_BASELINE_MS and self._kept(j):
                return _distance(p, q) / (dt / 1000.0)
        return None

    def _arrival(self, entry: int, confirmed: int) -> ArrivalResult:
        points = self._track.points
        first = points[entry].fix
        return ArrivalResult(first.ts, first.lat, first.lon, points[confirmed].ts)


def _distance(p: Point, q: Point) -> float:
    return p.distance_to(q.x, q.y)
