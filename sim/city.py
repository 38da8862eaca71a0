"""A synthetic road network around Xuzhou for the simulators, the demo and the tests.

The city is a jittered street grid with faster arterial rows and columns, a
diagonal avenue and an outer ring road joined to the grid by spurs. It is built
deterministically from a seed, so a test, a demo and a browser all see the same
streets. The network itself is a :class:`geo.roads.RoadGraph` (``City`` is that class,
under the name the simulator has always used).
"""

from __future__ import annotations

import math
import random
from typing import Final

from geo.geodesy import haversine_m, offset
from geo.roads import Edge, RoadGraph, RoadKind, RoadPoint

__all__ = ["CENTRE", "City", "Edge", "RoadKind", "RoadPoint", "build_city"]

City = RoadGraph  # the simulator's name for the network it builds

CENTRE: Final = (34.2610, 117.1859)  # Xuzhou, Jiangsu
STREET_MPS: Final = 11.1  # 40 km/h
ARTERIAL_MPS: Final = 16.7  # 60 km/h


def build_city(
    seed: int = 7,
    blocks: int = 12,
    spacing_m: float = 300.0,
    *,
    centre: tuple[float, float] = CENTRE,
    arterial_every: int = 4,
    jitter: float = 0.08,
    missing: float = 0.05,
) -> City:
    """Build the city: ``blocks`` x ``blocks`` blocks of ``spacing_m``, node positions jittered by ``jitter``.

    Every ``arterial_every``-th row and column is an arterial; a diagonal avenue
    crosses the grid, a ring road circles it, and a ``missing`` share of streets
    is left out (never disconnecting the network) so the grid is not all squares.
    """
    if blocks < 2 or spacing_m <= 0:
        raise ValueError("a city needs at least 2x2 blocks and a positive spacing")
    rng = random.Random(seed)
    half = blocks * spacing_m / 2
    side = blocks + 1
    plane: dict[int, tuple[float, float]] = {}  # node -> (north_m, east_m) from the centre
    for i in range(side):
        for j in range(side):
            wobble = jitter * spacing_m
            plane[i * side + j] = (
                i * spacing_m - half + rng.uniform(-wobble, wobble),
                j * spacing_m - half + rng.uniform(-wobble, wobble),
            )
    roads: list[tuple[int, int, RoadKind]] = []
    for i in range(side):
        for j in range(side):
            n = i * side + j
            if j < blocks:  # east-west street on row i
                roads.append((n, n + 1, "arterial" if i % arterial_every == 0 else "street"))
            if i < blocks:  # north-south street on column j
                roads.append((n, n + side, "arterial" if j % arterial_every == 0 else "street"))
            if i == j < blocks:  # the diagonal avenue, through the blocks' middles
                roads.append((n, n + side + 1, "arterial"))

    # Ring road: one node where each arterial leaves the grid, plus evenly spaced ones between.
    exits = sorted(
        {i * side + j for i in range(side) for j in (0, blocks) if i % arterial_every == 0}
        | {i * side + j for j in range(side) for i in (0, blocks) if j % arterial_every == 0}
    )
    radius = half * math.sqrt(2) + spacing_m
    angles = {n: math.atan2(plane[n][0], plane[n][1]) % math.tau for n in exits}
    marks: list[tuple[float, int | None]] = [(a, n) for n, a in angles.items()]
    for k in range(24):
        a = k * math.tau / 24
        if all(abs((a - b + math.pi) % math.tau - math.pi) > math.radians(5) for b in angles.values()):
            marks.append((a, None))
    marks.sort()
    ring: list[int] = []
    for a, exit_node in marks:
        node = len(plane)
        r = radius * rng.uniform(0.98, 1.02)
        plane[node] = (r * math.sin(a), r * math.cos(a))
        ring.append(node)
        if exit_node is not None:
            roads.append((exit_node, node, "arterial"))
    roads += [(u, v, "arterial") for u, v in zip(ring, ring[1:] + ring[:1], strict=True)]

    _drop_streets(roads, len(plane), missing, rng)
    nodes = {n: offset(centre[0], centre[1], north, east) for n, (north, east) in plane.items()}
    edges = [
        Edge(u, v, haversine_m(*nodes[u], *nodes[v]), ARTERIAL_MPS if kind == "arterial" else STREET_MPS, kind)
        for u, v, kind in roads
    ]
    return City(nodes, edges, cell_m=spacing_m)


def _drop_streets(roads: list[tuple[int, int, RoadKind]], n_nodes: int, share: float, rng: random.Random) -> None:
    """Remove about ``share`` of the streets in place, keeping every node reachable and no dead ends."""
    streets = [r for r in roads if r[2] == "street"]
    for road in rng.sample(streets, round(share * len(streets))):
        roads.remove(road)
        degree = [0] * n_nodes
        for u, v, _ in roads:
            degree[u] += 1
            degree[v] += 1
        if degree[road[0]] < 2 or degree[road[1]] < 2 or not _connected(roads, n_nodes):
            roads.append(road)


def _connected(roads: list[tuple[int, int, RoadKind]], n_nodes: int) -> bool:
    adj: list[list[int]] = [[] for _ in range(n_nodes)]
    for u, v, _ in roads:
        adj[u].append(v)
        adj[v].append(u)
    seen = {0}
    stack = [0]
    while stack:
        for m in adj[stack.pop()]:
            if m not in seen:
                seen.add(m)
                stack.append(m)
    return len(seen) == n_nodes
