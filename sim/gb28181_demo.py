"""GB/T 28181 body cameras in ``fieldhub demo``: patrol cars whose only device is the officer's SIP body camera.

Each camera unit is provisioned over the hub's API like a real one (the unit, then the device with protocol
``gb28181``, whose password the hub hands out once), and a :class:`~sim.gb28181_camera.GbCamera` registers with
that password. Its positions come from a :class:`~sim.traffic.SimVehicle` patrolling the city's roads, seen
through a body camera's GPS receiver (:class:`~sim.traffic.GpsModel`), and reach the hub only as
``MobilePosition`` - the hub subscribes to them as it does for any GB/T 28181 device.

A GB/T 28181 camera cannot receive a dispatch order (the standard has no such message): the officer hears it by
radio. The runner stands in for that radio by polling each unit's assignment (``GET /api/v1/units/{id}``) and
playing the officer (:class:`sim.gb28181_officer.Officer`, pure, time passed in): drive to the incident's
location, and back on patrol when the hub releases the unit. On scene the officer radios "contact made" and later
"clear", which the dispatcher records (an event ``contacted``, then the incident's close); ``scene_s=None`` leaves
that to someone else. Arrival is the hub's to detect from the camera's positions, and starting its video by INVITE too.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Self

import httpx

from devices.tasks import cancel_and_wait
from sim.city import City, build_city
from sim.fleet import SimError
from sim.gb28181_camera import GbCamera, GbCameraConfig
from sim.gb28181_fleet import device_ids
from sim.gb28181_officer import Officer, Report, assignment, location
from sim.gb28181_stream import StreamSettings
from sim.traffic import GpsModel, SimVehicle

__all__ = ["DEMO_STREAM", "CameraUnit", "GbDemo", "GbDemoConfig", "run_gb_cameras"]

log = logging.getLogger(__name__)

# Small enough for a 2-core laptop running the hub, 60 MQTT units and drones beside a few cameras.
DEMO_STREAM: Final = StreamSettings(width=640, height=360, fps=15.0, gop_s=1.0, bitrate=800_000)
BODYCAM_ACC_M: Final = (4.0, 10.0)  # a body camera's GPS, as the MQTT fleet's body cameras (sim.fleet.DEVICE_PLAN)

Clock = Callable[[], float]  # epoch seconds: the vehicles' and the cameras' time (a test may run it faster)


@dataclass(frozen=True, slots=True)
class GbDemoConfig:
    """Where the hub is, how many cameras, and how the officers behave."""

    hub_url: str
    token: str  # an admin's (installer's): it provisions the cameras and closes incidents the officers cleared
    server_id: str
    server_host: str
    server_port: int
    count: int = 3
    seed: int = 7
    unit_prefix: str = "GB"
    poll_s: float = 1.0  # how often the radio is listened to
    # On scene until contact is made: after the minute standing the hub's arrival detector needs, as a real
    # officer radios contact after getting out and reaching the caller.
    contact_s: tuple[float, float] = (75.0, 150.0)
    scene_s: tuple[float, float] | None = (120.0, 300.0)  # on scene until clear; None: never (someone else closes)
    gps_outlier_probability: float = 0.005
    keepalive_s: float = 60.0
    stream: StreamSettings = DEMO_STREAM


@dataclass(eq=False)
class CameraUnit:
    """One patrol car with its officer's body camera."""

    unit_id: str
    device_id: str
    vehicle: SimVehicle
    gps: GpsModel
    officer: Officer
    clock: Clock
    camera: GbCamera | None = None
    reports: list[str] = field(default_factory=list)  # what the officer radioed, for the log and tests

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def position(self) -> tuple[float, float, float, float]:
        """The camera's GPS: (lat, lon, speed km/h, heading deg) of the car now, with the receiver's noise."""
        now = self.now_ms()
        self.vehicle.advance(now)
        lat, lon = self.vehicle.position
        fix = self.gps.fix(now, lat, lon, speed=self.vehicle.speed, heading=self.vehicle.heading)
        speed_kmh = (fix.speed or 0.0) * 3.6
        return fix.lat, fix.lon, round(speed_kmh, 1), fix.heading if fix.heading is not None else self.vehicle.heading


class GbDemo:
    """Provision ``count`` camera units, run their cameras and follow their dispatches; an async context manager."""

    def __init__(self, config: GbDemoConfig, *, city: City | None = None, clock: Clock = time.time,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if config.count < 1:
            raise ValueError("count must be at least 1")
        self.config = config
        self.transport = transport  # the HTTP transport to the hub (default: the network)
        self.city = city or build_city(config.seed)
        self.clock = clock
        self.units = self._build()
        self.counts = {"dispatched": 0, "released": 0, "contacts": 0, "closed": 0}
        self.errors: Counter[str] = Counter()  # polls that went wrong, by reason; the next poll tries again
        self._http: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None

    def _build(self) -> list[CameraUnit]:
        cfg = self.config
        rng = random.Random(cfg.seed + 28181)
        now = int(self.clock() * 1000)
        units = []
        for k, device_id in enumerate(device_ids(cfg.server_id[:10], cfg.count), start=1):
            vehicle = SimVehicle(self.city, random.Random(rng.getrandbits(64)), rng.choice(self.city.node_ids), now)
            gps = GpsModel(random.Random(rng.getrandbits(64)), acc_m=BODYCAM_ACC_M,
                           outlier_probability=cfg.gps_outlier_probability)
            officer = Officer(random.Random(rng.getrandbits(64)), cfg.contact_s, cfg.scene_s)
            units.append(CameraUnit(f"{cfg.unit_prefix}{k:02d}", device_id, vehicle, gps, officer, self.clock))
        return units

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Provision every unit and its camera, start the cameras (they register on their own), follow the radio."""
        cfg = self.config
        self.open_api()
        try:
            for unit in self.units:
                password = await self._provision(unit)
                unit.camera = GbCamera(GbCameraConfig(
                    unit.device_id, password, cfg.server_id, cfg.server_host, cfg.server_port,
                    keepalive_s=cfg.keepalive_s, name=f"Body camera {unit.unit_id}", stream=cfg.stream),
                    position=unit.position, wall=self.clock)
                await unit.camera.start()
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._listen(), name="gb28181-demo-radio")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        cameras = [u.camera for u in self.units if u.camera is not None]
        await asyncio.gather(*(c.stop() for c in cameras), return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def open_api(self) -> httpx.AsyncClient:
        """The client of the hub's API with the token (opened once; :meth:`stop` closes it)."""
        if self._http is None:
            self._http = httpx.AsyncClient(base_url=self.config.hub_url.rstrip("/"), timeout=10.0,
                                           headers={"Authorization": f"Bearer {self.config.token}"},
                                           transport=self.transport)
        return self._http

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("the demo's cameras are not started")
        return self._http

    @property
    def registered(self) -> int:
        return sum(1 for u in self.units if u.camera is not None and u.camera.registered.is_set())

    # --- provisioning -------------------------------------------------------------------------------------------

    async def _provision(self, unit: CameraUnit) -> str:
        """The unit (home: where its car starts) and its camera's SIP login; the camera's password."""
        lat, lon = unit.vehicle.position
        body = {"name": f"Body camera {unit.unit_id}", "kind": "patrol", "devices": [unit.device_id],
                "home": {"lat": round(lat, 6), "lon": round(lon, 6)}, "capabilities": []}
        await self._call("PUT", f"/api/v1/units/{unit.unit_id}", body, f"unit {unit.unit_id}")
        device = {"device_id": unit.device_id, "unit_id": unit.unit_id, "protocol": "gb28181", "kind": "bodycam"}
        r = await self._call("POST", "/api/v1/devices", device, f"camera {unit.device_id}", ok=(201, 409))
        if r.status_code == 409:  # provisioned by an earlier run on the same database: a new password
            r = await self._call("POST", f"/api/v1/devices/{unit.device_id}/rotate", None, f"camera {unit.device_id}")
        password = r.json().get("password")
        if not isinstance(password, str):
            raise SimError(f"the hub gave camera {unit.device_id} no password: {r.text[:200]}")
        return password

    async def _call(self, method: str, path: str, body: dict[str, Any] | None, what: str,
                    ok: tuple[int, ...] = (200, 201)) -> httpx.Response:
        try:
            r = await self.http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise SimError(f"{what}: the hub is unreachable ({exc})") from exc
        if r.status_code not in ok:
            raise SimError(f"{what}: HTTP {r.status_code} {r.text[:300]}"
                           + (" (check the token: an admin's is needed)" if r.status_code in (401, 403) else ""))
        return r

    # --- the radio ----------------------------------------------------------------------------------------------

    async def _listen(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(self.config.poll_s)

    async def poll(self) -> None:
        """Listen to the radio once for every unit; a unit whose poll fails is counted and tried again next time."""
        for unit in self.units:
            try:
                await self.follow(unit)
            except httpx.HTTPStatusError as exc:
                self._failed(unit, f"hub_{exc.response.status_code}", exc)
            except httpx.HTTPError as exc:
                self._failed(unit, "hub_unreachable", exc)
            except (ValueError, KeyError, TypeError) as exc:  # an answer not shaped as documented
                self._failed(unit, "bad_answer", exc)

    def _failed(self, unit: CameraUnit, reason: str, exc: Exception) -> None:
        self.errors[reason] += 1
        log.warning("%s: radio poll failed (%s): %s", unit.unit_id, reason, exc)

    async def follow(self, unit: CameraUnit) -> None:
        """One poll of ``unit``'s assignment, and what its officer does about it."""
        r = await self.http.get(f"/api/v1/units/{unit.unit_id}")
        r.raise_for_status()
        incident_id = assignment(r.json())
        where: tuple[float, float] | None = None
        if incident_id is not None and incident_id != unit.officer.incident_id:
            # Where to go, before the officer takes the order: a failed look-up is heard again at the next poll.
            incident = (await self.http.get(f"/api/v1/incidents/{incident_id}")).raise_for_status().json()
            where = location(incident)
        now = unit.now_ms()
        unit.vehicle.advance(now)
        order = unit.officer.hear(incident_id)
        if order == "go" and where is not None:
            unit.vehicle.drive_to_point(*where)
            self.counts["dispatched"] += 1
            log.info("%s heard by radio: to incident %s", unit.unit_id, incident_id)
        elif order == "stand_down":
            unit.vehicle.resume_patrol()
            self.counts["released"] += 1
            log.info("%s released: back on patrol", unit.unit_id)
        if unit.vehicle.state == "on_scene":
            unit.officer.on_scene(now)
        for report in unit.officer.due(now):
            await self._radio(unit, report)

    async def _radio(self, unit: CameraUnit, report: Report) -> None:
        """The officer's radio call, recorded by the dispatcher through the API."""
        incident_id = unit.officer.incident_id
        if incident_id is None:
            return
        unit.reports.append(f"{report} {incident_id}")
        if report == "contact":
            r = await self.http.post(f"/api/v1/incidents/{incident_id}/events",
                                     json={"type": "contacted", "unit_id": unit.unit_id,
                                           "text": f"{unit.unit_id}: contact made (radio)"})
            self.counts["contacts"] += r.status_code == 200
            return
        r = await self.http.post(f"/api/v1/incidents/{incident_id}/close",
                                 json={"reason": f"cleared by {unit.unit_id} (radio, simulated)"})
        self.counts["closed"] += r.status_code == 200  # 409: closed by someone else already


async def run_gb_cameras(config: GbDemoConfig, *, city: City | None = None) -> None:
    """Run the demo's cameras until cancelled (``fieldhub demo``), logging how they do once a minute."""
    async with GbDemo(config, city=city) as demo:
        while True:
            await asyncio.sleep(60)
            log.info("gb28181 demo: %d/%d cameras registered, %s, poll errors %s", demo.registered, len(demo.units),
                     demo.counts, dict(demo.errors))
