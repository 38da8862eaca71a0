"""A simulated multicopter that behaves like ArduCopter at the MAVLink protocol level.

Pure: time comes in through :meth:`Copter.step`, randomness from a passed
:class:`random.Random`. Commands return a MAV_RESULT the way ArduCopter 4.x
answers them (arming-check failures and refused mode changes are FAILED, a
malformed request DENIED). Flight is simple kinematics in a local north/east
plane around the dock: cruise and climb limits, an acceleration limit, a
braking curve into each target. Things a ground station would be told about
(mission progress, status texts) queue up as :class:`CopterEvent` for the
MAVLink endpoint to send.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Literal

from devices.geo import EARTH_RADIUS_M, offset

__all__ = ["FORCE_MAGIC", "MISSION_COMMANDS", "Copter", "CopterConfig", "CopterEvent", "LandedState",
           "MissionItem", "Mode", "NavCmd", "Result"]

FORCE_MAGIC: Final = 21196  # param2 of COMPONENT_ARM_DISARM that skips the checks, as in ArduPilot
MAX_STEP_S: Final = 0.1
_RELATIVE_FRAMES: Final = frozenset({3, 6, 10, 11})  # GLOBAL_RELATIVE_ALT(_INT), terrain frames


class Mode(IntEnum):
    """ArduCopter custom_mode numbers (the subset simulated)."""

    STABILIZE = 0
    ALT_HOLD = 2
    AUTO = 3
    GUIDED = 4
    LOITER = 5
    RTL = 6
    LAND = 9


class Result(IntEnum):
    """MAV_RESULT."""

    ACCEPTED = 0
    TEMPORARILY_REJECTED = 1
    DENIED = 2
    UNSUPPORTED = 3
    FAILED = 4


class LandedState(IntEnum):
    """MAV_LANDED_STATE."""

    UNDEFINED = 0
    ON_GROUND = 1
    IN_AIR = 2
    TAKEOFF = 3
    LANDING = 4


class NavCmd(IntEnum):
    """The MAV_CMD mission items the copter can fly."""

    WAYPOINT = 16
    LOITER_TIME = 19
    RETURN_TO_LAUNCH = 20
    LAND = 21
    TAKEOFF = 22


MISSION_COMMANDS: Final = frozenset(int(c) for c in NavCmd)
_NEEDS_GPS: Final = frozenset({Mode.AUTO, Mode.GUIDED, Mode.LOITER, Mode.RTL})
_ARMABLE: Final = frozenset({Mode.STABILIZE, Mode.ALT_HOLD, Mode.GUIDED, Mode.LOITER})


@dataclass(frozen=True, slots=True)
class MissionItem:
    """One stored mission item; ``alt`` in the item's ``frame`` (AMSL for 0/5, above home for 3/6)."""

    command: int
    lat: float = 0.0
    lon: float = 0.0
    alt: float = 0.0
    frame: int = 3
    param1: float = 0.0
    param2: float = 0.0
    param3: float = 0.0
    param4: float = 0.0


@dataclass(frozen=True, slots=True)
class CopterEvent:
    """Something to tell the ground station: a status text, a new current item, an item reached."""

    kind: Literal["text", "mission_current", "item_reached"]
    value: int = 0  # MAV_SEVERITY for text, the item seq otherwise
    text: str = ""


@dataclass(slots=True)
class CopterConfig:
    """The tunables, named after the ArduCopter parameters they stand for."""

    cruise_mps: float = 12.0  # WPNAV_SPEED
    climb_mps: float = 3.0  # WPNAV_SPEED_UP
    takeoff_mps: float = 2.5  # PILOT_SPEED_UP / takeoff climb rate
    descent_mps: float = 1.5  # WPNAV_SPEED_DN, LAND_SPEED_HIGH
    land_mps: float = 1.0  # LAND_SPEED, below land_slow_alt_m
    land_slow_alt_m: float = 10.0
    accel_mps2: float = 2.5  # WPNAV_ACCEL
    accel_z_mps2: float = 1.5
    wp_radius_m: float = 2.0  # WPNAV_RADIUS
    rtl_alt_m: float = 30.0  # RTL_ALT
    rtl_loiter_s: float = 5.0  # RTL_LOIT_TIME
    disarm_delay_s: float = 10.0  # DISARM_DELAY: armed on the ground without taking off
    arm_min_battery_pct: float = 25.0
    low_battery_pct: float = 20.0  # BATT_LOW, action RTL
    hover_drain_pct_s: float = 100.0 / 1500.0  # a 25-minute hover
    move_drain_pct_m: float = 0.0015  # extra per metre flown at cruise speed
    gcs_failsafe_s: float | None = None  # FS_GCS_ENABLE off by default
    gps_error_m: float = 1.5


@dataclass(slots=True)
class _Stage:
    """One step of a manoeuvre: climb, fly to a point, wait, land, or report an item reached."""

    kind: Literal["takeoff", "climb", "goto", "wait", "land", "reached"]
    n: float = 0.0
    e: float = 0.0
    alt: float = 0.0
    seconds: float = 0.0
    seq: int = 0  # the mission item a "reached" stage reports
    until_ms: int | None = None


@dataclass(slots=True)
class _Body:
    n: float = 0.0  # metres north of the dock
    e: float = 0.0
    alt: float = 0.0  # metres above home
    vn: float = 0.0
    ve: float = 0.0
    vz: float = 0.0  # up positive
    heading: float = 0.0
    odometer_m: float = 0.0
    flying: bool = False


class Copter:
    """An ArduCopter-like vehicle docked at ``(lat, lon, amsl_m)``; advance it with :meth:`step`."""

    def __init__(self, lat: float, lon: float, amsl_m: float, now_ms: int, rng: random.Random,
                 config: CopterConfig | None = None, battery_pct: float = 100.0) -> None:
        self.dock = (lat, lon, amsl_m)
        self.config = config or CopterConfig()
        self.rng = rng
        self.now_ms = now_ms
        self.boot_ms = now_ms
        self.body = _Body()
        self.home_ne = (0.0, 0.0)
        self.mode = Mode.STABILIZE
        self.armed = False
        self.battery_pct = battery_pct
        self.gps_fix_type = 3
        self.satellites = 12
        self.mission: list[MissionItem] = []
        self.mission_current = 0
        self.events: list[CopterEvent] = []
        self.speed_mps = self.config.cruise_mps
        self._stages: list[_Stage] = []
        self._hold: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self._auto_running = False
        self._armed_ground_ms = now_ms
        self._low_battery_done = False
        self._last_gcs_ms: int | None = None
        self._gps_bias = (0.0, 0.0)

    # ---------------------------------------------------------------- reading
    @property
    def landed_state(self) -> LandedState:
        if not self.body.flying:
            return LandedState.TAKEOFF if self._stage_kind() == "takeoff" else LandedState.ON_GROUND
        if self.mode is Mode.LAND or self._stage_kind() == "land":
            return LandedState.LANDING
        return LandedState.TAKEOFF if self._stage_kind() == "takeoff" else LandedState.IN_AIR

    @property
    def gps_ok(self) -> bool:
        return self.gps_fix_type >= 3 and self.satellites >= 6

    def position(self) -> tuple[float, float, float]:
        """True ``(lat, lon, alt above home)``."""
        lat, lon = offset(self.dock[0], self.dock[1], self.body.n, self.body.e)
        return lat, lon, self.body.alt

    def gps_position(self) -> tuple[float, float]:
        """What the GPS receiver reports: the truth plus a slowly wandering error of a metre or two."""
        lat, lon = offset(self.dock[0], self.dock[1], self.body.n + self._gps_bias[0], self.body.e + self._gps_bias[1])
        return lat, lon

    def home(self) -> tuple[float, float, float]:
        """``(lat, lon, amsl)`` of home: where the copter last armed."""
        lat, lon = offset(self.dock[0], self.dock[1], *self.home_ne)
        return lat, lon, self.dock[2]

    def ground_speed(self) -> float:
        return math.hypot(self.body.vn, self.body.ve)

    def drain_events(self) -> list[CopterEvent]:
        events, self.events = self.events, []
        return events

    # --------------------------------------------------------------- commands
    def arm(self, force: bool = False) -> Result:
        if self.armed:
            return Result.ACCEPTED
        if not force:
            failure = self._arming_failure()
            if failure:
                self._text(3, f"PreArm: {failure}")
                return Result.FAILED
        self.armed = True
        self._armed_ground_ms = self.now_ms
        self._low_battery_done = False
        self.home_ne = (self.body.n, self.body.e)  # ArduPilot resets home where it arms
        self._text(6, "Arming motors")
        return Result.ACCEPTED

    def disarm(self, force: bool = False) -> Result:
        if not self.armed:
            return Result.ACCEPTED
        if self.body.flying and not force:
            return Result.FAILED
        self._disarm()
        return Result.ACCEPTED

    def set_mode(self, mode: int) -> Result:
        try:
            new = Mode(mode)
        except ValueError:
            return Result.FAILED
        if new is self.mode:
            return Result.ACCEPTED  # re-entering the current mode changes nothing, as in ArduCopter
        if new in _NEEDS_GPS and not self.gps_ok:
            self._text(4, f"Flight mode change failed: {new.name} needs position")
            return Result.FAILED
        if new is Mode.AUTO and not self._mission_items():
            return Result.FAILED
        if (new is Mode.AUTO and self.armed and not self.body.flying
                and self.mission[1].command != NavCmd.TAKEOFF):
            self._text(4, "Auto: Missing Takeoff Cmd")
            return Result.FAILED
        self.mode = new
        self._stages = []
        self._auto_running = False
        self._hold_here()
        if new is Mode.RTL:
            self._stages = self._rtl_stages()
        elif new is Mode.LAND:
            self._stages = [_Stage("land")]
        elif new is Mode.AUTO and self.body.flying:
            self._start_mission()
        return Result.ACCEPTED

    def takeoff(self, alt_m: float) -> Result:
        if self.mode is not Mode.GUIDED or not self.armed or self.body.flying or alt_m <= 0:
            return Result.FAILED
        self._stages = [_Stage("takeoff", self.body.n, self.body.e, alt_m)]
        return Result.ACCEPTED

    def goto(self, lat: float, lon: float, alt_m: float) -> Result:
        """Fly to a point in GUIDED (``alt_m`` above home) and hover there."""
        if self.mode is not Mode.GUIDED:
            return Result.DENIED
        if not self.armed or not self.body.flying:
            return Result.FAILED
        n, e = self._local(lat, lon)
        self._stages = [_Stage("goto", n, e, alt_m)]
        return Result.ACCEPTED

    def set_speed(self, mps: float) -> Result:
        if mps <= 0:
            return Result.DENIED
        self.speed_mps = min(mps, 20.0)
        return Result.ACCEPTED

    def set_mission(self, items: list[MissionItem]) -> None:
        """Store a mission; item 0 is home, as in ArduPilot, and is never flown."""
        self.mission = list(items)
        self.mission_current = 0
        if self.mode is Mode.AUTO:
            self.set_mode(Mode.LOITER)

    def mission_start(self) -> Result:
        if self.set_mode(Mode.AUTO) is not Result.ACCEPTED:
            return Result.FAILED
        if not self._auto_running and self.armed:
            self._start_mission()
        return Result.ACCEPTED

    def set_mission_current(self, seq: int) -> Result:
        if not 0 < seq < len(self.mission):
            return Result.DENIED
        self.mission_current = seq
        self.events.append(CopterEvent("mission_current", seq))
        if self.mode is Mode.AUTO and self._auto_running:
            self._run_item(seq)
        return Result.ACCEPTED

    def gcs_heartbeat(self) -> None:
        self._last_gcs_ms = self.now_ms

    def set_battery(self, pct: float) -> None:
        self.battery_pct = max(0.0, min(100.0, pct))

    # ------------------------------------------------------------------- time
    def step(self, now_ms: int) -> None:
        """Advance the flight to ``now_ms`` in steps of at most 0.1 s."""
        while self.now_ms < now_ms:
            dt_ms = min(now_ms - self.now_ms, int(MAX_STEP_S * 1000))
            self.now_ms += dt_ms
            self._tick(dt_ms / 1000.0)

    def _tick(self, dt: float) -> None:
        keep = 0.998  # the GPS error wanders (Gauss-Markov, ~50 s time constant), it is not white noise
        sigma = self.config.gps_error_m * math.sqrt(1 - keep * keep)
        self._gps_bias = (keep * self._gps_bias[0] + self.rng.gauss(0, sigma),
                          keep * self._gps_bias[1] + self.rng.gauss(0, sigma))
        if not self.armed:
            return
        before = (self.body.n, self.body.e)
        self._navigate(dt)
        moved = math.hypot(self.body.n - before[0], self.body.e - before[1])
        self.body.odometer_m += moved
        if self.body.flying or self._stage_kind() == "takeoff":
            pace = self.ground_speed() / self.config.cruise_mps
            drain = self.config.hover_drain_pct_s * dt + self.config.move_drain_pct_m * moved * (0.5 + pace)
            self.battery_pct = max(0.0, self.battery_pct - drain)
        self._failsafes()

    def _failsafes(self) -> None:
        cfg = self.config
        if not self.body.flying and self.armed and self._stage_kind() != "takeoff":
            if cfg.disarm_delay_s > 0 and self.now_ms - self._armed_ground_ms >= cfg.disarm_delay_s * 1000:
                self._disarm()
            return
        self._armed_ground_ms = self.now_ms
        if self.battery_pct < cfg.low_battery_pct and not self._low_battery_done:
            self._low_battery_done = True
            self._text(2, f"Battery 1 is low {self.battery_pct:.0f}%")
            if self.mode not in (Mode.RTL, Mode.LAND):
                self._failsafe_rtl()
        gcs_timeout = cfg.gcs_failsafe_s
        if (gcs_timeout is not None and self._last_gcs_ms is not None
                and self.now_ms - self._last_gcs_ms > gcs_timeout * 1000 and self.mode not in (Mode.RTL, Mode.LAND)):
            self._text(2, "GCS Failsafe")
            self._failsafe_rtl()

    def _failsafe_rtl(self) -> None:
        if self.set_mode(Mode.RTL) is not Result.ACCEPTED:
            self.set_mode(Mode.LAND)

    # ------------------------------------------------------------- navigation
    def _navigate(self, dt: float) -> None:
        stage = self._stages[0] if self._stages else None
        if stage is None:
            if self.mode is Mode.AUTO and self._auto_running:
                self._next_item()
            self._fly_to(*self._hold, dt)
            return
        done = False
        if stage.kind in ("takeoff", "climb"):
            self.body.flying = True
            up = self.config.takeoff_mps if stage.kind == "takeoff" else None
            self._fly_to(stage.n, stage.e, stage.alt, dt, up=up)
            done = abs(self.body.alt - stage.alt) < 0.3
        elif stage.kind == "goto":
            self._fly_to(stage.n, stage.e, stage.alt, dt)
            done = (math.hypot(stage.n - self.body.n, stage.e - self.body.e) < self.config.wp_radius_m
                    and abs(stage.alt - self.body.alt) < 1.0)
        elif stage.kind == "wait":
            self._fly_to(*self._hold, dt)
            stage.until_ms = stage.until_ms or self.now_ms + int(stage.seconds * 1000)
            done = self.now_ms >= stage.until_ms
        elif stage.kind == "land":
            slow = self.body.alt <= self.config.land_slow_alt_m
            self._fly_to(self._hold[0], self._hold[1], -1.0, dt,
                         down=self.config.land_mps if slow else self.config.descent_mps)
            if self.body.alt <= 0.0:
                self._touchdown()
                return
        elif stage.kind == "reached":
            self.events.append(CopterEvent("item_reached", stage.seq))
            done = True
        if done:
            self._stages.pop(0)
            self._hold = (stage.n, stage.e, stage.alt) if stage.kind in ("takeoff", "climb", "goto") else self._hold

    def _fly_to(self, n: float, e: float, alt: float, dt: float, up: float | None = None,
                down: float | None = None) -> None:
        """Move towards a point at bounded speed and acceleration, braking so as to stop on it."""
        cfg, b = self.config, self.body
        if not b.flying:
            b.vn = b.ve = b.vz = 0.0
            return
        dn, de = n - b.n, e - b.e
        dist = math.hypot(dn, de)
        want = min(self.speed_mps, math.sqrt(2 * cfg.accel_mps2 * dist) * 0.9, dist / dt) if dist > 0.01 else 0.0
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

    def _touchdown(self) -> None:
        b = self.body
        b.alt, b.vn, b.ve, b.vz, b.flying = 0.0, 0.0, 0.0, 0.0, False
        # A landing mission item counts as reached once the copter is down.
        self.events.extend(CopterEvent("item_reached", s.seq) for s in self._stages if s.kind == "reached")
        self._stages = []
        if self.mode is Mode.AUTO:
            self._auto_running = False
        self._text(6, "Landed")
        self._disarm()

    # ---------------------------------------------------------------- mission
    def _start_mission(self) -> None:
        self._auto_running = True
        self._run_item(max(1, self.mission_current))

    def _next_item(self) -> None:
        if self.mission_current + 1 < len(self.mission):
            self._run_item(self.mission_current + 1)
        else:
            self._auto_running = False  # hover at the last point, in AUTO, as ArduCopter does
            self._text(6, "Mission complete")

    def _run_item(self, seq: int) -> None:
        self.mission_current = seq
        self.events.append(CopterEvent("mission_current", seq))
        item = self.mission[seq]
        n, e = self._local(item.lat, item.lon) if item.lat or item.lon else (self.body.n, self.body.e)
        alt = item.alt - self.dock[2] if item.frame not in _RELATIVE_FRAMES else item.alt
        reached = _Stage("reached", seq=seq)
        if item.command == NavCmd.TAKEOFF:
            kind: Literal["takeoff", "climb"] = "climb" if self.body.flying else "takeoff"
            self._stages = [_Stage(kind, self.body.n, self.body.e, max(alt, self.body.alt)), reached]
        elif item.command in (NavCmd.WAYPOINT, NavCmd.LOITER_TIME):
            alt = alt if alt > 0 else self.body.alt
            hold = item.param1 if item.param1 > 0 else 0.0
            self._stages = [_Stage("goto", n, e, alt), reached, _Stage("wait", seconds=hold)]
        elif item.command == NavCmd.RETURN_TO_LAUNCH:
            self._stages = [*self._rtl_stages(), reached]  # reported on touchdown
        elif item.command == NavCmd.LAND:
            self._stages = [_Stage("goto", n, e, self.body.alt), _Stage("land"), reached]

    def _mission_items(self) -> list[MissionItem]:
        return self.mission[1:]

    # --------------------------------------------------------------- helpers
    def _rtl_stages(self) -> list[_Stage]:
        hn, he = self.home_ne
        alt = max(self.config.rtl_alt_m, self.body.alt)
        return [_Stage("climb", self.body.n, self.body.e, alt), _Stage("goto", hn, he, alt),
                _Stage("wait", seconds=self.config.rtl_loiter_s), _Stage("land")]

    def _arming_failure(self) -> str:
        if not self.gps_ok:
            return "GPS: no 3D fix"
        if self.battery_pct < self.config.arm_min_battery_pct:
            return f"Battery 1 below minimum arming capacity ({self.battery_pct:.0f}%)"
        if self.body.flying:
            return "not landed"
        if self.mode not in _ARMABLE:
            return f"Mode not armable: {self.mode.name}"
        return ""

    def _disarm(self) -> None:
        self.armed = False
        self.body.flying = False
        self.body.alt = 0.0
        self.body.vn = self.body.ve = self.body.vz = 0.0
        self._stages = []
        self._auto_running = False
        self._hold_here()
        self._text(6, "Disarming motors")

    def _hold_here(self) -> None:
        self._hold = (self.body.n, self.body.e, self.body.alt)

    def _stage_kind(self) -> str:
        return self._stages[0].kind if self._stages else ""

    def _local(self, lat: float, lon: float) -> tuple[float, float]:
        k = math.radians(1.0) * EARTH_RADIUS_M
        return (lat - self.dock[0]) * k, (lon - self.dock[1]) * k * math.cos(math.radians(self.dock[0]))

    def _text(self, severity: int, text: str) -> None:
        self.events.append(CopterEvent("text", severity, text))
