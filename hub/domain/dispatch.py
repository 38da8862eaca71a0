"""Dispatch recommendation: the available units that can reach an incident first.

A :class:`Recommender` keeps what dispatch needs of each unit, fed by the
adapters, with every located unit in a :class:`~hub.domain.spatial.SpatialIndex`.
It recommends only ``available``, online units with a fresh fix, of the wanted
kinds and capabilities, by estimated time of arrival, ties by ``unit_id``. ETA:

- ``straight``: great-circle distance x ``detour_factor`` / ``speed_mps``. It grows
  with distance, so the ``count`` nearest eligible units are the answer.
- ``road`` (with a :class:`RoadGraph`): the unit's straight line to its nearest
  node at ``snap_speed_mps``, the network time to the incident's node (one
  Dijkstra from that node serves every unit, the graph being undirected; kept in
  an LRU per node, as incidents repeat places), and the incident's own snap.

Road ETAs are computed for a shortlist taken from the spatial index nearest
first. It is not a fixed size: it grows until no unit further out can beat the
``count``-th ETA found. The bound needs no speed limit: a unit ``d`` metres from
the incident's node is at least ``d - D(n)`` metres from any node ``n`` that lies
``D(n)`` from it (triangle inequality), so its ETA is at least
``min over n of T(n) + max(0, d - D(n)) / snap_speed``, with ``T`` the network
time; a prefix/suffix minimum over the nodes sorted by ``D`` (kept with the cached
route) answers that in O(log nodes). So a unit far by straight line but fastest
by road (the near ones are across a river) is still found. The trade-off: the
shortlist stops at ``shortlist_max`` units to bound the latency, which only bites
in pathological layouts (hundreds of nearer units all cut off from the incident);
``RecommenderStats.shortlist_capped`` counts the calls where the cap ended it.

Fix speed and heading are not used to extrapolate positions: on a street grid a
dead-reckoned position is soon worse than the fix, and a stale fix is excluded
anyway. Pure domain code: no I/O, the time is passed in.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from devices.payloads import Fix
from geo.geodesy import haversine_m
from hub.domain.spatial import DEFAULT_CELL_M, Neighbour, SpatialIndex
from hub.domain.unit_status import UnitStatus

__all__ = ["AVAILABLE", "Candidate", "EtaMethod", "EtaModel", "Recommendation", "Recommender", "RecommenderStats",
           "RoadGraph"]

AVAILABLE: Final[str] = UnitStatus.AVAILABLE.value  # the only status that can be dispatched; a plain str is faster
DEFAULT_ROUTE_CACHE: Final = 64

EtaMethod = Literal["road", "straight"]


class RoadGraph(Protocol):
    """An undirected road network; :class:`sim.city.City` is one."""

    @property
    def nodes(self) -> Mapping[int, tuple[float, float]]:
        """Node id -> (lat, lon)."""
        ...

    def nearest_node(self, lat: float, lon: float) -> int: ...

    def travel_times_from(self, node: int) -> Mapping[int, float]:
        """Fastest travel time in seconds from ``node`` to every reachable node."""
        ...


@dataclass(frozen=True, slots=True)
class Candidate:
    """What dispatch needs to know of a unit. ``fix`` is its newest position (None: never located)."""

    unit_id: str
    kind: str
    capabilities: frozenset[str] = frozenset()
    status: str = AVAILABLE
    online: bool = True
    fix: Fix | None = None


@dataclass(frozen=True, slots=True)
class Recommendation:
    """A unit to send: ``distance_m`` is the straight line; ``fix_age_ms`` is hub time minus fix time."""

    unit_id: str
    eta_s: float
    distance_m: float
    method: EtaMethod
    fix_age_ms: int


@dataclass(frozen=True, slots=True)
class EtaModel:
    """Parameters of the ETA estimate and of the road shortlist."""

    detour_factor: float = 1.3  # road distance / straight distance in a city grid
    speed_mps: float = 9.0  # typical urban average speed (32 km/h) for the straight-line ETA
    snap_speed_mps: float = 5.0  # from a position off the road graph to its nearest node (18 km/h)
    shortlist_max: int = 200  # road ETAs computed at most per recommendation

    def __post_init__(self) -> None:
        for name in ("detour_factor", "speed_mps", "snap_speed_mps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive, got {value}")
        if self.detour_factor < 1.0:
            raise ValueError("detour_factor below 1 would make roads shorter than straight lines")
        if self.shortlist_max < 1:
            raise ValueError("shortlist_max must be at least 1")

    def straight_eta_s(self, distance_m: float) -> float:
        return distance_m * self.detour_factor / self.speed_mps


@dataclass(slots=True)
class RecommenderStats:
    """Counters for metrics and benchmarks."""

    calls: int = 0
    examined: int = 0  # candidates taken from the spatial index
    routes_computed: int = 0  # Dijkstra runs
    route_cache_hits: int = 0
    shortlist_capped: int = 0  # road searches ended by shortlist_max, not by the bound


@dataclass(slots=True)
class _Unit:
    """A unit as kept: mutable, so a 1 Hz fix costs an attribute store rather than a new object."""

    kind: str
    capabilities: frozenset[str]
    status: str
    online: bool
    fix: Fix | None


class _Route:
    """Network times from one incident node, and the lower bound of an ETA by distance (see the module doc)."""

    __slots__ = ("_closer", "_further", "_reach_m", "_snap_speed", "times")

    def __init__(self, graph: RoadGraph, node: int, snap_speed_mps: float) -> None:
        self.times = graph.travel_times_from(node)
        lat, lon = graph.nodes[node]
        nodes = sorted((haversine_m(lat, lon, *graph.nodes[n]), t) for n, t in self.times.items())
        self._snap_speed = snap_speed_mps
        self._reach_m = [d for d, _ in nodes]
        # _closer[k]: least T(n) - D(n)/v of nodes[0..k]; _further[k]: least T(n) of nodes[k..].
        self._closer = list(itertools.accumulate((t - d / snap_speed_mps for d, t in nodes), min))
        self._further = list(itertools.accumulate((t for _, t in reversed(nodes)), min))[::-1]

    def least_time_s(self, distance_m: float) -> float:
        """A lower bound of the time from any point ``distance_m`` from the node to the node."""
        k = bisect.bisect_left(self._reach_m, distance_m)
        least = self._further[k] if k < len(self._further) else math.inf
        if k > 0:
            least = min(least, self._closer[k - 1] + distance_m / self._snap_speed)
        return least


class Recommender:
    """The fleet as dispatch sees it, and :meth:`recommend` over it."""

    def __init__(self, graph: RoadGraph | None = None, *, eta: EtaModel | None = None,
                 cell_m: float = DEFAULT_CELL_M, route_cache_size: int = DEFAULT_ROUTE_CACHE) -> None:
        if route_cache_size < 0:
            raise ValueError("route_cache_size must be >= 0")
        self._eta = eta or EtaModel()
        self.stats = RecommenderStats()
        self._graph = graph
        self._units: dict[str, _Unit] = {}
        self._index = SpatialIndex(cell_m)
        self._route_cache_size = route_cache_size
        self._routes: OrderedDict[int, _Route] = OrderedDict()
        self._snaps: dict[str, tuple[float, float, int, float]] = {}  # unit -> (lat, lon, node, snap metres)

    # ------------------------------------------------------------- the fleet
    def __len__(self) -> int:
        return len(self._units)

    def __contains__(self, unit_id: object) -> bool:
        return unit_id in self._units

    def get(self, unit_id: str) -> Candidate | None:
        u = self._units.get(unit_id)
        return None if u is None else Candidate(unit_id, u.kind, u.capabilities, u.status, u.online, u.fix)

    @property
    def eta(self) -> EtaModel:
        return self._eta

    @property
    def graph(self) -> RoadGraph | None:
        return self._graph

    def set_graph(self, graph: RoadGraph | None) -> None:
        """Use another road graph (or none); cached routes and snaps are dropped."""
        self._graph = graph
        self._routes.clear()
        self._snaps.clear()

    def update_unit(self, candidate: Candidate) -> None:
        """Create or replace a unit with everything it is now (a None fix forgets its position)."""
        c = candidate
        self._place(c.unit_id, c.fix)  # first: bad coordinates change nothing
        self._units[c.unit_id] = _Unit(c.kind, c.capabilities, c.status, c.online, c.fix)

    def move_unit(self, unit_id: str, fix: Fix) -> bool:
        """Take a new fix of a known unit; False (and no change) if it is not newer than the current one."""
        u = self._units[unit_id]
        if u.fix is not None and fix.ts <= u.fix.ts:
            return False
        if u.fix is None:
            self._index.insert(unit_id, fix.lat, fix.lon)
        else:
            self._index.move(unit_id, fix.lat, fix.lon)
        u.fix = fix
        return True

    def set_status(self, unit_id: str, status: str, *, online: bool | None = None) -> None:
        """Change a known unit's status (and, if given, its online flag)."""
        u = self._units[unit_id]
        u.status = status
        if online is not None:
            u.online = online

    def remove_unit(self, unit_id: str) -> bool:
        """Forget a unit; False if it was not known."""
        if self._units.pop(unit_id, None) is None:
            return False
        self._place(unit_id, None)
        return True

    def _place(self, unit_id: str, fix: Fix | None) -> None:
        if fix is None:
            if unit_id in self._index:
                self._index.remove(unit_id)
            self._snaps.pop(unit_id, None)
        elif unit_id in self._index:
            self._index.move(unit_id, fix.lat, fix.lon)
        else:
            self._index.insert(unit_id, fix.lat, fix.lon)

    # -------------------------------------------------------- recommendation
    def recommend(self, lat: float, lon: float, now_ms: int, *, count: int = 3, kinds: Collection[str] | None = None,
                  required_capabilities: frozenset[str] = frozenset(),
                  max_fix_age_ms: int = 60_000) -> list[Recommendation]:
        """The best ``count`` units for an incident at ``(lat, lon)``, soonest ETA first, ties by ``unit_id``.

        Eligible: status ``available``, online, a fix at most ``max_fix_age_ms`` old
        (and at most that far ahead of ``now_ms``: a device clock running ahead
        must not keep a silent unit fresh), of one of ``kinds`` (None: any), with
        all ``required_capabilities``.
        """
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise ValueError(f"incident coordinates out of range: ({lat}, {lon})")
        if count < 0 or max_fix_age_ms < 0:
            raise ValueError("count and max_fix_age_ms must be >= 0")
        self.stats.calls += 1
        if count == 0 or not self._units:
            return []
        eligible = self._eligibility(now_ms, kinds, required_capabilities, max_fix_age_ms)
        nearest = self._index.iter_nearest(lat, lon, predicate=eligible)
        if self._graph is None:
            return self._by_straight_line(nearest, count, now_ms)
        return self._by_road(self._graph, lat, lon, nearest, count, now_ms)

    def _eligibility(self, now_ms: int, kinds: Collection[str] | None, required: frozenset[str],
                     max_fix_age_ms: int) -> Callable[[str], bool]:
        units = self._units
        oldest, newest = now_ms - max_fix_age_ms, now_ms + max_fix_age_ms
        wanted = None if kinds is None else frozenset(kinds)

        def eligible(unit_id: str) -> bool:
            c = units[unit_id]
            return (c.status == AVAILABLE and c.online and c.fix is not None and oldest <= c.fix.ts <= newest
                    and (wanted is None or c.kind in wanted) and required <= c.capabilities)

        return eligible

    def _age_ms(self, unit_id: str, now_ms: int) -> int:
        fix = self._units[unit_id].fix
        return now_ms - fix.ts if fix is not None else 0  # every unit in the index has a fix

    def _by_straight_line(self, nearest: Iterator[Neighbour], count: int, now_ms: int) -> list[Recommendation]:
        out = [Recommendation(key, self._eta.straight_eta_s(d), d, "straight", self._age_ms(key, now_ms))
               for key, d in itertools.islice(nearest, count)]
        self.stats.examined += len(out)
        return out

    def _by_road(self, graph: RoadGraph, lat: float, lon: float, nearest: Iterator[Neighbour], count: int,
                 now_ms: int) -> list[Recommendation]:
        speed = self._eta.snap_speed_mps
        node = graph.nearest_node(lat, lon)
        route = self._route(graph, node)
        incident_snap_m = haversine_m(lat, lon, *graph.nodes[node])
        incident_snap_s = incident_snap_m / speed
        best: list[tuple[float, str, float]] = []  # (eta, unit_id, distance), sorted, at most count
        examined = 0
        for key, d in nearest:
            if len(best) == count and best[-1][0] < incident_snap_s + route.least_time_s(d - incident_snap_m):
                break  # no unit this far or further can arrive sooner than the count-th
            if examined == self._eta.shortlist_max:
                self.stats.shortlist_capped += 1
                break
            examined += 1
            unit_node, snap_m = self._snap(graph, key)
            network_s = route.times.get(unit_node)
            if network_s is None:
                continue  # no road from the unit to the incident
            bisect.insort(best, (snap_m / speed + network_s + incident_snap_s, key, d))
            del best[count:]
        self.stats.examined += examined
        return [Recommendation(key, t, d, "road", self._age_ms(key, now_ms)) for t, key, d in best]

    def _route(self, graph: RoadGraph, node: int) -> _Route:
        route = self._routes.get(node)
        if route is not None:
            self._routes.move_to_end(node)
            self.stats.route_cache_hits += 1
            return route
        route = _Route(graph, node, self._eta.snap_speed_mps)
        self.stats.routes_computed += 1
        if self._route_cache_size:
            self._routes[node] = route
            if len(self._routes) > self._route_cache_size:
                self._routes.popitem(last=False)
        return route

    def _snap(self, graph: RoadGraph, unit_id: str) -> tuple[int, float]:
        """The unit's nearest road node and its straight distance to it, kept while the unit stands still."""
        lat, lon = self._index.position(unit_id)
        cached = self._snaps.get(unit_id)
        if cached is not None and cached[0] == lat and cached[1] == lon:
            return cached[2], cached[3]
        node = graph.nearest_node(lat, lon)
        snap_m = haversine_m(lat, lon, *graph.nodes[node])
        self._snaps[unit_id] = (lat, lon, node, snap_m)
        return node, snap_m
