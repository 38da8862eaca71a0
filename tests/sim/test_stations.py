"""Police stations and drone docks: deterministic, spread out, inside the city."""

from __future__ import annotations

import itertools

import pytest

from geo.geodesy import haversine_m
from sim.city import City, build_city
from sim.stations import drone_docks, police_stations


@pytest.fixture(scope="module")
def city() -> City:
    return build_city()


def test_stations_are_deterministic_distinct_and_well_spread(city: City) -> None:
    stations = police_stations(city, 6)
    assert stations == police_stations(build_city(), 6)
    assert len({s.node for s in stations}) == 6 and len({s.name for s in stations}) == 6
    gaps = [haversine_m(a.lat, a.lon, b.lat, b.lon) for a, b in itertools.combinations(stations, 2)]
    assert min(gaps) > 1000  # a 3.6 km city: six stations at least a kilometre apart
    assert stations[0].name == "Central Police Station"
    assert all((s.lat, s.lon) == city.nodes[s.node] for s in stations)


def test_docks_number_drones_and_system_ids(city: City) -> None:
    docks = drone_docks(police_stations(city, 3), per_station=2)
    assert [d.drone_id for d in docks] == ["UAV-01", "UAV-02", "UAV-03", "UAV-04", "UAV-05", "UAV-06"]
    assert [d.system_id for d in docks] == [1, 2, 3, 4, 5, 6]
    assert docks[0].station_name == docks[1].station_name != docks[2].station_name
    assert 3.5 < haversine_m(docks[0].lat, docks[0].lon, docks[1].lat, docks[1].lon) < 4.5


def test_bad_counts_refused(city: City) -> None:
    with pytest.raises(ValueError):
        police_stations(city, 0)
    with pytest.raises(ValueError):
        drone_docks(police_stations(city, 2), per_station=200)
