from __future__ import annotations

import itertools
import json
import math
import random
import time

import pytest

from geo.geodesy import bearing_deg, haversine_m, offset, segment_distance_m
from sim.city import ARTERIAL_MPS, CENTRE, STREET_MPS, City, build_city


@pytest.fixture(scope="module")
def city() -> City:
    return build_city()


def random_points(city: City, n: int, seed: int, margin: float = 0.01) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    min_lat, min_lon, max_lat, max_lon = city.bounds()
    return [
        (rng.uniform(min_lat - margin, max_lat + margin), rng.uniform(min_lon - margin, max_lon + margin))
        for _ in range(n)
    ]


# ------------------------------------------------------------------ geodesy
def test_offset_and_haversine_agree() -> None:
    lat, lon = offset(*CENTRE, 300.0, 400.0)
    assert haversine_m(*CENTRE, lat, lon) == pytest.approx(500.0, abs=0.05)
    # One degree of latitude is about 111.2 km on the mean sphere.
    assert haversine_m(34.0, 117.0, 35.0, 117.0) == pytest.approx(111_195, rel=1e-3)


def test_bearings_of_the_compass_points() -> None:
    for north, east, expected in ((100, 0, 0), (0, 100, 90), (-100, 0, 180), (0, -100, 270), (100, 100, 45)):
        lat, lon = offset(*CENTRE, north, east)
        bearing = bearing_deg(*CENTRE, lat, lon)
        assert abs((bearing - expected + 180) % 360 - 180) < 0.1, (north, east, bearing)


def test_segment_distance() -> None:
    a = offset(*CENTRE, 0.0, -100.0)
    b = offset(*CENTRE, 0.0, 100.0)
    p = offset(*CENTRE, 30.0, 50.0)
    distance, along = segment_distance_m(*p, *a, *b)
    assert distance == pytest.approx(30.0, abs=0.05)
    assert along == pytest.approx(150.0, abs=0.05)
    beyond = offset(*CENTRE, 0.0, 140.0)  # past B: the distance is to B itself
    assert segment_distance_m(*beyond, *a, *b) == pytest.approx((40.0, 200.0), abs=0.05)


# --------------------------------------------------------------- structure
def test_every_node_is_reachable(city: City) -> None:
    for start in (city.node_ids[0], city.node_ids[len(city.node_ids) // 2], city.node_ids[-1]):
        assert set(city.travel_times_from(start)) == set(city.nodes)


def test_no_dead_ends_loops_or_duplicate_roads(city: City) -> None:
    pairs = [frozenset((e.a, e.b)) for e in city.edges]
    assert all(len(p) == 2 for p in pairs)
    assert len(set(pairs)) == len(pairs)
    assert min(len(city.neighbours(n)) for n in city.nodes) >= 2


def test_same_seed_same_city_other_seed_other_city() -> None:
    a, b, c = build_city(seed=3), build_city(seed=3), build_city(seed=4)
    assert a.nodes == b.nodes
    assert a.edges == b.edges
    assert a.to_geojson() == b.to_geojson()
    assert a.nodes != c.nodes


def test_size_follows_blocks_and_spacing() -> None:
    small = build_city(blocks=4, spacing_m=200.0, missing=0.0)
    grid = 5 * 5
    assert len(small.nodes) > grid  # the grid plus the ring road
    streets = [e for e in small.edges if e.a < grid and e.b < grid and e.b - e.a in (1, 5)]
    assert len(streets) == 2 * 4 * 5
    for e in streets:
        assert 200.0 * 0.6 < e.length_m < 200.0 * 1.4  # jitter moves each end by at most 8 %
    big = build_city()
    min_lat, min_lon, max_lat, max_lon = big.bounds()
    assert min_lat < CENTRE[0] < max_lat and min_lon < CENTRE[1] < max_lon
    width = haversine_m(CENTRE[0], min_lon, CENTRE[0], max_lon)
    assert 3600.0 < width < 7000.0


def test_edge_lengths_are_haversine(city: City) -> None:
    for e in city.edges:
        assert e.length_m == pytest.approx(haversine_m(*city.nodes[e.a], *city.nodes[e.b]), abs=1e-6)
        assert e.length_m > 50.0


def test_speed_limits_by_kind(city: City) -> None:
    kinds = {e.kind for e in city.edges}
    assert kinds == {"street", "arterial"}
    for e in city.edges:
        assert e.speed_mps == (ARTERIAL_MPS if e.kind == "arterial" else STREET_MPS)
    assert 10.0 < STREET_MPS < 12.0 < 16.0 < ARTERIAL_MPS < 18.0


def test_not_just_squares(city: City) -> None:
    # The diagonal avenue and the ring road give bearings that a pure grid never has.
    oblique = 0
    for e in city.edges:
        bearing = bearing_deg(*city.nodes[e.a], *city.nodes[e.b]) % 90
        if 20 < bearing < 70:
            oblique += 1
    assert oblique >= 10


# ----------------------------------------------------------------- routing
def test_shortest_path_is_a_valid_route_with_the_dijkstra_time(city: City) -> None:
    rng = random.Random(1)
    for _ in range(40):
        a, b = rng.sample(city.node_ids, 2)
        path = city.shortest_path(a, b)
        assert path[0] == a and path[-1] == b
        assert len(set(path)) == len(path)
        for u, v in itertools.pairwise(path):
            city.edge(u, v)  # raises KeyError when u and v are not adjacent
        assert city.path_time_s(path) == pytest.approx(city.travel_times_from(a)[b], abs=1e-9)


def test_travel_times_are_optimal(city: City) -> None:
    # The Bellman condition: no road offers a shortcut to any node.
    times = city.travel_times_from(city.node_ids[7])
    assert times[city.node_ids[7]] == 0.0
    for e in city.edges:
        assert times[e.b] <= times[e.a] + e.travel_s + 1e-9
        assert times[e.a] <= times[e.b] + e.travel_s + 1e-9


def test_routes_prefer_arterials(city: City) -> None:
    rng = random.Random(2)
    routed = on_arterials = 0.0
    for _ in range(30):
        a, b = rng.sample(city.node_ids, 2)
        path = city.shortest_path(a, b)
        assert city.path_length_m(path) >= haversine_m(*city.nodes[a], *city.nodes[b]) - 1e-6
        for u, v in itertools.pairwise(path):
            edge = city.edge(u, v)
            routed += edge.length_m
            on_arterials += edge.length_m if edge.kind == "arterial" else 0.0
    network_share = sum(e.length_m for e in city.edges if e.kind == "arterial") / sum(e.length_m for e in city.edges)
    assert on_arterials / routed > network_share + 0.15  # fastest routes seek out the faster roads


def test_shortest_path_to_itself(city: City) -> None:
    assert city.shortest_path(5, 5) == [5]


def test_unreachable_node_is_an_error() -> None:
    island = City({0: CENTRE, 1: offset(*CENTRE, 0, 300), 2: offset(*CENTRE, 900, 900)}, [])
    with pytest.raises(ValueError, match="no road"):
        island.shortest_path(0, 2)


# ---------------------------------------------------------------- look-ups
def test_nearest_node_matches_brute_force(city: City) -> None:
    for lat, lon in [*random_points(city, 400, seed=3), (34.0, 116.0), (40.0, 117.0)]:
        found = city.nearest_node(lat, lon)
        best = min(haversine_m(lat, lon, *p) for p in city.nodes.values())
        assert haversine_m(lat, lon, *city.nodes[found]) <= best + 0.5


def test_nearest_node_of_a_node_is_itself(city: City) -> None:
    for n in city.node_ids:
        assert city.nearest_node(*city.nodes[n]) == n


def test_nearest_node_is_fast(city: City) -> None:
    points = random_points(city, 5000, seed=4)
    started = time.perf_counter()
    for lat, lon in points:
        city.nearest_node(lat, lon)
    assert time.perf_counter() - started < 2.0  # about 0.1 s on a laptop


def test_nearest_road_point_matches_brute_force(city: City) -> None:
    for lat, lon in random_points(city, 200, seed=5):
        point = city.nearest_road_point(lat, lon)
        best = min(segment_distance_m(lat, lon, *city.nodes[e.a], *city.nodes[e.b])[0] for e in city.edges)
        assert point.distance_m == pytest.approx(best, abs=0.5)
        edge = city.edge(point.a, point.b)
        assert 0.0 <= point.along_m <= edge.length_m + 1e-9
        # The returned point really lies on the road at the reported distance.
        (lat_a, lon_a), (lat_b, lon_b) = city.nodes[point.a], city.nodes[point.b]
        t = point.along_m / edge.length_m
        foot = (lat_a + (lat_b - lat_a) * t, lon_a + (lon_b - lon_a) * t)
        assert haversine_m(lat, lon, *foot) == pytest.approx(point.distance_m, abs=0.5)


# ------------------------------------------------------------------ export
def test_geojson(city: City) -> None:
    doc = json.loads(json.dumps(city.to_geojson()))
    assert doc["type"] == "FeatureCollection"
    assert len(doc["features"]) == len(city.edges)
    min_lat, min_lon, max_lat, max_lon = city.bounds()
    assert doc["bbox"] == pytest.approx([min_lon, min_lat, max_lon, max_lat])
    for feature, e in zip(doc["features"], city.edges, strict=True):
        assert feature["type"] == "Feature"
        assert feature["geometry"]["type"] == "LineString"
        assert feature["properties"]["kind"] == e.kind
        (lon_a, lat_a), (lon_b, lat_b) = feature["geometry"]["coordinates"]
        assert math.isclose(lat_a, city.nodes[e.a][0], abs_tol=1e-6)
        assert math.isclose(lon_a, city.nodes[e.a][1], abs_tol=1e-6)
        assert math.isclose(lat_b, city.nodes[e.b][0], abs_tol=1e-6)
        assert math.isclose(lon_b, city.nodes[e.b][1], abs_tol=1e-6)
