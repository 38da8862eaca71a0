"""The city simulator's I/O: patrol units registered over HTTP, their devices speaking MQTT.

One asyncio task drives the whole fleet: a heap orders the devices by their next
report, so a thousand devices cost one task and one timer, not a thousand. Each
unit is a car with a vehicle tracker, a body camera and a radio; a dispatch
command sends the car to the incident, the officer makes contact a little after
arrival, and the unit clears and resumes patrol after a while on scene.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Final, Self

import httpx

from devices.client import DeviceClient
from devices.payloads import Command
from sim.city import City, build_city
from sim.traffic import Battery, GpsModel, SimVehicle

__all__ = ["CitySim", "SimError", "run_sim"]

log = logging.getLogger(__name__)

# (device id suffix, device kind, GPS accuracy range in m, battery drain in %/h)
DEVICE_PLAN: Final = (
    ("trk", "vehicle", (3.0, 6.0), 1.0),  # roof antenna, runs on the car's power
    ("cam", "bodycam", (4.0, 10.0), 9.0),
    ("radio", "radio", (4.0, 10.0), 5.0),
)
CONTACT_AFTER_S: Final = (20.0, 90.0)  # from arrival to the officer's contact event
ON_SCENE_S: Final = (600.0, 1200.0)  # then the unit clears on its own
CONNECT_BATCH: Final = 50


class SimError(Exception):
    """Base of the errors of :mod:`sim`: the simulator cannot run against this hub."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(eq=False)
class SimDevice:
    device_id: str
    kind: str
    unit: SimUnit
    client: DeviceClient
    gps: GpsModel
    battery: Battery
    interval_ms: int
    seq: int = 0
    last_ts: int = 0


@dataclass(eq=False)
class SimUnit:
    unit_id: str
    name: str
    home: int
    vehicle: SimVehicle
    devices: list[SimDevice] = field(default_factory=list)
    incident_id: str | None = None
    arrived_ms: int | None = None
    contact_ms: int | None = None  # when the officer will report contact
    clear_ms: int | None = None  # when the unit leaves the scene


class CitySim:
    """A fleet of simulated patrol units against a running hub.

    ``async with CitySim(...) as sim:`` registers the units, connects their
    devices and starts reporting; leaving the block says ``offline`` and
    disconnects. ``fixes_sent`` counts the fixes handed to each device's client.
    """

    def __init__(
        self,
        hub_url: str,
        mqtt_url: str,
        token: str,
        *,
        units: int = 50,
        seed: int = 7,
        interval_s: tuple[float, float] = (1.0, 5.0),
        protocol: int = 5,
        city: City | None = None,
        register_attempts: int = 10,
    ) -> None:
        if units < 1:
            raise ValueError("units must be at least 1")
        if not 0 < interval_s[0] <= interval_s[1]:
            raise ValueError("interval_s must be (low, high) with 0 < low <= high")
        self.hub_url = hub_url.rstrip("/")
        self.mqtt_url = mqtt_url
        self.token = token
        self.n_units = units
        self.seed = seed
        self.interval_s = interval_s
        self.protocol = protocol
        self.city = city
        self.register_attempts = register_attempts
        self.units: list[SimUnit] = []
        self.devices: list[SimDevice] = []
        self.fixes_sent: dict[str, int] = {}
        self.errors = 0
        self.started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._build()
        await self._register_all()
        await self._connect_all()
        self._task = asyncio.create_task(self._run(), name="citysim")
        self.started.set()
        log.info("city sim: %d units, %d devices reporting", len(self.units), len(self.devices))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        limit = asyncio.Semaphore(CONNECT_BATCH)

        async def stop_one(device: SimDevice) -> None:
            async with limit:
                try:
                    await device.client.stop()
                except Exception as exc:  # one stuck client must not keep the others online
                    log.warning("%s: stop failed: %s", device.device_id, exc)

        await asyncio.gather(*(stop_one(d) for d in self.devices))

    @property
    def total_fixes(self) -> int:
        return sum(self.fixes_sent.values())

    @property
    def connected(self) -> int:
        return sum(d.client.connected for d in self.devices)

    # ---------------------------------------------------------------- setup
    def _build(self) -> None:
        city = self.city = self.city or build_city(self.seed)
        rng = random.Random(self.seed)
        now = _now_ms()
        for i in range(1, self.n_units + 1):
            home = rng.choice(city.node_ids)
            vehicle = SimVehicle(city, random.Random(rng.getrandbits(64)), home, now)
            unit = SimUnit(f"P{i:03d}", f"Patrol {i:03d}", home, vehicle)
            for suffix, kind, acc, drain in DEVICE_PLAN:
                device_id = f"{unit.unit_id}-{suffix}"
                device_rng = random.Random(rng.getrandbits(64))
                client = DeviceClient(
                    device_id,
                    self.mqtt_url,
                    kind=kind,
                    unit_id=unit.unit_id,
                    protocol=self.protocol,
                    on_command=functools.partial(self._on_command, unit),
                )
                interval_ms = int(device_rng.uniform(*self.interval_s) * 1000)
                device = SimDevice(
                    device_id,
                    kind,
                    unit,
                    client,
                    GpsModel(device_rng, acc_m=acc),
                    Battery(device_rng, now, drain_per_hour=drain),
                    interval_ms,
                )
                unit.devices.append(device)
                self.devices.append(device)
                self.fixes_sent[device_id] = 0
            self.units.append(unit)

    async def _register_all(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(base_url=self.hub_url, headers=headers, timeout=10.0) as http:
            # The first unit alone: it waits for a hub that is still starting and fails fast on a bad token.
            await self._register(http, self.units[0])
            try:
                async with asyncio.TaskGroup() as group:
                    limit = asyncio.Semaphore(16)
                    for unit in self.units[1:]:
                        group.create_task(self._register_limited(http, unit, limit))
            except ExceptionGroup as eg:
                raise eg.exceptions[0] from None

    async def _register_limited(self, http: httpx.AsyncClient, unit: SimUnit, limit: asyncio.Semaphore) -> None:
        async with limit:
            await self._register(http, unit)

    async def _register(self, http: httpx.AsyncClient, unit: SimUnit) -> None:
        assert self.city is not None
        lat, lon = self.city.nodes[unit.home]
        body = {
            "name": unit.name,
            "kind": "patrol",
            "devices": [d.device_id for d in unit.devices],
            "home": {"lat": round(lat, 6), "lon": round(lon, 6)},
            "capabilities": [],
        }
        delay = 0.5
        problem = ""
        for attempt in range(1, self.register_attempts + 1):
            try:
                resp = await http.put(f"/api/v1/units/{unit.unit_id}", json=body)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if resp.is_success:
                    return
                if resp.is_client_error and resp.status_code not in (408, 429):
                    raise SimError(
                        f"hub refused unit {unit.unit_id}: HTTP {resp.status_code} {resp.text[:300]}"
                        + (" (check the token)" if resp.status_code in (401, 403) else "")
                    )
                problem = f"HTTP {resp.status_code}"
            log.info("hub not ready (%s), attempt %d of %d", problem, attempt, self.register_attempts)
            if attempt < self.register_attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise SimError(f"cannot register units at {self.hub_url}: {problem}")

    async def _connect_all(self) -> None:
        """Connect in batches, so a broker is not hit by a thousand CONNECTs at once."""
        wait_s = 5.0
        for k in range(0, len(self.devices), CONNECT_BATCH):
            batch = self.devices[k : k + CONNECT_BATCH]
            for device in batch:
                await device.client.start(wait=None)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and not all(d.client.connected for d in batch):
                await asyncio.sleep(0.05)
            if not any(d.client.connected for d in batch):
                # The broker is down: the clients keep retrying and buffering; do not wait per batch.
                wait_s = 0.0
        if self.connected < len(self.devices):
            log.warning("%d of %d devices connected so far", self.connected, len(self.devices))

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
            vehicle = device.unit.vehicle
            vehicle.advance(ts)
            lat, lon = vehicle.position
            device.seq += 1
            fix = device.gps.fix(
                ts,
                lat,
                lon,
                speed=vehicle.speed,
                heading=vehicle.heading,
                battery=device.battery.advance(ts),
                seq=device.seq,
            )
            device.client.send_fix(fix)
            device.last_ts = ts
            self.fixes_sent[device.device_id] += 1
        except Exception:
            self.errors += 1
            log.exception("%s: report failed", device.device_id)

    def step(self, now_ms: int) -> None:
        """The once-a-second work: move every car, play the officers' part of open incidents.

        The loop calls it with the wall clock; a test may call it with its own.
        """
        for unit in self.units:
            try:
                self._play(unit, now_ms)
            except Exception:
                self.errors += 1
                log.exception("%s: simulation step failed", unit.unit_id)

    def _play(self, unit: SimUnit, now: int) -> None:
        """Move the car; on scene, the officer reports contact and later clears."""
        unit.vehicle.advance(now)
        if unit.incident_id is None:
            return
        rng = unit.vehicle.rng
        if unit.arrived_ms is None and unit.vehicle.state == "on_scene":
            unit.arrived_ms = now
            unit.contact_ms = now + int(rng.uniform(*CONTACT_AFTER_S) * 1000)
            unit.clear_ms = now + int(rng.uniform(*ON_SCENE_S) * 1000)
        if unit.contact_ms is not None and now >= unit.contact_ms:
            unit.contact_ms = None
            unit.devices[-1].client.send_event("contact", incident_id=unit.incident_id)  # from the radio
        if unit.clear_ms is not None and now >= unit.clear_ms:
            self._clear(unit)

    def _clear(self, unit: SimUnit) -> None:
        self._forget_incident(unit)
        unit.vehicle.resume_patrol()

    def _forget_incident(self, unit: SimUnit) -> None:
        unit.incident_id = unit.arrived_ms = unit.contact_ms = unit.clear_ms = None

    # ------------------------------------------------------------- commands
    def _on_command(self, unit: SimUnit, command: Command) -> None:
        """Every device of a unit may get the same command; the unit acts on it once."""
        if command.type == "dispatch":
            incident: Any = command.body.get("incident")
            try:
                incident_id = str(incident["id"])
                lat, lon = float(incident["lat"]), float(incident["lon"])
            except (TypeError, KeyError, ValueError):
                log.warning("%s: dispatch without a usable incident: %r", unit.unit_id, incident)
                return
            if incident_id == unit.incident_id:
                return
            self._forget_incident(unit)  # a new dispatch replaces the old one
            unit.vehicle.advance(_now_ms())
            unit.vehicle.drive_to_point(lat, lon)
            unit.incident_id = incident_id
            log.info("%s dispatched to %s", unit.unit_id, incident_id)
        elif command.type == "cancel" and unit.incident_id is not None:
            incident = command.body.get("incident")
            target = command.body.get("incident_id") or (incident.get("id") if isinstance(incident, dict) else None)
            if target is None or str(target) == unit.incident_id:
                self._clear(unit)


async def run_sim(
    hub_url: str,
    mqtt_url: str,
    token: str,
    units: int = 50,
    duration_s: float | None = None,
    **options: Any,
) -> dict[str, int]:
    """Run the city simulator for ``duration_s`` seconds (forever when None); the fixes sent per device."""
    async with CitySim(hub_url, mqtt_url, token, units=units, **options) as sim:
        started = time.monotonic()
        while duration_s is None or time.monotonic() - started < duration_s:
            left = 10.0 if duration_s is None else duration_s - (time.monotonic() - started)
            await asyncio.sleep(max(0.0, min(10.0, left)))
            log.info(
                "city sim: %d fixes sent, %d/%d devices connected", sim.total_fixes, sim.connected, len(sim.devices)
            )
        return dict(sim.fixes_sent)
