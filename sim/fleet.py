"""The simulated fleet: patrol units with their devices, registered at the hub and connected to the broker.

Each unit is a car with a vehicle tracker, a body camera and a radio (``DEVICE_PLAN``), each device
with its own GPS receiver, battery and MQTT session (:class:`~devices.client.DeviceClient`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import httpx

from devices.client import DeviceClient
from devices.errors import DevicesError
from devices.payloads import Command
from devices.provision import UNTIL_LOGIN, provision
from sim.city import City
from sim.response import Response
from sim.traffic import Battery, GpsModel, SimVehicle
from sim.truth import Sample

__all__ = ["DEVICE_PLAN", "SimDevice", "SimError", "SimUnit", "build_fleet", "connect_all", "register_all",
           "stop_all"]

log = logging.getLogger(__name__)

# (device id suffix, device kind, GPS accuracy range in m, battery drain in %/h)
DEVICE_PLAN: Final = (
    ("trk", "vehicle", (3.0, 6.0), 1.0),  # roof antenna, runs on the car's power
    ("cam", "bodycam", (4.0, 10.0), 9.0),
    ("radio", "radio", (4.0, 10.0), 5.0),
)
CONNECT_BATCH: Final = 50
RECENT_SAMPLES: Final = 64  # the last seconds of true positions, to seed a response's truth from dispatch on


class SimError(Exception):
    """Base of the errors of :mod:`sim`: the simulator cannot run against this hub."""


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
    base_outlier_probability: float = 0.0  # the receiver's own, restored after a case that raised it

    def __post_init__(self) -> None:
        self.base_outlier_probability = self.gps.outlier_probability


@dataclass(eq=False)
class SimUnit:
    unit_id: str
    name: str
    home: int
    vehicle: SimVehicle
    devices: list[SimDevice] = field(default_factory=list)
    response: Response | None = None  # the dispatch being carried out
    recent: deque[Sample] = field(default_factory=lambda: deque(maxlen=RECENT_SAMPLES))

    @property
    def incident_id(self) -> str | None:
        return self.response.incident_id if self.response is not None and self.response.active else None


def build_fleet(city: City, seed: int, count: int, mqtt_url: str, protocol: int, interval_s: tuple[float, float],
                now_ms: int, on_command: Callable[[SimUnit, Command], None]) -> list[SimUnit]:
    rng = random.Random(seed)
    units = []
    for i in range(1, count + 1):
        home = rng.choice(city.node_ids)
        vehicle = SimVehicle(city, random.Random(rng.getrandbits(64)), home, now_ms)
        unit = SimUnit(f"P{i:03d}", f"Patrol {i:03d}", home, vehicle)
        for suffix, kind, acc, drain in DEVICE_PLAN:
            device_id = f"{unit.unit_id}-{suffix}"
            device_rng = random.Random(rng.getrandbits(64))
            # The broker and login come from the hub when the unit is registered (register_all).
            client = DeviceClient(device_id, mqtt_url or UNTIL_LOGIN, kind=kind, unit_id=unit.unit_id,
                                  protocol=protocol, on_command=functools.partial(on_command, unit))
            interval_ms = int(device_rng.uniform(*interval_s) * 1000)
            unit.devices.append(SimDevice(device_id, kind, unit, client, GpsModel(device_rng, acc_m=acc),
                                          Battery(device_rng, now_ms, drain_per_hour=drain), interval_ms))
        units.append(unit)
    return units


async def register_all(hub_url: str, token: str, units: list[SimUnit], city: City, attempts: int,
                       mqtt_url: str = "") -> None:
    """PUT every unit; the first alone, so a hub that is still starting is waited for and a bad token fails fast.
    Then each device gets its own MQTT login from the hub (the token must be an admin's), like a deployed device;
    ``mqtt_url`` (no login in it) overrides where the hub says devices connect."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=hub_url, headers=headers, timeout=10.0) as http:
        await _register(http, units[0], city, attempts)
        await _logins(http, units[0], mqtt_url)
        limit = asyncio.Semaphore(16)

        async def one(unit: SimUnit) -> None:
            async with limit:
                await _register(http, unit, city, attempts)
                await _logins(http, unit, mqtt_url)

        try:
            async with asyncio.TaskGroup() as group:
                for unit in units[1:]:
                    group.create_task(one(unit))
        except ExceptionGroup as eg:
            raise eg.exceptions[0] from None


async def _logins(http: httpx.AsyncClient, unit: SimUnit, mqtt_url: str) -> None:
    for device in unit.devices:
        try:
            login = await provision(http, device.device_id, unit.unit_id, device.kind)
        except (DevicesError, httpx.TransportError) as exc:
            raise SimError(f"no MQTT login for {device.device_id}: {exc}") from exc
        device.client.set_login(login.username, login.password, login.url(mqtt_url or None))


async def _register(http: httpx.AsyncClient, unit: SimUnit, city: City, attempts: int) -> None:
    lat, lon = city.nodes[unit.home]
    body = {"name": unit.name, "kind": "patrol", "devices": [d.device_id for d in unit.devices],
            "home": {"lat": round(lat, 6), "lon": round(lon, 6)}, "capabilities": []}
    delay = 0.5
    problem = ""
    for attempt in range(1, attempts + 1):
        try:
            resp = await http.put(f"/api/v1/units/{unit.unit_id}", json=body)
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if resp.is_success:
                return
            if resp.is_client_error and resp.status_code not in (408, 429):
                raise SimError(f"hub refused unit {unit.unit_id}: HTTP {resp.status_code} {resp.text[:300]}"
                               + (" (check the token)" if resp.status_code in (401, 403) else ""))
            problem = f"HTTP {resp.status_code}"
        log.info("hub not ready (%s), attempt %d of %d", problem, attempt, attempts)
        if attempt < attempts:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise SimError(f"cannot register units at {http.base_url}: {problem}")


async def connect_all(devices: list[SimDevice]) -> None:
    """Connect in batches, so a broker is not hit by a thousand CONNECTs at once."""
    wait_s = 5.0
    for k in range(0, len(devices), CONNECT_BATCH):
        batch = devices[k : k + CONNECT_BATCH]
        for device in batch:
            await device.client.start(wait=None)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not all(d.client.connected for d in batch):
            await asyncio.sleep(0.05)
        if not any(d.client.connected for d in batch):
            # The broker is down: the clients keep retrying and buffering; do not wait per batch.
            wait_s = 0.0
    connected = sum(d.client.connected for d in devices)
    if connected < len(devices):
        log.warning("%d of %d devices connected so far", connected, len(devices))


async def stop_all(devices: list[SimDevice]) -> None:
    limit = asyncio.Semaphore(CONNECT_BATCH)

    async def stop_one(device: SimDevice) -> None:
        async with limit:
            try:
                await device.client.stop()
            except Exception as exc:  # one stuck client must not keep the others online
                log.warning("%s: stop failed: %s", device.device_id, exc)

    await asyncio.gather(*(stop_one(d) for d in devices))
