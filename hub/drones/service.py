"""Drones in the hub (空地一体): one MAVLink link, drone units on the map, drone dispatch, operator commands.

:class:`DroneService` opens the MAVLink link (:mod:`drone`), registers every configured drone as a unit of
kind ``drone`` and forwards its telemetry into the ingest pipeline. It sets each drone's link up the way a
ground station does, because a stock ArduCopter sends nothing but heartbeats until asked: a
:class:`~drone.streams.StreamKeeper` requests the messages the hub needs on link-up, after every reboot and
whenever one stops, and the drone's link-failsafe parameters (FS_GCS_ENABLE, FS_GCS_TIMEOUT, MAV_GCS_SYSID)
are read with the parameter protocol, so the map and the incident log say what the autopilot will really do
when the hub's link is lost.

``send_to_incident`` picks a *ready* drone (:mod:`hub.domain.drone_readiness`: linked, telemetry, pre-arm
checks passing, a link failsafe that works — unless the operator overrides that explicitly — and on its dock),
assigns it to the incident as an *aerial* assignment and flies it there: home set to the dock and read back
(ArduCopter resets home where it arms unless a ground station set it), GUIDED, arm (its COMMAND_ACK is the
assignment's ``acknowledged``), take off, go to the scene at the cruise altitude. A launch the autopilot
refuses restores the drone's mode and is logged with the autopilot's own reason. Departure and arrival come
from its fixes, stamped in hub time (:class:`~drone.clock.ClockSync`); arrival over the scene is a hover at
altitude inside the zone (:mod:`hub.domain.hover`). When the assignment ends the drone returns to launch,
which is its dock. A watch once a second sends home a drone whose battery only just covers the way back,
notes a lost link with what its failsafe will do, and ends a flight whose autopilot rebooted. Every command
— the hub's own and the operators' — goes to the audit trail (:class:`hub.storage.drones.DroneAudit`).

The service subscribes to nothing itself: the composition root adds :meth:`DroneService.snapshot_part` to the
live snapshot and :meth:`DroneService.unit_released` to the incident service's releases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from drone.errors import CommandRejected, CommandTimeout, DroneError, SigningError
from drone.link import MavlinkLink
from drone.signing import Admission, SigningKeys
from drone.streams import WANTED, StreamKeeper
from drone.vehicle import Vehicle
from geo.geodesy import haversine_m
from hub.config import Settings
from hub.domain.aerial import choose_drone, must_return
from hub.domain.drone_candidate import DroneEnergy
from hub.domain.events import Acknowledged, Noted
from hub.drones.fleet import (
    SYSTEM,
    DroneCommandFailed,
    DroneConfig,
    DroneNotFound,
    DroneRecord,
    Flight,
    NoDroneAvailable,
    TelemetryForwarder,
    log_signing,
    signing_of,
)
from hub.drones.ops import DroneOperator
from hub.drones.ports import Incidents
from hub.drones.view import clock_text, drone_view
from hub.errors import IncidentConflict
from hub.ingest.feed import LiveFeed
from hub.storage.drones import CommandRecord, DroneAudit

__all__ = ["DroneCommandFailed", "DroneNotFound", "DroneService", "NoDroneAvailable"]

log = logging.getLogger(__name__)

PARAM_RETRY_S = 10.0


class DroneService:
    def __init__(self, settings: Settings, fleet: list[DroneConfig], incidents: Incidents, feed: LiveFeed,
                 audit: DroneAudit, submit: Callable[[str, bytes, int], object], clock: Callable[[], int],
                 put_unit: Callable[[str, dict[str, Any]], Awaitable[None]]) -> None:
        assert settings.mavlink_url is not None
        self.settings = settings
        self.incidents = incidents
        self.feed = feed
        self.audit = audit
        self.clock = clock
        self.put_unit = put_unit
        self.system_id = settings.mavlink_system_id
        self.energy = DroneEnergy(pct_per_km=settings.drone_pct_per_km, reserve_pct=settings.drone_reserve_pct,
                                  on_scene_min=settings.drone_on_scene_min)
        keys = SigningKeys.load(settings.drone_keys) if settings.drone_keys else SigningKeys()
        # The link hears the fleet only: the keyed drones signed, the opted-in ones unsigned, nobody else.
        admission = Admission(fleet=frozenset(c.system_id for c in fleet),
                              unsigned=frozenset(c.system_id for c in fleet if c.unsigned and c.system_id not in keys))
        self.link = MavlinkLink(settings.mavlink_url, system_id=self.system_id,
                                heartbeat_timeout_s=settings.drone_link_timeout_s, keys=keys, admission=admission)
        self.forward = TelemetryForwarder(submit, clock)
        self.drones = {c.drone_id: DroneRecord(c, self.link.vehicle(c.system_id), signing_of(c, c.system_id in keys))
                       for c in fleet}
        log_signing(list(self.drones.values()), set(keys), settings.drone_keys is not None)
        self._by_system = {r.config.system_id: r for r in self.drones.values()}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watch: asyncio.Task[None] | None = None
        self.ops = DroneOperator(self)

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> DroneService:
        await self.link.__aenter__()
        for r in self.drones.values():
            c = r.config
            await self.put_unit(c.drone_id, {"name": c.name, "kind": "drone", "devices": c.devices,
                                             "home": {"lat": c.dock_lat, "lon": c.dock_lon},
                                             "capabilities": ["aerial", "video"]})
            r.vehicle.on_change(self._changed)
            if r.signing != "refused":
                r.keeper = StreamKeeper(r.vehicle, WANTED)
                r.keeper.start()
        self._watch = asyncio.create_task(self._watch_loop(), name="drone-watch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = [t for t in (self._watch, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(r.keeper.stop() for r in self.drones.values() if r.keeper is not None),
                             return_exceptions=True)
        await self.link.__aexit__(None, None, None)

    # ---------------------------------------------------------------- views
    def record(self, drone_id: str) -> DroneRecord:
        r = self.drones.get(drone_id)
        if r is None:
            raise DroneNotFound(f"drone {drone_id} does not exist")
        return r

    def signed_no_key(self, r: DroneRecord) -> bool:
        return r.config.system_id in self.link.signed_unkeyed

    def view(self, r: DroneRecord) -> dict[str, Any]:
        f = r.flight
        on_scene = f is not None and f.incident_id is not None and self.incidents.has_mark(
            f.incident_id, r.drone_id, "arrived")
        return drone_view(r, self.clock(), energy=self.energy, hub_system_id=self.system_id, on_scene=on_scene,
                          refused=self.link.refused.get(r.config.system_id), signed_no_key=self.signed_no_key(r))

    def views(self) -> list[dict[str, Any]]:
        return [self.view(r) for r in self.drones.values()]

    def snapshot_part(self, now_ms: int) -> dict[str, Any]:
        """The drones' part of the live snapshot a new one-map client starts from."""
        return {"drones": self.views()}

    def post_view(self, r: DroneRecord) -> None:
        r.last_view_sent = asyncio.get_running_loop().time()
        r.shown_fresh = r.position_fresh(time.monotonic())
        self.feed.post({"type": "drone", "ts": self.clock(), "drone": self.view(r)})

    def _changed(self, vehicle: Vehicle, kind: str) -> None:
        r = self._by_system.get(vehicle.system_id)
        if r is None:
            return
        s, f = vehicle.state, r.flight
        if not r.seen:
            r.seen = True
            self.spawn(self.ops.read_failsafe(r))
        if kind == "reboot" or (kind == "link" and s.link_ok and not s.params):
            self.spawn(self.ops.read_failsafe(r))
        if f is not None and not f.airborne and s.armed and (
                s.landed_state == "in_air" or (s.relative_alt_m or 0.0) > 2.0):
            f.airborne = True
        if kind == "position":
            self.forward.position(r)
            if r.on_ground() and not s.armed and (r.dock_distance_m() or 1e9) <= self.energy.dock_radius_m:
                r.dock_amsl_seen = s.alt_msl_m
        elif kind in ("battery", "link", "heartbeat"):
            self.forward.status(r)
        if kind == "mission" and f is not None and f.progress is not None:
            f.progress = {**f.progress, "current": s.mission_current or 0,
                          "reached": -1 if s.mission_reached is None else s.mission_reached}
        if kind == "link" and s.link_ok and f is not None and f.rtl_pending:
            self.spawn(self._send_rtl(r))
        now = asyncio.get_running_loop().time()
        if kind in ("link", "landed", "mission", "reboot", "home", "param", "statustext", "health", "signing") \
                or now - r.last_view_sent >= 0.5:
            self.post_view(r)

    # -------------------------------------------------------------- commands
    async def command(self, r: DroneRecord, command: str, params: dict[str, Any], who: tuple[str, str],
                       incident_id: str | None, action: Callable[[], Awaitable[None]]) -> None:
        """Run one drone command and audit it, whatever its outcome."""
        asked, result, detail = self.clock(), "accepted", ""
        try:
            if r.signing == "refused":
                raise DroneCommandFailed("refused_unsigned", f"drone {r.drone_id} has no signing key and no "
                                         "\"unsigned\": true in the fleet file: its MAVLink is refused")
            if self.signed_no_key(r):
                raise DroneCommandFailed("signed_no_key", f"drone {r.drone_id} signs its MAVLink but the hub has no "
                                         "key for it: it would ignore every command (give its key in "
                                         "FIELDHUB_DRONE_KEYS)", "signed, no key")
            if not r.vehicle.state.link_ok:
                raise DroneCommandFailed("link_lost", f"drone {r.drone_id}: no link (no heartbeat)", "no link")
            await action()
        except DroneCommandFailed as exc:
            result, detail = exc.code, str(exc)
            raise
        except CommandRejected as exc:
            result, detail = "rejected", str(exc)
            raise DroneCommandFailed("command_rejected", f"drone {r.drone_id} refused {command}: {exc}",
                                     exc.reason or str(exc)) from exc
        except CommandTimeout as exc:
            result, detail = "timeout", str(exc)
            raise DroneCommandFailed("command_timeout", f"drone {r.drone_id}: no answer to {command}",
                                     f"no answer to {command}") from exc
        except SigningError as exc:
            result, detail = "signed_no_key", str(exc)
            raise DroneCommandFailed("signed_no_key", f"drone {r.drone_id}: {exc}", "signed, no key") from exc
        except (DroneError, TimeoutError) as exc:
            result, detail = "failed", str(exc) or type(exc).__name__
            raise DroneCommandFailed("command_failed", f"drone {r.drone_id}: {command} failed: {detail}",
                                     detail) from exc
        finally:
            rec = CommandRecord(asked, r.drone_id, command, who[0], who[1], result, self.clock(), params,
                                incident_id, detail)
            try:
                await self.audit.append(rec)
            except Exception:  # the audit must not hide the command's own outcome; the log keeps it
                log.exception("drone command not audited: %s", rec)

    # -------------------------------------------------------------- dispatch
    async def send_to_incident(self, incident_id: str, drone_id: str | None, who: tuple[str, str], *,
                               without_failsafe: bool = False) -> dict[str, Any]:
        incident = await self.incidents.get(incident_id)
        if incident["status"] != "open":
            raise IncidentConflict(f"incident {incident_id} is {incident['status']}")
        lat, lon = incident["lat"], incident["lon"]
        pool = [self.record(drone_id)] if drone_id is not None else list(self.drones.values())
        candidates = [r.candidate(self.incidents.assigned_to(r.drone_id), self.system_id, self.signed_no_key(r))
                      for r in pool]
        choice, refused = choose_drone(candidates, lat, lon, self.energy, allow_no_failsafe=without_failsafe)
        if choice is None:
            why = "; ".join(f"{d}: {reason}" for d, reason in sorted(refused.items())) or "no drones configured"
            raise NoDroneAvailable(f"no drone can fly to incident {incident_id}: {why}")
        r = self.drones[choice.drone_id]
        result = await self.incidents.dispatch(incident_id, [r.drone_id], source="api", aerial=True)
        cmd_id = result["assignments"][0]["cmd_id"]
        alt = self.settings.drone_cruise_alt_m
        s = r.vehicle.state
        flight = r.flight = Flight(incident_id, (lat, lon, alt), [[s.lat or lat, s.lon or lon], [lat, lon]],
                                   reboots=s.reboots)
        failsafe = r.failsafe(self.system_id)
        override = "" if failsafe.ok else f" — sent WITHOUT a working link failsafe on {who[0]}'s explicit override"
        await self.note(incident_id, r, f"drone {r.drone_id} sent by {who[0]}: {choice.distance_m:.0f} m, ETA "
                                          f"{choice.eta_s:.0f} s, battery {s.battery_pct:.0f} % (round trip needs "
                                          f"{choice.needed_pct:.0f} %); {failsafe.text}{override}; {clock_text(r)}")
        self.spawn(self._fly(r, flight, cmd_id, who))
        return {"drone_id": r.drone_id, "incident_id": incident_id, "distance_m": round(choice.distance_m, 1),
                "eta_s": round(choice.eta_s, 1), "refused": refused, "failsafe": failsafe.text,
                "without_failsafe": not failsafe.ok}

    async def _fly(self, r: DroneRecord, flight: Flight, cmd_id: str, who: tuple[str, str]) -> None:
        assert flight.incident_id is not None
        incident_id, (lat, lon, alt) = flight.incident_id, flight.target
        v = r.vehicle
        prev_mode = v.state.mode

        async def acknowledged() -> None:
            # The drone took the order: armed for it. Hub time: COMMAND_ACK carries no time of its own.
            await self.incidents.record(incident_id, Acknowledged(ts=self.clock(), source="device",
                                                                  unit_id=r.drone_id, cmd_id=cmd_id))
        try:
            await self.command(r, "dispatch", {"lat": lat, "lon": lon, "alt": alt}, who, incident_id,
                                lambda: self.ops.launch(r, alt, acknowledged))
        except DroneCommandFailed as exc:
            if not flight.airborne and r.on_ground():
                await self.ops.launch_failed(r, flight, prev_mode, exc.reason)
            else:
                await self._abort(r, flight, f"drone flight failed: {exc.reason}")
            return
        if flight.phase == "returning" or r.flight is not flight:
            return  # called off while it took off: the release already sent it home
        try:
            await self.command(r, "goto", {"lat": lat, "lon": lon, "alt": alt}, SYSTEM, incident_id,
                                lambda: v.goto(lat, lon, alt))
            flight.phase = "en_route"
        except DroneCommandFailed as exc:
            await self._abort(r, flight, f"drone flight failed: {exc.reason}")

    def unit_released(self, incident_id: str, unit_id: str) -> None:
        """A unit's assignment ended: a drone flying for that incident turns home."""
        r = self.drones.get(unit_id)
        if r is not None and r.flight is not None and r.flight.incident_id == incident_id:
            self._go_home(r, r.flight.reason or f"incident {incident_id}: the drone's assignment ended")

    def _go_home(self, r: DroneRecord, reason: str) -> None:
        """Turn the flight home now (synchronously, so nothing sends it twice) and send RTL."""
        f = r.flight
        if f is None or f.phase == "returning":
            return
        f.phase, f.reason = "returning", reason
        self.spawn(self._send_rtl(r))

    async def _send_rtl(self, r: DroneRecord) -> None:
        """RTL for a flight turned home; without a link, again when the link returns. Never to a drone that is
        disarmed on the ground: an autopilot accepts RTL there too, and nothing would fly."""
        f = r.flight
        if f is None:
            return
        f.rtl_pending = False
        s = r.vehicle.state
        if s.link_ok and not s.armed and r.on_ground():
            await self._flight_over(r, f, f.reason or "the drone is on the ground")
            return
        try:
            await self.command(r, "rtl", {"reason": f.reason}, SYSTEM, f.incident_id, r.vehicle.rtl)
        except DroneCommandFailed as exc:
            f.rtl_pending = True
            log.warning("drone %s: RTL not sent (%s); again when the link returns", r.drone_id, exc)

    # ----------------------------------------------------------------- watch
    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for r in self.drones.values():
                try:
                    await self._watch_one(r)
                except Exception:
                    log.exception("drone watch: %s", r.drone_id)

    async def _watch_one(self, r: DroneRecord) -> None:
        f, s = r.flight, r.vehicle.state
        if r.position_fresh(time.monotonic()) != r.shown_fresh:  # a silent drone's position goes stale unheard
            self.post_view(r)
        if (r.seen and s.link_ok and not r.failsafe(self.system_id).known
                and time.monotonic() - self.ops.param_reads.get(r.drone_id, 0.0) >= PARAM_RETRY_S):
            self.spawn(self.ops.read_failsafe(r))
        if f is None:
            return
        if s.reboots != f.reboots:
            await self._flight_over(r, f, "the autopilot rebooted: the drone is disarmed on the ground")
            return
        landed = s.link_ok and r.on_ground() and not s.armed
        if landed and (f.phase == "returning" or (f.kind == "mission" and f.airborne)):
            await self._flight_over(r, f, f.reason or "mission flown")
            return
        if f.phase == "returning" or f.kind == "mission":
            return
        if not s.link_ok and r.seen:
            await self._abort(r, f, f"link lost (no heartbeat for {self.settings.drone_link_timeout_s:g} s): "
                                    f"{r.failsafe(self.system_id).text}")
            return
        if s.lat is not None and s.lon is not None:
            home = haversine_m(s.lat, s.lon, r.config.dock_lat, r.config.dock_lon)
            if f.phase != "launching" and must_return(s.battery_pct, home, self.energy):
                await self._abort(r, f, f"battery {s.battery_pct:.0f} % only just covers the {home:.0f} m home: "
                                        "returning to launch")

    async def _flight_over(self, r: DroneRecord, f: Flight, reason: str) -> None:
        """The flight is over, the drone is on the ground: say where, truthfully, and end its part."""
        if r.flight is f:
            r.flight = None
        rebooted = r.vehicle.state.reboots != f.reboots
        if rebooted:
            text = f"drone {r.drone_id}: {reason}; its flight ended"
        elif f.airborne:
            away = r.dock_distance_m()
            where = ("on its dock" if away is not None and away <= self.energy.dock_radius_m
                     else f"{away:.0f} m from its dock" if away is not None else "at an unknown place")
            text = f"drone {r.drone_id} landed {where} ({reason})"
        else:
            text = f"drone {r.drone_id} did not fly: {reason}"
        if f.incident_id and self.incidents.is_open(f.incident_id):
            await self.note(f.incident_id, r, text)
            if rebooted or f.phase != "returning":
                with contextlib.suppress(IncidentConflict):
                    await self.incidents.cancel(f.incident_id, r.drone_id, reason, source="system")
        log.info("%s", text)
        self.post_view(r)

    async def _abort(self, r: DroneRecord, f: Flight, reason: str) -> None:
        """End the drone's part in its incident and send it home, with the reason in the incident log."""
        f.reason = reason
        if f.incident_id is not None and self.incidents.is_open(f.incident_id):
            await self.note(f.incident_id, r, f"drone {r.drone_id}: {reason}")
            with contextlib.suppress(IncidentConflict):  # its release turns it home
                await self.incidents.cancel(f.incident_id, r.drone_id, reason, source="system")
        self._go_home(r, reason)

    async def note(self, incident_id: str, r: DroneRecord, text: str) -> None:
        await self.incidents.record(incident_id, Noted(ts=self.clock(), source="system", unit_id=r.drone_id,
                                                       text=text))

    def spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
