"""Running the drone simulator next to a hub: the docks of a city's police stations and the fleet file for the hub."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sim.city import build_city
from sim.drones import DroneFleetSim
from sim.stations import DroneDock, drone_docks, fleet_entries, police_stations

__all__ = ["city_docks", "run_drones", "write_fleet"]


def city_docks(seed: int, stations: int = 4, per_station: int = 1) -> list[DroneDock]:
    """Drone docks at ``stations`` police stations of the simulated city of ``seed`` (the hub's map)."""
    return drone_docks(police_stations(build_city(seed=seed), stations), per_station)


def write_fleet(docks: list[DroneDock], path: Path) -> Path:
    """The hub's fleet file (``FIELDHUB_DRONES``) for these docks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fleet_entries(docks), indent=1) + "\n")
    return path


async def run_drones(docks: list[DroneDock], gcs: tuple[str, int], duration_s: float | None = None) -> None:
    """Fly the simulated drones of ``docks``, talking MAVLink 2 to the ground station at ``gcs``, until cancelled."""
    async with DroneFleetSim(docks, gcs):
        if duration_s is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(duration_s)
