"""What a drone operator can order a drone to do: go to a point, return (RTL), land, return to its dock,
enable its link failsafe, fly a mission.

Each order is one audited command (:meth:`hub.drones.service.DroneService.command`) whose answer waits for the
autopilot's acknowledgments, not for the flight. An order that starts from the ground first sets home to
the dock (and reads it back) so that the drone's RTL — its own failsafe included — lands on the dock, not
where it happened to take off. The operator sees the service only as :class:`Drones`, the part of it the
orders use, so this module does not import the service that creates it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from drone.errors import DroneError
from drone.mission import MAV_CMD_NAV_RETURN_TO_LAUNCH, MAV_CMD_NAV_TAKEOFF, MissionItem
from geo.geodesy import haversine_m
from hub.config import Settings
from hub.domain.drone_candidate import DroneEnergy
from hub.drones.fleet import SYSTEM, DroneCommandFailed, DroneRecord, Flight
from hub.drones.ports import Incidents
from hub.errors import IncidentConflict

log = logging.getLogger(__name__)

__all__ = ["DroneOperator", "Drones", "Waypoint"]

Who = tuple[str, str]
# The parameters that decide what the autopilot does when the hub's link is lost (ArduCopter names; firmware
# before 4.7 calls MAV_GCS_SYSID SYSID_MYGCS).
FAILSAFE_PARAMS = ("FS_GCS_ENABLE", "FS_GCS_TIMEOUT", "MAV_GCS_SYSID")


class Drones(Protocol):
    """The drone service as the operator's orders use it (:class:`hub.drones.service.DroneService` is one)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def energy(self) -> DroneEnergy: ...

    @property
    def system_id(self) -> int:
        """The hub's MAVLink system id: the one an autopilot's link failsafe must name."""
        ...

    @property
    def incidents(self) -> Incidents: ...

    def record(self, drone_id: str) -> DroneRecord:
        """The drone's record; DroneNotFound for an unknown id."""
        ...

    async def command(self, r: DroneRecord, command: str, params: dict[str, Any], who: Who,
                      incident_id: str | None, action: Callable[[], Awaitable[None]]) -> None:
        """Run one command and audit it, whatever its outcome; DroneCommandFailed when it fails."""
        ...

    def post_view(self, r: DroneRecord) -> None: ...

    async def note(self, incident_id: str, r: DroneRecord, text: str) -> None: ...

    def spawn(self, coro: Awaitable[None]) -> None: ...


@dataclass(frozen=True, slots=True)
class Waypoint:
    lat: float
    lon: float
    alt: float  # metres above the dock (home)
    hold_s: float = 0.0


class DroneOperator:
    """The operator's commands on the drones of one drone service."""

    def __init__(self, service: Drones) -> None:
        self.svc = service
        self.param_reads: dict[str, float] = {}  # drone id -> when its failsafe parameters were last asked for

    async def read_failsafe(self, r: DroneRecord) -> None:
        """Read the parameters that decide the drone's link failsafe (they fill ``state.params``)."""
        self.param_reads[r.drone_id] = time.monotonic()
        v = r.vehicle
        for name in FAILSAFE_PARAMS:
            try:
                await v.read_param(name)
            except DroneError as exc:
                if name != "MAV_GCS_SYSID":
                    log.info("drone %s: parameter %s not read: %s", r.drone_id, name, exc)
                    continue
                try:  # firmware before ArduPilot 4.7
                    await v.read_param("SYSID_MYGCS")
                except DroneError:
                    log.info("drone %s: neither MAV_GCS_SYSID nor SYSID_MYGCS could be read", r.drone_id)

    async def home_to_dock(self, r: DroneRecord) -> None:
        """Set the autopilot's home to the drone's dock and read it back (RTL then lands on the dock, wherever
        the drone took off: ArduCopter would otherwise reset home where it arms)."""
        amsl = r.dock_amsl()
        if amsl is None:
            raise DroneCommandFailed("no_position", f"drone {r.drone_id}: no altitude to set its home with")
        await r.vehicle.set_home(r.config.dock_lat, r.config.dock_lon, amsl)

    async def launch(self, r: DroneRecord, alt: float, on_armed: Callable[[], Awaitable[None]] | None = None, *,
                     wait: bool = True) -> None:
        """Home to the dock, GUIDED, arm, (``on_armed``), take off to ``alt``; with ``wait``, until it is up."""
        v = r.vehicle
        await self.home_to_dock(r)
        await v.set_mode("GUIDED")
        await v.arm()
        if on_armed is not None:
            await on_armed()
        await v.takeoff(alt)
        if wait:
            await v.wait_for("position", lambda s: (s.relative_alt_m or 0.0) >= 0.9 * alt, timeout_s=90.0)

    async def launch_failed(self, r: DroneRecord, flight: Flight, prev_mode: str | None, reason: str) -> None:
        """A launch that never left the ground: disarm if armed, restore the mode it had, no RTL, no "landed"."""
        svc = self.svc
        if r.flight is flight:
            r.flight = None  # before any release: a drone that never flew is not sent "home"
        v = r.vehicle
        with contextlib.suppress(DroneCommandFailed):
            if v.state.armed and r.on_ground():
                await svc.command(r, "disarm", {"reason": "launch failed"}, SYSTEM, flight.incident_id, v.disarm)
            if prev_mode is not None and v.state.mode != prev_mode:
                await svc.command(r, "set_mode", {"mode": prev_mode, "reason": "launch failed"}, SYSTEM,
                                  flight.incident_id, lambda: v.set_mode(prev_mode))
        svc.post_view(r)
        if flight.incident_id is not None and svc.incidents.is_open(flight.incident_id):
            await svc.note(flight.incident_id, r, f"drone {r.drone_id}: launch failed: {reason}")
            with contextlib.suppress(IncidentConflict):
                await svc.incidents.cancel(flight.incident_id, r.drone_id, f"launch failed: {reason}",
                                           source="system")

    def _route(self, r: DroneRecord, lat: float, lon: float) -> list[list[float]]:
        s = r.vehicle.state
        return [[s.lat or lat, s.lon or lon], [lat, lon]]

    async def goto(self, drone_id: str, lat: float, lon: float, alt_m: float, who: Who) -> dict[str, Any]:
        """Fly there. A drone on the ground is first launched (home to its dock, arm, take off: the answer waits
        for those ACKs, not for the climb); the goto itself follows once it is up, audited on its own."""
        svc, r = self.svc, self.svc.record(drone_id)
        incident_id = r.flight.incident_id if r.flight else None
        v = r.vehicle
        params = {"lat": lat, "lon": lon, "alt": alt_m}
        grounded = r.on_ground()
        prev_mode = v.state.mode

        async def order() -> None:
            if grounded:
                await self.launch(r, alt_m, wait=False)
            else:
                await v.set_mode("GUIDED")
                await v.goto(lat, lon, alt_m)

        flight = Flight(incident_id, (lat, lon, alt_m), self._route(r, lat, lon),
                        "launching" if grounded else "en_route", reboots=v.state.reboots, kind="goto")
        try:
            await svc.command(r, "goto", params, who, incident_id, order)
        except DroneCommandFailed as exc:
            if grounded:
                await self.launch_failed(r, flight, prev_mode, exc.reason)
            raise
        r.flight = flight
        if grounded:
            svc.spawn(self._climb_then(r, flight, who, "goto", lambda: v.goto(lat, lon, alt_m)))
        return {"drone_id": drone_id, "command": "goto", "result": "accepted"}

    async def _climb_then(self, r: DroneRecord, flight: Flight, who: Who, command: str,
                          then: Callable[[], Awaitable[None]]) -> None:
        lat, lon, alt = flight.target
        try:
            await r.vehicle.wait_for("position", lambda s: (s.relative_alt_m or 0.0) >= 0.9 * alt, timeout_s=90.0)
            if r.flight is flight and flight.phase == "launching":
                await self.svc.command(r, command, {"lat": lat, "lon": lon, "alt": alt}, who, flight.incident_id,
                                        then)
                flight.phase = "returning" if command == "rtl" else "en_route"
        except (DroneError, DroneCommandFailed) as exc:  # audited already when it was a command
            log.warning("drone %s: %s after take-off failed: %s", r.drone_id, command, exc)

    async def rtl(self, drone_id: str, who: Who) -> dict[str, Any]:
        r = self.svc.record(drone_id)
        await self.svc.command(r, "rtl", {}, who, r.flight.incident_id if r.flight else None, r.vehicle.rtl)
        self._home_bound(r, "return to launch by the operator")
        return {"drone_id": drone_id, "command": "rtl", "result": "accepted"}

    async def land(self, drone_id: str, who: Who) -> dict[str, Any]:
        r = self.svc.record(drone_id)
        await self.svc.command(r, "land", {}, who, r.flight.incident_id if r.flight else None, r.vehicle.land)
        self._home_bound(r, "landing by the operator")
        return {"drone_id": drone_id, "command": "land", "result": "accepted"}

    def _home_bound(self, r: DroneRecord, reason: str) -> None:
        s, c = r.vehicle.state, r.config
        if r.flight is not None:
            r.flight.phase, r.flight.reason, r.flight.rtl_pending = "returning", reason, False
        else:
            r.flight = Flight(None, (c.dock_lat, c.dock_lon, 0.0), [[s.lat or c.dock_lat, s.lon or c.dock_lon],
                                                                    [c.dock_lat, c.dock_lon]], "returning", reason,
                              airborne=not r.on_ground(), reboots=s.reboots, kind="rtl")

    async def return_to_dock(self, drone_id: str, who: Who) -> dict[str, Any]:
        """A drone landed away from its dock flies back: home to the dock, launch, then RTL once up."""
        svc, r = self.svc, self.svc.record(drone_id)
        if not r.on_ground():
            return await self.rtl(drone_id, who)
        alt = svc.settings.drone_cruise_alt_m
        c, v = r.config, r.vehicle
        flight = Flight(None, (c.dock_lat, c.dock_lon, alt), self._route(r, c.dock_lat, c.dock_lon), "launching",
                        "return to its dock by the operator", reboots=v.state.reboots, kind="return_to_dock")
        prev_mode = v.state.mode
        try:
            await svc.command(r, "return_to_dock", {}, who, None, lambda: self.launch(r, alt, wait=False))
        except DroneCommandFailed as exc:
            await self.launch_failed(r, flight, prev_mode, exc.reason)
            raise
        r.flight = flight
        svc.spawn(self._climb_then(r, flight, who, "rtl", v.rtl))
        return {"drone_id": drone_id, "command": "return_to_dock", "result": "accepted"}

    async def enable_failsafe(self, drone_id: str, who: Who) -> dict[str, Any]:
        """Make the autopilot's link failsafe real: its ground station is the hub's system id and FS_GCS_ENABLE
        is RTL (1) unless it already names an action."""
        svc, r = self.svc, self.svc.record(drone_id)
        v = r.vehicle
        params = v.state.params
        sysid_name = "SYSID_MYGCS" if "SYSID_MYGCS" in params and "MAV_GCS_SYSID" not in params else "MAV_GCS_SYSID"
        changes: dict[str, float] = {}
        if params.get(sysid_name) != svc.system_id:
            changes[sysid_name] = float(svc.system_id)
        if not params.get("FS_GCS_ENABLE"):
            changes["FS_GCS_ENABLE"] = 1.0

        async def order() -> None:
            for name, value in changes.items():
                await v.set_param(name, value)

        await svc.command(r, "enable_failsafe", dict(changes), who, None, order)
        svc.post_view(r)
        return {"drone_id": drone_id, "command": "enable_failsafe", "result": "accepted", "set": changes,
                "failsafe": r.failsafe(svc.system_id).text}

    def _check_battery(self, r: DroneRecord, waypoints: Sequence[Waypoint], loiter_s: float) -> None:
        """Refuse a mission the battery cannot fly: climb, the route out and back to the dock, the holds, reserve."""
        e, c, s = self.svc.energy, r.config, r.vehicle.state
        points = [(c.dock_lat, c.dock_lon), *((w.lat, w.lon) for w in waypoints), (c.dock_lat, c.dock_lon)]
        km = sum(haversine_m(*a, *b) for a, b in itertools.pairwise(points)) / 1000.0
        hold_min = (loiter_s + sum(w.hold_s for w in waypoints)) / 60.0
        needed = e.climb_pct + km * e.pct_per_km + hold_min * e.hover_pct_per_min + e.reserve_pct
        if s.battery_pct is None or s.battery_pct < needed:
            have = "unknown" if s.battery_pct is None else f"{s.battery_pct:.0f} %"
            raise DroneCommandFailed("battery", f"drone {r.drone_id}: battery {have}, the mission ({km:.1f} km, "
                                     f"{hold_min:.1f} min of holds) needs {needed:.0f} %")

    async def mission(self, drone_id: str, waypoints: Sequence[Waypoint], who: Who, *, loiter_s: float = 0.0,
                      rtl: bool = True) -> dict[str, Any]:
        """Upload a mission (take-off, the waypoints, [hold at the last], [RTL]) and fly it from the ground:
        home to the dock, arm, AUTO. Progress (current and reached item) goes out with the drone's view."""
        svc, r = self.svc, self.svc.record(drone_id)
        if not waypoints:
            raise ValueError("a mission needs at least one waypoint")
        v = r.vehicle
        first = waypoints[0]
        items = [MissionItem(r.config.dock_lat, r.config.dock_lon, 0.0),
                 MissionItem(first.lat, first.lon, first.alt, command=MAV_CMD_NAV_TAKEOFF)]
        items += [MissionItem(w.lat, w.lon, w.alt, hold_s=w.hold_s) for w in waypoints]
        if loiter_s > 0:
            last = waypoints[-1]
            items.append(MissionItem(last.lat, last.lon, last.alt, hold_s=loiter_s))
        if rtl:
            items.append(MissionItem(0.0, 0.0, 0.0, command=MAV_CMD_NAV_RETURN_TO_LAUNCH))
        self._check_battery(r, waypoints, loiter_s)
        grounded = r.on_ground()
        prev_mode = v.state.mode
        last = waypoints[-1]
        flight = Flight(None, (last.lat, last.lon, last.alt),
                        [[r.vehicle.state.lat or first.lat, r.vehicle.state.lon or first.lon]]
                        + [[w.lat, w.lon] for w in waypoints], "en_route", reboots=v.state.reboots, kind="mission",
                        progress={"current": 0, "total": len(items) - 1, "reached": -1})

        async def order() -> None:
            await v.upload_mission(items)
            if grounded:
                await self.home_to_dock(r)
                await v.set_mode("GUIDED")
                await v.arm()
            await v.start_mission()

        try:
            await svc.command(r, "mission", {"waypoints": len(waypoints), "loiter_s": loiter_s, "rtl": rtl}, who,
                               r.flight.incident_id if r.flight else None, order)
        except DroneCommandFailed as exc:
            if grounded:
                await self.launch_failed(r, flight, prev_mode, exc.reason)
            raise
        r.flight = flight
        return {"drone_id": drone_id, "command": "mission", "result": "accepted", "items": len(items)}
