"""The city simulator's I/O: patrol units registered over HTTP, their devices speaking MQTT.

One asyncio task drives the whole fleet: a heap orders the devices by their next
report, so a thousand devices cost one task and one timer, not a thousand. A
dispatch command starts a :class:`~sim.response.Response`: the unit leaves after a
turnout delay (at once when already driving), drives the road graph, rests on
scene, the officer makes contact, and the unit clears. How, and with which hard
case, is a :class:`~sim.scenarios.Plan`: given per incident by whoever drives the
simulation (:meth:`CitySim.expect`), else drawn at random. Every finished response
leaves its ground truth (:mod:`sim.truth`) in :attr:`CitySim.truth`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Self

from devices.payloads import Command
from devices.tasks import cancel_and_wait
from sim import fleet
from sim.city import City, build_city
from sim.fleet import SimDevice, SimError, SimUnit
from sim.response import DEFAULT_TIMING, Action, Response, Timing
from sim.scenarios import OUTLIER_PROBABILITY, DeadZone, Plan, overshoot_stop
from sim.truth import Sample, TruthLog
from sim.video_devices import VIDEO_COMMANDS, SimCameras, camera_for

__all__ = ["CitySim", "SimError", "run_sim"]

log = logging.getLogger(__name__)

DEFAULT_RADIUS_M: Final = 100.0  # SPEC 4's arrival zone when neither the command nor the driver says otherwise
HARD_CASES: Final = ("outliers", "dead_zone", "drive_by")  # those a plan drawn at dispatch time can have


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class CitySim:
    """A fleet of simulated patrol units against a running hub.

    ``async with CitySim(...) as sim:`` registers the units, connects their devices and starts
    reporting; leaving the block says ``offline`` and disconnects. ``fixes_sent`` counts the fixes
    handed to each device's client. ``hard_cases`` maps case names of ``HARD_CASES`` to the share of
    dispatches without a plan that get it. ``start_parked`` keeps every car standing until its first
    dispatch. ``on_clear`` callbacks get ``(unit_id, incident_id)`` when a unit clears: the hub learns
    it from whoever closes the incident. ``camera_size`` (width, height) and ``camera_fps`` set the body
    cameras that publish video on ``video_start`` (:mod:`sim.video_devices`).
    """

    def __init__(self, hub_url: str, mqtt_url: str, token: str, *, units: int = 50, seed: int = 7,
                 interval_s: tuple[float, float] = (1.0, 5.0), protocol: int = 5, city: City | None = None,
                 register_attempts: int = 10, timing: Timing = DEFAULT_TIMING,
                 hard_cases: Mapping[str, float] | None = None, truth_path: Path | str | None = None,
                 start_parked: bool = False, camera_size: tuple[int, int] = (640, 360),
                 camera_fps: float = 15.0) -> None:
        if units < 1:
            raise ValueError("units must be at least 1")
        if not 0 < interval_s[0] <= interval_s[1]:
            raise ValueError("interval_s must be (low, high) with 0 < low <= high")
        unknown = set(hard_cases or {}) - set(HARD_CASES)
        if unknown:
            raise ValueError(f"unknown hard cases {sorted(unknown)}; known: {', '.join(HARD_CASES)}")
        self.hub_url = hub_url.rstrip("/")
        self.mqtt_url = mqtt_url
        self.token = token
        self.n_units = units
        self.seed = seed
        self.interval_s = interval_s
        self.protocol = protocol
        self.city = city
        self.register_attempts = register_attempts
        self.timing = timing
        self.hard_cases = dict(hard_cases or {})
        self.start_parked = start_parked
        self.units: list[SimUnit] = []
        self.devices: list[SimDevice] = []
        self.fixes_sent: dict[str, int] = {}
        self.errors = 0
        self.truth = TruthLog(truth_path)
        self.radii: dict[str, float] = {}  # incident_id -> arrival zone radius, from whoever created it
        self.on_clear: list[Callable[[str, str], None]] = []
        self.started = asyncio.Event()
        self._plans: dict[tuple[str, str], Plan] = {}
        self._rng = random.Random(seed + 2)
        self._task: asyncio.Task[None] | None = None
        # Body cameras publish over WHIP on video_start (SPEC 2, 5).
        self.cameras = SimCameras(width=camera_size[0], height=camera_size[1], fps=camera_fps)

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._build()
        await fleet.register_all(self.hub_url, self.token, self.units, self.built_city, self.register_attempts,
                                 self.mqtt_url)
        await fleet.connect_all(self.devices)
        self._task = asyncio.create_task(self._run(), name="citysim")
        self.started.set()
        log.info("city sim: %d units, %d devices reporting", len(self.units), len(self.devices))

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self.cameras.close()  # before the devices go: their `stopped` events still get out
        for device in self.devices:
            device.client.hold_uplink(False)  # what a dead zone held goes out before the goodbye
        await fleet.stop_all(self.devices)
        self.truth.close()

    @property
    def total_fixes(self) -> int:
        return sum(self.fixes_sent.values())

    @property
    def connected(self) -> int:
        return sum(d.client.connected for d in self.devices)

    @property
    def built_city(self) -> City:
        """The city the fleet drives in, once :meth:`start` has built it (given, or built from the seed)."""
        assert self.city is not None, "the fleet is not built yet"
        return self.city

    def unit(self, unit_id: str) -> SimUnit:
        return next(u for u in self.units if u.unit_id == unit_id)

    def expect(self, incident_id: str, unit_id: str, plan: Plan, radius_m: float | None = None) -> None:
        """When ``unit_id`` is dispatched to ``incident_id``, carry out ``plan`` (zone radius ``radius_m``)."""
        self._plans[(incident_id, unit_id)] = plan
        if radius_m is not None:
            self.radii[incident_id] = radius_m

    # ---------------------------------------------------------------- setup
    def _build(self) -> None:
        city = self.city = self.city or build_city(self.seed)
        self.units = fleet.build_fleet(city, self.seed, self.n_units, self.mqtt_url, self.protocol, self.interval_s,
                                       _now_ms(), self._on_command)
        self.devices = [d for u in self.units for d in u.devices]
        self.fixes_sent = {d.device_id: 0 for d in self.devices}
        if self.start_parked:
            for unit in self.units:
                unit.vehicle.park()

    # ------------------------------------------------------------ main loop
    async def _run(self) -> None:
        now = _now_ms()
        rng = random.Random(self.seed + 1)
        # Spread the first reports over each device's interval, so the load is even.
        heap = [(now + int(rng.uniform(0, d.interval_ms)), k) for k, d in enumerate(self.devices)]
        heapq.heapify(heap)
        next_sweep = now
        while True:
            now = _now_ms()
            if now >= next_sweep:
                self.step(now)
                next_sweep = now + 1000
            count = 0
            while heap and heap[0][0] <= now:
                due, k = heapq.heappop(heap)
                device = self.devices[k]
                self._report(device)
                nxt = due + device.interval_ms
                if nxt <= now:
                    nxt = now + device.interval_ms  # a late loop skips reports instead of bursting to catch up
                heapq.heappush(heap, (nxt, k))
                count += 1
                if count % 200 == 0:
                    await asyncio.sleep(0)  # let the transports write
            wake = min(heap[0][0], next_sweep) if heap else next_sweep
            await asyncio.sleep(max(0.0, (wake - _now_ms()) / 1000))

    def _report(self, device: SimDevice) -> None:
        try:
            ts = max(_now_ms(), device.last_ts + 1)  # (device_id, ts) is the duplicate key
            unit = device.unit
            self._advance(unit, ts)
            vehicle = unit.vehicle
            lat, lon = vehicle.position
            device.seq += 1
            fix = device.gps.fix(ts, lat, lon, speed=vehicle.speed, heading=vehicle.heading,
                                 battery=device.battery.advance(ts), seq=device.seq)
            device.client.send_fix(fix)
            device.last_ts = ts
            self.fixes_sent[device.device_id] += 1
            unit.recent.append(Sample(ts, lat, lon, vehicle.speed))
            if unit.response is not None:
                unit.response.truth.add(ts, lat, lon, vehicle.speed)
        except Exception:
            self.errors += 1
            log.exception("%s: report failed", device.device_id)

    def step(self, now_ms: int) -> None:
        """The once-a-second work: move every car and play the officers' part of open dispatches.

        The loop calls it with the wall clock; a test may call it with its own.
        """
        for unit in self.units:
            try:
                self._advance(unit, now_ms)
            except Exception:
                self.errors += 1
                log.exception("%s: simulation step failed", unit.unit_id)

    def _advance(self, unit: SimUnit, now_ms: int) -> None:
        response = unit.response
        if response is None:
            unit.vehicle.advance(now_ms)
            return
        self._act(unit, response, response.advance(now_ms))

    def _act(self, unit: SimUnit, response: Response, actions: list[Action]) -> None:
        """The device side of what the response did: the uplink, the radio's contact event, clearing."""
        for action in actions:
            if action.kind == "hold" or action.kind == "release":
                for device in unit.devices:
                    device.client.hold_uplink(action.kind == "hold")
            elif action.kind == "contact":
                unit.devices[-1].client.send_event("contact", ts=action.ts, incident_id=response.incident_id)
            else:
                self._finish(unit)

    def _finish(self, unit: SimUnit) -> None:
        """The response is over (cleared, cancelled or replaced): keep its truth, restore the GPS, tell the driver."""
        response = unit.response
        if response is None:
            return
        unit.response = None
        response.truth.acks = [t for d in unit.devices if (t := d.client.acks.get(response.cmd_id)) is not None]
        for device in unit.devices:
            device.gps.outlier_probability = device.base_outlier_probability
        self.truth.add(response.truth.result())
        for callback in self.on_clear:
            try:
                callback(unit.unit_id, response.incident_id)
            except Exception:
                log.exception("on_clear callback failed for %s", response.incident_id)

    # ------------------------------------------------------------- commands
    def _on_command(self, unit: SimUnit, command: Command) -> None:
        """Every device of a unit may get the same command; the unit acts on it once."""
        if command.type in VIDEO_COMMANDS:
            camera = camera_for(unit.devices, command)
            if camera is not None:
                self.cameras.handle(camera, command, label=f"{unit.name} {camera.device_id}")
            return
        if command.type == "dispatch":
            incident: Any = command.body.get("incident")
            try:
                incident_id = str(incident["id"])
                zone = float(incident["lat"]), float(incident["lon"])
            except (TypeError, KeyError, ValueError):
                log.warning("%s: dispatch without a usable incident: %r", unit.unit_id, incident)
                return
            if incident_id == unit.incident_id:
                return
            if unit.response is not None and unit.response.active:
                previous = unit.response
                self._act(unit, previous, previous.cancel(_now_ms()))
                previous.truth.notes["replaced"] = "dispatched elsewhere before clearing"
                self._finish(unit)
            self._start(unit, command, incident_id, zone, incident.get("arrival_radius_m"))
        elif command.type == "cancel" and unit.response is not None:
            incident = command.body.get("incident")
            target = command.body.get("incident_id") or (incident.get("id") if isinstance(incident, dict) else None)
            if target is None or str(target) == unit.response.incident_id:
                self._act(unit, unit.response, unit.response.cancel(_now_ms()))
                self._finish(unit)

    def _start(self, unit: SimUnit, command: Command, incident_id: str, zone: tuple[float, float],
               radius: object) -> None:
        now = _now_ms()
        radius_m = float(radius) if isinstance(radius, int | float) else self.radii.get(incident_id, DEFAULT_RADIUS_M)
        unit.vehicle.advance(now)
        plan = self._plans.pop((incident_id, unit.unit_id), None) or self._draw_plan(unit, zone, radius_m, now)
        response = Response(unit.vehicle, plan, incident_id, zone, radius_m, command.ts, now,
                            random.Random(self._rng.getrandbits(64)), self.timing, unit.unit_id, command.cmd_id)
        for s in unit.recent:  # fixes published between the dispatch and this moment count too
            response.truth.add(s.ts, s.lat, s.lon, s.speed)
        if plan.outlier_probability is not None:
            for device in unit.devices:
                device.gps.outlier_probability = plan.outlier_probability
        unit.response = response
        log.info("%s dispatched to %s (%s)", unit.unit_id, incident_id, plan.case)

    def _draw_plan(self, unit: SimUnit, zone: tuple[float, float], radius_m: float, now: int) -> Plan:
        """A plan for a dispatch nobody planned: normal, or a hard case at the configured shares."""
        rng = self._rng
        pick = rng.random()
        for case, share in self.hard_cases.items():
            if pick < share:
                if case == "outliers":
                    return Plan(case, outlier_probability=OUTLIER_PROBABILITY)
                if case == "dead_zone":
                    return Plan(case, dead_zone=DeadZone(radius_m + rng.uniform(50.0, 300.0), rng.uniform(60.0, 180.0),
                                                         rng.uniform(10.0, 60.0)))
                stop = overshoot_stop(unit.vehicle, now, zone, radius_m, rng)
                return Plan("drive_by", via=(stop,)) if stop is not None else Plan()
            pick -= share
        return Plan()


async def run_sim(hub_url: str, mqtt_url: str, token: str, units: int = 50, duration_s: float | None = None,
                  incidents_per_min: float = 0.0, **options: Any) -> dict[str, int]:
    """Run the city simulator for ``duration_s`` seconds (forever when None); the fixes sent per device.

    With ``incidents_per_min`` an :class:`~sim.incidents.IncidentGenerator` posts calls too, dispatches
    those the hub did not, and closes each one its unit cleared.
    """
    from sim.incidents import IncidentGenerator

    async with CitySim(hub_url, mqtt_url, token, units=units, **options) as sim, contextlib.AsyncExitStack() as stack:
        calls: asyncio.Task[int] | None = None
        if incidents_per_min > 0:
            generator = await stack.enter_async_context(IncidentGenerator(
                hub_url, token, sim.built_city, rate_per_min=incidents_per_min, seed=sim.seed + 3, radii=sim.radii,
                close_any=True))
            sim.on_clear.append(generator.unit_cleared)
            calls = asyncio.create_task(generator.run(duration_s), name="incident-generator")
        started = time.monotonic()
        try:
            while duration_s is None or time.monotonic() - started < duration_s:
                left = 10.0 if duration_s is None else duration_s - (time.monotonic() - started)
                await asyncio.sleep(max(0.0, min(10.0, left)))
                log.info("city sim: %d fixes sent, %d/%d devices connected, %d responses finished", sim.total_fixes,
                         sim.connected, len(sim.devices), len(sim.truth))
        finally:
            await cancel_and_wait(calls)
        return dict(sim.fixes_sent)
