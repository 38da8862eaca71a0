"""How the simulated copter flies: manoeuvres as queues of stages, flown by simple kinematics.

A manoeuvre (take off, go to a point, RTL, one mission item) is a list of
:class:`Stage`; :meth:`Flight.step` flies the first one for a tick and says
when it is done. The :class:`Body` moves in a local north/east plane around the dock
with cruise and climb limits, an acceleration limit and a braking curve into
each target (:func:`fly_to`). Altitudes are above the ground (flat, at the dock's
level); ``home`` is ``(north, east, up)``, ``up`` being home's height above that ground
(0 unless DO_SET_HOME moved it), since RTL_ALT and relative mission altitudes are above home.
Pure: time comes in as ``dt`` and ``now_ms``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from geo.geodesy import EARTH_RADIUS_M
from sim.arducopter import CopterConfig, LandedState, MissionItem, NavCmd

__all__ = ["Body", "Flight", "Stage", "fly_to"]

_RELATIVE_FRAMES: Final = frozenset({3, 6, 10, 11})  # GLOBAL_RELATIVE_ALT(_INT), terrain frames


@dataclass(slots=True)
class Stage:
    """One step of a manoeuvre: climb, fly to a point, wait, land, or report an item reached."""

    kind: Literal["takeoff", "climb", "goto", "wait", "land", "reached"]
    n: float = 0.0
    e: float = 0.0
    alt: float = 0.0
    seconds: float = 0.0
    seq: int = 0  # the mission item a "reached" stage reports
    until_ms: int | None = None


@dataclass(slots=True)
class Body:
    n: float = 0.0  # metres north of the dock
    e: float = 0.0
    alt: float = 0.0  # metres above the ground (the dock's level)
    vn: float = 0.0
    ve: float = 0.0
    vz: float = 0.0  # up positive
    heading: float = 0.0
    odometer_m: float = 0.0
    flying: bool = False


class Flight:
    """The airframe in the local plane around its dock, the manoeuvre it is flying, and where it holds after."""

    def __init__(self, dock: tuple[float, float, float], config: CopterConfig) -> None:
        self.dock = dock  # (lat, lon, amsl_m)
        self.config = config
        self.body = Body()
        self.stages: list[Stage] = []
        self.hold: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (n, e, alt) to hover at with no stage left

    @property
    def stage_kind(self) -> str:
        return self.stages[0].kind if self.stages else ""

    def landed_state(self, landing: bool) -> LandedState:
        """MAV_LANDED_STATE of the manoeuvre flown; ``landing`` in LAND mode, whatever the stage."""
        if not self.body.flying:
            return LandedState.TAKEOFF if self.stage_kind == "takeoff" else LandedState.ON_GROUND
        if landing or self.stage_kind == "land":
            return LandedState.LANDING
        return LandedState.TAKEOFF if self.stage_kind == "takeoff" else LandedState.IN_AIR

    def hold_here(self) -> None:
        self.hold = (self.body.n, self.body.e, self.body.alt)

    def ground(self) -> None:
        """Motors off: on the ground, still, with nothing left to fly."""
        b = self.body
        b.flying = False
        b.alt = 0.0
        b.vn = b.ve = b.vz = 0.0
        self.stages = []
        self.hold_here()

    def local(self, lat: float, lon: float) -> tuple[float, float]:
        """``(north, east)`` metres of a point from the dock."""
        k = math.radians(1.0) * EARTH_RADIUS_M
        return (lat - self.dock[0]) * k, (lon - self.dock[1]) * k * math.cos(math.radians(self.dock[0]))

    def rtl_stages(self, home: tuple[float, float, float]) -> list[Stage]:
        """Climb to RTL_ALT above home (or stay higher), fly home, loiter RTL_LOIT_TIME, land."""
        b, (hn, he, up) = self.body, home
        alt = max(self.config.rtl_alt_m + up, b.alt)
        return [Stage("climb", b.n, b.e, alt), Stage("goto", hn, he, alt),
                Stage("wait", seconds=self.config.rtl_loiter_s), Stage("land")]

    def item_stages(self, item: MissionItem, seq: int, home: tuple[float, float, float]) -> list[Stage] | None:
        """The stages that fly mission item ``seq``; None for a command the copter cannot fly."""
        b = self.body
        n, e = self.local(item.lat, item.lon) if item.lat or item.lon else (b.n, b.e)
        alt = item.alt - self.dock[2] if item.frame not in _RELATIVE_FRAMES else item.alt + home[2]
        reached = Stage("reached", seq=seq)
        if item.command == NavCmd.TAKEOFF:
            kind: Literal["takeoff", "climb"] = "climb" if b.flying else "takeoff"
            return [Stage(kind, b.n, b.e, max(alt, b.alt)), reached]
        if item.command in (NavCmd.WAYPOINT, NavCmd.LOITER_TIME):
            alt = alt if alt > 0 else b.alt
            hold = item.param1 if item.param1 > 0 else 0.0
            return [Stage("goto", n, e, alt), reached, Stage("wait", seconds=hold)]
        if item.command == NavCmd.RETURN_TO_LAUNCH:
            return [*self.rtl_stages(home), reached]  # reported on touchdown
        if item.command == NavCmd.LAND:
            return [Stage("goto", n, e, b.alt), Stage("land"), reached]
        return None

    def step(self, dt: float, now_ms: int, speed_mps: float) -> Stage | None:
        """Fly ``dt`` seconds of the first stage (or hover at the hold point); the stage once it is done.

        A finished stage leaves the queue, except "land": it ends on touchdown, which the caller handles.
        """
        cfg, b = self.config, self.body
        stage = self.stages[0] if self.stages else None
        if stage is None:
            fly_to(b, cfg, speed_mps, *self.hold, dt)
            return None
        done = True  # "reached": done once reported
        if stage.kind in ("takeoff", "climb"):
            b.flying = True
            up = cfg.takeoff_mps if stage.kind == "takeoff" else None
            fly_to(b, cfg, speed_mps, stage.n, stage.e, stage.alt, dt, up=up)
            done = abs(b.alt - stage.alt) < 0.3
        elif stage.kind == "goto":
            fly_to(b, cfg, speed_mps, stage.n, stage.e, stage.alt, dt)
            done = math.hypot(stage.n - b.n, stage.e - b.e) < cfg.wp_radius_m and abs(stage.alt - b.alt) < 1.0
        elif stage.kind == "wait":
            fly_to(b, cfg, speed_mps, *self.hold, dt)
            stage.until_ms = stage.until_ms or now_ms + int(stage.seconds * 1000)
            done = now_ms >= stage.until_ms
        elif stage.kind == "land":
            slow = b.alt <= cfg.land_slow_alt_m
            fly_to(b, cfg, speed_mps, self.hold[0], self.hold[1], -1.0, dt,
                   down=cfg.land_mps if slow else cfg.descent_mps)
            return stage if b.alt <= 0.0 else None
        if not done:
            return None
        self.stages.pop(0)
        if stage.kind in ("takeoff", "climb", "goto"):
            self.hold = (stage.n, stage.e, stage.alt)
        return stage


def fly_to(body: Body, config: CopterConfig, speed_mps: float, n: float, e: float, alt: float, dt: float,
           up: float | None = None, down: float | None = None) -> None:
    """Move towards a point at bounded speed and acceleration, braking so as to stop on it."""
    cfg, b = config, body
    if not b.flying:
        b.vn = b.ve = b.vz = 0.0
        return
    dn, de = n - b.n, e - b.e
    dist = math.hypot(dn, de)
    want = min(speed_mps, math.sqrt(2 * cfg.accel_mps2 * dist) * 0.9, dist / dt) if dist > 0.01 else 0.0
    wn, we = (dn / dist * want, de / dist * want) if dist > 0.01 else (0.0, 0.0)
    gap = math.hypot(wn - b.vn, we - b.ve)
    limit = cfg.accel_mps2 * dt
    if gap > limit:
        wn, we = b.vn + (wn - b.vn) * limit / gap, b.ve + (we - b.ve) * limit / gap
    b.vn, b.ve = wn, we
    b.n += b.vn * dt
    b.e += b.ve * dt
    if math.hypot(b.vn, b.ve) > 1.0:
        b.heading = math.degrees(math.atan2(b.ve, b.vn)) % 360.0
    dz = alt - b.alt
    rate = (up or cfg.climb_mps) if dz > 0 else (down or cfg.descent_mps)
    wz = math.copysign(min(rate, math.sqrt(2 * cfg.accel_z_mps2 * abs(dz)) * 0.9, abs(dz) / dt), dz)
    b.vz += max(-cfg.accel_z_mps2 * dt, min(cfg.accel_z_mps2 * dt, wz - b.vz))
    b.alt += b.vz * dt
