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

from geo.geodesy import haversine_m
from hub.domain.drone_candidate import DroneCandidate, DroneEnergy
from hub.domain.drone_readiness import readiness

__all__ = ["DroneChoice", "choose_drone", "must_return"]


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
