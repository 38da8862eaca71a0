"""A drone as dispatch sees it: its state (:class:`DroneCandidate`), its link failsafe (:class:`Failsafe`)
and the battery model it flies by (:class:`DroneEnergy`).

Value objects only, shared by the rules that judge them: :mod:`hub.domain.drone_readiness` (is it fit to
fly) and :mod:`hub.domain.aerial` (which one goes). Pure; imports nothing of the hub.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DroneCandidate", "DroneEnergy", "Failsafe"]


@dataclass(frozen=True, slots=True)
class Failsafe:
    """What the autopilot does when the hub's link is lost.

    ``known``: the parameters were read and mean something :func:`~hub.domain.drone_readiness.gcs_failsafe`
    knows; ``ok``: losing the hub's link triggers a failsafe action; ``action``: one of ``rtl``, ``land``,
    ``continue_or_rtl``, ``smartrtl_or_rtl``, ``smartrtl_or_land``, ``land_start_or_rtl``, ``none``,
    ``unknown``; ``text``: the same in words; ``params``: the failsafe parameters as read.
    """

    known: bool
    ok: bool
    action: str
    text: str
    params: dict[str, float]


@dataclass(frozen=True, slots=True)
class DroneEnergy:
    """Battery use of a drone in percent of a full charge, and how it flies."""

    cruise_mps: float = 12.0
    pct_per_km: float = 4.0
    climb_pct: float = 2.0  # taking off and climbing to the cruise altitude
    hover_pct_per_min: float = 1.5
    on_scene_min: float = 5.0  # planned time over the scene
    reserve_pct: float = 20.0  # left on landing
    dock_radius_m: float = 30.0  # nearer its dock than this, a landed drone is "on its dock"

    def __post_init__(self) -> None:
        values = (self.cruise_mps, self.pct_per_km, self.climb_pct, self.hover_pct_per_min, self.on_scene_min,
                  self.reserve_pct, self.dock_radius_m)
        if min(values) < 0 or self.cruise_mps == 0:
            raise ValueError("drone energy figures must be >= 0 and cruise_mps > 0")

    def mission_pct(self, distance_m: float) -> float:
        """Battery a flight to a scene ``distance_m`` away, the planned hover and the flight home need."""
        return (self.climb_pct + 2.0 * distance_m / 1000.0 * self.pct_per_km
                + self.on_scene_min * self.hover_pct_per_min + self.reserve_pct)

    def return_pct(self, distance_home_m: float) -> float:
        """Battery needed to fly home from ``distance_home_m`` away and land with the reserve."""
        return distance_home_m / 1000.0 * self.pct_per_km + self.reserve_pct


@dataclass(frozen=True, slots=True)
class DroneCandidate:
    drone_id: str
    lat: float | None
    lon: float | None
    battery_pct: float | None
    link_ok: bool
    armed: bool
    on_ground: bool
    dock_distance_m: float | None  # from its dock; None without a position
    busy_with: str | None = None  # the incident it is on
    signing: str = "signed"  # "signed", "unsigned" (opted in) or "refused" (no key, no opt-in)
    heard: bool = True  # the hub has heard the drone at least once
    signed_no_key: bool = False  # it signs and the hub has no key for it: it drops the hub's commands
    telemetry_problem: str | None = None  # why the requested messages do not arrive, in words
    position_fresh: bool = True
    prearm_ok: bool | None = None  # the autopilot's pre-arm health; None when it does not report it
    prearm_text: str | None = None  # its last refusal in STATUSTEXT ("Arm: Need Position Estimate")
    failsafe: Failsafe | None = None  # its link failsafe; None when the parameters have not been read
