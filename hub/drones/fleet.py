"""The hub's drones: their configuration, what each is doing, and how they look on the one-map.

A drone is a unit of kind ``drone`` whose first device is the drone itself (device id = unit id =
drone id); a drone with a gimbal camera has that camera as its second device (``camera``), an MQTT
device of kind ``camera`` that gets ``video_start`` like a body camera when the drone is over a scene.
The drone's telemetry enters the ingest pipeline as its device's fixes and status, exactly as an MQTT
device's would (:class:`TelemetryForwarder`), so it is stored, live, tracked for arrival
and drawn like every unit. :class:`DroneRecord` adds what MAVLink knows (mode, armed, altitude,
link) and the flight the hub gave it.

Signing: a drone with a key in ``FIELDHUB_DRONE_KEYS`` must sign everything it sends. A drone
without one is refused (its MAVLink ignored at the link) unless its fleet entry says
``"unsigned": true``: an explicit, per-drone opt-in, shown on the one-map.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from devices import topics
from devices.payloads import Status
from drone.state import VehicleState
from drone.streams import StreamKeeper
from drone.telemetry import fix_of
from drone.vehicle import Vehicle
from geo.geodesy import haversine_m
from hub.config import read_json_file
from hub.domain.drone_candidate import DroneCandidate, Failsafe
from hub.domain.drone_readiness import gcs_failsafe
from hub.errors import HubError

__all__ = [
    "SYSTEM",
    "DroneCommandFailed",
    "DroneConfig",
    "DroneNotFound",
    "DroneRecord",
    "FleetConfigError",
    "Flight",
    "NoDroneAvailable",
    "TelemetryForwarder",
    "load_fleet",
    "log_signing",
    "prearm_text",
    "signing_of",
]

log = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SYSTEM = ("system", "system")  # who the hub's own drone commands are audited as
# A position older than this is not where the drone is (streams stopped, or the autopilot rebooted).
POSITION_MAX_AGE_S = 5.0


class FleetConfigError(HubError):
    """The drone fleet file is missing, unreadable or wrong."""


class DroneNotFound(HubError):
    pass


class NoDroneAvailable(HubError):
    pass


class DroneCommandFailed(HubError):
    def __init__(self, code: str, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code  # command_rejected, command_timeout, link_lost, signed_no_key, ...
        self.reason = reason or message  # the short why: the autopilot's own text when it gave one


@dataclass(frozen=True, slots=True)
class DroneConfig:
    drone_id: str
    system_id: int
    name: str
    dock_lat: float
    dock_lon: float
    dock_name: str = ""
    camera: str | None = None  # the drone's camera device, if it carries one
    unsigned: bool = False  # the operator let this drone in without MAVLink 2 signing
    dock_amsl: float | None = None  # the dock's altitude above sea level, if the fleet file gives it

    @property
    def devices(self) -> list[str]:
        """The drone unit's devices: the drone, then its camera."""
        return [self.drone_id] if self.camera is None else [self.drone_id, self.camera]


def signing_of(config: DroneConfig, keyed: bool) -> str:
    """``signed`` (it has a key), ``unsigned`` (no key, opted in) or ``refused`` (no key, no opt-in)."""
    return "signed" if keyed else "unsigned" if config.unsigned else "refused"


def load_fleet(path: Path) -> list[DroneConfig]:
    """The fleet file: ``[{"drone_id", "system_id", "name"?, "camera"?, "unsigned"?, "dock": {"lat", "lon",
    "name"?, "amsl"?}}, ...]``."""
    data = read_json_file(path, "drone fleet", FleetConfigError)
    if not isinstance(data, list):
        raise FleetConfigError(f"{path}: a list of drones expected")
    fleet: list[DroneConfig] = []
    for k, d in enumerate(data):
        try:
            dock = d["dock"]
            unsigned = d.get("unsigned", False)
            amsl = dock.get("amsl")
            cfg = DroneConfig(str(d["drone_id"]), int(d["system_id"]), str(d.get("name") or d["drone_id"]),
                              float(dock["lat"]), float(dock["lon"]), str(dock.get("name") or ""), d.get("camera"),
                              unsigned is True, None if amsl is None else float(amsl))
        except (KeyError, TypeError, ValueError) as exc:
            raise FleetConfigError(f"{path}: drone #{k}: {exc!r}") from exc
        if not isinstance(unsigned, bool):  # "yes", 1, "false": an opt-in out of security must be unmistakable
            raise FleetConfigError(f"{path}: drone {cfg.drone_id}: \"unsigned\" must be true or false")
        if not _ID.match(cfg.drone_id) or not 1 <= cfg.system_id <= 255:
            raise FleetConfigError(f"{path}: drone #{k}: bad drone_id {cfg.drone_id!r} or system_id {cfg.system_id}")
        if cfg.camera is not None and not (isinstance(cfg.camera, str) and _ID.match(cfg.camera)):
            raise FleetConfigError(f"{path}: drone {cfg.drone_id}: bad camera device id {cfg.camera!r}")
        if not (-90 <= cfg.dock_lat <= 90 and -180 <= cfg.dock_lon <= 180):
            raise FleetConfigError(f"{path}: drone {cfg.drone_id}: dock out of range")
        if cfg.dock_amsl is not None and not -500.0 <= cfg.dock_amsl <= 9000.0:
            raise FleetConfigError(f"{path}: drone {cfg.drone_id}: dock amsl {cfg.dock_amsl} m out of range")
        fleet.append(cfg)
    for attr in ("drone_id", "system_id"):
        values = [getattr(c, attr) for c in fleet]
        if len(set(values)) != len(values):
            raise FleetConfigError(f"{path}: {attr} must be unique")
    # A device belongs to one unit: no camera may be another drone or another drone's camera.
    device_ids = [device for c in fleet for device in c.devices]
    if len(set(device_ids)) != len(device_ids):
        raise FleetConfigError(f"{path}: drone and camera device ids must be unique")
    return fleet


def log_signing(records: list[DroneRecord], keyed: set[int], have_file: bool) -> None:
    """Once, at start: every drone the link will refuse (loudly), every one let in unsigned, stray keys."""
    for r in records:
        c = r.config
        if r.signing == "refused":
            log.error("drone %s (MAVLink system %s) REFUSED: no signing key%s and no \"unsigned\": true in its "
                      "fleet entry; its MAVLink is ignored until one of them is given", c.drone_id, c.system_id,
                      " in FIELDHUB_DRONE_KEYS" if have_file else " (FIELDHUB_DRONE_KEYS is not set)")
        elif r.signing == "unsigned":
            log.warning("drone %s (MAVLink system %s) flies UNSIGNED (opted in by its fleet entry): anyone on its "
                        "link can speak for it", c.drone_id, c.system_id)
        elif c.unsigned:
            log.info("drone %s: has a signing key, so its \"unsigned\": true is ignored", c.drone_id)
    stray = sorted(keyed - {r.config.system_id for r in records})
    if stray:
        log.warning("signing keys for MAVLink systems %s, which are not in the fleet: ignored", stray)


@dataclass
class Flight:
    """A flight the hub ordered: to an incident (or an operator's goto), until the drone is home."""

    incident_id: str | None
    target: tuple[float, float, float]  # lat, lon, relative altitude
    route: list[list[float]]
    phase: str = "launching"  # launching -> en_route -> returning (-> done)
    reason: str = ""  # why it is returning
    rtl_pending: bool = False  # an RTL the hub could not send yet (no link): sent when the link returns
    airborne: bool = False  # the autopilot reported it in the air during this flight
    reboots: int = 0  # the autopilot's reboot count when the flight began
    kind: str = "dispatch"  # dispatch, goto, return_to_dock, mission
    progress: dict[str, int] | None = None  # a mission's current / total / reached items


@dataclass
class DroneRecord:
    config: DroneConfig
    vehicle: Vehicle
    signing: str = "signed"  # see signing_of
    flight: Flight | None = None
    seen: bool = False
    keeper: StreamKeeper | None = None
    dock_amsl_seen: float | None = None  # its altitude above sea level when last seen landed on its dock
    last_fix_sent: float = 0.0
    last_view_sent: float = 0.0
    shown_fresh: bool = False  # whether the last view sent showed a fresh position (a stale one is re-sent)
    last_status: tuple[bool, int | None] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def drone_id(self) -> str:
        return self.config.drone_id

    def dock_distance_m(self) -> float | None:
        s = self.vehicle.state
        if s.lat is None or s.lon is None:
            return None
        return haversine_m(s.lat, s.lon, self.config.dock_lat, self.config.dock_lon)

    def on_ground(self) -> bool:
        s = self.vehicle.state
        if s.landed_state is not None:
            return s.landed_state == "on_ground"
        return not s.armed

    def dock_amsl(self) -> float | None:
        """The dock's altitude above sea level: from the fleet file, else as measured on the dock, else where the
        drone stands now (a drone that never stood on its dock; home then sits at its current ground level)."""
        if self.config.dock_amsl is not None:
            return self.config.dock_amsl
        if self.dock_amsl_seen is not None:
            return self.dock_amsl_seen
        return self.vehicle.state.alt_msl_m

    def position_fresh(self, now: float, max_age_s: float = POSITION_MAX_AGE_S) -> bool:
        seen = self.vehicle.state.last_seen.get("GLOBAL_POSITION_INT")
        return seen is not None and now - seen <= max_age_s

    def failsafe(self, hub_system_id: int) -> Failsafe:
        return gcs_failsafe(self.vehicle.state.params, hub_system_id)

    def candidate(self, busy_with: str | None, hub_system_id: int, signed_no_key: bool) -> DroneCandidate:
        s = self.vehicle.state
        fresh = self.position_fresh(time.monotonic())
        return DroneCandidate(
            self.drone_id, s.lat if fresh else None, s.lon if fresh else None, s.battery_pct, s.link_ok, s.armed,
            self.on_ground(), self.dock_distance_m() if fresh else None, busy_with, signing=self.signing,
            heard=self.seen, signed_no_key=signed_no_key,
            telemetry_problem=self.keeper.problem() if self.keeper is not None else None,
            position_fresh=fresh, prearm_ok=s.prearm_ok, prearm_text=prearm_text(s),
            failsafe=self.failsafe(hub_system_id))


def prearm_text(state: VehicleState) -> str | None:
    """The autopilot's latest explanation of why it will not arm ("PreArm: ..." or "Arm: ..."), if any."""
    for text in reversed(state.texts):
        if text.text.startswith(("PreArm:", "Arm:")):
            return text.text
    return None


class TelemetryForwarder:
    """Turns a drone's MAVLink state into its device's fixes and status, through the ingest pipeline.

    Fixes at most every ``fix_interval_s`` per drone (MAVLink streams positions at several Hz; the
    detectors and the map need about one a second); status when the link or the battery changes.
    """

    def __init__(self, submit: Callable[[str, bytes, int], object], clock: Callable[[], int],
                 fix_interval_s: float = 0.5) -> None:
        self.submit = submit
        self.clock = clock
        self.fix_interval_s = fix_interval_s

    def position(self, record: DroneRecord) -> None:
        now = time.monotonic()
        if now - record.last_fix_sent < self.fix_interval_s:
            return
        fix = fix_of(record.vehicle.state)
        if fix is None:
            return
        record.last_fix_sent = now
        self.submit(topics.device_topic(record.drone_id, "telemetry"), msgspec.json.encode(fix), 0)

    def status(self, record: DroneRecord) -> None:
        s = record.vehicle.state
        battery = None if s.battery_pct is None else round(s.battery_pct)
        key = (s.link_ok, battery)
        if key == record.last_status:
            return
        record.last_status = key
        status = Status(ts=self.clock(), state="online" if s.link_ok else "offline", kind="drone",
                        unit_id=record.drone_id, battery=None if battery is None else float(battery))
        self.submit(topics.device_topic(record.drone_id, "status"), msgspec.json.encode(status), 1)
