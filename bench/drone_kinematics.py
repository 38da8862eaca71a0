"""The physical minimum under a drone dispatch: rest-to-rest kinematics at the simulated copter's limits.

Pure: what :mod:`bench.drone_dispatch` sets the hub's figures beside, the floor under the flight (take off to the
cruise altitude, then level flight to the scene) with no command round trip and no arming.
"""

from __future__ import annotations

import math
from typing import Final

from sim.arducopter import CopterConfig

__all__ = ["AIRBORNE_M", "RADIUS_M", "TURN_SHARE", "move_s", "physical_minimum", "reach_s"]

AIRBORNE_M: Final = 2.0
RADIUS_M: Final = 100.0  # the incident's arrival zone (SPEC's default, given explicitly)
TURN_SHARE: Final = 0.9  # the hub sends the drone on its way once it is this share of the cruise altitude up


def move_s(distance_m: float, vmax: float, accel: float) -> float:
    """Rest to rest over ``distance_m`` at most ``vmax`` and ``accel``: a trapezoid, or a triangle when short."""
    if distance_m <= 0:
        return 0.0
    if distance_m >= vmax * vmax / accel:
        return distance_m / vmax + vmax / accel
    return 2 * math.sqrt(distance_m / accel)


def reach_s(x_m: float, distance_m: float, vmax: float, accel: float) -> float:
    """When the same rest-to-rest move over ``distance_m`` passes ``x_m`` from its start."""
    x = min(max(x_m, 0.0), distance_m)
    ramp = min(vmax * vmax / (2 * accel), distance_m / 2)  # length of the acceleration (and braking) part
    peak = math.sqrt(2 * accel * ramp)
    if x <= ramp:
        return math.sqrt(2 * x / accel)
    if x <= distance_m - ramp:
        return peak / accel + (x - ramp) / peak
    return move_s(distance_m, vmax, accel) - math.sqrt(2 * (distance_m - x) / accel)


def physical_minimum(config: CopterConfig, cruise_alt_m: float, distance_m: float,
                     radius_m: float = RADIUS_M) -> dict[str, float]:
    """Seconds from lift-off at the copter's configured limits: take off to the cruise altitude (takeoff speed,
    vertical acceleration), then fly level to the scene (cruise speed, horizontal acceleration), one after the
    other (``over_scene_s``). The hub sends its goto once the drone is at 0.9 x the cruise altitude, so the last
    metres of the climb overlap the level flight: ``hub_profile_s`` is that profile's floor, a little lower.
    No command round trip, no arming: the floor under the flight, not under the hub."""
    up, up_a, cruise, a = config.takeoff_mps, config.accel_z_mps2, config.cruise_mps, config.accel_mps2
    climb = move_s(cruise_alt_m, up, up_a)
    level = move_s(distance_m, cruise, a)
    turn = reach_s(TURN_SHARE * cruise_alt_m, cruise_alt_m, up, up_a)
    return {"airborne_s": round(reach_s(AIRBORNE_M, cruise_alt_m, up, up_a), 2), "climb_s": round(climb, 2),
            "cruise_s": round(level, 2), "over_scene_s": round(climb + level, 2),
            "zone_entry_s": round(climb + reach_s(distance_m - radius_m, distance_m, cruise, a), 2),
            "hub_profile_s": round(turn + level, 2),
            "takeoff_mps": up, "accel_z_mps2": up_a, "cruise_mps": cruise, "accel_mps2": a}
