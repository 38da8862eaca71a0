"""Running the drone simulator next to a hub: the docks of a city's police stations, the fleet file and the
MAVLink 2 signing key file for the hub, and the drones' gimbal cameras.

The key file is the hub's ``FIELDHUB_DRONE_KEYS`` format (``{"<system_id>": "<64 hex>"}``, mode 0600): the
simulated drones sign with the keys in it, the hub checks with the same file.

A police drone's camera has its own 4G/5G module: to the hub it is an MQTT device of kind ``camera`` in the
drone's unit, speaking SPEC 2 like a body camera. :class:`DroneCameras` plays those devices for a
:class:`~sim.drones.DroneFleetSim`: on ``video_start`` a camera publishes the ground below its copter over
WHIP (:class:`~sim.video_devices.SimCameras` with the ``drone`` view). It sends no fixes: the drone's own
MAVLink telemetry places the unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import httpx

from devices.broker import BrokerAddress
from devices.client import DeviceClient
from devices.payloads import Command
from devices.provision import UNTIL_LOGIN, provision
from sim.city import build_city
from sim.drones import DroneFleetSim, new_keys
from sim.stations import DroneDock, camera_id, drone_docks, fleet_entries, police_stations
from sim.video_devices import SimCameras

__all__ = ["CAMERA_KIND", "FLEET_PARAMS", "DroneCameras", "city_docks", "drone_keys", "read_keys", "run_drones",
           "write_fleet", "write_keys"]

log = logging.getLogger(__name__)

CAMERA_KIND: Final = "camera"
# How a police fleet sets its copters up where they differ from ArduCopter's defaults: the link failsafe on
# (RTL when the hub's heartbeats stop; the hub is system 255, ArduCopter's default ground station).
FLEET_PARAMS: Final[dict[str, float]] = {"FS_GCS_ENABLE": 1.0}
_CONNECT_WAIT_S: Final = 5.0  # then the clients go on retrying in the background


def city_docks(seed: int, stations: int = 4, per_station: int = 1) -> list[DroneDock]:
    """Drone docks at ``stations`` police stations of the simulated city of ``seed`` (the hub's map)."""
    return drone_docks(police_stations(build_city(seed=seed), stations), per_station)


def write_fleet(docks: list[DroneDock], path: Path, *, unsigned: bool = False) -> Path:
    """The hub's fleet file (``FIELDHUB_DRONES``) for these docks; ``unsigned`` opts every drone in to fly
    without signing (else the hub needs their keys, :func:`write_keys`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = [{**e, "unsigned": True} if unsigned else e for e in fleet_entries(docks)]
    path.write_text(json.dumps(entries, indent=1) + "\n")
    return path


def write_keys(docks: list[DroneDock], keys: dict[str, bytes], path: Path) -> Path:
    """The hub's signing key file (``FIELDHUB_DRONE_KEYS``) for these drones' ``keys``, readable by its owner only.

    Created 0600 from the start (never world-readable, not even for a moment) and replaced whole.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({str(d.system_id): keys[d.drone_id].hex() for d in docks if d.drone_id in keys}, indent=1)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
    os.replace(tmp, path)
    return path


def read_keys(docks: list[DroneDock], path: Path) -> dict[str, bytes]:
    """The keys of these drones in a key file of the hub's format (drones without an entry fly unsigned)."""
    data = json.loads(path.read_text())
    by_system = {d.system_id: d.drone_id for d in docks}
    keys: dict[str, bytes] = {}
    for system_id, value in data.items():
        drone_id = by_system.get(int(system_id))
        if drone_id is not None:
            keys[drone_id] = bytes.fromhex(value if isinstance(value, str) else value["key"])
    return keys


def drone_keys(docks: list[DroneDock], path: Path) -> dict[str, bytes]:
    """The drones' keys from the key file at ``path``; made (fresh random keys) when there is none yet."""
    if path.exists():
        return read_keys(docks, path)
    keys = new_keys(docks)
    write_keys(docks, keys, path)
    return keys


CameraLogin = Callable[[str, str], Awaitable[str]]


def rest_login(hub_url: str, token: str, mqtt_url: str = "") -> CameraLogin:
    """Cameras' logins from the hub's API (``token``: an admin's), on ``mqtt_url`` or where the hub says."""

    async def login(device_id: str, unit_id: str) -> str:
        async with httpx.AsyncClient(base_url=hub_url, headers={"Authorization": f"Bearer {token}"},
                                     timeout=10) as http:
            return (await provision(http, device_id, unit_id, "camera")).url(mqtt_url or None)

    return login


class DroneCameras:
    """One camera device per drone of ``fleet`` (id :func:`~sim.stations.camera_id`, unit = the drone).

    An async context manager: entering connects every camera to the broker at ``mqtt_url``; leaving ends
    their publications (each camera says ``stopped``) and then disconnects them. ``cameras`` renders and
    publishes; it is closed on exit (default: 640x360 at 15 fps).
    """

    def __init__(self, fleet: DroneFleetSim, mqtt_url: str, *, cameras: SimCameras | None = None,
                 protocol: int = 5, login: CameraLogin | None = None) -> None:
        self.fleet = fleet
        self.login = login
        mqtt_url = mqtt_url or UNTIL_LOGIN  # with ``login`` the broker comes with each camera's login
        self.cameras = cameras if cameras is not None else SimCameras()
        self.devices: dict[str, DeviceClient] = {}
        for dock in fleet.docks:
            self.devices[dock.drone_id] = DeviceClient(
                camera_id(dock.drone_id), mqtt_url, kind=CAMERA_KIND, unit_id=dock.drone_id, protocol=protocol,
                on_command=functools.partial(self._on_command, dock.drone_id))

    async def __aenter__(self) -> DroneCameras:
        try:
            for drone_id, device in self.devices.items():
                if self.login is not None:  # each camera its own login, as a deployed one has
                    url = await self.login(device.device_id, drone_id)
                    address = BrokerAddress.parse(url)
                    device.set_login(address.username or "", address.password or "", url)
                await device.start(wait=None)
            deadline = time.monotonic() + _CONNECT_WAIT_S
            while time.monotonic() < deadline and not all(d.connected for d in self.devices.values()):
                await asyncio.sleep(0.05)
        except BaseException:  # cancelled while connecting: no __aexit__ follows, so leave no client behind
            await asyncio.shield(self._stop_all())
            raise
        missing = [d.device_id for d in self.devices.values() if not d.connected]
        if missing:
            log.warning("drone cameras not connected yet (retrying): %s", ", ".join(missing))
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.cameras.close()  # first, so the `stopped` events still reach the hub
        finally:
            await self._stop_all()

    async def _stop_all(self) -> None:
        await asyncio.gather(*(self._stop(d) for d in self.devices.values()))

    @staticmethod
    async def _stop(device: DeviceClient) -> None:
        try:
            await device.stop()
        except Exception as exc:  # one stuck client must not keep the others online
            log.warning("%s: stop failed: %s", device.device_id, exc)

    def _on_command(self, drone_id: str, command: Command) -> None:
        device = self.devices[drone_id]
        position = functools.partial(self.fleet.pose, drone_id)
        if not self.cameras.handle(device, command, view="drone", position=position):
            log.info("%s: %s ignored: a camera only does video", device.device_id, command.type)


async def run_drones(docks: list[DroneDock], gcs: tuple[str, int], duration_s: float | None = None,
                     mqtt_url: str | None = None, keys: dict[str, bytes] | None = None,
                     login: CameraLogin | None = None, params: dict[str, float] | None = None) -> None:
    """Fly the simulated drones of ``docks``, talking MAVLink 2 to the ground station at ``gcs``, until cancelled.

    ``keys``: the drones' signing keys (the hub's key file, :func:`drone_keys`); ``{}`` flies them unsigned.
    With ``mqtt_url`` (or ``login``), every drone's camera joins the broker too and streams when the hub asks;
    ``login(device_id, unit_id)`` gives each camera its own login's URL (see :func:`rest_login`).
    ``params``: the autopilots' parameters where they differ from a stock ArduCopter's; by default
    :data:`FLEET_PARAMS`, a police fleet's (link failsafe on), ``{}`` for stock copters.
    """
    params = dict(FLEET_PARAMS) if params is None else params
    async with DroneFleetSim(docks, gcs, keys=keys, params=params) as fleet, contextlib.AsyncExitStack() as stack:
        if mqtt_url is not None or login is not None:
            await stack.enter_async_context(DroneCameras(fleet, mqtt_url or "", login=login))
        if duration_s is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(duration_s)
