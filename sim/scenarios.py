"""How a simulated unit carries out a dispatch, and the geometry of the hard cases of arrival detection.

A :class:`Plan` says what the unit does between the dispatch command and clearing: its turnout
when it stands, stops on the way (an overshoot), where it comes to rest on scene, how noisy its
GPS is, whether its uplink drops out around the arrival, how long it stays, what it does after.
The planners try routes on a clone of the car (:meth:`SimVehicle.clone`) so the geometry holds for
the drive the car will really make. The cases (``CASES``):

- ``parked``: standing at dispatch, leaves after a turnout delay, rests at the incident's address;
- ``patrolling``: driving at dispatch (no turnout), straight on to the incident;
- ``drive_by``: the route passes through the zone; the car rests 50-150 m beyond its edge for
  30-90 s, then comes back and rests in the zone: only that last stay is the arrival;
- ``outliers``: 2 % of fixes jump 150-800 m instead of 0.5 %;
- ``edge_jitter``: rests 5 m inside to 10 m outside the edge, so its noisy fixes straddle it;
- ``edge_outside``: rests 10-30 m outside the edge and never enters: any arrival is false;
- ``dead_zone``: the uplink is held for 60-180 s around the arrival and delivered as one batch.

Pure: time is passed in, randomness comes from the caller's :class:`random.Random`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final, Literal

from geo.geodesy import haversine_m, offset
from sim.city import City
from sim.traffic import SimVehicle

__all__ = ["CASES", "DeadZone", "Plan", "Stop", "Trace", "abeam", "address_near", "edge_scene", "overshoot_stop",
           "random_address", "road_point", "trace"]

CASES: Final = ("parked", "patrolling", "drive_by", "outliers", "edge_jitter", "edge_outside", "dead_zone")
OUTLIER_PROBABILITY: Final = 0.02  # the "outliers" case; GpsModel's default is 0.005


@dataclass(frozen=True, slots=True)
class Stop:
    """A place on the way where the car rests ``hold_s`` before going on."""

    lat: float
    lon: float
    hold_s: float


@dataclass(frozen=True, slots=True)
class DeadZone:
    """The uplink drops when the car comes within ``start_within_m`` of the incident on its final approach,
    and returns ``span_s`` later, but not before the car has rested on scene for ``after_stop_s``."""

    start_within_m: float
    span_s: float
    after_stop_s: float


@dataclass(frozen=True, slots=True)
class Plan:
    """What one unit does for one dispatch; ``None`` fields take the simulator's defaults."""

    case: str = "normal"
    turnout_s: float | None = None  # from dispatch to moving off, when standing at dispatch
    via: tuple[Stop, ...] = ()
    rest_at: tuple[float, float] | None = None  # where the car rests on scene; None: the incident's address
    outlier_probability: float | None = None
    dead_zone: DeadZone | None = None
    on_scene_s: float | None = None
    contact_after_s: float | None = None  # from resting on scene to the officer's contact event
    after_clear: Literal["patrol", "stay"] = "patrol"


@dataclass(frozen=True, slots=True)
class Trace:
    """A drive tried on a clone: positions every step, where and heading which way it came to rest."""

    points: list[tuple[float, float]]
    rest: tuple[float, float]
    heading: float
    edge: tuple[int, int]
    duration_s: float


# ------------------------------------------------------------------ addresses
def road_point(city: City, lat: float, lon: float) -> tuple[float, float, float]:
    """The road point nearest ``(lat, lon)`` and how far it is."""
    rp = city.nearest_road_point(lat, lon)
    (lat_a, lon_a), (lat_b, lon_b) = city.nodes[rp.a], city.nodes[rp.b]
    t = rp.along_m / city.edge(rp.a, rp.b).length_m
    return lat_a + (lat_b - lat_a) * t, lon_a + (lon_b - lon_a) * t, rp.distance_m


def _aside(rng: random.Random, lat: float, lon: float, aside_m: float) -> tuple[float, float]:
    side, distance = rng.uniform(0.0, math.tau), rng.uniform(0.0, aside_m)
    return offset(lat, lon, distance * math.cos(side), distance * math.sin(side))


def random_address(city: City, rng: random.Random, aside_m: float = 30.0) -> tuple[float, float]:
    """An address anywhere in the city: a road point, then up to ``aside_m`` off the road."""
    min_lat, min_lon, max_lat, max_lon = city.bounds()
    while True:
        lat, lon, off_road = road_point(city, rng.uniform(min_lat, max_lat), rng.uniform(min_lon, max_lon))
        if off_road <= 150.0:  # inside the grid, not out by the ring road's corners
            return _aside(rng, lat, lon, aside_m)


def address_near(city: City, rng: random.Random, near: tuple[float, float], lo_m: float, hi_m: float,
                 aside_m: float = 30.0) -> tuple[float, float]:
    """An address ``lo_m``-``hi_m`` from ``near`` as the crow flies, up to ``aside_m`` off a road."""
    for _ in range(10_000):
        angle, distance = rng.uniform(0.0, math.tau), rng.uniform(lo_m, hi_m)
        lat, lon, off_road = road_point(city, *offset(*near, distance * math.cos(angle), distance * math.sin(angle)))
        if off_road > 150.0:
            continue  # outside the city
        lat, lon = _aside(rng, lat, lon, aside_m)
        if lo_m <= haversine_m(*near, lat, lon) <= hi_m:
            return lat, lon
    raise ValueError(f"no address {lo_m:g}-{hi_m:g} m from {near}")


# --------------------------------------------------------------------- routes
def trace(vehicle: SimVehicle, now_ms: int, target: tuple[float, float], step_ms: int = 500,
          limit_s: float = 3600.0) -> Trace:
    """Drive a clone of ``vehicle`` from ``now_ms`` to the road point nearest ``target`` until it rests."""
    car = vehicle.clone()
    car.advance(now_ms)
    car.drive_to_point(*target)
    points = [car.position]
    t = now_ms
    while car.state == "driving":
        t += step_ms
        car.advance(t)
        points.append(car.position)
        if t - now_ms > limit_s * 1000:
            raise ValueError("the clone never reached its target")
    return Trace(points, car.position, car.heading, car.edge, (t - now_ms) / 1000)


def _ahead(city: City, rest: tuple[float, float], edge: tuple[int, int], reach_m: float,
           step_m: float = 10.0) -> list[tuple[float, float]]:
    """Road points every ``step_m`` ahead of a car resting at ``rest`` on ``edge``, up to ``reach_m`` of road."""
    found: list[tuple[float, float]] = []
    came_from, node = edge
    stack = [(came_from, node, haversine_m(*rest, *city.nodes[node]), rest)]
    while stack:
        prev, node, travelled, start = stack.pop()
        length = haversine_m(*start, *city.nodes[node])
        k = 1
        while k * step_m < length and travelled - length + k * step_m <= reach_m:
            t = k * step_m / length
            found.append((start[0] + (city.nodes[node][0] - start[0]) * t,
                          start[1] + (city.nodes[node][1] - start[1]) * t))
            k += 1
        if travelled >= reach_m:
            continue
        for nxt, e in city.neighbours(node):
            if nxt != prev:
                stack.append((node, nxt, travelled + e.length_m, city.nodes[node]))
    return found


def overshoot_stop(vehicle: SimVehicle, now_ms: int, incident: tuple[float, float], radius_m: float,
                   rng: random.Random, beyond_m: tuple[float, float] = (50.0, 150.0),
                   hold_s: tuple[float, float] = (30.0, 90.0), tries: int = 12) -> Stop | None:
    """A stop ``beyond_m`` outside the zone's edge whose route from the car passes through the zone.

    Candidates are road points ahead of where the car would rest at the incident; each is tried
    on a clone, and the first whose route comes within half the radius of the incident wins.
    """
    city = vehicle.city
    approach = trace(vehicle, now_ms, incident)
    lo, hi = radius_m + beyond_m[0], radius_m + beyond_m[1]
    candidates = [p for p in _ahead(city, approach.rest, approach.edge, hi + 150.0)
                  if lo <= haversine_m(*incident, *p) <= hi]
    rng.shuffle(candidates)
    for point in candidates[:tries]:
        drive = trace(vehicle, now_ms, point)
        if haversine_m(*incident, *drive.rest) < lo:
            continue
        if min(haversine_m(*incident, *p) for p in drive.points) <= radius_m / 2:
            return Stop(drive.rest[0], drive.rest[1], rng.uniform(*hold_s))
    return None


def abeam(rng: random.Random, at: tuple[float, float], heading_deg: float, distance_m: float) -> tuple[float, float]:
    """The point ``distance_m`` square to a road heading ``heading_deg`` at ``at``, on a random side."""
    bearing = math.radians(heading_deg + rng.choice((90.0, -90.0)))
    return offset(*at, distance_m * math.cos(bearing), distance_m * math.sin(bearing))


def edge_scene(vehicle: SimVehicle, now_ms: int, rng: random.Random, radius_m: float,
               gap_m: tuple[float, float], far_m: tuple[float, float], tries: int = 40
               ) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """An incident and a resting place ``radius_m + gap`` from it (gap negative: inside), the route there
    coming no nearer to the incident than the resting place: ``(incident, rest_at)``.

    The incident lies square to the road at the resting place, so the last metres of the approach
    close in on it and stop; nothing earlier on the route is nearer.
    """
    for _ in range(tries):
        target = address_near(vehicle.city, rng, vehicle.position, *far_m, aside_m=0.0)
        drive = trace(vehicle, now_ms, target)
        gap = radius_m + rng.uniform(*gap_m)
        incident = abeam(rng, drive.rest, drive.heading, gap)
        if min(haversine_m(*incident, *p) for p in drive.points) >= gap - 2.0:
            return incident, drive.rest
    return None
