"""A simulated multicopter that behaves like ArduCopter at the MAVLink protocol level.

Pure: time comes in through :meth:`Copter.step`, randomness from a passed
:class:`random.Random`. Commands return a MAV_RESULT the way ArduCopter 4.x
answers them (arming-check failures and refused mode changes are FAILED, a
malformed request DENIED). Things a ground station would be told about
(mission progress, status texts) queue up as :class:`CopterEvent` for the
MAVLink endpoint to send. How it flies is :mod:`sim.manoeuvre`; its vocabulary
(modes, results, mission items, parameters) is :mod:`sim.arducopter`, re-exported here.
"""

from __future__ import annotations

import math
import random
from typing import Final

from devices.geo import offset
from sim.arducopter import (
    FORCE_MAGIC,
    MISSION_COMMANDS,
    POSITION_MODES,
    CopterConfig,
    CopterEvent,
    LandedState,
    MissionItem,
    Mode,
    NavCmd,
    Result,
    prearm_failure,
)
from sim.manoeuvre import Body, Flight, Stage, fly_to

__all__ = ["FORCE_MAGIC", "MISSION_COMMANDS", "Copter", "CopterConfig", "CopterEvent", "LandedState",
           "MissionItem", "Mode", "NavCmd", "Result"]

MAX_STEP_S: Final = 0.1


class Copter:
    """An ArduCopter-like vehicle docked at ``(lat, lon, amsl_m)``; advance it with :meth:`step`."""

    def __init__(self, lat: float, lon: float, amsl_m: float, now_ms: int, rng: random.Random,
                 config: CopterConfig | None = None, battery_pct: float = 100.0) -> None:
        self.dock = (lat, lon, amsl_m)
        self.config = config or CopterConfig()
        self.rng = rng
        self.now_ms = now_ms
        self.boot_ms = now_ms
        self.flight = Flight(self.dock, self.config)
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
        self._auto_running = False
        self._armed_ground_ms = now_ms
        self._low_battery_done = False
        self._last_gcs_ms: int | None = None
        self._gps_bias = (0.0, 0.0)

    # ---------------------------------------------------------------- reading
    @property
    def body(self) -> Body:
        return self.flight.body

    @property
    def landed_state(self) -> LandedState:
        if not self.body.flying:
            return LandedState.TAKEOFF if self.flight.stage_kind == "takeoff" else LandedState.ON_GROUND
        if self.mode is Mode.LAND or self.flight.stage_kind == "land":
            return LandedState.LANDING
        return LandedState.TAKEOFF if self.flight.stage_kind == "takeoff" else LandedState.IN_AIR

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
            failure = prearm_failure(self.mode, self.gps_ok, self.battery_pct, self.body.flying, self.config)
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
        if new in POSITION_MODES and not self.gps_ok:
            self._text(4, f"Flight mode change failed: {new.name} needs position")
            return Result.FAILED
        if new is Mode.AUTO and len(self.mission) < 2:  # item 0 is home: nothing to fly
            return Result.FAILED
        if (new is Mode.AUTO and self.armed and not self.body.flying
                and self.mission[1].command != NavCmd.TAKEOFF):
            self._text(4, "Auto: Missing Takeoff Cmd")
            return Result.FAILED
        self.mode = new
        self.flight.stages = []
        self._auto_running = False
        self.flight.hold_here()
        if new is Mode.RTL:
            self.flight.stages = self.flight.rtl_stages(self.home_ne)
        elif new is Mode.LAND:
            self.flight.stages = [Stage("land")]
        elif new is Mode.AUTO and self.body.flying:
            self._start_mission()
        return Result.ACCEPTED

    def takeoff(self, alt_m: float) -> Result:
        if self.mode is not Mode.GUIDED or not self.armed or self.body.flying or alt_m <= 0:
            return Result.FAILED
        self.flight.stages = [Stage("takeoff", self.body.n, self.body.e, alt_m)]
        return Result.ACCEPTED

    def goto(self, lat: float, lon: float, alt_m: float) -> Result:
        """Fly to a point in GUIDED (``alt_m`` above home) and hover there."""
        if self.mode is not Mode.GUIDED:
            return Result.DENIED
        if not self.armed or not self.body.flying:
            return Result.FAILED
        n, e = self.flight.local(lat, lon)
        self.flight.stages = [Stage("goto", n, e, alt_m)]
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
        if self.body.flying or self.flight.stage_kind == "takeoff":
            pace = self.ground_speed() / self.config.cruise_mps
            drain = self.config.hover_drain_pct_s * dt + self.config.move_drain_pct_m * moved * (0.5 + pace)
            self.battery_pct = max(0.0, self.battery_pct - drain)
        self._failsafes()

    def _failsafes(self) -> None:
        cfg = self.config
        if not self.body.flying and self.armed and self.flight.stage_kind != "takeoff":
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
        if not self.flight.stages:
            if self.mode is Mode.AUTO and self._auto_running:
                self._next_item()  # its stages start on the next tick
            fly_to(self.body, self.config, self.speed_mps, *self.flight.hold, dt)
            return
        done = self.flight.step(dt, self.now_ms, self.speed_mps)
        if done is not None and done.kind == "land":
            self._touchdown()
        elif done is not None and done.kind == "reached":
            self.events.append(CopterEvent("item_reached", done.seq))

    def _touchdown(self) -> None:
        # A landing mission item counts as reached once the copter is down.
        self.events.extend(CopterEvent("item_reached", s.seq) for s in self.flight.stages if s.kind == "reached")
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
        stages = self.flight.item_stages(self.mission[seq], seq, self.home_ne)
        if stages is not None:
            self.flight.stages = stages

    # --------------------------------------------------------------- helpers
    def _disarm(self) -> None:
        self.armed = False
        self.flight.ground()
        self._auto_running = False
        self._text(6, "Disarming motors")

    def _text(self, severity: int, text: str) -> None:
        self.events.append(CopterEvent("text", severity, text))
