"""What the demo's officer-driven units share, whatever their device: the runner behind ``fieldhub demo``'s GB/T 28181
body cameras (:mod:`sim.gb28181_demo`) and JT/T 808 vehicle terminals (:mod:`sim.jt808_demo`).

A unit is a patrol car (:class:`~sim.traffic.SimVehicle` on the city's roads) seen through its device's GPS
(:class:`~sim.traffic.GpsModel`), with an officer (:class:`sim.gb28181_officer.Officer`) who drives where the
dispatch says and radios "contact made" and "clear". :class:`OfficerDemo` holds what does not depend on the device:
the hub's API client, provisioning a unit and its device as an installer would (re-opening the device's secret
when an earlier run on the same database provisioned it), the loop that gives each officer a turn (a failing turn
is counted by reason, never stops the others), the orders, the radio reports recorded through the API, and the
ordered stop. A subclass says how its device is built and started and how its officer learns of an order
(:meth:`OfficerDemo.follow`). One module so that a third kind of device adds only what is its own.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import httpx

from devices.tasks import cancel_and_wait
from sim.city import City, build_city
from sim.fleet import SimError
from sim.gb28181_officer import Officer, Report, assignment, location
from sim.traffic import GpsModel, SimVehicle

__all__ = ["Clock", "DemoConfig", "Device", "OfficerDemo", "OfficerUnit"]

Clock = Callable[[], float]  # epoch seconds: the vehicles' and the devices' time (a test may run it faster)


class DemoConfig(Protocol):
    """The options every officer demo has (each demo's frozen config dataclass has them among its own)."""

    @property
    def hub_url(self) -> str: ...
    @property
    def token(self) -> str: ...  # an admin's (installer's): it provisions and closes incidents officers cleared
    @property
    def count(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def poll_s(self) -> float: ...  # how often each officer has a turn
    @property
    def contact_s(self) -> tuple[float, float]: ...
    @property
    def scene_s(self) -> tuple[float, float] | None: ...
    @property
    def gps_outlier_probability(self) -> float: ...


class Device(Protocol):
    """A simulated device as the runner drives it: started once, stopped on the way out."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass(eq=False)
class OfficerUnit:
    """One patrol car, its officer and the GPS its device reads; a demo's unit type adds its device's own fields."""

    unit_id: str
    device_id: str
    vehicle: SimVehicle
    gps: GpsModel
    officer: Officer
    clock: Clock
    reports: list[str] = field(default_factory=list, kw_only=True)  # what the officer radioed, for the log and tests

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def fix(self) -> tuple[float, float, float, float, float]:
        """The device's GPS now: (lat, lon, km/h, heading deg, alt m) of the car, with the receiver's noise."""
        now = self.now_ms()
        self.vehicle.advance(now)
        lat, lon = self.vehicle.position
        fix = self.gps.fix(now, lat, lon, speed=self.vehicle.speed, heading=self.vehicle.heading)
        heading = fix.heading if fix.heading is not None else self.vehicle.heading
        return fix.lat, fix.lon, (fix.speed or 0.0) * 3.6, heading, fix.alt or 0.0


U = TypeVar("U", bound=OfficerUnit)
C = TypeVar("C", bound=DemoConfig)


class OfficerDemo(ABC, Generic[U, C]):
    """Provision ``config.count`` units, run their devices and give their officers a turn every ``poll_s``; an
    async context manager. Subclasses set the class attributes and implement :meth:`_unit`, :meth:`_connect` and
    :meth:`follow`."""

    rng_salt: ClassVar[int]  # the seed's offset for this kind of device, so two kinds do not drive alike
    gps_acc_m: ClassVar[tuple[float, float]]  # the device's GPS accuracy range
    devices_noun: ClassVar[str]  # "cameras", for messages
    heard: ClassVar[str]  # how the officer learns an order ("heard by radio"), for the log
    turn: ClassVar[str]  # what a failed turn was ("radio poll"), for the log
    more_counts: ClassVar[tuple[str, ...]] = ()  # the subclass's own counters, beside the orders and reports
    unit_kind: ClassVar[str] = "patrol"  # the kind its units are provisioned as

    def __init__(self, config: C, *, city: City | None = None, clock: Clock = time.time,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if config.count < 1:
            raise ValueError("count must be at least 1")
        self.config = config
        self.transport = transport  # the HTTP transport to the hub (default: the network)
        self.city = city or build_city(config.seed)
        self.clock = clock
        self.log = logging.getLogger(type(self).__module__)
        self.rng = random.Random(config.seed + self.rng_salt)
        self.units = self._build()
        self.counts = dict.fromkeys(("dispatched", "released", "contacts", "closed", *self.more_counts), 0)
        self.errors: Counter[str] = Counter()  # turns that went wrong, by reason; the next turn tries again
        self._devices: list[Device] = []
        self._http: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None

    def _build(self) -> list[U]:
        cfg, rng = self.config, self.rng
        now = int(self.clock() * 1000)
        units = []
        for k in range(1, cfg.count + 1):
            vehicle = SimVehicle(self.city, random.Random(rng.getrandbits(64)), rng.choice(self.city.node_ids), now)
            gps = GpsModel(random.Random(rng.getrandbits(64)), acc_m=self.gps_acc_m,
                           outlier_probability=cfg.gps_outlier_probability)
            officer = Officer(random.Random(rng.getrandbits(64)), cfg.contact_s, cfg.scene_s)
            units.append(self._unit(k, vehicle, gps, officer))
        return units

    @abstractmethod
    def _unit(self, k: int, vehicle: SimVehicle, gps: GpsModel, officer: Officer) -> U:
        """The ``k``-th unit (from 1) around its car, GPS and officer."""

    @abstractmethod
    async def _connect(self, unit: U) -> Device:
        """Provision ``unit`` and its device over the API (:meth:`_provision`); the device, not yet started."""

    @abstractmethod
    async def follow(self, unit: U) -> None:
        """One turn of ``unit``'s officer: learn the order, act on it, radio what is due (:meth:`_radio_due`)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Provision every unit and its device, start the devices (they register on their own), run the turns."""
        self.open_api()
        try:
            for unit in self.units:
                device = await self._connect(unit)
                self._devices.append(device)  # stopped by stop() even if its start fails half-way
                await device.start()
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._turns(), name=f"{type(self).__module__}-officers")

    async def stop(self) -> None:
        """The turns first (no API call left in flight), then the devices, then the API client."""
        await cancel_and_wait(self._task)
        self._task = None
        await asyncio.gather(*(d.stop() for d in self._devices), return_exceptions=True)
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
            raise RuntimeError(f"the demo's {self.devices_noun} are not started")
        return self._http

    # --- provisioning -------------------------------------------------------------------------------------------

    async def _provision(self, unit: U, name: str, device: dict[str, Any], what: str) -> httpx.Response:
        """The unit (home: where its car starts) and its ``device``; the hub's answer about the device. A device
        provisioned by an earlier run on the same database has its secret rotated (registration opened again)."""
        lat, lon = unit.vehicle.position
        body = {"name": name, "kind": self.unit_kind, "devices": [unit.device_id],
                "home": {"lat": round(lat, 6), "lon": round(lon, 6)}, "capabilities": []}
        await self._call("PUT", f"/api/v1/units/{unit.unit_id}", body, f"unit {unit.unit_id}")
        r = await self._call("POST", "/api/v1/devices", device, what, ok=(201, 409))
        if r.status_code == 409:
            r = await self._call("POST", f"/api/v1/devices/{unit.device_id}/rotate", None, what)
        return r

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

    # --- the officers' turns ------------------------------------------------------------------------------------

    async def _turns(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(self.config.poll_s)

    async def poll(self) -> None:
        """Every officer's turn once; a unit whose turn fails is counted and tried again next time."""
        for unit in self.units:
            try:
                await self.follow(unit)
            except httpx.HTTPStatusError as exc:
                self._failed(unit, f"hub_{exc.response.status_code}", exc)
            except httpx.HTTPError as exc:
                self._failed(unit, "hub_unreachable", exc)
            except (ValueError, KeyError, TypeError) as exc:  # an answer not shaped as documented
                self._failed(unit, "bad_answer", exc)

    def _failed(self, unit: U, reason: str, exc: Exception) -> None:
        self.errors[reason] += 1
        self.log.warning("%s: %s failed (%s): %s", unit.unit_id, self.turn, reason, exc)

    def _hear(self, unit: U, incident_id: str | None, where: tuple[float, float] | None) -> bool:
        """The officer takes the unit's assignment: drives to ``where`` for a new one, patrols again when released;
        whether that was an order."""
        order = unit.officer.hear(incident_id)
        if order == "go" and where is not None:
            unit.vehicle.drive_to_point(*where)
            self.counts["dispatched"] += 1
            self.log.info("%s %s: to incident %s", unit.unit_id, self.heard, incident_id)
        elif order == "stand_down":
            unit.vehicle.resume_patrol()
            self.counts["released"] += 1
            self.log.info("%s released: back on patrol", unit.unit_id)
        return order is not None

    async def _follow_by_polling(self, unit: U) -> None:
        """An officer who hears orders by radio (the device shows none): one poll of ``unit``'s assignment, and
        what the officer does about it. Where to go is looked up before the order is taken, so a failed look-up
        is heard again at the next poll."""
        r = await self.http.get(f"/api/v1/units/{unit.unit_id}")
        r.raise_for_status()
        incident_id = assignment(r.json())
        where: tuple[float, float] | None = None
        if incident_id is not None and incident_id != unit.officer.incident_id:
            incident = (await self.http.get(f"/api/v1/incidents/{incident_id}")).raise_for_status().json()
            where = location(incident)
        now = unit.now_ms()
        unit.vehicle.advance(now)
        self._hear(unit, incident_id, where)
        await self._radio_due(unit, now)

    async def _radio_due(self, unit: U, now_ms: int) -> None:
        """Tell the officer the car is on scene if it is, and make the radio calls due by ``now_ms``."""
        if unit.vehicle.state == "on_scene":
            unit.officer.on_scene(now_ms)
        for report in unit.officer.due(now_ms):
            await self._radio(unit, report)

    async def _radio(self, unit: U, report: Report) -> None:
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

    # --- running in ``fieldhub demo`` ---------------------------------------------------------------------------

    @abstractmethod
    def status(self) -> str:
        """How the devices do, for the log ("2/3 cameras registered")."""

    async def run_forever(self) -> None:
        """Until cancelled, log how the demo does once a minute (started: inside ``async with``)."""
        while True:
            await asyncio.sleep(60)
            self.log.info("%s, %s, errors %s", self.status(), self.counts, dict(self.errors))
