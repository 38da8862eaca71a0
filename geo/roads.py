"""A road network: nodes, undirected roads, nearest-point look-ups, fastest routes and GeoJSON.

The data model both the hub (base map, dispatch ETAs, map overlays) and the simulator (driving units)
use; where a network comes from is not its business (the simulator's synthetic city is one,
see ``sim.city.build_city``). Routing is Dijkstra by travel time; position look-ups use a
bucket grid so that thousands of calls per second stay cheap.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from geo.geodesy import EARTH_RADIUS_M, grid_ring

__all__ = ["Edge", "RoadGraph", "RoadKind", "RoadPoint"]

RoadKind = Literal["street", "arterial"]


@dataclass(frozen=True, slots=True)
class Edge:
    """An undirected road segment between two nodes."""

    a: int
    b: int
    length_m: float
    speed_mps: float
    kind: RoadKind

    @property
    def travel_s(self) -> float:
        return self.length_m / self.speed_mps

    def other(self, node: int) -> int:
        return self.b if node == self.a else self.a


@dataclass(frozen=True, slots=True)
class RoadPoint:
    """The point of the network nearest to a query: ``along_m`` metres from ``a`` towards ``b``."""

    a: int
    b: int
    along_m: float
    distance_m: float


class _BucketIndex:
    """Items in square cells of a local plane; nearest-item search over growing rings of cells."""

    def __init__(self, cell_m: float) -> None:
        self.cell_m = cell_m
        self.cells: dict[tuple[int, int], list[int]] = {}
        self.items: set[int] = set()
        self.extent = (0, 0, -1, -1)  # (min i, min j, max i, max j) of the occupied cells

    def add(self, item: int, x0: float, y0: float, x1: float, y1: float) -> None:
        """Register ``item`` in every cell its bounding box touches."""
        i0, i1 = math.floor(min(x0, x1) / self.cell_m), math.floor(max(x0, x1) / self.cell_m)
        j0, j1 = math.floor(min(y0, y1) / self.cell_m), math.floor(max(y0, y1) / self.cell_m)
        for i in range(i0, i1 + 1):
            for j in range(j0, j1 + 1):
                self.cells.setdefault((i, j), []).append(item)
        if not self.items:
            self.extent = (i0, j0, i1, j1)
        lo_i, lo_j, hi_i, hi_j = self.extent
        self.extent = (min(lo_i, i0), min(lo_j, j0), max(hi_i, i1), max(hi_j, j1))
        self.items.add(item)

    def nearest(self, x: float, y: float, distance: Callable[[int], float]) -> tuple[int, float]:
        if not self.items:
            raise ValueError("nearest item of an empty index")
        ci, cj = math.floor(x / self.cell_m), math.floor(y / self.cell_m)
        lo_i, lo_j, hi_i, hi_j = self.extent
        reach = max(ci - lo_i, hi_i - ci, cj - lo_j, hi_j - cj)
        if reach > max(hi_i - lo_i, hi_j - lo_j) + 2:
            # Far outside the city: a plain scan beats walking empty rings.
            best = min(self.items, key=distance)
            return best, distance(best)
        best_item, best_d = -1, math.inf
        for r in range(reach + 1):
            for cell in grid_ring(ci, cj, r):
                for item in self.cells.get(cell, ()):
                    d = distance(item)
                    if d < best_d:
                        best_item, best_d = item, d
            # Anything in ring r + 1 or beyond is at least r cells away.
            if best_item >= 0 and best_d <= r * self.cell_m:
                break
        return best_item, best_d


class RoadGraph:
    """Nodes ``id -> (lat, lon)`` joined by undirected :class:`Edge` roads."""

    def __init__(self, nodes: dict[int, tuple[float, float]], edges: Iterable[Edge], cell_m: float = 300.0) -> None:
        self.nodes = dict(nodes)
        self.edges = list(edges)
        self.node_ids = sorted(self.nodes)
        self._adj: dict[int, list[tuple[int, Edge]]] = {n: [] for n in self.nodes}
        self._by_pair: dict[tuple[int, int], Edge] = {}
        for e in self.edges:
            self._adj[e.a].append((e.b, e))
            self._adj[e.b].append((e.a, e))
            self._by_pair[(e.a, e.b)] = self._by_pair[(e.b, e.a)] = e
        lats = [p[0] for p in self.nodes.values()]
        lons = [p[1] for p in self.nodes.values()]
        self._origin = (sum(lats) / len(lats), sum(lons) / len(lons))
        self._xy = {n: self._plane(lat, lon) for n, (lat, lon) in self.nodes.items()}
        self._node_index = _BucketIndex(cell_m)
        for n, (x, y) in self._xy.items():
            self._node_index.add(n, x, y, x, y)
        self._edge_index = _BucketIndex(cell_m)
        for k, e in enumerate(self.edges):
            (xa, ya), (xb, yb) = self._xy[e.a], self._xy[e.b]
            self._edge_index.add(k, xa, ya, xb, yb)

    def _plane(self, lat: float, lon: float) -> tuple[float, float]:
        k = math.radians(1.0) * EARTH_RADIUS_M
        return (lon - self._origin[1]) * math.cos(math.radians(self._origin[0])) * k, (lat - self._origin[0]) * k

    # ------------------------------------------------------------- look-ups
    def neighbours(self, node: int) -> list[tuple[int, Edge]]:
        return self._adj[node]

    def edge(self, a: int, b: int) -> Edge:
        """The road between two adjacent nodes; KeyError if they are not adjacent."""
        return self._by_pair[(a, b)]

    def nearest_node(self, lat: float, lon: float) -> int:
        x, y = self._plane(lat, lon)

        def distance(n: int) -> float:
            nx, ny = self._xy[n]
            return math.hypot(nx - x, ny - y)

        return self._node_index.nearest(x, y, distance)[0]

    def nearest_road_point(self, lat: float, lon: float) -> RoadPoint:
        """Where a car would stop for an address at ``(lat, lon)``: the closest point on any road."""
        x, y = self._plane(lat, lon)

        def foot(k: int) -> tuple[float, float]:
            e = self.edges[k]
            (xa, ya), (xb, yb) = self._xy[e.a], self._xy[e.b]
            dx, dy = xb - xa, yb - ya
            t = max(0.0, min(1.0, ((x - xa) * dx + (y - ya) * dy) / (dx * dx + dy * dy or 1.0)))
            return math.hypot(xa + t * dx - x, ya + t * dy - y), t

        k, d = self._edge_index.nearest(x, y, lambda k: foot(k)[0])
        e = self.edges[k]
        return RoadPoint(e.a, e.b, foot(k)[1] * e.length_m, d)

    def bounds(self) -> tuple[float, float, float, float]:
        """``(min_lat, min_lon, max_lat, max_lon)`` of all nodes."""
        lats = [p[0] for p in self.nodes.values()]
        lons = [p[1] for p in self.nodes.values()]
        return min(lats), min(lons), max(lats), max(lons)

    # -------------------------------------------------------------- routing
    def travel_times_from(self, node: int) -> dict[int, float]:
        """Fastest travel time in seconds from ``node`` to every reachable node."""
        return self._dijkstra(node, None)[0]

    def shortest_path(self, a: int, b: int) -> list[int]:
        """Fastest route ``[a, ..., b]``; ValueError if ``b`` cannot be reached."""
        times, prev = self._dijkstra(a, b)
        if b not in times:
            raise ValueError(f"no road from node {a} to node {b}")
        path = [b]
        while path[-1] != a:
            path.append(prev[path[-1]])
        path.reverse()
        return path

    def path_time_s(self, path: list[int]) -> float:
        return sum(self.edge(u, v).travel_s for u, v in itertools.pairwise(path))

    def path_length_m(self, path: list[int]) -> float:
        return sum(self.edge(u, v).length_m for u, v in itertools.pairwise(path))

    def _dijkstra(self, source: int, target: int | None) -> tuple[dict[int, float], dict[int, int]]:
        done: dict[int, float] = {}
        best: dict[int, float] = {source: 0.0}
        prev: dict[int, int] = {}
        heap = [(0.0, source)]
        while heap:
            t, n = heapq.heappop(heap)
            if n in done:
                continue
            done[n] = t
            if n == target:
                break
            for m, e in self._adj[n]:
                tm = t + e.travel_s
                if m not in done and tm < best.get(m, math.inf):
                    best[m] = tm
                    prev[m] = n
                    heapq.heappush(heap, (tm, m))
        return done, prev

    # -------------------------------------------------------------- export
    def to_geojson(self) -> dict[str, Any]:
        """A FeatureCollection with one LineString per road, ``kind`` "street" or "arterial"."""
        features = []
        for e in self.edges:
            (lat_a, lon_a), (lat_b, lon_b) = self.nodes[e.a], self.nodes[e.b]
            features.append(
                {
                    "type": "Feature",
                    "geometry": {
                        "type": "LineString",
                        "coordinates": [[round(lon_a, 6), round(lat_a, 6)], [round(lon_b, 6), round(lat_b, 6)]],
                    },
                    "properties": {"kind": e.kind, "speed": e.speed_mps},
                }
            )
        min_lat, min_lon, max_lat, max_lon = self.bounds()
        return {"type": "FeatureCollection", "bbox": [min_lon, min_lat, max_lon, max_lat], "features": features}
