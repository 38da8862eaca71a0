"""JT/T 808 vehicle terminals in ``fieldhub demo``: patrol cars whose only device is the car's JT/T 808 terminal.

Each unit is provisioned over the hub's API like a real one (the unit, then the device with protocol ``jt808`` and
the terminal's phone number; the hub hands out no secret: the terminal's first registration gets the code), and a
:class:`~sim.jt808_terminal.Jt808Terminal` registers, authenticates and reports the position of a
:class:`~sim.traffic.SimVehicle` patrolling the city's roads, seen through the terminal's GNSS receiver
(:class:`~sim.traffic.GpsModel`).

Unlike a body camera, a terminal receives the dispatch: the hub's gateway sends it as a text (0x8300) that the
terminal shows and speaks, ending in the incident's id (``[<id>]``; ``#<id>`` is read too). The officer reads it
(:func:`dispatched_incident`) and plays the same part as with a body camera (:class:`sim.gb28181_officer.Officer`):
drive there, radio "contact made" and later "clear" (recorded through the API), back on patrol when released,
which the runner learns from a "cancelled" text or the unit's assignment (``GET /api/v1/units/{id}``). With
``emergencies_per_hour`` the officer now and then presses the terminal's emergency button (alarm bit 0) for
``emergency_s``; off by default.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Self

import httpx

from devices.tasks import cancel_and_wait
from geo.gcj02 import Datum
from sim.city import City, build_city
from sim.fleet import SimError
from sim.gb28181_officer import Officer, Report, assignment, location
from sim.jt808_terminal import Jt808Terminal, Jt808TerminalConfig
from sim.traffic import GpsModel, SimVehicle

__all__ = ["TERMINAL_ACC_M", "Jt808Demo", "Jt808DemoConfig", "Jt808Unit", "device_request", "dispatched_incident",
           "is_cancel", "phone_numbers", "run_jt808_terminals"]

log = logging.getLogger(__name__)

TERMINAL_ACC_M: Final = (2.5, 6.0)  # a vehicle terminal's GNSS: a roof antenna, better than a body camera's
_ID: Final = r"([A-Za-z0-9][A-Za-z0-9_.-]{0,63})"  # the hub's id syntax (sim.gb28181_officer.INCIDENT_ID)
# The id at the end of the text: "... #<id>" (docs/design of issue 17) or "... [<id>]" (what the gateway writes).
_TAG: Final = re.compile(rf"(?:#{_ID}|\[{_ID}\])\s*\Z")
_CANCEL: Final = re.compile(rf"\s*(?:cancel|取消)\w*\s*[:：]?\s*(?:{_ID}\s*\Z)?", re.IGNORECASE)

Clock = Callable[[], float]  # epoch seconds: the vehicles' and the terminals' time


def dispatched_incident(text: str) -> str | None:
    """The incident id a text names at its end (``... #I42`` or ``... [I42]``), or as all a cancel says after
    its colon (``cancelled: I42``); None when it names none."""
    found = _TAG.search(text) or _CANCEL.match(text)
    return next((group for group in found.groups() if group), None) if found else None


def is_cancel(text: str) -> bool:
    """Whether a text calls an order off ("cancelled: I42"), as the hub's gateway writes a cancel."""
    return _CANCEL.match(text) is not None


def phone_numbers(first: int, count: int) -> list[str]:
    """``count`` 11-digit mobile numbers from ``first`` (the SIM cards of the demo's terminals)."""
    if not 10**10 <= first <= 10**11 - count:
        raise ValueError("phone numbers here have 11 digits")
    return [str(first + k) for k in range(count)]


def device_request(device_id: str, unit_id: str, phone: str, terminal_id: str) -> dict[str, Any]:
    """The body of ``POST /api/v1/devices`` that provisions a unit's JT/T 808 terminal."""
    return {"device_id": device_id, "unit_id": unit_id, "protocol": "jt808", "kind": "vehicle", "phone": phone,
            "terminal_id": terminal_id}


@dataclass(frozen=True, slots=True)
class Jt808DemoConfig:
    """Where the hub and its JT/T 808 server are, how many terminals, and how the officers behave."""

    hub_url: str
    token: str  # an admin's (installer's): it provisions the terminals and closes incidents the officers cleared
    host: str  # the hub's JT/T 808 server
    port: int
    count: int = 3
    seed: int = 7
    unit_prefix: str = "JT"
    first_phone: int = 13_900_008_001
    version: int = 2013
    datum: Datum = "wgs84"  # the terminals' reports; the hub must be configured the same (FIELDHUB_JT808_DATUM)
    report_s: float = 10.0
    heartbeat_s: float = 60.0
    poll_s: float = 1.0  # how often the officer looks at the terminal's display and the runner at the unit
    contact_s: tuple[float, float] = (75.0, 150.0)  # as sim.gb28181_demo: after the hub's minute standing
    scene_s: tuple[float, float] | None = (120.0, 300.0)  # None: never clear (someone else closes)
    gps_outlier_probability: float = 0.002
    emergencies_per_hour: float = 0.0  # per terminal; 0: the emergency button is never pressed
    emergency_s: float = 30.0  # how long the bit stays set


@dataclass(eq=False)
class Jt808Unit:
    """One patrol car with its JT/T 808 terminal."""

    unit_id: str
    device_id: str
    phone: str
    terminal_id: str
    vehicle: SimVehicle
    gps: GpsModel
    officer: Officer
    clock: Clock
    terminal: Jt808Terminal | None = None
    texts: list[str] = field(default_factory=list)  # read off the display, not yet acted on
    reports: list[str] = field(default_factory=list)  # what the officer radioed, for the log and tests
    emergency_until_ms: int | None = None
    stale_looks: int = 0  # consecutive looks at the unit's assignment that disagreed with the officer's order

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def position(self) -> tuple[float, float, float, float, float]:
        """The terminal's GNSS: (lat, lon, km/h, heading, alt m) of the car now, WGS-84, with the receiver's noise."""
        now = self.now_ms()
        self.vehicle.advance(now)
        lat, lon = self.vehicle.position
        fix = self.gps.fix(now, lat, lon, speed=self.vehicle.speed, heading=self.vehicle.heading)
        heading = fix.heading if fix.heading is not None else self.vehicle.heading
        return fix.lat, fix.lon, (fix.speed or 0.0) * 3.6, heading, fix.alt or 0.0

    def read(self, text: str, flags: int) -> None:
        """The terminal's display (its ``on_text``)."""
        self.texts.append(text)


class Jt808Demo:
    """Provision ``count`` units with a terminal each, run the terminals and follow their dispatches."""

    def __init__(self, config: Jt808DemoConfig, *, city: City | None = None, clock: Clock = time.time,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if config.count < 1:
            raise ValueError("count must be at least 1")
        self.config = config
        self.transport = transport
        self.city = city or build_city(config.seed)
        self.clock = clock
        self.rng = random.Random(config.seed + 808)
        self.units = self._build()
        self.counts = {"dispatched": 0, "released": 0, "contacts": 0, "closed": 0, "emergencies": 0}
        self.errors: Counter[str] = Counter()  # follows that went wrong, by reason; the next poll tries again
        self._http: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None

    def _build(self) -> list[Jt808Unit]:
        cfg, rng = self.config, self.rng
        now = int(self.clock() * 1000)
        units = []
        for k, phone in enumerate(phone_numbers(cfg.first_phone, cfg.count), start=1):
            unit_id = f"{cfg.unit_prefix}{k:02d}"
            vehicle = SimVehicle(self.city, random.Random(rng.getrandbits(64)), rng.choice(self.city.node_ids), now)
            gps = GpsModel(random.Random(rng.getrandbits(64)), acc_m=TERMINAL_ACC_M,
                           outlier_probability=cfg.gps_outlier_probability)
            officer = Officer(random.Random(rng.getrandbits(64)), cfg.contact_s, cfg.scene_s)
            units.append(Jt808Unit(unit_id, f"{unit_id}-terminal", phone, f"FH{k:05d}", vehicle, gps, officer,
                                   self.clock))
        return units

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Provision every unit and its terminal, start the terminals (they register on their own), follow them."""
        cfg = self.config
        self._http = httpx.AsyncClient(base_url=cfg.hub_url.rstrip("/"), timeout=10.0, transport=self.transport,
                                       headers={"Authorization": f"Bearer {cfg.token}"})
        try:
            for unit in self.units:
                await self._provision(unit)
                unit.terminal = Jt808Terminal(Jt808TerminalConfig(
                    cfg.host, cfg.port, unit.phone, cfg.version, terminal_id=unit.terminal_id,
                    plate=f"沪A{unit.phone[-5:]}", plate_color=1, heartbeat_s=cfg.heartbeat_s, report_s=cfg.report_s,
                    datum=cfg.datum, position=unit.position), on_text=unit.read, wall=self.clock)
                await unit.terminal.start()
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._follow_all(), name="jt808-demo-officers")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        terminals = [u.terminal for u in self.units if u.terminal is not None]
        await asyncio.gather(*(t.stop() for t in terminals), return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("the demo's terminals are not started")
        return self._http

    @property
    def authenticated(self) -> int:
        return sum(1 for u in self.units if u.terminal is not None and u.terminal.authenticated.is_set())

    async def _provision(self, unit: Jt808Unit) -> None:
        """The unit (home: where its car starts) and its terminal's registration window."""
        lat, lon = unit.vehicle.position
        body = {"name": f"Patrol car {unit.unit_id}", "kind": "patrol", "devices": [unit.device_id],
                "home": {"lat": round(lat, 6), "lon": round(lon, 6)}, "capabilities": []}
        await self._call("PUT", f"/api/v1/units/{unit.unit_id}", body, f"unit {unit.unit_id}")
        device = device_request(unit.device_id, unit.unit_id, unit.phone, unit.terminal_id)
        r = await self._call("POST", "/api/v1/devices", device, f"terminal {unit.phone}", ok=(201, 409))
        if r.status_code == 409:  # provisioned by an earlier run: this terminal's code is gone, reopen registration
            await self._call("POST", f"/api/v1/devices/{unit.device_id}/rotate", None, f"terminal {unit.phone}")

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

    async def _follow_all(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(self.config.poll_s)

    async def poll(self) -> None:
        """Every officer once; a unit whose turn fails is counted and tried again next time."""
        for unit in self.units:
            try:
                await self.follow(unit)
            except httpx.HTTPStatusError as exc:
                self._failed(unit, f"hub_{exc.response.status_code}", exc)
            except httpx.HTTPError as exc:
                self._failed(unit, "hub_unreachable", exc)
            except (ValueError, KeyError, TypeError) as exc:  # an answer not shaped as documented
                self._failed(unit, "bad_answer", exc)

    def _failed(self, unit: Jt808Unit, reason: str, exc: Exception) -> None:
        self.errors[reason] += 1
        log.warning("%s: officer's turn failed (%s): %s", unit.unit_id, reason, exc)

    async def follow(self, unit: Jt808Unit) -> None:
        """What ``unit``'s officer does now: read the display, check the assignment, radio what is due."""
        now = unit.now_ms()
        unit.vehicle.advance(now)
        heard = await self._read_display(unit)
        if not heard and unit.officer.incident_id is not None:
            r = await self.http.get(f"/api/v1/units/{unit.unit_id}")
            r.raise_for_status()
            # Released (or moved on without a text): believed on the second look, so that a view a moment behind
            # the text just read does not send the car back on patrol.
            unit.stale_looks = unit.stale_looks + 1 if assignment(r.json()) != unit.officer.incident_id else 0
            if unit.stale_looks >= 2:
                self._order(unit, None, None)
        if unit.vehicle.state == "on_scene":
            unit.officer.on_scene(now)
        for report in unit.officer.due(now):
            await self._radio(unit, report)
        self._emergency_button(unit, now)

    async def _read_display(self, unit: Jt808Unit) -> bool:
        """Act on the texts shown since the last look; whether one changed the order."""
        heard = False
        while unit.texts:
            text = unit.texts[0]
            incident_id = dispatched_incident(text)
            if is_cancel(text):
                if incident_id in (None, unit.officer.incident_id):
                    heard |= self._order(unit, None, None)
            elif incident_id is not None and incident_id != unit.officer.incident_id:
                # Where to go, before the officer takes the order: a failed look-up is read again next time.
                r = await self.http.get(f"/api/v1/incidents/{incident_id}")
                r.raise_for_status()
                try:
                    where = location(r.json())
                except (ValueError, KeyError, TypeError):
                    unit.texts.pop(0)  # an incident with no place to go to: the text cannot be acted on
                    raise
                heard |= self._order(unit, incident_id, where)
            unit.texts.pop(0)
        return heard

    def _order(self, unit: Jt808Unit, incident_id: str | None, where: tuple[float, float] | None) -> bool:
        order = unit.officer.hear(incident_id)
        unit.stale_looks = 0
        if order == "go" and where is not None:
            unit.vehicle.drive_to_point(*where)
            self.counts["dispatched"] += 1
            log.info("%s read on the terminal: to incident %s", unit.unit_id, incident_id)
        elif order == "stand_down":
            unit.vehicle.resume_patrol()
            self.counts["released"] += 1
            log.info("%s released: back on patrol", unit.unit_id)
        return order is not None

    async def _radio(self, unit: Jt808Unit, report: Report) -> None:
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

    def _emergency_button(self, unit: Jt808Unit, now_ms: int) -> None:
        cfg, terminal = self.config, unit.terminal
        if terminal is None:
            return
        if unit.emergency_until_ms is not None:
            if now_ms >= unit.emergency_until_ms:
                terminal.emergency(False)
                unit.emergency_until_ms = None
        elif cfg.emergencies_per_hour > 0 and self.rng.random() < cfg.emergencies_per_hour * cfg.poll_s / 3600:
            terminal.emergency(True)
            unit.emergency_until_ms = now_ms + int(cfg.emergency_s * 1000)
            self.counts["emergencies"] += 1
            log.info("%s: emergency button pressed", unit.unit_id)


async def run_jt808_terminals(config: Jt808DemoConfig, *, city: City | None = None) -> None:
    """Run the demo's terminals until cancelled (``fieldhub demo``), logging how they do once a minute."""
    async with Jt808Demo(config, city=city) as demo:
        while True:
            await asyncio.sleep(60)
            log.info("jt808 demo: %d/%d terminals authenticated, %s, errors %s", demo.authenticated, len(demo.units),
                     demo.counts, dict(demo.errors))
