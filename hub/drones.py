"""Drones in the hub (空地一体): one MAVLink link, drone units on the map, drone dispatch, operator commands.

:class:`DroneService` opens the MAVLink link (:mod:`drone`), registers every configured drone as a
unit of kind ``drone`` and forwards its telemetry into the ingest pipeline. ``send_to_incident``
picks the drone (:func:`hub.domain.aerial.choose_drone`), assigns it to the incident as an *aerial*
assignment and flies it there: GUIDED, arm (its COMMAND_ACK is the assignment's ``acknowledged``),
take off, go to the scene at the cruise altitude. Departure and arrival over the scene come from its
fixes through the same detectors as a ground unit's. When the assignment ends (incident closed,
drone cancelled) the drone returns to launch. A watch once a second sends a drone home whose battery
only just covers the way back, and notes a lost link in the incident log (the drone's own GCS
failsafe brings it home; the hub re-sends RTL when the link returns). Every command — the hub's own
and the operators' — goes to the audit trail (:class:`hub.storage.drones.DroneAudit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from devices.geo import haversine_m
from drone.errors import CommandRejected, CommandTimeout, DroneError
from drone.link import MavlinkLink
from drone.signing import Admission, SigningKeys
from drone.vehicle import Vehicle
from hub.config import Settings
from hub.domain.aerial import DroneEnergy, choose_drone, must_return
from hub.domain.events import Acknowledged, Noted
from hub.drone_fleet import DroneConfig, DroneRecord, Flight, TelemetryForwarder, log_signing, signing_of
from hub.errors import HubError
from hub.feed import LiveFeed
from hub.incidents import IncidentConflict, IncidentService
from hub.storage.drones import CommandRecord, DroneAudit

__all__ = ["DroneCommandFailed", "DroneNotFound", "DroneService", "NoDroneAvailable"]

log = logging.getLogger(__name__)

SYSTEM = ("system", "system")  # who the hub's own commands are audited as


class DroneNotFound(HubError):
    pass


class NoDroneAvailable(HubError):
    pass


class DroneCommandFailed(HubError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # command_rejected, command_timeout, link_lost


class DroneService:
    def __init__(self, settings: Settings, fleet: list[DroneConfig], incidents: IncidentService, feed: LiveFeed,
                 audit: DroneAudit, submit: Callable[[str, bytes, int], object], clock: Callable[[], int],
                 put_unit: Callable[[str, dict[str, Any]], Awaitable[None]]) -> None:
        assert settings.mavlink_url is not None
        self.settings = settings
        self.incidents = incidents
        self.feed = feed
        self.audit = audit
        self.clock = clock
        self.put_unit = put_unit
        self.energy = DroneEnergy(pct_per_km=settings.drone_pct_per_km, reserve_pct=settings.drone_reserve_pct,
                                  on_scene_min=settings.drone_on_scene_min)
        keys = SigningKeys.load(settings.drone_keys) if settings.drone_keys else SigningKeys()
        # The link hears the fleet only: the keyed drones signed, the opted-in ones unsigned, nobody else.
        admission = Admission(fleet=frozenset(c.system_id for c in fleet),
                              unsigned=frozenset(c.system_id for c in fleet if c.unsigned and c.system_id not in keys))
        self.link = MavlinkLink(settings.mavlink_url, system_id=settings.mavlink_system_id,
                                heartbeat_timeout_s=settings.drone_link_timeout_s, keys=keys, admission=admission)
        self.forward = TelemetryForwarder(submit, clock)
        self.drones = {c.drone_id: DroneRecord(c, self.link.vehicle(c.system_id), signing_of(c, c.system_id in keys))
                       for c in fleet}
        log_signing(list(self.drones.values()), set(keys), settings.drone_keys is not None)
        self._by_system = {r.config.system_id: r for r in self.drones.values()}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watch: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> DroneService:
        await self.link.__aenter__()
        for r in self.drones.values():
            c = r.config
            await self.put_unit(c.drone_id, {"name": c.name, "kind": "drone", "devices": c.devices,
                                             "home": {"lat": c.dock_lat, "lon": c.dock_lon},
                                             "capabilities": ["aerial", "video"]})
            r.vehicle.on_change(self._changed)
        self.feed.snapshot_parts.append(self._snapshot_part)
        self.incidents.on_release.append(self._released)
        self._watch = asyncio.create_task(self._watch_loop(), name="drone-watch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = [t for t in (self._watch, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.link.__aexit__(None, None, None)

    # ---------------------------------------------------------------- views
    def record(self, drone_id: str) -> DroneRecord:
        r = self.drones.get(drone_id)
        if r is None:
            raise DroneNotFound(f"drone {drone_id} does not exist")
        return r

    def view(self, r: DroneRecord) -> dict[str, Any]:
        f = r.flight
        on_scene = f is not None and f.incident_id is not None and self.incidents.has_mark(
            f.incident_id, r.drone_id, "arrived")
        return r.view(self.clock(), on_scene, self.link.refused.get(r.config.system_id))

    def views(self) -> list[dict[str, Any]]:
        return [self.view(r) for r in self.drones.values()]

    def _snapshot_part(self, now_ms: int) -> dict[str, Any]:
        return {"drones": self.views()}

    def _changed(self, vehicle: Vehicle, kind: str) -> None:
        r = self._by_system.get(vehicle.system_id)
        if r is None:
            return
        if not r.seen:
            r.seen = True
            self._spawn(self._request_time(r))
        if kind == "position":
            self.forward.position(r)
        elif kind in ("battery", "link", "heartbeat"):
            self.forward.status(r)
        if kind == "link" and vehicle.state.link_ok and r.flight is not None and r.flight.rtl_pending:
            self._spawn(self._send_rtl(r))
        now = asyncio.get_running_loop().time()
        if kind in ("link", "landed", "mission") or now - r.last_view_sent >= 0.5:
            r.last_view_sent = now
            self.feed.post({"type": "drone", "ts": self.clock(), "drone": self.view(r)})

    # -------------------------------------------------------------- commands
    async def _command(self, r: DroneRecord, command: str, params: dict[str, Any], who: tuple[str, str],
                       incident_id: str | None, action: Callable[[], Awaitable[None]]) -> None:
        """Run one drone command and audit it, whatever its outcome."""
        asked, result, detail = self.clock(), "accepted", ""
        try:
            if r.signing == "refused":
                raise DroneCommandFailed("refused_unsigned", f"drone {r.drone_id} has no signing key and no "
                                         "\"unsigned\": true in the fleet file: its MAVLink is refused")
            if not r.vehicle.state.link_ok:
                raise DroneCommandFailed("link_lost", f"drone {r.drone_id}: no link (no heartbeat)")
            await action()
        except DroneCommandFailed as exc:
            result, detail = exc.code, str(exc)
            raise
        except CommandRejected as exc:
            result, detail = "rejected", str(exc)
            raise DroneCommandFailed("command_rejected", f"drone {r.drone_id} refused {command}: {exc}") from exc
        except CommandTimeout as exc:
            result, detail = "timeout", str(exc)
            raise DroneCommandFailed("command_timeout", f"drone {r.drone_id}: no answer to {command}") from exc
        except (DroneError, TimeoutError) as exc:
            result, detail = "failed", str(exc) or type(exc).__name__
            raise DroneCommandFailed("command_failed", f"drone {r.drone_id}: {command} failed: {detail}") from exc
        finally:
            rec = CommandRecord(asked, r.drone_id, command, who[0], who[1], result, self.clock(), params,
                                incident_id, detail)
            try:
                await self.audit.append(rec)
            except Exception:  # the audit must not hide the command's own outcome; the log keeps it
                log.exception("drone command not audited: %s", rec)

    async def goto(self, drone_id: str, lat: float, lon: float, alt_m: float, who: tuple[str, str]) -> dict[str, Any]:
        """Fly there. A drone on the ground is first armed and told to take off (the answer waits for those
        ACKs, not for the climb); the goto itself follows once it is up, audited as a command of its own."""
        r = self.record(drone_id)
        incident_id = r.flight.incident_id if r.flight else None
        v = r.vehicle
        params = {"lat": lat, "lon": lon, "alt": alt_m}
        grounded = r.on_ground()

        async def order() -> None:
            await v.set_mode("GUIDED")
            if grounded:
                await v.arm()
                await v.takeoff(alt_m)
            else:
                await v.goto(lat, lon, alt_m)

        await self._command(r, "goto", params, who, incident_id, order)
        s = r.vehicle.state
        flight = r.flight = Flight(incident_id, (lat, lon, alt_m), [[s.lat or lat, s.lon or lon], [lat, lon]],
                                   "launching" if grounded else "en_route")
        if grounded:
            self._spawn(self._climb_then_goto(r, flight, who))
        return {"drone_id": drone_id, "command": "goto", "result": "accepted"}

    async def _climb_then_goto(self, r: DroneRecord, flight: Flight, who: tuple[str, str]) -> None:
        lat, lon, alt = flight.target
        try:
            await r.vehicle.wait_for("position", lambda s: (s.relative_alt_m or 0.0) >= 0.9 * alt, timeout_s=90.0)
            if r.flight is flight and flight.phase == "launching":
                await self._command(r, "goto", {"lat": lat, "lon": lon, "alt": alt}, who, flight.incident_id,
                                    lambda: r.vehicle.goto(lat, lon, alt))
                flight.phase = "en_route"
        except (DroneCommandFailed, DroneError) as exc:
            log.warning("drone %s: goto after take-off failed: %s", r.drone_id, exc)

    async def rtl(self, drone_id: str, who: tuple[str, str]) -> dict[str, Any]:
        r = self.record(drone_id)
        await self._command(r, "rtl", {}, who, r.flight.incident_id if r.flight else None, r.vehicle.rtl)
        self._home_bound(r, "return to launch by the operator")
        return {"drone_id": drone_id, "command": "rtl", "result": "accepted"}

    async def land(self, drone_id: str, who: tuple[str, str]) -> dict[str, Any]:
        r = self.record(drone_id)
        await self._command(r, "land", {}, who, r.flight.incident_id if r.flight else None, r.vehicle.land)
        self._home_bound(r, "landing by the operator")
        return {"drone_id": drone_id, "command": "land", "result": "accepted"}

    def _home_bound(self, r: DroneRecord, reason: str) -> None:
        if r.flight is not None:
            r.flight.phase, r.flight.reason, r.flight.rtl_pending = "returning", reason, False
        else:
            s, c = r.vehicle.state, r.config
            r.flight = Flight(None, (c.dock_lat, c.dock_lon, 0.0), [[s.lat or c.dock_lat, s.lon or c.dock_lon],
                                                                    [c.dock_lat, c.dock_lon]], "returning", reason)

    # -------------------------------------------------------------- dispatch
    async def send_to_incident(self, incident_id: str, drone_id: str | None, who: tuple[str, str]) -> dict[str, Any]:
        incident = await self.incidents.get(incident_id)
        if incident["status"] != "open":
            raise IncidentConflict(f"incident {incident_id} is {incident['status']}")
        lat, lon = incident["lat"], incident["lon"]
        pool = [self.record(drone_id)] if drone_id is not None else list(self.drones.values())
        choice, refused = choose_drone([r.candidate(self.incidents.assigned_to(r.drone_id)) for r in pool],
                                       lat, lon, self.energy)
        if choice is None:
            why = "; ".join(f"{d}: {reason}" for d, reason in sorted(refused.items())) or "no drones configured"
            raise NoDroneAvailable(f"no drone can fly to incident {incident_id}: {why}")
        r = self.drones[choice.drone_id]
        result = await self.incidents.dispatch(incident_id, [r.drone_id], source="api", aerial=True)
        cmd_id = result["assignments"][0]["cmd_id"]
        alt = self.settings.drone_cruise_alt_m
        s = r.vehicle.state
        r.flight = Flight(incident_id, (lat, lon, alt), [[s.lat or lat, s.lon or lon], [lat, lon]])
        await self.incidents.record(incident_id, Noted(
            ts=self.clock(), source="system", unit_id=r.drone_id,
            text=f"drone {r.drone_id} sent by {who[0]}: {choice.distance_m:.0f} m, ETA {choice.eta_s:.0f} s, "
                 f"battery {s.battery_pct:.0f} % (round trip needs {choice.needed_pct:.0f} %)"))
        self._spawn(self._fly(r, r.flight, cmd_id, who))
        return {"drone_id": r.drone_id, "incident_id": incident_id, "distance_m": round(choice.distance_m, 1),
                "eta_s": round(choice.eta_s, 1), "refused": refused}

    async def _fly(self, r: DroneRecord, flight: Flight, cmd_id: str, who: tuple[str, str]) -> None:
        assert flight.incident_id is not None
        incident_id, (lat, lon, alt) = flight.incident_id, flight.target
        v = r.vehicle
        try:
            await self._command(r, "dispatch", {"lat": lat, "lon": lon, "alt": alt}, who, incident_id, lambda: (
                self._launch_and_ack(r, alt, incident_id, cmd_id)))
            if flight.phase == "returning" or r.flight is not flight:
                return  # called off while it took off: the release already sent it home
            await self._command(r, "goto", {"lat": lat, "lon": lon, "alt": alt}, SYSTEM, incident_id,
                                lambda: v.goto(lat, lon, alt))
            flight.phase = "en_route"
        except DroneCommandFailed as exc:
            await self.incidents.record(incident_id, Noted(ts=self.clock(), source="system", unit_id=r.drone_id,
                                                           text=f"drone flight failed: {exc}"))
            with contextlib.suppress(IncidentConflict):
                await self.incidents.cancel(incident_id, r.drone_id, f"drone flight failed: {exc.code}",
                                            source="system")

    async def _launch_and_ack(self, r: DroneRecord, alt: float, incident_id: str, cmd_id: str) -> None:
        v = r.vehicle
        await v.set_mode("GUIDED")
        await v.arm()
        # The drone took the order: armed for it. Hub time: COMMAND_ACK carries no time of its own.
        await self.incidents.record(incident_id, Acknowledged(ts=self.clock(), source="device", unit_id=r.drone_id,
                                                              cmd_id=cmd_id))
        await v.takeoff(alt)
        await v.wait_for("position", lambda s: (s.relative_alt_m or 0.0) >= 0.9 * alt, timeout_s=60.0)

    def _released(self, incident_id: str, unit_id: str) -> None:
        r = self.drones.get(unit_id)
        if r is not None and r.flight is not None and r.flight.incident_id == incident_id:
            self._go_home(r, r.flight.reason or f"incident {incident_id}: the drone's assignment ended")

    def _go_home(self, r: DroneRecord, reason: str) -> None:
        """Turn the flight home now (synchronously, so nothing sends it twice) and send RTL."""
        f = r.flight
        if f is None or f.phase == "returning":
            return
        f.phase, f.reason = "returning", reason
        self._spawn(self._send_rtl(r))

    async def _send_rtl(self, r: DroneRecord) -> None:
        """RTL for a flight turned home; without a link, again when the link returns."""
        f = r.flight
        if f is None:
            return
        f.rtl_pending = False
        try:
            await self._command(r, "rtl", {"reason": f.reason}, SYSTEM, f.incident_id, r.vehicle.rtl)
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
        if f is None:
            return
        if f.phase == "returning" and r.on_ground() and not s.armed:
            r.flight = None
            if f.incident_id and self.incidents.is_open(f.incident_id):
                await self._note(f.incident_id, r, f"drone {r.drone_id} landed ({f.reason})")
            self.feed.post({"type": "drone", "ts": self.clock(), "drone": self.view(r)})
            return
        if f.phase == "returning":
            return
        if not s.link_ok and r.seen:
            await self._abort(r, f, f"link lost (no heartbeat for {self.settings.drone_link_timeout_s:g} s): "
                                    "the drone's failsafe returns it to launch")
            return
        if s.lat is not None and s.lon is not None:
            home = haversine_m(s.lat, s.lon, r.config.dock_lat, r.config.dock_lon)
            if f.phase != "launching" and must_return(s.battery_pct, home, self.energy):
                await self._abort(r, f, f"battery {s.battery_pct:.0f} % only just covers the {home:.0f} m home: "
                                        "returning to launch")

    async def _abort(self, r: DroneRecord, f: Flight, reason: str) -> None:
        """End the drone's part in its incident and send it home, with the reason in the incident log."""
        f.reason = reason
        if f.incident_id is not None and self.incidents.is_open(f.incident_id):
            await self._note(f.incident_id, r, f"drone {r.drone_id}: {reason}")
            with contextlib.suppress(IncidentConflict):  # its release turns it home
                await self.incidents.cancel(f.incident_id, r.drone_id, reason, source="system")
        self._go_home(r, reason)

    async def _note(self, incident_id: str, r: DroneRecord, text: str) -> None:
        await self.incidents.record(incident_id, Noted(ts=self.clock(), source="system", unit_id=r.drone_id,
                                                       text=text))

    async def _request_time(self, r: DroneRecord) -> None:
        """SYSTEM_TIME once a second: it lets the link stamp positions with the drone's own clock."""
        try:
            await r.vehicle.set_message_interval("SYSTEM_TIME", 1.0)
        except DroneError as exc:
            log.info("drone %s: SYSTEM_TIME not requested (%s); positions carry the hub's time", r.drone_id, exc)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
