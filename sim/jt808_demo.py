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

import re
from dataclasses import dataclass, field
from typing import Any, Final

from geo.gcj02 import Datum
from sim.city import City
from sim.gb28181_officer import Officer, assignment, location
from sim.jt808_terminal import Jt808Terminal, Jt808TerminalConfig
from sim.officer_demo import OfficerDemo, OfficerUnit
from sim.traffic import GpsModel, SimVehicle

__all__ = ["TERMINAL_ACC_M", "Jt808Demo", "Jt808DemoConfig", "Jt808Unit", "device_request", "dispatched_incident",
           "is_cancel", "phone_numbers", "run_jt808_terminals"]

TERMINAL_ACC_M: Final = (2.5, 6.0)  # a vehicle terminal's GNSS: a roof antenna, better than a body camera's
_ID: Final = r"([A-Za-z0-9][A-Za-z0-9_.-]{0,63})"  # the hub's id syntax (sim.gb28181_officer.INCIDENT_ID)
# The id at the end of the text: "... #<id>" (docs/design of issue 17) or "... [<id>]" (what the gateway writes).
_TAG: Final = re.compile(rf"(?:#{_ID}|\[{_ID}\])\s*\Z")
_CANCEL: Final = re.compile(rf"\s*(?:cancel|取消)\w*\s*[:：]?\s*(?:{_ID}\s*\Z)?", re.IGNORECASE)

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


@dataclass(eq=False, kw_only=True)
class Jt808Unit(OfficerUnit):
    """One patrol car with its JT/T 808 terminal."""

    phone: str
    terminal_id: str
    terminal: Jt808Terminal | None = None
    texts: list[str] = field(default_factory=list)  # read off the display, not yet acted on
    emergency_until_ms: int | None = None
    stale_looks: int = 0  # consecutive looks at the unit's assignment that disagreed with the officer's order

    def position(self) -> tuple[float, float, float, float, float]:
        """The terminal's GNSS: (lat, lon, km/h, heading, alt m) of the car now, WGS-84, with the receiver's noise."""
        return self.fix()

    def read(self, text: str, flags: int) -> None:
        """The terminal's display (its ``on_text``)."""
        self.texts.append(text)


class Jt808Demo(OfficerDemo[Jt808Unit, Jt808DemoConfig]):
    """Provision ``count`` units with a terminal each, run the terminals and follow their dispatches."""

    rng_salt = 808
    gps_acc_m = TERMINAL_ACC_M
    devices_noun = "terminals"
    heard = "read on the terminal"
    turn = "officer's turn"
    more_counts = ("emergencies",)

    def _unit(self, k: int, vehicle: SimVehicle, gps: GpsModel, officer: Officer) -> Jt808Unit:
        unit_id = f"{self.config.unit_prefix}{k:02d}"
        [phone] = phone_numbers(self.config.first_phone + k - 1, 1)
        return Jt808Unit(unit_id, f"{unit_id}-terminal", vehicle, gps, officer, self.clock, phone=phone,
                         terminal_id=f"FH{k:05d}")

    @property
    def authenticated(self) -> int:
        return sum(1 for u in self.units if u.terminal is not None and u.terminal.authenticated.is_set())

    async def _connect(self, unit: Jt808Unit) -> Jt808Terminal:
        """The unit and its terminal's registration window (no secret: the first registration gets the code; one
        provisioned by an earlier run has its code gone, so registration is opened again), and the terminal."""
        cfg = self.config
        device = device_request(unit.device_id, unit.unit_id, unit.phone, unit.terminal_id)
        await self._provision(unit, f"Patrol car {unit.unit_id}", device, f"terminal {unit.phone}")
        unit.terminal = Jt808Terminal(Jt808TerminalConfig(
            cfg.host, cfg.port, unit.phone, cfg.version, terminal_id=unit.terminal_id,
            plate=f"沪A{unit.phone[-5:]}", plate_color=1, heartbeat_s=cfg.heartbeat_s, report_s=cfg.report_s,
            datum=cfg.datum, position=unit.position), on_text=unit.read, wall=self.clock)
        return unit.terminal

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
        await self._radio_due(unit, now)
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
        unit.stale_looks = 0
        return self._hear(unit, incident_id, where)

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
            self.log.info("%s: emergency button pressed", unit.unit_id)

    def status(self) -> str:
        return f"jt808 demo: {self.authenticated}/{len(self.units)} terminals authenticated"


async def run_jt808_terminals(config: Jt808DemoConfig, *, city: City | None = None) -> None:
    """Run the demo's terminals until cancelled (``fieldhub demo``), logging how they do once a minute."""
    async with Jt808Demo(config, city=city) as demo:
        await demo.run_forever()
