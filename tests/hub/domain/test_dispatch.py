from __future__ import annotations

import heapq
import math
import random
from collections.abc import Collection
from typing import ClassVar

import pytest

from devices.payloads import Fix
from geo.geodesy import haversine_m, offset
from hub.domain.dispatch import Candidate, EtaModel, Recommendation, Recommender, RoadGraph
from sim.city import City, build_city

CENTRE = (34.2610, 117.1859)
NOW = 1_795_000_000_000


def at(north_m: float, east_m: float) -> tuple[float, float]:
    return offset(*CENTRE, north_m, east_m)


def fix(north_m: float, east_m: float, age_ms: int = 1_000) -> Fix:
    lat, lon = at(north_m, east_m)
    return Fix(NOW - age_ms, lat, lon, speed=0.0)


def unit(unit_id: str, north_m: float = 0.0, east_m: float = 0.0, *, kind: str = "patrol",
         capabilities: Collection[str] = (), status: str = "available", online: bool = True,
         age_ms: int = 1_000) -> Candidate:
    return Candidate(unit_id, kind, frozenset(capabilities), status, online, fix(north_m, east_m, age_ms))


def fleet(*units: Candidate, graph: RoadGraph | None = None, eta: EtaModel | None = None,
          route_cache_size: int = 64) -> Recommender:
    rec = Recommender(graph, eta=eta, route_cache_size=route_cache_size)
    for u in units:
        rec.update_unit(u)
    return rec


def ids(recs: list[Recommendation]) -> list[str]:
    return [r.unit_id for r in recs]


class RiverTown:
    """A hand-made road graph: a river runs north-south between the banks; the only bridge is 2 km north.

    Node positions are metres (north, east) from CENTRE; all roads at 10 m/s.
    """

    PLAN: ClassVar[dict[int, tuple[float, float]]] = {0: (0.0, -100.0),  # west bank, where the incident is
            1: (2000.0, -100.0), 2: (2000.0, 100.0),  # the bridge
            3: (0.0, 100.0),  # east bank, 200 m from the incident as the crow flies
            4: (0.0, -1100.0),  # west bank, 1 km from the incident
            5: (-5000.0, 5000.0)}  # an island with no road to anywhere
    ROADS: ClassVar[tuple[tuple[int, int], ...]] = ((0, 1), (1, 2), (2, 3), (0, 4))

    def __init__(self) -> None:
        self.nodes = {n: at(*p) for n, p in self.PLAN.items()}
        self.adj: dict[int, list[tuple[int, float]]] = {n: [] for n in self.nodes}
        for a, b in self.ROADS:
            t = haversine_m(*self.nodes[a], *self.nodes[b]) / 10.0
            self.adj[a].append((b, t))
            self.adj[b].append((a, t))
        self.dijkstra_runs = 0

    def nearest_node(self, lat: float, lon: float) -> int:
        return min(self.nodes, key=lambda n: haversine_m(lat, lon, *self.nodes[n]))

    def travel_times_from(self, node: int) -> dict[int, float]:
        self.dijkstra_runs += 1
        done: dict[int, float] = {}
        heap = [(0.0, node)]
        while heap:
            t, n = heapq.heappop(heap)
            if n not in done:
                done[n] = t
                heap.extend((t + dt, m) for m, dt in self.adj[n] if m not in done)
                heapq.heapify(heap)
        return done


INCIDENT = at(0.0, -100.0)  # exactly on node 0


# ------------------------------------------------------------------ ETA methods
@pytest.mark.parametrize(
    ("use_graph", "expected", "method"),
    [
        (False, ["across", "west"], "straight"),  # the crow flies over the river
        (True, ["west", "across"], "road"),  # the car drives round by the bridge
    ],
)
def test_orders_by_eta_not_distance(use_graph: bool, expected: list[str], method: str) -> None:
    rec = fleet(unit("across", 0.0, 100.0), unit("west", 0.0, -1100.0), graph=RiverTown() if use_graph else None)
    got = rec.recommend(*INCIDENT, NOW)
    assert ids(got) == expected
    assert {r.method for r in got} == {method}
    assert [r.distance_m for r in got] == pytest.approx([200.0 if r.unit_id == "across" else 1000.0 for r in got],
                                                        rel=1e-3)


def test_eta_values() -> None:
    straight = fleet(unit("across", 0.0, 100.0)).recommend(*INCIDENT, NOW)[0]
    assert straight.eta_s == pytest.approx(200.0 * 1.3 / 9.0, rel=1e-3)
    assert straight.fix_age_ms == 1_000
    # Units on the nodes, incident on a node: the network time is all there is (2000 + 200 + 2000 m at 10 m/s).
    road = fleet(unit("across", 0.0, 100.0), graph=RiverTown()).recommend(*INCIDENT, NOW)[0]
    assert road.eta_s == pytest.approx(420.0, rel=1e-3)
    # 50 m off the road at the slower snap speed, and the incident 30 m off its node.
    model = EtaModel(snap_speed_mps=5.0)
    off_road = fleet(unit("west", 50.0, -1100.0), graph=RiverTown(), eta=model)
    assert off_road.recommend(*at(0.0, -130.0), NOW)[0].eta_s == pytest.approx(100.0 + 50 / 5 + 30 / 5, rel=1e-3)


@pytest.mark.parametrize(
    ("shortlist_max", "expected", "capped"),
    [
        (200, "west", 0),  # the bound keeps the shortlist growing until the far unit is reached
        (10, "trapped00", 1),  # the documented trade-off: a capped shortlist can miss it
    ],
)
def test_shortlist_reaches_a_far_unit_that_is_fastest_by_road(shortlist_max: int, expected: str,
                                                              capped: int) -> None:
    trapped = [unit(f"trapped{i:02d}", 0.0 + 10 * i, 100.0 + 5 * i) for i in range(30)]
    rec = fleet(*trapped, unit("west", 0.0, -1100.0), graph=RiverTown(), eta=EtaModel(shortlist_max=shortlist_max))
    assert ids(rec.recommend(*INCIDENT, NOW, count=1)) == [expected]
    assert rec.stats.shortlist_capped == capped


def test_road_shortlist_agrees_with_all_units_on_the_city() -> None:
    city = build_city()
    rng = random.Random("city")
    min_lat, min_lon, max_lat, max_lon = city.bounds()
    units = [Candidate(f"u{i:03d}", "patrol", frozenset(), rng.choice(("available", "available", "on_scene")), True,
                       Fix(NOW - 1_000, rng.uniform(min_lat, max_lat), rng.uniform(min_lon, max_lon)))
             for i in range(400)]
    for model in (EtaModel(), EtaModel(shortlist_max=1_000)):
        rec = fleet(*units, graph=city, eta=model)
        for _ in range(40):
            lat, lon = rng.uniform(min_lat, max_lat), rng.uniform(min_lon, max_lon)
            got = rec.recommend(lat, lon, NOW, count=5)
            expected = brute_force_road(city, units, lat, lon, 5)
            assert ids(got) == [unit_id for unit_id, _ in expected]
            assert [r.eta_s for r in got] == pytest.approx([eta for _, eta in expected])
        assert rec.stats.shortlist_capped == 0
        # The bound ends the shortlist early: about 30 road ETAs a call, of some 260 eligible units.
        assert rec.stats.examined < 40 * 60


def brute_force_road(city: City, units: list[Candidate], lat: float, lon: float, count: int) -> list[tuple[str, float]]:
    node = city.nearest_node(lat, lon)
    times = city.travel_times_from(node)
    base = haversine_m(lat, lon, *city.nodes[node]) / 5.0
    etas = []
    for u in units:
        if u.status == "available" and u.fix is not None:
            n = city.nearest_node(u.fix.lat, u.fix.lon)
            etas.append((base + times[n] + haversine_m(u.fix.lat, u.fix.lon, *city.nodes[n]) / 5.0, u.unit_id))
    return [(unit_id, eta) for eta, unit_id in sorted(etas)[:count]]


def test_units_with_no_road_to_the_incident_are_left_out() -> None:
    rec = fleet(unit("island", -5000.0, 5000.0), unit("west", 0.0, -1100.0), graph=RiverTown())
    assert ids(rec.recommend(*INCIDENT, NOW)) == ["west"]


def test_routes_are_cached_per_incident_node() -> None:
    town = RiverTown()
    rec = fleet(unit("west", 0.0, -1100.0), graph=town, route_cache_size=1)
    rec.recommend(*INCIDENT, NOW)
    rec.recommend(*at(0.0, -90.0), NOW)  # another point, the same node
    assert town.dijkstra_runs == 1 and rec.stats.route_cache_hits == 1
    rec.recommend(*at(2000.0, 100.0), NOW)  # node 2 evicts node 0
    rec.recommend(*INCIDENT, NOW)
    assert town.dijkstra_runs == 3
    rec.set_graph(town)
    rec.recommend(*at(2000.0, 100.0), NOW)
    assert town.dijkstra_runs == 4  # a new graph starts with no cached routes


# -------------------------------------------------------------------- eligibility
@pytest.mark.parametrize(
    ("age_ms", "max_fix_age_ms", "eligible"),
    [
        (0, 60_000, True),
        (59_999, 60_000, True),
        (60_000, 60_000, True),  # exactly at the limit
        (60_001, 60_000, False),
        (3_600_000, 60_000, False),
        (-5_000, 60_000, True),  # a device clock a little ahead
        (-60_001, 60_000, False),  # a clock far ahead must not keep a silent unit fresh
        (20_000, 10_000, False),
        (20_000, 30_000, True),
    ],
)
@pytest.mark.parametrize("use_graph", [False, True])
def test_only_fresh_fixes(age_ms: int, max_fix_age_ms: int, eligible: bool, use_graph: bool) -> None:
    rec = fleet(unit("u1", 0.0, -1100.0, age_ms=age_ms), graph=RiverTown() if use_graph else None)
    got = rec.recommend(*INCIDENT, NOW, max_fix_age_ms=max_fix_age_ms)
    assert ids(got) == (["u1"] if eligible else [])
    if eligible:
        assert got[0].fix_age_ms == age_ms


@pytest.mark.parametrize(
    ("status", "online", "eligible"),
    [
        ("available", True, True),
        ("available", False, False),
        ("dispatched", True, False),
        ("acknowledged", True, False),
        ("en_route", True, False),
        ("on_scene", True, False),
        ("offline", True, False),
        ("out_of_service", True, False),
    ],
)
def test_only_available_online_units(status: str, online: bool, eligible: bool) -> None:
    rec = fleet(unit("u1", 0.0, 500.0, status=status, online=online), unit("far", 0.0, 3000.0))
    assert ids(rec.recommend(*INCIDENT, NOW)) == (["u1", "far"] if eligible else ["far"])


KINDS_FLEET = (
    unit("car", 0.0, 100.0, kind="patrol", capabilities={"armed"}),
    unit("medic-car", 0.0, 200.0, kind="patrol", capabilities={"armed", "medic"}),
    unit("officer", 0.0, 300.0, kind="foot", capabilities={"medic"}),
    unit("drone", 0.0, 400.0, kind="drone", capabilities={"camera"}),
    unit("k9", 0.0, 500.0, kind="patrol", capabilities={"k9", "medic"}),
)


@pytest.mark.parametrize(
    ("kinds", "required", "expected"),
    [
        (None, set(), ["car", "medic-car", "officer", "drone", "k9"]),
        ({"patrol"}, set(), ["car", "medic-car", "k9"]),
        (["foot", "drone"], set(), ["officer", "drone"]),
        (set(), set(), []),
        (None, {"medic"}, ["medic-car", "officer", "k9"]),
        (None, {"medic", "k9"}, ["k9"]),
        ({"patrol"}, {"medic"}, ["medic-car", "k9"]),
        ({"drone"}, {"medic"}, []),
        (None, {"helicopter"}, []),
    ],
)
def test_kind_and_capability_filters(kinds: Collection[str] | None, required: set[str], expected: list[str]) -> None:
    rec = fleet(*KINDS_FLEET)
    got = rec.recommend(*at(0.0, 0.0), NOW, count=10, kinds=kinds, required_capabilities=frozenset(required))
    assert ids(got) == expected


@pytest.mark.parametrize(("count", "expected"), [(0, 0), (1, 1), (3, 3), (5, 5), (50, 5)])
@pytest.mark.parametrize("use_graph", [False, True])
def test_count(count: int, expected: int, use_graph: bool) -> None:
    rec = fleet(*KINDS_FLEET, graph=RiverTown() if use_graph else None)
    got = rec.recommend(*at(0.0, 0.0), NOW, count=count)
    assert len(got) == expected
    assert got == sorted(got, key=lambda r: (r.eta_s, r.unit_id))


@pytest.mark.parametrize("use_graph", [False, True])
def test_ties_are_broken_by_unit_id(use_graph: bool) -> None:
    rec = fleet(*(unit(u, 0.0, -1100.0) for u in ("c", "a", "d", "b")), graph=RiverTown() if use_graph else None)
    assert ids(rec.recommend(*INCIDENT, NOW, count=3)) == ["a", "b", "c"]


@pytest.mark.parametrize("use_graph", [False, True])
def test_no_candidates(use_graph: bool) -> None:
    graph = RiverTown() if use_graph else None
    assert fleet(graph=graph).recommend(*INCIDENT, NOW) == []
    none_fit = fleet(unit("busy", status="en_route"), unit("old", age_ms=600_000), unit("off", online=False),
                     Candidate("lost", "patrol"), graph=graph)
    assert none_fit.recommend(*INCIDENT, NOW) == []


# ------------------------------------------------------------------------ updates
def test_updates_change_the_answer() -> None:
    rec = fleet(unit("a", 0.0, 1000.0), unit("b", 0.0, 2000.0))
    assert ids(rec.recommend(*at(0.0, 0.0), NOW, count=1)) == ["a"]
    assert rec.move_unit("b", fix(0.0, 100.0, age_ms=500))
    assert ids(rec.recommend(*at(0.0, 0.0), NOW, count=1)) == ["b"]
    # An older fix (late, replayed) never moves a unit back.
    assert not rec.move_unit("b", fix(0.0, 5000.0, age_ms=900))
    assert ids(rec.recommend(*at(0.0, 0.0), NOW, count=1)) == ["b"]
    rec.set_status("b", "dispatched")
    assert ids(rec.recommend(*at(0.0, 0.0), NOW, count=1)) == ["a"]
    rec.set_status("b", "available", online=False)
    assert ids(rec.recommend(*at(0.0, 0.0), NOW, count=1)) == ["a"]
    rec.set_status("b", "available", online=True)
    assert ids(rec.recommend(*at(0.0, 0.0), NOW, count=1)) == ["b"]
    assert rec.remove_unit("b") and not rec.remove_unit("b")
    assert "b" not in rec and len(rec) == 1
    assert ids(rec.recommend(*at(0.0, 0.0), NOW, count=3)) == ["a"]
    rec.update_unit(Candidate("a", "patrol"))  # position forgotten: cannot be recommended
    assert rec.recommend(*at(0.0, 0.0), NOW) == []
    with pytest.raises(KeyError):
        rec.move_unit("nobody", fix(0.0, 0.0))
    with pytest.raises(ValueError):  # a bad position changes nothing
        rec.update_unit(Candidate("x", "patrol", fix=Fix(NOW, 95.0, 0.0)))
    assert "x" not in rec


def test_bad_input_is_refused() -> None:
    rec = fleet(unit("a"))
    for lat, lon in ((91.0, 0.0), (0.0, -181.0), (math.nan, 0.0)):
        with pytest.raises(ValueError):
            rec.recommend(lat, lon, NOW)
    with pytest.raises(ValueError):
        rec.recommend(*CENTRE, NOW, count=-1)
    with pytest.raises(ValueError):
        rec.recommend(*CENTRE, NOW, max_fix_age_ms=-1)
    for bad in ({"speed_mps": 0.0}, {"detour_factor": 0.9}, {"snap_speed_mps": -1.0}, {"shortlist_max": 0},
                {"speed_mps": math.nan}):
        with pytest.raises(ValueError):
            EtaModel(**bad)


def test_a_moved_unit_is_routed_from_where_it_is_now() -> None:
    rec = fleet(unit("a", 0.0, 100.0), graph=RiverTown())
    assert rec.recommend(*INCIDENT, NOW)[0].eta_s == pytest.approx(420.0, rel=1e-3)
    rec.move_unit("a", fix(0.0, -1100.0, age_ms=0))  # it crossed the bridge
    assert rec.recommend(*INCIDENT, NOW)[0].eta_s == pytest.approx(100.0, rel=1e-3)
