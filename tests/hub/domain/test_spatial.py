from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from geo.geodesy import haversine_m, offset
from hub.domain.spatial import Neighbour, SpatialIndex

CENTRE = (34.2610, 117.1859)


def brute_force(points: dict[str, tuple[float, float]], lat: float, lon: float, k: int, max_m: float | None = None,
                predicate: Callable[[str], bool] | None = None) -> list[Neighbour]:
    found = sorted(
        (haversine_m(lat, lon, plat, plon), key)
        for key, (plat, plon) in points.items()
        if (predicate is None or predicate(key))
    )
    return [Neighbour(key, d) for d, key in found if max_m is None or d <= max_m][:k]


def scatter(rng: random.Random, n: int, centre: tuple[float, float], radius_m: float) -> dict[str, tuple[float, float]]:
    return {f"u{i:05d}": offset(*centre, rng.uniform(-radius_m, radius_m), rng.uniform(-radius_m, radius_m))
            for i in range(n)}


def on_cell_edges(rng: random.Random, index: SpatialIndex, n: int, centre: tuple[float, float],
                  radius_m: float) -> list[tuple[float, float]]:
    """Points exactly on (or a hair beside) the grid lines of ``index`` near ``centre``."""
    dlat = math.degrees(index.cell_m / 6_371_008.8)
    dlon = dlat / math.cos(math.radians(centre[0]))
    out = []
    for _ in range(n):
        lat, lon = offset(*centre, rng.uniform(-radius_m, radius_m), rng.uniform(-radius_m, radius_m))
        hair = rng.choice((0.0, 1e-12, -1e-12))
        snap = rng.choice(("lat", "lon", "both"))
        if snap in ("lat", "both"):
            lat = round(lat / dlat) * dlat + hair
        if snap in ("lon", "both"):
            lon = round(lon / dlon) * dlon + hair
        out.append((lat, lon))
    return out


def build(points: dict[str, tuple[float, float]], cell_m: float = 500.0) -> SpatialIndex:
    index = SpatialIndex(cell_m)
    for key, (lat, lon) in points.items():
        index.insert(key, lat, lon)
    return index


def assert_same(got: list[Neighbour], expected: list[Neighbour]) -> None:
    assert [n.key for n in got] == [n.key for n in expected]
    assert [n.distance_m for n in got] == pytest.approx([n.distance_m for n in expected], abs=1e-9)


@pytest.mark.parametrize(
    ("name", "centre", "n", "radius_m", "cell_m"),
    [
        ("dense city", CENTRE, 1500, 3000.0, 500.0),
        ("small cells", CENTRE, 1000, 3000.0, 120.0),
        ("large cells", CENTRE, 500, 3000.0, 4000.0),
        ("sparse region", CENTRE, 200, 60_000.0, 500.0),
        ("far north", (69.65, 18.96), 800, 5000.0, 500.0),
        ("arctic, large cells", (78.22, 15.65), 800, 150_000.0, 25_000.0),
        ("polar, huge cells", (80.0, 30.0), 600, 600_000.0, 200_000.0),
        ("southern hemisphere", (-33.87, 151.21), 800, 5000.0, 500.0),
        ("equator and prime meridian", (0.0, 0.0), 800, 5000.0, 500.0),
    ],
)
def test_knn_matches_brute_force(name: str, centre: tuple[float, float], n: int, radius_m: float,
                                 cell_m: float) -> None:
    rng = random.Random(f"knn {name}")
    points = scatter(rng, n, centre, radius_m)
    index = build(points, cell_m)
    queries = [offset(*centre, rng.uniform(-1.2, 1.2) * radius_m, rng.uniform(-1.2, 1.2) * radius_m)
               for _ in range(60)]
    queries += on_cell_edges(rng, index, 40, centre, radius_m)
    for lat, lon in queries:
        expected = brute_force(points, lat, lon, 20)
        for k in (1, 3, 20):
            assert_same(index.nearest(lat, lon, k), expected[:k])


def test_points_on_cell_edges_are_found() -> None:
    rng = random.Random("edges")
    index = SpatialIndex(500.0, ref_lat=CENTRE[0])
    points = {f"e{i:04d}": p for i, p in enumerate(on_cell_edges(rng, index, 600, CENTRE, 2500.0))}
    for key, (lat, lon) in points.items():
        index.insert(key, lat, lon)
    for lat, lon in on_cell_edges(rng, index, 80, CENTRE, 2500.0):
        assert_same(index.nearest(lat, lon, 10), brute_force(points, lat, lon, 10))


def test_knn_after_moves_and_removals() -> None:
    rng = random.Random("moves")
    points = scatter(rng, 1500, CENTRE, 3000.0)
    index = build(points)
    for step in range(5):
        for key in rng.sample(sorted(points), 600):  # a second of 1 Hz moves for some units
            lat, lon = offset(*points[key], rng.uniform(-40, 40), rng.uniform(-40, 40))
            points[key] = (lat, lon)
            index.move(key, lat, lon)
        for key in rng.sample(sorted(points), 50):
            del points[key]
            index.remove(key)
        for i in range(30):
            key = f"new{step}-{i}"
            points[key] = offset(*CENTRE, rng.uniform(-3000, 3000), rng.uniform(-3000, 3000))
            index.insert(key, *points[key])
        assert len(index) == len(points)
        for _ in range(40):
            lat, lon = offset(*CENTRE, rng.uniform(-3500, 3500), rng.uniform(-3500, 3500))
            assert_same(index.nearest(lat, lon, 5), brute_force(points, lat, lon, 5))


def test_max_distance_and_predicate() -> None:
    rng = random.Random("filters")
    points = scatter(rng, 1000, CENTRE, 3000.0)
    index = build(points)

    def even(key: str) -> bool:
        return int(key[1:]) % 2 == 0

    for _ in range(40):
        lat, lon = offset(*CENTRE, rng.uniform(-3000, 3000), rng.uniform(-3000, 3000))
        for max_m in (0.0, 150.0, 700.0, None):
            assert_same(index.nearest(lat, lon, 25, max_m=max_m, predicate=even),
                        brute_force(points, lat, lon, 25, max_m, even))


def test_iterating_yields_every_point_in_order() -> None:
    rng = random.Random("all")
    points = scatter(rng, 400, CENTRE, 20_000.0)
    index = build(points)
    got = list(index.iter_nearest(*CENTRE))
    assert_same(got, brute_force(points, *CENTRE, len(points)))


def test_iteration_is_lazy() -> None:
    calls: list[str] = []
    rng = random.Random("lazy")
    points = scatter(rng, 5000, CENTRE, 5000.0)
    index = build(points)

    def count(key: str) -> bool:
        calls.append(key)
        return True

    first = next(index.iter_nearest(*CENTRE, predicate=count))
    assert first == brute_force(points, *CENTRE, 1)[0]
    assert len(calls) < 1000  # a handful of cells, not the 5000 points


def test_across_the_antimeridian() -> None:
    index = SpatialIndex(500.0)
    points = {"west": (-17.0, 179.999), "east": (-17.0, -179.999), "far": (-17.0, 179.9)}
    for key, (lat, lon) in points.items():
        index.insert(key, lat, lon)
    assert_same(index.nearest(-17.0, -179.9995, 3), brute_force(points, -17.0, -179.9995, 3))


def test_ties_come_in_key_order() -> None:
    index = SpatialIndex(500.0)
    for key in ("c", "a", "b"):
        index.insert(key, *CENTRE)
    lat, lon = offset(*CENTRE, 100.0, 0.0)
    assert [n.key for n in index.nearest(lat, lon, 3)] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("k", "expected"),
    [(0, []), (-1, []), (1, ["p"]), (5, ["p"])],
)
def test_k_bounds(k: int, expected: list[str]) -> None:
    index = SpatialIndex()
    index.insert("p", *CENTRE)
    assert [n.key for n in index.nearest(*CENTRE, k)] == expected


def test_empty_index() -> None:
    index = SpatialIndex()
    assert index.nearest(*CENTRE, 3) == []
    assert list(index.iter_nearest(*CENTRE)) == []


def test_bookkeeping_and_bad_input() -> None:
    index = SpatialIndex()
    index.insert("a", *CENTRE)
    assert "a" in index and len(index) == 1 and index.position("a") == CENTRE
    with pytest.raises(ValueError, match="already"):
        index.insert("a", *CENTRE)
    with pytest.raises(KeyError):
        index.move("b", *CENTRE)
    with pytest.raises(KeyError):
        index.remove("b")
    for lat, lon in ((91.0, 0.0), (0.0, 181.0), (math.nan, 0.0)):
        with pytest.raises(ValueError):
            index.move("a", lat, lon)
        with pytest.raises(ValueError):
            index.nearest(lat, lon, 1)
    assert index.position("a") == CENTRE  # a refused move changes nothing
    index.remove("a")
    assert "a" not in index and index.nearest(*CENTRE, 1) == []
    for bad in (0.0, -5.0, math.inf):
        with pytest.raises(ValueError):
            SpatialIndex(bad)



@pytest.mark.parametrize("query_lat", [80.0, 76.5])  # near the cell's top edge (cell bound); mid-cell (ring bound)
def test_great_circles_bend_toward_the_pole(query_lat: float) -> None:
    """Across a cell edge, the nearest point lies poleward of the query's latitude, not level with it.

    A bound that scaled the longitude gap by the query's own cosine would put
    that point behind a decoy that is farther away.
    """
    index = SpatialIndex(1_000_000.0, ref_lat=80.0)  # cell 0 spans 71.94..80.93 N
    edge = math.degrees(1_000_000.0 / 6_371_008.8) / math.cos(math.radians(80.0))  # east edge of cell 0
    query = (query_lat, edge - 10.0)
    level = haversine_m(*query, query_lat, edge + 1e-3)
    poleward = min(((query_lat + k / 100, edge + 1e-3) for k in range(1, 90)),
                   key=lambda p: haversine_m(*query, *p))
    assert haversine_m(*query, *poleward) < level - 500.0
    decoy_m = (haversine_m(*query, *poleward) + level) / 2
    points = {"poleward": poleward, "decoy": (query_lat - math.degrees(decoy_m / 6_371_008.8), query[1])}
    for key, (lat, lon) in points.items():
        index.insert(key, lat, lon)
    assert_same(index.nearest(*query, 2), brute_force(points, *query, 2))
    assert index.nearest(*query, 1)[0].key == "poleward"
