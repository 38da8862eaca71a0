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

from dataclasses import dataclass
from typing import Final

from sim.city import City
from sim.fleet import SimError
from sim.gb28181_camera import GbCamera, GbCameraConfig
from sim.gb28181_fleet import device_ids
from sim.gb28181_officer import Officer
from sim.gb28181_stream import StreamSettings
from sim.officer_demo import OfficerDemo, OfficerUnit
from sim.traffic import GpsModel, SimVehicle

__all__ = ["DEMO_STREAM", "CameraUnit", "GbDemo", "GbDemoConfig", "run_gb_cameras"]

# Small enough for a 2-core laptop running the hub, 60 MQTT units and drones beside a few cameras.
DEMO_STREAM: Final = StreamSettings(width=640, height=360, fps=15.0, gop_s=1.0, bitrate=800_000)
BODYCAM_ACC_M: Final = (4.0, 10.0)  # a body camera's GPS, as the MQTT fleet's body cameras (sim.fleet.DEVICE_PLAN)


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
class CameraUnit(OfficerUnit):
    """One patrol car with its officer's body camera."""

    camera: GbCamera | None = None

    def position(self) -> tuple[float, float, float, float]:
        """The camera's GPS: (lat, lon, speed km/h, heading deg) of the car now, with the receiver's noise."""
        lat, lon, speed_kmh, heading, _ = self.fix()
        return lat, lon, round(speed_kmh, 1), heading


class GbDemo(OfficerDemo[CameraUnit, GbDemoConfig]):
    """Provision ``count`` camera units, run their cameras and follow their dispatches; an async context manager."""

    rng_salt = 28181
    gps_acc_m = BODYCAM_ACC_M
    devices_noun = "cameras"
    heard = "heard by radio"
    turn = "radio poll"

    def _unit(self, k: int, vehicle: SimVehicle, gps: GpsModel, officer: Officer) -> CameraUnit:
        [device_id] = device_ids(self.config.server_id[:10], 1, first=k)
        return CameraUnit(f"{self.config.unit_prefix}{k:02d}", device_id, vehicle, gps, officer, self.clock)

    @property
    def registered(self) -> int:
        return sum(1 for u in self.units if u.camera is not None and u.camera.registered.is_set())

    async def _connect(self, unit: CameraUnit) -> GbCamera:
        """The unit and its camera's SIP login (the hub hands out the password), and the camera that uses it."""
        cfg, what = self.config, f"camera {unit.device_id}"
        device = {"device_id": unit.device_id, "unit_id": unit.unit_id, "protocol": "gb28181", "kind": "bodycam"}
        r = await self._provision(unit, f"Body camera {unit.unit_id}", device, what)
        password = r.json().get("password")
        if not isinstance(password, str):
            raise SimError(f"the hub gave {what} no password: {r.text[:200]}")
        unit.camera = GbCamera(GbCameraConfig(
            unit.device_id, password, cfg.server_id, cfg.server_host, cfg.server_port,
            keepalive_s=cfg.keepalive_s, name=f"Body camera {unit.unit_id}", stream=cfg.stream),
            position=unit.position, wall=self.clock)
        return unit.camera

    async def follow(self, unit: CameraUnit) -> None:
        """One poll of ``unit``'s assignment, and what its officer does about it."""
        await self._follow_by_polling(unit)

    def status(self) -> str:
        return f"gb28181 demo: {self.registered}/{len(self.units)} cameras registered"


async def run_gb_cameras(config: GbDemoConfig, *, city: City | None = None) -> None:
    """Run the demo's cameras until cancelled (``fieldhub demo``), logging how they do once a minute."""
    async with GbDemo(config, city=city) as demo:
        await demo.run_forever()
