"""Police stations on the city's road graph, and the drone docks on their roofs.

Pure and deterministic: the same city gives the same stations, so a demo, a
test and the map agree on where every drone lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from geo.geodesy import bearing_deg, haversine_m, offset
from sim.city import City

__all__ = ["DOCK_AMSL_M", "DroneDock", "PoliceStation", "camera_id", "drone_docks", "fleet_entries",
           "police_stations"]

DOCK_AMSL_M: Final = 40.0  # ground level around Xuzhou, metres above sea level
_COMPASS: Final = ("North", "North-East", "East", "South-East", "South", "South-West", "West", "North-West")
_INNER_SHARE: Final = 0.8  # stations stand inside the ring road, not on the city's edge


@dataclass(frozen=True, slots=True)
class PoliceStation:
    name: str
    node: int
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class DroneDock:
    """Where a drone waits, charges and returns to: its home."""

    drone_id: str
    system_id: int
    lat: float
    lon: float
    station_name: str
    amsl_m: float = DOCK_AMSL_M


def police_stations(city: City, n: int) -> list[PoliceStation]:
    """``n`` stations on road nodes, spread out by farthest-point sampling from the node nearest the centre.

    Farthest-point sampling gives each new station the node farthest from all
    stations so far, which is a good, deterministic cover of the city.
    """
    if not 0 < n <= len(city.node_ids):
        raise ValueError(f"cannot place {n} stations on {len(city.node_ids)} nodes")
    min_lat, min_lon, max_lat, max_lon = city.bounds()
    centre = city.nearest_node((min_lat + max_lat) / 2, (min_lon + max_lon) / 2)
    reach = max(_distance(city, node, centre) for node in city.node_ids)
    candidates = [node for node in city.node_ids if _distance(city, node, centre) <= _INNER_SHARE * reach]
    if n > len(candidates):
        raise ValueError(f"cannot place {n} stations on {len(candidates)} inner nodes")
    chosen = [centre]
    nearest = {node: _distance(city, node, centre) for node in candidates}
    while len(chosen) < n:
        # Ties go to the lowest node id so the result never depends on dict order.
        far = max(candidates, key=lambda node: (nearest[node], -node))
        chosen.append(far)
        for node in candidates:
            nearest[node] = min(nearest[node], _distance(city, node, far))
    names: list[str] = []
    for k, node in enumerate(chosen):
        base = "Central" if k == 0 else _COMPASS[round(bearing_deg(*city.nodes[centre], *city.nodes[node]) / 45) % 8]
        names.append(base if base not in names else f"{base} {sum(x.startswith(base) for x in names) + 1}")
    return [PoliceStation(f"{name} Police Station", node, *city.nodes[node]) for name, node in zip(names, chosen,
                                                                                                   strict=True)]


def drone_docks(stations: list[PoliceStation], per_station: int = 1, first_system_id: int = 1) -> list[DroneDock]:
    """``per_station`` docks a few metres apart on each station, ids ``UAV-01``... and system ids from 1."""
    docks: list[DroneDock] = []
    for station in stations:
        for k in range(per_station):
            number = len(docks) + 1
            # Pads 4 m apart east-west: two drones never share a landing spot.
            lat, lon = offset(station.lat, station.lon, 0.0, 4.0 * k)
            docks.append(DroneDock(f"UAV-{number:02d}", first_system_id + number - 1, lat, lon, station.name))
    if docks and docks[-1].system_id > 250:
        raise ValueError("MAVLink system ids stop at 250 for vehicles here (251-255 are ground stations)")
    return docks


def camera_id(drone_id: str) -> str:
    """The device id of a simulated drone's gimbal camera, an MQTT device of its own."""
    return f"{drone_id}-cam"


def fleet_entries(docks: list[DroneDock]) -> list[dict[str, object]]:
    """The hub's drone fleet file (``FIELDHUB_DRONES``) for these docks; every drone carries a camera."""
    return [{"drone_id": d.drone_id, "system_id": d.system_id, "name": d.drone_id, "camera": camera_id(d.drone_id),
             "dock": {"lat": d.lat, "lon": d.lon, "name": d.station_name, "amsl": d.amsl_m}} for d in docks]


def _distance(city: City, a: int, b: int) -> float:
    return haversine_m(*city.nodes[a], *city.nodes[b])
