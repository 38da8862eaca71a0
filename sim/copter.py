"""A simulated multicopter that behaves like ArduCopter at the MAVLink protocol level.

Pure: time comes in through :meth:`Copter.step`, randomness from a passed
:class:`random.Random`. Commands return a MAV_RESULT the way ArduCopter 4.7
answers them (arming-check failures and refused mode changes are FAILED with
the reason in a status text, a malformed request DENIED). Like a stock
ArduCopter it resets home at every arming unless DO_SET_HOME locked it, applies
its GCS failsafe only as FS_GCS_ENABLE says and only to heartbeats from
MAV_GCS_SYSID, repeats a failing pre-arm check every 30 s, and can be powered
off and booted again (:meth:`Copter.power_off`, :meth:`Copter.boot`). Things a
ground station would be told about (mission progress, status texts, a new home)
queue up as :class:`CopterEvent` for the MAVLink endpoint to send. How it flies is :mod:`sim.manoeuvre`,
what it watches :mod:`sim.failsafes`, its GPS :mod:`sim.gps`, its AUTO progress :mod:`sim.auto_mission`;
its vocabulary (modes, results, mission items, checks) is :mod:`sim.arducopter`, re-exported here.
"""

from __future__ import annotations

import math
import random
from typing import Final

from geo.geodesy import haversine_m, offset
from sim.arducopter import (
    BOOT_TEXT,
    FORCE_MAGIC,
    HOME_MAX_DISTANCE_M,
    MISSION_COMMANDS,
    CopterConfig,
    CopterEvent,
    LandedState,
    MissionItem,
    Mode,
    NavCmd,
    Result,
    arm_failure,
    gcs_failsafe_mode,
    mode_refusal,
    prearm_failure,
)
from sim.auto_mission import AutoMission
from sim.failsafes import Failsafes
from sim.gps import GpsReceiver
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
        self.home_amsl = amsl_m
        self.home_locked = False  # by DO_SET_HOME, until the next boot: arming then keeps home
        self.fault: str | None = None  # an injected sensor fault, reported as the pre-arm check failing
        self.tilt_deg = 0.0  # how far it leans on the ground (test hook)
        self.mode = Mode.STABILIZE
        self.armed = False
        self.battery_pct = battery_pct
        self.gps = GpsReceiver()
        self.auto = AutoMission()
        self.events: list[CopterEvent] = []
        self.speed_mps = self.config.cruise_mps
        self.watch = Failsafes(now_ms)

    # ---------------------------------------------------------------- reading
    @property
    def body(self) -> Body:
        return self.flight.body

    @property
    def landed_state(self) -> LandedState:
        return self.flight.landed_state(landing=self.mode is Mode.LAND)

    @property
    def mission(self) -> list[MissionItem]:
        """The stored mission; item 0 is home."""
        return self.auto.items

    @property
    def mission_current(self) -> int:
        return self.auto.current

    @property
    def gps_ok(self) -> bool:
        return self.gps.ok

    @property
    def home_up(self) -> float:
        """Home's height above the ground the copter stands on (0 unless DO_SET_HOME raised or lowered it)."""
        return self.home_amsl - self.dock[2]

    @property
    def prearm_ok(self) -> bool:
        """The pre-arm checks pass (MAV_SYS_STATUS_PREARM_CHECK healthy)."""
        return not prearm_failure(self.fault, self.gps_ok, self.battery_pct, self.config)

    @property
    def gcs_failsafe(self) -> bool:
        """The GCS failsafe has fired and no heartbeat from MAV_GCS_SYSID has come since."""
        return self.watch.gcs_lost

    def position(self) -> tuple[float, float, float]:
        """True ``(lat, lon, alt above home)``."""
        lat, lon = offset(self.dock[0], self.dock[1], self.body.n, self.body.e)
        return lat, lon, self.body.alt - self.home_up

    def amsl(self) -> float:
        return self.dock[2] + self.body.alt

    def time_boot_ms(self) -> int:
        """``time_boot_ms``: milliseconds since the autopilot booted."""
        return (self.now_ms - self.boot_ms) & 0xFFFFFFFF

    def unix_time_us(self) -> int:
        """The autopilot's own clock (``clock_offset_ms`` off the host's), or 0 while it has no GPS time."""
        return (self.now_ms + self.config.clock_offset_ms) * 1000 if self.gps_ok else 0

    def gps_position(self) -> tuple[float, float]:
        """What the GPS receiver reports: the truth plus a slowly wandering error of a metre or two."""
        error = self.gps.error_ne
        return offset(self.dock[0], self.dock[1], self.body.n + error[0], self.body.e + error[1])

    def home(self) -> tuple[float, float, float]:
        """``(lat, lon, amsl)`` of home: where the copter last armed, or where DO_SET_HOME put it."""
        lat, lon = offset(self.dock[0], self.dock[1], *self.home_ne)
        return lat, lon, self.home_amsl

    def ground_speed(self) -> float:
        return math.hypot(self.body.vn, self.body.ve)

    def drain_events(self) -> list[CopterEvent]:
        events, self.events = self.events, []
        return events

    # --------------------------------------------------------------- commands
    def arm(self, force: bool = False) -> Result:
        """Arm, or refuse with "Arm: <reason>" (MAV_SEVERITY_ERROR) and FAILED; ``force`` skips the checks."""
        if self.armed:
            return Result.ACCEPTED
        if not force:
            failure = arm_failure(self.fault, self.gps_ok, self.battery_pct, self.mode, self.body.flying,
                                  self.config, self.tilt_deg)
            if failure:
                self._text(3, f"Arm: {failure}")
                return Result.FAILED
        self.armed = True
        self.watch.armed(self.now_ms)
        if not self.home_locked:  # ArduPilot resets home where it arms, unless DO_SET_HOME set it
            self._set_home(self.body.n, self.body.e, self.amsl())
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
        refusal = mode_refusal(new, self.gps_ok, self.mission, self.armed, self.body.flying)
        if refusal is not None:
            if refusal:
                self._text(4, refusal)
            return Result.FAILED
        self.mode = new
        self.flight.stages = []
        self.auto.stop()
        self.flight.hold_here()
        if new is Mode.RTL:
            self.flight.stages = self.flight.rtl_stages(self._home_local())
        elif new is Mode.LAND:
            self.flight.stages = [Stage("land")]
        elif new is Mode.AUTO and self.body.flying:
            self._run_item(self.auto.start())
        return Result.ACCEPTED

    def takeoff(self, alt_m: float) -> Result:
        """Climb to ``alt_m`` above home; refused unless armed on the ground in GUIDED and going up."""
        target = alt_m + self.home_up
        if (self.mode is not Mode.GUIDED or not self.armed or self.body.flying or not math.isfinite(target)
                or target <= self.body.alt):
            return Result.FAILED
        self.flight.stages = [Stage("takeoff", self.body.n, self.body.e, target)]
        return Result.ACCEPTED

    def goto(self, lat: float, lon: float, alt_m: float) -> Result:
        """Fly to a point in GUIDED (``alt_m`` above home) and hover there."""
        if self.mode is not Mode.GUIDED:
            return Result.DENIED
        if not (math.isfinite(lat) and math.isfinite(lon) and math.isfinite(alt_m)):
            return Result.DENIED
        if not self.armed or not self.body.flying:
            return Result.FAILED
        n, e = self.flight.local(lat, lon)
        self.flight.stages = [Stage("goto", n, e, alt_m + self.home_up)]
        return Result.ACCEPTED

    def set_home(self, lat: float, lon: float, amsl_m: float) -> Result:
        """MAV_CMD_DO_SET_HOME to a point: locks home until the next boot; FAILED beyond 50 km of the copter."""
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0 and math.isfinite(amsl_m)):
            return Result.DENIED
        here = self.position()
        if haversine_m(here[0], here[1], lat, lon) > HOME_MAX_DISTANCE_M:
            return Result.FAILED  # ArduPilot: too far from the EKF origin
        self.home_locked = True
        self._set_home(*self.flight.local(lat, lon), amsl_m)
        return Result.ACCEPTED

    def set_home_here(self) -> Result:
        """MAV_CMD_DO_SET_HOME with param1 = 1: home where the copter is now (in the air too), locked."""
        if not self.gps_ok:
            return Result.FAILED
        self.home_locked = True
        self._set_home(self.body.n, self.body.e, self.amsl())
        return Result.ACCEPTED

    def set_fault(self, text: str | None) -> None:
        """Inject a sensor fault reported as ``text`` (e.g. "Gyros inconsistent"), or clear it with None."""
        self.fault = text or None

    def set_tilt(self, degrees: float) -> None:
        """Stand the copter on a slope of ``degrees`` (test hook): arming is refused with "Arm: Leaning" beyond
        ANGLE_MAX, an arm-time check that the pre-arm health flag does not show."""
        self.tilt_deg = degrees

    def set_speed(self, mps: float) -> Result:
        if not mps > 0:  # NaN too
            return Result.DENIED
        self.speed_mps = min(mps, 20.0)
        return Result.ACCEPTED

    def set_mission(self, items: list[MissionItem]) -> None:
        """Store a mission; item 0 is home, as in ArduPilot, and is never flown."""
        self.auto.store(items)
        if self.mode is Mode.AUTO:
            self.set_mode(Mode.LOITER)

    def mission_start(self) -> Result:
        if self.set_mode(Mode.AUTO) is not Result.ACCEPTED:
            return Result.FAILED
        if not self.auto.running and self.armed:
            self._run_item(self.auto.start())
        return Result.ACCEPTED

    def set_mission_current(self, seq: int) -> Result:
        if not self.auto.select(seq):
            return Result.DENIED
        self.events.append(CopterEvent("mission_current", seq))
        if self.mode is Mode.AUTO and self.auto.running:
            self._run_item(seq)
        return Result.ACCEPTED

    def gcs_heartbeat(self, system_id: int) -> None:
        """A GCS heartbeat from ``system_id``: only MAV_GCS_SYSID's feed the GCS failsafe, as in ArduPilot."""
        if self.watch.gcs_heartbeat(self.config, system_id, self.now_ms):
            self._text(4, "GCS Failsafe Cleared")

    # ------------------------------------------------------------------ power
    def power_off(self) -> None:
        """The autopilot stops: the copter is on the ground below where it was, disarmed (a simulator
        restart, not physics), and tells nobody."""
        self.armed = False
        self.flight.ground()
        self.auto.stop()
        self.events = []

    def boot(self, now_ms: int) -> None:
        """Start again at ``now_ms``: boot clock from 0, STABILIZE, home here and unlocked, no GCS seen.

        Kept, as ArduPilot keeps them in its storage: the configuration (parameters) and the mission.
        """
        self.power_off()
        self.now_ms = self.boot_ms = now_ms
        self.mode = Mode.STABILIZE
        self.speed_mps = self.config.cruise_mps
        self.auto.current = 0
        self.watch.boot()
        self._text(6, BOOT_TEXT)
        self.home_locked = False
        self._set_home(self.body.n, self.body.e, self.amsl())

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
        self.gps.wander(self.rng, self.config.gps_error_m)
        if not self.armed:
            failure = prearm_failure(self.fault, self.gps_ok, self.battery_pct, self.config)
            if self.watch.prearm_report(failure, self.now_ms):
                self._text(3, f"PreArm: {failure}")
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
        cfg, watch = self.config, self.watch
        if not self.body.flying and self.armed and self.flight.stage_kind != "takeoff":
            if watch.disarm_due(cfg, self.now_ms):
                self._disarm()
            return
        watch.airborne(self.now_ms)
        if watch.battery_low(cfg, self.battery_pct):
            self._text(2, f"Battery 1 is low {self.battery_pct:.0f}%")
            if self.mode not in (Mode.RTL, Mode.LAND):
                self._failsafe_rtl()
        if watch.gcs_timeout(cfg, self.now_ms):  # FS_GCS_ENABLE: no heartbeat from MAV_GCS_SYSID while flying
            self._text(2, "GCS Failsafe")
            target = gcs_failsafe_mode(cfg.fs_gcs_enable, self.mode)
            if target is Mode.RTL and self.mode not in (Mode.RTL, Mode.LAND):
                self._failsafe_rtl()
            elif target is Mode.LAND:
                self.set_mode(Mode.LAND)

    def _failsafe_rtl(self) -> None:
        if self.set_mode(Mode.RTL) is not Result.ACCEPTED:
            self.set_mode(Mode.LAND)

    # ------------------------------------------------------------- navigation
    def _navigate(self, dt: float) -> None:
        if not self.flight.stages:
            if self.mode is Mode.AUTO and self.auto.running:
                seq = self.auto.advance()  # its stages start on the next tick
                if seq is None:
                    self._text(6, "Mission complete")
                else:
                    self._run_item(seq)
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

    # --------------------------------------------------------------- helpers
    def _run_item(self, seq: int) -> None:
        self.auto.current = seq
        self.events.append(CopterEvent("mission_current", seq))
        stages = self.flight.item_stages(self.mission[seq], seq, self._home_local())
        if stages is not None:
            self.flight.stages = stages

    def _disarm(self) -> None:
        self.armed = False
        self.flight.ground()
        self.auto.stop()
        self.watch.disarmed()
        self._text(6, "Disarming motors")

    def _home_local(self) -> tuple[float, float, float]:
        return self.home_ne[0], self.home_ne[1], self.home_up

    def _set_home(self, n: float, e: float, amsl_m: float) -> None:
        self.home_ne = (n, e)
        self.home_amsl = amsl_m
        self.events.append(CopterEvent("home"))  # ArduPilot sends HOME_POSITION whenever home changes

    def _text(self, severity: int, text: str) -> None:
        self.events.append(CopterEvent("text", severity, text))
