"""Simulated vehicles on the road graph, their GPS receivers and batteries.

Everything here is pure: time is passed in as epoch milliseconds, randomness
comes from a seeded :class:`random.Random`, so a test replays the same drive
and the same noisy fixes every time.
"""

from __future__ import annotations

import copy
import math
import random
from typing import Final, Literal

from devices.payloads import Fix
from geo.geodesy import bearing_deg, offset
from sim.city import City

__all__ = ["Battery", "GpsModel", "SimVehicle", "VehicleState"]

VehicleState = Literal["driving", "parked", "on_scene"]

ACCEL_MPS2: Final = 2.0
BRAKE_MPS2: Final = 2.5  # comfortable braking starts here
HARD_BRAKE_MPS2: Final = 5.0
TURN_MPS: Final = 5.5  # a right-angle turn at about 20 km/h
U_TURN_MPS: Final = 2.5
MAX_STEP_S: Final = 0.5  # integration step; turns and stops need finer steps than the fix rate


class SimVehicle:
    """A car that patrols the city, or drives to a given place and stays there.

    Call :meth:`advance` with the current time; read :attr:`position`,
    :attr:`speed` (m/s) and :attr:`heading` (degrees) after it. On patrol it
    drives to random destinations and sometimes parks for a while; after
    :meth:`drive_to` or :meth:`drive_to_point` it stops at the target and stays
    ``on_scene`` until told otherwise.
    """

    def __init__(
        self,
        city: City,
        rng: random.Random,
        start_node: int,
        now_ms: int,
        *,
        park_probability: float = 0.3,
        park_s: tuple[float, float] = (60.0, 600.0),
        red_light_probability: float = 0.2,
        red_light_s: tuple[float, float] = (5.0, 45.0),
    ) -> None:
        self.city = city
        self.rng = rng
        self.park_probability = park_probability
        self.park_s = park_s
        self.red_light_probability = red_light_probability
        self.red_light_s = red_light_s
        self.state: VehicleState = "parked"
        self.speed = 0.0
        self.heading = rng.uniform(0.0, 360.0)
        self.odometer_m = 0.0
        self.destination: int | None = None
        self._pace = rng.uniform(0.85, 1.0)  # this driver's share of the speed limit
        self._from = self._to = start_node
        self._length = 0.0
        self._limit = 0.0
        self._pos = 0.0  # metres along the current edge from ``_from``
        self._route: list[int] = []  # nodes still to reach after ``_to``
        self._stop_m: float | None = None  # where to stop on the last edge; None means at its end
        self._end_speed = 0.0  # the speed allowed when leaving the current edge
        self._red = False  # a red light waits at the end of the current edge
        self._hold_until: int | None = None  # standing at a red light until then
        self._now_ms = now_ms
        self._on_scene_after = False  # whether the current trip ends on scene rather than on patrol
        # Stagger the first departures so a fleet does not start in lockstep.
        self._park_until: int | None = now_ms + int(rng.uniform(0.0, 30_000.0))

    # ----------------------------------------------------------- read-outs
    @property
    def position(self) -> tuple[float, float]:
        """True ``(lat, lon)`` of the vehicle."""
        lat_a, lon_a = self.city.nodes[self._from]
        if self._length == 0.0:
            return lat_a, lon_a
        lat_b, lon_b = self.city.nodes[self._to]
        t = self._pos / self._length
        return lat_a + (lat_b - lat_a) * t, lon_a + (lon_b - lon_a) * t

    @property
    def edge(self) -> tuple[int, int]:
        """The road being driven, as ``(from, to)`` in the direction of travel."""
        return self._from, self._to

    @property
    def speed_limit(self) -> float:
        """The limit of the road being driven; 0 while standing at a node off any road."""
        return self._limit

    # ------------------------------------------------------------- orders
    def drive_to(self, node: int) -> None:
        """Drive to ``node`` by the fastest route and stay there (``on_scene``)."""
        self._settle()
        self._plan(self.city.shortest_path(self._to, node), None)
        self.destination = node
        self._depart(on_scene=True)

    def drive_to_point(self, lat: float, lon: float) -> None:
        """Drive to the road point nearest ``(lat, lon)`` (an address mid-block) and stay there."""
        self._settle()
        target = self.city.nearest_road_point(lat, lon)
        if {self._from, self._to} == {target.a, target.b} and self._length > 0.0:
            ahead = target.along_m if self._from == target.a else self._length - target.along_m
            if ahead >= self._pos:
                self._plan([], ahead)  # the target is on this very edge, ahead of us
                self.destination = self._to
                self._depart(on_scene=True)
                return
        times = self.city.travel_times_from(self._to)
        edge = self.city.edge(target.a, target.b)
        via_a = times[target.a] + target.along_m / edge.speed_mps
        via_b = times[target.b] + (edge.length_m - target.along_m) / edge.speed_mps
        if via_a <= via_b:
            path = [*self.city.shortest_path(self._to, target.a), target.b]
            stop = target.along_m
        else:
            path = [*self.city.shortest_path(self._to, target.b), target.a]
            stop = edge.length_m - target.along_m
        self._plan(path, stop)
        self.destination = path[-1]
        self._depart(on_scene=True)

    def resume_patrol(self) -> None:
        """Leave the scene (or a parking spot) and patrol again."""
        self._new_patrol_route()

    def park(self, until_ms: int | None = None) -> None:
        """Stand where the car is until ``until_ms`` (None: until the next order); only a standing car parks."""
        if self.state == "driving":
            raise ValueError("a driving car cannot park on the spot: give it a place to drive to")
        self.state = "parked"
        self._park_until = until_ms

    def clone(self) -> SimVehicle:
        """An independent copy on the same city, its random stream included: to try a route before driving it."""
        return copy.deepcopy(self, {id(self.city): self.city})  # the city shared, everything else the twin's own

    # ----------------------------------------------------------- kinematics
    def advance(self, now_ms: int) -> None:
        """Move the vehicle forward to ``now_ms``; a time in the past is ignored."""
        while self._now_ms < now_ms:
            step_ms = min(now_ms - self._now_ms, int(MAX_STEP_S * 1000))
            self._now_ms += step_ms
            if self.state == "driving":
                self._drive(step_ms / 1000.0)
            elif self.state == "parked" and self._park_until is not None and self._now_ms >= self._park_until:
                self._new_patrol_route()

    def _drive(self, dt: float) -> None:
        if self._hold_until is not None:
            if self._now_ms < self._hold_until:
                return
            self._hold_until = None
        stop_at = self._stop_m if not self._route and self._stop_m is not None else self._length
        remaining = max(0.0, stop_at - self._pos)
        v, v_end = self.speed, self._end_speed
        cruise = self._limit * self._pace
        # The deceleration that reaches the end of the edge at exactly v_end (from v^2 = v_end^2 + 2 a d).
        need = (v * v - v_end * v_end) / (2 * remaining) if remaining > 0.0 else math.inf
        if v > v_end and need >= BRAKE_MPS2:
            decel = min(need, HARD_BRAKE_MPS2)
            t_end = (v - v_end) / decel
            if decel == need and t_end <= dt:
                new_speed = v_end
                step = remaining + v_end * (dt - t_end)
            else:
                new_speed = max(v_end, v - decel * dt)
                step = (v + new_speed) / 2 * dt
        else:
            new_speed = min(cruise, v + ACCEL_MPS2 * dt) if v < cruise else max(cruise, v - BRAKE_MPS2 * dt)
            step = (v + new_speed) / 2 * dt
        self.speed = new_speed
        while step >= remaining:
            step -= remaining
            self.odometer_m += remaining
            self._pos = stop_at
            if not self._route:
                self._arrive()
                return
            if self._red:
                self._red = False
                self.speed = 0.0
                self._hold_until = self._now_ms + int(self.rng.uniform(*self.red_light_s) * 1000)
                return
            self._enter(self._route.pop(0))
            stop_at = self._stop_m if not self._route and self._stop_m is not None else self._length
            remaining = stop_at
        self._pos += step
        self.odometer_m += step

    def _enter(self, node: int) -> None:
        """Turn onto the road from the current node to ``node``."""
        self._from, self._to = self._to, node
        edge = self.city.edge(self._from, self._to)
        self._length = edge.length_m
        self._limit = edge.speed_mps
        self._pos = 0.0
        self.heading = bearing_deg(*self.city.nodes[self._from], *self.city.nodes[self._to])
        # Integration steps may carry a little excess speed across a corner; the new road's limit holds.
        self.speed = min(self.speed, self._limit)
        self._set_end_speed()

    def _set_end_speed(self) -> None:
        """How fast the car may leave the current edge: stop, red light, turn, or go straight on."""
        self._red = False
        if not self._route or self._length == 0.0:
            self._end_speed = 0.0  # the trip ends here, or the car is not on a road yet
            return
        nxt = self._route[0]
        if len(self.city.neighbours(self._to)) >= 3 and self.rng.random() < self.red_light_probability:
            self._red = True
            self._end_speed = 0.0
            return
        out = bearing_deg(*self.city.nodes[self._to], *self.city.nodes[nxt])
        turn = abs((out - self.heading + 180.0) % 360.0 - 180.0)
        next_limit = self.city.edge(self._to, nxt).speed_mps
        if turn < 25.0:
            self._end_speed = next_limit
        elif turn < 135.0:
            self._end_speed = min(TURN_MPS, next_limit)
        else:
            self._end_speed = U_TURN_MPS

    def _arrive(self) -> None:
        self.speed = 0.0
        if self.state == "driving" and self._on_scene_after:
            self.state = "on_scene"
            self._park_until = None
        elif self.rng.random() < self.park_probability:
            self.state = "parked"
            self._park_until = self._now_ms + int(self.rng.uniform(*self.park_s) * 1000)
        else:
            self._new_patrol_route()

    # ------------------------------------------------------------- planning
    def _plan(self, path: list[int], stop_m: float | None) -> None:
        """Set the route ``path`` (starting at the node ahead) and where to stop on its last edge."""
        self._route = path[1:] if path and path[0] == self._to else list(path)
        self._stop_m = stop_m
        self._set_end_speed()

    def _depart(self, *, on_scene: bool) -> None:
        self._on_scene_after = on_scene
        self._park_until = None
        self.state = "driving"
        if self._pos >= self._length:
            # Standing at the end of the edge: the route starts at the node we are on.
            if not self._route:
                self._arrive()
                return
            if self._red:
                self._red = False
                self.speed = 0.0
                self._hold_until = self._now_ms + int(self.rng.uniform(*self.red_light_s) * 1000)
                return
            self._enter(self._route.pop(0))

    def _settle(self) -> None:
        """A car standing at the start of a road is at its first node: plan from there, not from the far end."""
        if self._pos == 0.0 and self.speed == 0.0 and self._length > 0.0 and self._hold_until is None:
            self._to = self._from
            self._length = self._limit = 0.0

    def _new_patrol_route(self) -> None:
        self._settle()
        here = self._to
        dest = here
        while dest == here:
            dest = self.rng.choice(self.city.node_ids)
        self._plan(self.city.shortest_path(here, dest), None)
        self.destination = dest
        self._depart(on_scene=False)


class GpsModel:
    """A GPS receiver: turns the true position into a noisy :class:`Fix`.

    The reported ``acc`` is drawn from ``acc_m`` and the error is a 2-D Gaussian
    whose 68 % radius is that ``acc`` (how phones and trackers define it). With
    ``outlier_probability`` a fix jumps 150-800 m away (multipath, a cold start);
    half of those admit it with a large ``acc``, half lie with a small one.
    ``drift_m`` adds a slowly wandering bias, as along urban canyons.
    """

    # sigma of each axis so that P(error < acc) = 0.68 for a 2-D Gaussian.
    _SIGMA_PER_ACC: Final = 1.0 / math.sqrt(-2.0 * math.log(0.32))

    def __init__(
        self,
        rng: random.Random,
        *,
        acc_m: tuple[float, float] = (3.0, 10.0),
        outlier_probability: float = 0.005,
        outlier_m: tuple[float, float] = (150.0, 800.0),
        drift_m: float = 0.0,
        alt_m: float = 40.0,
    ) -> None:
        self.rng = rng
        self.acc_m = acc_m
        self.outlier_probability = outlier_probability
        self.outlier_m = outlier_m
        self.drift_m = drift_m
        self.alt_m = alt_m
        self.fixes = 0
        self.outliers = 0
        self.last_outlier = False
        self._bias = (0.0, 0.0)

    def fix(
        self,
        now_ms: int,
        lat: float,
        lon: float,
        *,
        speed: float | None = None,
        heading: float | None = None,
        battery: float | None = None,
        seq: int | None = None,
    ) -> Fix:
        rng = self.rng
        acc = rng.uniform(*self.acc_m)
        sigma = acc * self._SIGMA_PER_ACC
        north, east = rng.gauss(0.0, sigma), rng.gauss(0.0, sigma)
        if self.drift_m > 0.0:
            # First-order Gauss-Markov: the bias keeps 95 % of itself per fix.
            keep = 0.95
            step = self.drift_m * math.sqrt(1 - keep**2)
            self._bias = (keep * self._bias[0] + rng.gauss(0.0, step), keep * self._bias[1] + rng.gauss(0.0, step))
            north += self._bias[0]
            east += self._bias[1]
        sats = rng.randint(7, 14)
        self.last_outlier = rng.random() < self.outlier_probability
        if self.last_outlier:
            self.outliers += 1
            jump = rng.uniform(*self.outlier_m)
            angle = rng.uniform(0.0, math.tau)
            north, east = jump * math.cos(angle), jump * math.sin(angle)
            acc = rng.uniform(0.5, 1.5) * jump if rng.random() < 0.5 else rng.uniform(*self.acc_m)
            sats = rng.randint(3, 6)
        self.fixes += 1
        noisy_lat, noisy_lon = offset(lat, lon, north, east)
        reported_speed = reported_heading = None
        if speed is not None:
            reported_speed = round(max(0.0, speed + rng.gauss(0.0, 0.3)), 2)
            # A receiver's course over ground is noise when standing still, so it is left out.
            if heading is not None and speed >= 1.0:
                reported_heading = round((heading + rng.gauss(0.0, 3.0)) % 360.0, 1)
        return Fix(
            ts=now_ms,
            lat=round(noisy_lat, 7),
            lon=round(noisy_lon, 7),
            alt=round(self.alt_m + rng.gauss(0.0, sigma * 1.5), 1),
            acc=round(acc, 1),
            speed=reported_speed,
            heading=reported_heading,
            battery=None if battery is None else round(battery, 1),
            sats=sats,
            seq=seq,
        )


class Battery:
    """A device battery draining at ``drain_per_hour`` percent; swapped for a full one at ``swap_below``."""

    def __init__(
        self, rng: random.Random, now_ms: int, *, drain_per_hour: float = 6.0, swap_below: float | None = 10.0
    ) -> None:
        self.level = rng.uniform(55.0, 100.0)
        self.drain_per_hour = drain_per_hour * rng.uniform(0.8, 1.2)
        self.swap_below = swap_below
        self._now_ms = now_ms

    def advance(self, now_ms: int) -> float:
        """The level in percent at ``now_ms``."""
        if now_ms > self._now_ms:
            self.level = max(0.0, self.level - self.drain_per_hour * (now_ms - self._now_ms) / 3_600_000)
            self._now_ms = now_ms
            if self.swap_below is not None and self.level < self.swap_below:
                self.level = 100.0
        return self.level
