"""Dispatch recommendation micro-benchmark: 10,000 live units on the simulated city.

Units sit on the roads of ``sim.city.build_city()`` (jittered off them), with a
mix of kinds, capabilities and statuses, some offline and some silent (stale).
Each simulated second applies one fix per reporting unit (1 Hz), churns a few
statuses, then asks for recommendations at random incident points, with a mix
of filters (none, a kind, a capability, a rare kind + capability). Straight-line
and road-network ETAs are timed call by call in this process: this is the pure
domain cost, the part of the incident POST -> dispatch command budget (p99 < 50 ms)
spent choosing the units.

Run: ``.venv/bin/python -m bench.dispatch [--units 10000] [--calls 2000]``.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

from bench.report import machine_facts, percentile
from devices.payloads import Fix
from geo.geodesy import bearing_deg, haversine_m, offset
from hub.domain.dispatch import Candidate, Recommender
from hub.domain.spatial import DEFAULT_CELL_M
from sim.city import City, build_city

START_MS = 1_795_000_000_000
KINDS = (("patrol", 0.60), ("foot", 0.25), ("motorbike", 0.10), ("drone", 0.05))
STATUSES = (("available", 0.55), ("dispatched", 0.03), ("acknowledged", 0.02), ("en_route", 0.10),
            ("on_scene", 0.20), ("out_of_service", 0.10))
CAPABILITIES = (("armed", 0.50), ("traffic", 0.20), ("medic", 0.15), ("k9", 0.03))
OFFLINE_SHARE = 0.05
SILENT_SHARE = 0.03  # stopped reporting minutes ago: their fixes go stale
# (kinds, required capabilities, share of the calls)
FILTERS: tuple[tuple[frozenset[str] | None, frozenset[str], float], ...] = (
    (None, frozenset(), 0.70),
    (frozenset({"patrol"}), frozenset(), 0.15),
    (None, frozenset({"medic"}), 0.10),
    (frozenset({"patrol"}), frozenset({"k9"}), 0.05),
)


@dataclass(slots=True)
class SimUnit:
    unit_id: str
    lat: float
    lon: float
    speed: float
    heading: float
    silent: bool


def pick(rng: random.Random, table: Sequence[tuple[str, float]]) -> str:
    return rng.choices([name for name, _ in table], [w for _, w in table])[0]


def place_units(city: City, n: int, rng: random.Random) -> tuple[list[SimUnit], list[Candidate]]:
    sims, candidates = [], []
    for i in range(n):
        edge = rng.choice(city.edges)
        (lat_a, lon_a), (lat_b, lon_b) = city.nodes[edge.a], city.nodes[edge.b]
        t = rng.random()
        lat, lon = offset(lat_a + t * (lat_b - lat_a), lon_a + t * (lon_b - lon_a),
                          rng.uniform(-25, 25), rng.uniform(-25, 25))
        kind = pick(rng, KINDS)
        moving = rng.random() < 0.4
        speed = (rng.uniform(1.0, 1.8) if kind == "foot" else rng.uniform(3.0, edge.speed_mps)) if moving else 0.0
        silent = rng.random() < SILENT_SHARE
        unit = SimUnit(f"unit-{i:05d}", lat, lon, speed, bearing_deg(lat_a, lon_a, lat_b, lon_b), silent)
        ts = START_MS - (rng.randint(120_000, 600_000) if silent else rng.randint(0, 1_000))
        caps = frozenset(c for c, share in CAPABILITIES if rng.random() < share)
        candidates.append(Candidate(unit.unit_id, kind, caps, pick(rng, STATUSES), rng.random() >= OFFLINE_SHARE,
                                    Fix(ts, lat, lon, speed=speed, heading=unit.heading)))
        sims.append(unit)
    return sims, candidates


def next_fixes(units: list[SimUnit], bounds: tuple[float, float, float, float], now_ms: int,
               rng: random.Random) -> list[tuple[str, Fix]]:
    """One second of movement: every reporting unit sends a fix (moving ones wander, turning back at the edge)."""
    min_lat, min_lon, max_lat, max_lon = bounds
    out = []
    for u in units:
        if u.silent:
            continue
        if u.speed > 0:
            u.heading = (u.heading + rng.gauss(0, 10)) % 360
            rad = math.radians(u.heading)
            u.lat, u.lon = offset(u.lat, u.lon, u.speed * math.cos(rad), u.speed * math.sin(rad))
            if not (min_lat < u.lat < max_lat and min_lon < u.lon < max_lon):
                u.heading = (u.heading + 180) % 360
        out.append((u.unit_id, Fix(now_ms, u.lat, u.lon, acc=5.0, speed=u.speed, heading=u.heading)))
    return out


def summary_ms(samples: Sequence[float]) -> str:
    ordered = sorted(samples)
    return (f"{len(ordered):>6,}  p50 {percentile(ordered, 50):7.3f}  p99 {percentile(ordered, 99):7.3f}  "
            f"max {ordered[-1]:7.3f}  mean {sum(ordered) / len(ordered):7.3f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=2_000, help="recommendations per ETA method")
    parser.add_argument("--per-second", type=int, default=100, help="recommendations per method per simulated second")
    parser.add_argument("--count", type=int, default=3, help="units asked for per recommendation")
    parser.add_argument("--cell-m", type=float, default=DEFAULT_CELL_M)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    proc = psutil.Process()
    rss_start = proc.memory_info().rss
    rng = random.Random(args.seed)
    city = build_city()
    bounds = city.bounds()
    sims, candidates = place_units(city, args.units, rng)
    straight = Recommender(cell_m=args.cell_m)
    road = Recommender(city, cell_m=args.cell_m)
    rss_before_fleet = proc.memory_info().rss
    for rec in (straight, road):
        for c in candidates:
            rec.update_unit(c)
    rss_fleet = proc.memory_info().rss

    latencies: dict[str, list[float]] = {"straight": [], "road": []}
    cold: list[float] = []  # road calls that ran a Dijkstra (route not cached)
    empty = {"straight": 0, "road": 0}
    move_ms: dict[str, list[float]] = {"straight": [], "road": []}
    moves_per_second: list[int] = []
    now_ms = START_MS
    done = 0
    while done < args.calls:
        now_ms += 1_000
        fixes = next_fixes(sims, bounds, now_ms, rng)
        moves_per_second.append(len(fixes))
        for name, rec in (("straight", straight), ("road", road)):
            t0 = time.perf_counter()
            for unit_id, fix in fixes:
                rec.move_unit(unit_id, fix)
            move_ms[name].append((time.perf_counter() - t0) * 1e3)
        for c in rng.sample(candidates, 50):  # status churn: dispatches, arrivals, clears
            status = pick(rng, STATUSES)
            straight.set_status(c.unit_id, status)
            road.set_status(c.unit_id, status)
        batch = min(args.per_second, args.calls - done)
        for _ in range(batch):
            lat, lon = rng.uniform(bounds[0], bounds[2]), rng.uniform(bounds[1], bounds[3])
            kinds, required, _ = rng.choices(FILTERS, [f[2] for f in FILTERS])[0]
            for name, rec in (("straight", straight), ("road", road)):
                routes = rec.stats.routes_computed
                t0 = time.perf_counter()
                got = rec.recommend(lat, lon, now_ms, count=args.count, kinds=kinds, required_capabilities=required)
                latencies[name].append((time.perf_counter() - t0) * 1e3)
                empty[name] += not got
                if rec.stats.routes_computed > routes:
                    cold.append(latencies[name][-1])
        done += batch
    rss_end = proc.memory_info().rss

    m = machine_facts()
    min_lat, min_lon, max_lat, max_lon = bounds
    height_km = haversine_m(min_lat, min_lon, max_lat, min_lon) / 1e3
    width_km = haversine_m(min_lat, min_lon, min_lat, max_lon) / 1e3
    mib = 2**20
    print(f"fieldhub bench dispatch  {m['date']}")
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['kernel']}, Python {m['python']}")
    print(f"fleet: {args.units:,} units on the simulated city ({len(city.nodes)} nodes, {len(city.edges)} roads, "
          f"{height_km:.1f} x {width_km:.1f} km), cell {args.cell_m:.0f} m, count={args.count}, "
          f"{len(moves_per_second)} simulated seconds")
    print("latency per call (ms):")
    for name, rec in (("straight", straight), ("road", road)):
        s = rec.stats
        extra = (f"  routes computed {s.routes_computed}, cache hits {s.route_cache_hits}, "
                 f"shortlist capped {s.shortlist_capped}") if name == "road" else ""
        print(f"  recommend {name:<8} {summary_ms(latencies[name])}  "
              f"examined/call {s.examined / s.calls:.1f}, empty {empty[name]}{extra}")
    if cold:
        print(f"    of which with a Dijkstra {summary_ms(cold)}")
    print(f"apply one second of fleet updates ({moves_per_second[0]:,} moves), ms:")
    for name in ("straight", "road"):
        per_move_us = sum(move_ms[name]) / sum(moves_per_second) * 1e3
        print(f"  {name:<18} {summary_ms(move_ms[name])}  ({per_move_us:.2f} us per move)")
    print(f"memory: process RSS {rss_end / mib:.1f} MiB (start {rss_start / mib:.1f}, city and fleet data "
          f"{(rss_before_fleet - rss_start) / mib:.1f}, two recommenders with {args.units:,} units each "
          f"{(rss_fleet - rss_before_fleet) / mib:.1f}, after the run {(rss_end - rss_fleet) / mib:+.1f})")


if __name__ == "__main__":
    main()
