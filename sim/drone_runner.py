"""Running the drone simulator next to a hub: the docks of a city's police stations, the fleet file for the hub,
and the drones' gimbal cameras.

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
import time
from pathlib import Path
from typing import Final

from devices.client import DeviceClient
from devices.payloads import Command
from sim.city import build_city
from sim.drones import DroneFleetSim
from sim.stations import DroneDock, camera_id, drone_docks, fleet_entries, police_stations
from sim.video_devices import SimCameras

__all__ = ["CAMERA_KIND", "DroneCameras", "city_docks", "run_drones", "write_fleet"]

log = logging.getLogger(__name__)

CAMERA_KIND: Final = "camera"
_CONNECT_WAIT_S: Final = 5.0  # then the clients go on retrying in the background


def city_docks(seed: int, stations: int = 4, per_station: int = 1) -> list[DroneDock]:
    """Drone docks at ``stations`` police stations of the simulated city of ``seed`` (the hub's map)."""
    return drone_docks(police_stations(build_city(seed=seed), stations), per_station)


def write_fleet(docks: list[DroneDock], path: Path) -> Path:
    """The hub's fleet file (``FIELDHUB_DRONES``) for these docks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fleet_entries(docks), indent=1) + "\n")
    return path


class DroneCameras:
    """One camera device per drone of ``fleet`` (id :func:`~sim.stations.camera_id`, unit = the drone).

    An async context manager: entering connects every camera to the broker at ``mqtt_url``; leaving ends
    their publications (each camera says ``stopped``) and then disconnects them. ``cameras`` renders and
    publishes; it is closed on exit (default: 640x360 at 15 fps).
    """

    def __init__(self, fleet: DroneFleetSim, mqtt_url: str, *, cameras: SimCameras | None = None,
                 protocol: int = 5) -> None:
        self.fleet = fleet
        self.cameras = cameras if cameras is not None else SimCameras()
        self.devices: dict[str, DeviceClient] = {}
        for dock in fleet.docks:
            self.devices[dock.drone_id] = DeviceClient(
                camera_id(dock.drone_id), mqtt_url, kind=CAMERA_KIND, unit_id=dock.drone_id, protocol=protocol,
                on_command=functools.partial(self._on_command, dock.drone_id))

    async def __aenter__(self) -> DroneCameras:
        try:
            for device in self.devices.values():
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
                     mqtt_url: str | None = None) -> None:
    """Fly the simulated drones of ``docks``, talking MAVLink 2 to the ground station at ``gcs``, until cancelled.

    With ``mqtt_url``, every drone's camera joins the broker there too and streams when the hub asks.
    """
    async with DroneFleetSim(docks, gcs) as fleet, contextlib.AsyncExitStack() as stack:
        if mqtt_url is not None:
            await stack.enter_async_context(DroneCameras(fleet, mqtt_url))
        if duration_s is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(duration_s)
