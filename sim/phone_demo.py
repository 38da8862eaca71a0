"""Officers on foot with phones, and TAK users, in ``fieldhub demo``: a mixed fleet beside the MQTT units.

Each officer carries a phone running OwnTracks (over MQTT: :class:`~sim.owntracks_phone.OwnTracksPhone`) or
Traccar Client (over HTTP: :class:`~sim.traccar_phone.TraccarPhone`), half and half. The unit (kind ``foot``) and
the phone's login (protocol ``owntracks`` or ``osmand``) are provisioned over the hub's API like real ones; the
answer's ``password`` is the phone's secret. The officer walks the city's streets (:func:`footpaths`: the road
network at walking pace, so :class:`~sim.traffic.SimVehicle` walks it), seen through the phone's GPS.

Neither app can show a dispatch order (the hub asks an OwnTracks phone for a fresh position at dispatch, nothing
more), so, as for a GB/T 28181 body camera, the officer hears it by radio: the runner polls the unit's assignment
(``GET /api/v1/units/{id}``) and plays the officer (:class:`~sim.officer_demo.OfficerDemo`). TAK users
(:class:`~sim.tak_client.TakClient`) walk near the centre and send their position as Cursor-on-Target to the hub's
TAK link (the LAN's SA multicast group in the demo), reading back the hub's units and incidents; the hub makes each
a unit of kind ``tak`` on its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from devices.payloads import Fix
from geo.geodesy import haversine_m
from sim.city import CENTRE, City, build_city
from sim.fleet import SimError
from sim.gb28181_officer import Officer
from sim.officer_demo import Device, OfficerDemo, OfficerUnit
from sim.owntracks_phone import OwnTracksConfig, OwnTracksPhone
from sim.tak_client import TakClient, TakClientConfig, android_uid
from sim.traccar_phone import TraccarConfig, TraccarPhone
from sim.traffic import Battery, GpsModel, SimVehicle

__all__ = ["PHONE_ACC_M", "WALK_MPS", "PhoneDemo", "PhoneDemoConfig", "PhoneUnit", "TakUsers", "TakWalker", "footpaths",
           "run_phones"]

log = logging.getLogger(__name__)

WALK_MPS: Final = 1.4
PHONE_ACC_M: Final = (4.0, 15.0)  # a phone's fused location in a city: worse than a roof antenna
TAK_CALLSIGNS: Final = ("VIPER", "COBRA", "MAMBA", "ADDER", "KRAIT", "TAIPAN")
Protocol = Literal["owntracks", "osmand"]


def footpaths(city: City, walk_mps: float = WALK_MPS) -> City:
    """The city's streets at walking pace: a :class:`SimVehicle` on it is a pedestrian (its pace, 85-100 % of the
    limit, a person's own; routes the shortest by distance, as people walk)."""
    return City(city.nodes, [dataclasses.replace(e, speed_mps=walk_mps) for e in city.edges])


@dataclass(frozen=True, slots=True)
class PhoneDemoConfig:
    """Where the hub is, how many phones and TAK users, and how they report."""

    hub_url: str
    token: str  # an admin's (installer's)
    count: int = 2  # officers with a phone: odd ones OwnTracks, even ones Traccar Client
    seed: int = 7
    unit_prefix: str = "FT"
    poll_s: float = 1.0
    contact_s: tuple[float, float] = (75.0, 150.0)
    scene_s: tuple[float, float] | None = (120.0, 300.0)
    gps_outlier_probability: float = 0.003
    # How an agency configures the apps for dispatch (the apps' own defaults are sparser: 10 s / 15 min ping
    # for OwnTracks' move mode, 300 s for Traccar Client): a fix every 10 s, a standing officer every minute.
    owntracks_move_s: float = 10.0
    owntracks_ping_s: float = 60.0
    traccar_interval_s: float = 10.0
    tak_clients: int = 1
    tak_url: str | None = None  # the hub's TAK link (the SA multicast group); None: no TAK users
    tak_interval_s: float = 10.0


@dataclass(eq=False)
class PhoneUnit(OfficerUnit):
    """An officer on foot with a phone."""

    protocol: Protocol
    battery: Battery
    phone: OwnTracksPhone | TraccarPhone | None = None

    def reading(self) -> Fix:
        """The phone's location provider: where the officer is now, through the phone's GPS."""
        now = self.now_ms()
        self.vehicle.advance(now)
        lat, lon = self.vehicle.position
        return self.gps.fix(now, lat, lon, speed=self.vehicle.speed, heading=self.vehicle.heading,
                            battery=self.battery.advance(now))


class TakWalker:
    """A TAK user strolling between street corners within ``radius_m`` of the centre (the location provider)."""

    def __init__(self, city: City, rng: random.Random, clock_ms: Callable[[], int], radius_m: float = 700.0) -> None:
        self.city, self.rng, self.clock_ms = city, rng, clock_ms
        self.near = [n for n in city.node_ids if haversine_m(*city.nodes[n], *CENTRE) <= radius_m] or city.node_ids
        self.walker = SimVehicle(city, rng, rng.choice(self.near), clock_ms(), park_probability=0.0)
        self.gps = GpsModel(random.Random(rng.getrandbits(64)), acc_m=PHONE_ACC_M, outlier_probability=0.0)
        self.battery = Battery(random.Random(rng.getrandbits(64)), clock_ms())
        self.walker.drive_to(self.rng.choice(self.near))

    def reading(self) -> Fix:
        now = self.clock_ms()
        self.walker.advance(now)
        if self.walker.state == "on_scene":  # at the corner it walked to: on to another near the centre
            self.walker.drive_to(self.rng.choice(self.near))
        lat, lon = self.walker.position
        return self.gps.fix(now, lat, lon, speed=self.walker.speed, heading=self.walker.heading,
                            battery=self.battery.advance(now))


class TakUsers:
    """The demo's TAK users: ``config.tak_clients`` clients on ``config.tak_url``, each on a :class:`TakWalker`."""

    def __init__(self, config: PhoneDemoConfig, city: City, rng: random.Random, clock: Callable[[], float]) -> None:
        self.config, self.city, self.rng, self.clock = config, city, rng, clock
        self.clients: list[TakClient] = []
        self.walkers: list[TakWalker] = []

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def start(self) -> None:
        cfg = self.config
        if cfg.tak_url is None:
            return
        for k in range(cfg.tak_clients):
            walker = TakWalker(self.city, random.Random(self.rng.getrandbits(64)), self._now_ms)
            callsign = f"{TAK_CALLSIGNS[k % len(TAK_CALLSIGNS)]}-{k // len(TAK_CALLSIGNS) + 1}"
            client = TakClient(TakClientConfig(url=cfg.tak_url, uid=android_uid(self.rng.getrandbits(64)),
                                               callsign=callsign, interval_s=cfg.tak_interval_s),
                               walker.reading, wall=self.clock)
            self.walkers.append(walker)
            self.clients.append(client)
            await client.start()

    async def stop(self) -> None:
        for client in self.clients:
            await client.stop()

    def status(self) -> str:
        seen = sum(sum(c.seen.values()) for c in self.clients)
        return f"{len(self.clients)} TAK users (hub events read: {seen})"


class PhoneDemo(OfficerDemo[PhoneUnit, PhoneDemoConfig]):
    """Provision the officers' phones, run them and the TAK users, follow the officers' assignments."""

    rng_salt = 4_486  # "GPS" on a phone keypad
    unit_kind = "foot"  # officers on foot
    gps_acc_m = PHONE_ACC_M
    devices_noun = "phones"
    heard = "heard by radio"
    turn = "radio poll"

    def __init__(self, config: PhoneDemoConfig, *, city: City | None = None, **kwargs: Any) -> None:
        super().__init__(config, city=footpaths(city or build_city(config.seed)), **kwargs)
        self.tak_users = TakUsers(config, self.city, self.rng, self.clock)

    def _unit(self, k: int, vehicle: SimVehicle, gps: GpsModel, officer: Officer) -> PhoneUnit:
        protocol: Protocol = "owntracks" if k % 2 == 1 else "osmand"
        unit_id = f"{self.config.unit_prefix}{k:02d}"
        battery = Battery(random.Random(self.rng.getrandbits(64)), int(self.clock() * 1000))
        return PhoneUnit(unit_id, f"{unit_id}-phone", vehicle, gps, officer, self.clock, protocol=protocol,
                         battery=battery)

    async def _connect(self, unit: PhoneUnit) -> Device:
        device = {"device_id": unit.device_id, "unit_id": unit.unit_id, "protocol": unit.protocol, "kind": "phone"}
        r = await self._provision(unit, f"Officer {unit.unit_id}", device, f"phone {unit.device_id}")
        answer = r.json()
        secret, gateway = answer.get("password"), answer.get("gateway") or {}
        if not isinstance(secret, str):
            raise SimError(f"the hub gave phone {unit.device_id} no secret: {r.text[:200]}")
        if not gateway.get("enabled"):
            raise SimError(f"the hub's {unit.protocol} gateway is off (FIELDHUB_{unit.protocol.upper()})")
        base, cfg = self.config.hub_url.rstrip("/"), self.config
        phone: OwnTracksPhone | TraccarPhone
        if unit.protocol == "owntracks":
            mqtt_url = answer.get("mqtt_url")
            where = {"mqtt_url": mqtt_url} if mqtt_url else {"http_url": base + gateway["http"]["path"]}
            phone = OwnTracksPhone(OwnTracksConfig(unit.device_id, secret, name="phone", tid=unit.unit_id[-2:],
                                                   move_s=cfg.owntracks_move_s, ping_s=cfg.owntracks_ping_s,
                                                   **where), unit.reading, wall=self.clock)
        else:  # the server URL the provisioning gives, on the address this demo reaches the hub at
            server = urlsplit(gateway["server_url"])
            phone = TraccarPhone(TraccarConfig(unit.device_id, f"{base}{server.path}?{server.query}",
                                               interval_s=cfg.traccar_interval_s), unit.reading, wall=self.clock)
        unit.phone = phone
        return phone

    async def start(self) -> None:
        await super().start()
        try:
            await self.tak_users.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self.tak_users.stop()
        await super().stop()

    async def follow(self, unit: PhoneUnit) -> None:
        """One radio poll of ``unit``'s assignment, and what its officer does about it."""
        await self._follow_by_polling(unit)

    @property
    def reporting(self) -> int:
        """Phones whose last report the hub took (an OwnTracks phone connected, a Traccar phone's store empty)."""
        return sum(1 for u in self.units if (isinstance(u.phone, OwnTracksPhone) and u.phone.connected.is_set())
                   or (isinstance(u.phone, TraccarPhone) and u.phone.counters["sent"] > 0 and not u.phone.stored))

    def status(self) -> str:
        return f"phone demo: {self.reporting}/{len(self.units)} phones reporting, {self.tak_users.status()}"


async def run_phones(config: PhoneDemoConfig, *, city: City | None = None) -> None:
    """Run the demo's phones and TAK users until cancelled (``fieldhub demo``), logging once a minute."""
    if config.count > 0:
        async with PhoneDemo(config, city=city) as demo:
            await demo.run_forever()
        return
    users = TakUsers(config, footpaths(city or build_city(config.seed)), random.Random(config.seed + 4_486), time.time)
    try:
        await users.start()
        while True:
            await asyncio.sleep(60)
            log.info("phone demo: %s", users.status())
    finally:
        await users.stop()
