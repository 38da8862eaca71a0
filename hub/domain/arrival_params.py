"""The arrival detector's parameters (:class:`ArrivalParams`: what makes a visit to the zone a stay) and its
answer (:class:`ArrivalResult`).

The detector itself is :mod:`hub.domain.arrival`; its docstring explains how each parameter is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hub.domain.smoothing import VelocityNoise
from hub.domain.track import FixFilter

__all__ = ["ArrivalParams", "ArrivalResult"]


@dataclass(frozen=True, slots=True)
class ArrivalParams:
    """What makes a visit to the zone a stay. Defaults are for vehicles and officers on foot."""

    # A stop must outlast a red light (the simulator holds up to 45 s; with braking and pulling away
    # a drive-by stands still for under 50 s), or a drive-by held at a light inside the zone would arrive.
    stop_ms: int = 60_000
    # Time inside in total that makes a stay without a clean stop (creeping, pacing about the scene).
    # A drive-by through a 200 m circle, red light included, stays inside for at most about 75 s.
    dwell_ms: int = 90_000
    # Outside near the edge (within noise, see exit_sigmas) for up to this long after the last inside
    # fix does not end the visit.
    exit_ms: int = 20_000
    # A visit ends when the unit drives off from a stop of at least this long whose mean position may be
    # outside (a red light or a parking spot just short of the edge): what follows is a visit of its own.
    # Shorter, and a slow approach without reported speed would look like a stop.
    split_stop_ms: int = 10_000
    # An outside fix (on its robust line) farther out than max(edge_margin_m, exit_sigmas * sigma)
    # went clearly out, not edge noise: it ends the visit even within exit_ms.
    exit_sigmas: float = 3.0
    # This many outside fixes in a row that report driving (speed above stop_speed_mps) end the visit:
    # the unit grazed the edge; noise about a spot inside it stands still.
    exit_fixes: int = 2
    # A gap in the data counts at most this much towards a stop or a dwell; a longer gap ends a
    # visit unless the unit stood still before it and stands on the same spot after it.
    max_gap_ms: int = 30_000
    # A stopped unit's fixes stay within this of where it stopped, plus 3 sigma of each fix's error.
    stop_radius_m: float = 10.0
    # Reported (Doppler) speed of a stopped unit: noise is about 0.3 m/s, a walk 1.4 m/s.
    stop_speed_mps: float = 1.0
    # The stay's mean position must be inside by max(edge_margin_m, edge_sigmas * its standard error).
    # Three standard errors: the test is repeated with every fix of a long stay.
    edge_margin_m: float = 1.0
    edge_sigmas: float = 3.0
    # GPS errors are correlated over seconds (multipath, urban canyons): the standard error is measured
    # from the means of blocks this long; until there are four, the fixes of each block count as one.
    error_correlation_ms: int = 10_000
    # Fewest fixes that make a stop or a dwell (one or two fixes prove nothing at any rate).
    min_fixes: int = 3
    # Fixes with a larger acc cannot tell inside from outside and are dropped; None means the radius.
    max_acc_m: float | None = None
    # Once a stop confirms a stay, its start is found on the path smoothed with the fixes' velocities
    # (:mod:`hub.domain.smoothing`) from this long before the visit began to the confirming fix.
    lookback_ms: int = 180_000
    velocity_noise: VelocityNoise = field(default_factory=VelocityNoise)
    fix_filter: FixFilter = field(default_factory=FixFilter)

    def __post_init__(self) -> None:
        durations = (self.stop_ms, self.dwell_ms, self.exit_ms, self.split_stop_ms, self.max_gap_ms, self.lookback_ms)
        if min(*durations, self.error_correlation_ms) <= 0:
            raise ValueError(
                "stop_ms, dwell_ms, exit_ms, split_stop_ms, max_gap_ms, lookback_ms and error_correlation_ms"
                " must be > 0"
            )
        limits = (self.stop_radius_m, self.stop_speed_mps, self.edge_margin_m, self.edge_sigmas, self.exit_sigmas)
        if min(limits) < 0:
            raise ValueError("radii, speeds and margins must be >= 0")
        if self.min_fixes < 1 or self.exit_fixes < 1 or (self.max_acc_m is not None and self.max_acc_m <= 0):
            raise ValueError("min_fixes must be >= 1 and max_acc_m > 0")


@dataclass(frozen=True, slots=True)
class ArrivalResult:
    """The arrival: ``ts``/``lat``/``lon`` of the first fix of the stay; ``confirmed_at_ts`` the fix that proved it."""

    ts: int
    lat: float
    lon: float
    confirmed_at_ts: int
