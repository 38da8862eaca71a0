"""Which drone to send (空地一体): ready on its dock, enough battery for the round trip plus a reserve, nearest.

Pure: the caller passes each drone's state as a :class:`DroneCandidate` and gets the choice and,
for every drone passed over, the reason, so the dispatcher (and the incident log) can see why. Whether
a drone is fit to fly at all (link, signing, telemetry, pre-arm health, on its dock, link failsafe) is
:func:`hub.domain.drone_readiness.readiness`; a drone without a link failsafe is sent only when the
operator explicitly allows it.

The energy model is deliberately simple and conservative: a straight flight out at cruise speed,
a climb to the cruise altitude, a hover over the scene, and the flight home, each costing a share
of the battery; the reserve is what must be left on landing. The figures come from configuration
(:class:`DroneEnergy`); they should be set from the fleet's measured consumption.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from devices.geo import haversine_m
from hub.domain.drone_readiness import Failsafe, readiness

__all__ = ["DroneCandidate", "DroneChoice", "DroneEnergy", "choose_drone", "must_return"]


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


@dataclass(frozen=True, slots=True)
class DroneChoice:
    drone_id: str
    distance_m: float
    eta_s: float
    needed_pct: float
    overridden: str | None = None  # the readiness reason the operator chose to override (no link failsafe)


def _refusal(c: DroneCandidate, lat: float, lon: float, energy: DroneEnergy,
             allow_no_failsafe: bool) -> tuple[str | None, float, str | None]:
    """Why ``c`` cannot go (None if it can), its distance to the scene, and the reason overridden if any."""
    if c.busy_with is not None:
        return f"on incident {c.busy_with}", math.inf, None
    ready = readiness(c, energy)
    overridden = None
    if ready.state == "no_failsafe" and allow_no_failsafe:
        overridden = ready.reason
    elif ready.state != "ready":
        return ready.reason or ready.state, math.inf, None
    assert c.lat is not None and c.lon is not None  # readiness checked the position
    distance = haversine_m(c.lat, c.lon, lat, lon)
    needed = energy.mission_pct(distance)
    if c.battery_pct is None or c.battery_pct < needed:
        have = "unknown" if c.battery_pct is None else f"{c.battery_pct:.0f} %"
        return f"battery {have}, the round trip needs {needed:.0f} %", distance, None
    return None, distance, overridden


def choose_drone(candidates: Iterable[DroneCandidate], lat: float, lon: float, energy: DroneEnergy, *,
                 allow_no_failsafe: bool = False) -> tuple[DroneChoice | None, dict[str, str]]:
    """The nearest drone that can fly to ``lat``/``lon`` and back, and why each other one could not.

    A drone on an incident is refused with it; any other drone that is not ``ready`` with its readiness
    reason, except that with ``allow_no_failsafe`` (the operator asked for it explicitly) a drone whose only
    fault is its link failsafe may go, and the choice names what was overridden. Then the battery decides.
    A drone with a link failsafe goes before a nearer one without.
    """
    best: DroneChoice | None = None
    refused: dict[str, str] = {}
    for c in candidates:
        why, distance, overridden = _refusal(c, lat, lon, energy, allow_no_failsafe)
        if why is not None:
            refused[c.drone_id] = why
        elif best is None or (overridden is not None, distance) < (best.overridden is not None, best.distance_m):
            best = DroneChoice(c.drone_id, distance, distance / energy.cruise_mps, energy.mission_pct(distance),
                               overridden)
    return best, refused


def must_return(battery_pct: float | None, distance_home_m: float, energy: DroneEnergy) -> bool:
    """Whether a flying drone has just enough battery left to fly home and land with its reserve."""
    return battery_pct is not None and battery_pct <= energy.return_pct(distance_home_m)
