"""Drone dispatch end to end: incident -> drone airborne -> arrived over a scene 300 m away, next to physics.

Run: ``fieldhub bench drone-dispatch [--drones 5] [--rounds 4] [--distance 300] [--cruise-alt 30]``. The bench
stack (:mod:`bench.stack`) runs the hub with a MAVLink link on a free loopback UDP port; the drones are simulated
in this process in real time (``speed=1``: the point is wall-clock latency), each on the dock of one police station
of the simulated city, signed, with a police fleet's parameters (:data:`sim.drone_runner.FLEET_PARAMS`: the link
failsafe on, else the hub refuses to dispatch). Each round, once every drone is ``ready``, every drone gets an
incident of its own exactly ``--distance`` m from its dock in a seeded random direction and is sent to it
(``POST /api/v1/incidents/{id}/drone`` naming it). The API is polled every 100 ms: *airborne* is the first poll
that shows the drone at >= 2 m above its dock with the assignment ``acknowledged`` (its arm ACK); *arrived* is the
assignment's ``arrived`` milestone (hub time; the aerial rule dates it back to the zone entry) and when it was
first *seen*. Then the incident is closed, the drone flies home (RTL) and the next round waits for ``ready``.

The simulator's truth, sampled every 20 ms in this process: when the copter left the ground, reached 2 m, and began
to hover over the scene (inside the arrival radius, at >= 0.7 x cruise altitude, ground speed <= 1.5 m/s). The
issue's target is the arrival seen within 5 s of that hover start (PASS/FAIL). The physical minimum is simple
kinematics at the copter's configured limits (:class:`sim.arducopter.CopterConfig`): take off to cruise altitude,
then 300 m level flight, each from rest to rest at the configured speed and acceleration. All times are epoch ms on
one machine's wall clock (the hub's). JSON in ``bench/results/drone-dispatch-<UTC date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import httpx

from bench.drone_kinematics import AIRBORNE_M, RADIUS_M, TURN_SHARE, physical_minimum
from bench.drones import free_udp_port
from bench.report import machine_facts, percentile
from bench.stack import BenchError, BenchStack, add_database_url, run_bench
from devices.tasks import cancel_and_wait
from geo.geodesy import haversine_m, offset
from sim.arducopter import CopterConfig
from sim.city import build_city
from sim.drone_runner import FLEET_PARAMS, write_fleet, write_keys
from sim.drones import DroneFleetSim, new_keys
from sim.stations import DroneDock, drone_docks, police_stations

HOVER_ALT_SHARE: Final = 0.7  # of the cruise altitude: the hub's aerial arrival floor
HOVER_MPS: Final = 1.5
HOVER_LIMIT_S: Final = 5.0  # the issue: arrival recorded within 5 s of hovering over the scene
POLL_S: Final = 0.1
TRUTH_S: Final = 0.02
# Interval name -> (from, to) fields of a Dispatch; the order is the table's.
INTERVALS: Final = {
    "to_acknowledged": ("received_ms", "acknowledged_ms"), "to_liftoff": ("received_ms", "liftoff_ms"),
    "to_2m_truth": ("received_ms", "up_ms"), "to_airborne": ("received_ms", "airborne_seen_ms"),
    "to_arrived": ("received_ms", "arrived_ms"), "to_hover_truth": ("received_ms", "hover_ms"),
    "to_arrival_seen": ("received_ms", "arrival_seen_ms"), "flight_truth": ("liftoff_ms", "hover_ms"),
    "after_hover": ("hover_ms", "arrival_seen_ms"), "detection": ("arrived_ms", "arrival_seen_ms"),
    "post_drone": ("sent_ms", "answered_ms"),
}


# ------------------------------------------------------------------- records
@dataclass(slots=True)
class Dispatch:
    """One dispatch, every time epoch ms on the machine's (the hub's) wall clock; None: never happened."""

    round: int
    drone_id: str
    scene: tuple[float, float]
    incident_id: str = ""
    received_ms: int | None = None  # the incident's received_at: t0
    sent_ms: int | None = None  # POST .../drone sent
    answered_ms: int | None = None  # ... and answered
    status: int | None = None
    acknowledged_ms: int | None = None  # the assignment's milestones (hub time)
    arrived_ms: int | None = None
    airborne_seen_ms: int | None = None  # first poll showing >= 2 m and acknowledged
    arrival_seen_ms: int | None = None  # first poll showing the arrived milestone
    liftoff_ms: int | None = None  # the simulator's truth
    up_ms: int | None = None
    hover_ms: int | None = None
    error: str | None = None
    hover_alt_m: float = 0.0  # the truth's hover floor: 0.7 x the cruise altitude

    def observe_truth(self, now_ms: int, alt_m: float, flying: bool, scene_m: float, speed_mps: float) -> None:
        """One sample of the simulated copter: lift-off, 2 m, and the start of its hover over the scene."""
        if self.liftoff_ms is None and flying and alt_m > 0.05:
            self.liftoff_ms = now_ms
        if self.up_ms is None and alt_m >= AIRBORNE_M:
            self.up_ms = now_ms
        if (self.hover_ms is None and self.up_ms is not None and scene_m <= RADIUS_M
                and alt_m >= self.hover_alt_m and speed_mps <= HOVER_MPS):
            self.hover_ms = now_ms

    def intervals(self) -> dict[str, float | None]:
        """The :data:`INTERVALS` in seconds (``post_drone`` in ms), None where an end is missing."""
        out: dict[str, float | None] = {}
        for name, (a, b) in INTERVALS.items():
            start, end = getattr(self, a), getattr(self, b)
            scale = 1 if name == "post_drone" else 1000
            out[name] = None if start is None or end is None else round((end - start) / scale, 3)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "intervals": self.intervals()}


def summary(values: Sequence[float | None]) -> dict[str, Any]:
    """Nearest-rank p50/p95 and the extremes of the values present, two decimals."""
    o = sorted(v for v in values if v is not None)
    if not o:
        return {"count": 0}
    return {"count": len(o), "min": round(o[0], 2), "p50": round(percentile(o, 50), 2),
            "p95": round(percentile(o, 95), 2), "max": round(o[-1], 2), "mean": round(sum(o) / len(o), 2)}


def verdict(dispatches: Sequence[Dispatch], limit_s: float = HOVER_LIMIT_S) -> bool:
    """PASS only if every dispatch was seen arriving, each within ``limit_s`` of its hover start (truth)."""
    lags = [d.intervals()["after_hover"] for d in dispatches]
    return bool(lags) and all(x is not None and x <= limit_s for x in lags)


def ratio(hub: dict[str, Any], physical_s: float) -> float | None:
    return round(hub["p50"] / physical_s, 2) if hub.get("count") and physical_s > 0 else None


def summarise(dispatches: Sequence[Dispatch], physical: dict[str, float]) -> dict[str, Any]:
    rows = [d.intervals() for d in dispatches]
    s = {name: summary([r[name] for r in rows]) for name in INTERVALS}
    return {**s, "ratio_p50": {"airborne": ratio(s["to_airborne"], physical["airborne_s"]),
                               "arrived": ratio(s["to_arrived"], physical["zone_entry_s"]),
                               "arrival_seen": ratio(s["to_arrival_seen"], physical["over_scene_s"]),
                               "sim_flight": ratio(s["flight_truth"], physical["hub_profile_s"])},
            "pass": verdict(dispatches), "dispatched": sum(d.status == 201 for d in dispatches),
            "arrived": sum(d.arrival_seen_ms is not None for d in dispatches),
            "errors": [f"{d.drone_id} round {d.round}: {d.error}" for d in dispatches if d.error]}


# ---------------------------------------------------------------------- report
def _s(d: dict[str, Any]) -> str:
    return f"p50 {d['p50']:.2f}  p95 {d['p95']:.2f}  max {d['max']:.2f} s (n={d['count']})" if d.get("count") \
        else "none"


def rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """The figures, once, for both the printed table and the markdown block."""
    s, p, c = r["summary"], r["physical"], r["config"]
    q, post = s["ratio_p50"], s["post_drone"]
    alt, dist = c["cruise_alt_m"], c["distance_m"]
    return [
        ("dispatched / arrival seen", f"{s['dispatched']}/{c['dispatches']} / {s['arrived']}/{c['dispatches']}"),
        ("POST .../drone -> 201", f"p50 {post['p50']:.0f}  p95 {post['p95']:.0f} ms" if post.get("count") else "none"),
        ("incident -> acknowledged (arm ACK)", _s(s["to_acknowledged"])),
        ("incident -> lift-off (sim truth)", _s(s["to_liftoff"])),
        ("incident -> 2 m up (sim truth)", _s(s["to_2m_truth"])),
        (f"incident -> airborne seen (>= {AIRBORNE_M:g} m)", _s(s["to_airborne"])),
        ("incident -> arrived (milestone, zone entry)", _s(s["to_arrived"])),
        ("incident -> hover over the scene (sim truth)", _s(s["to_hover_truth"])),
        ("incident -> arrival seen in the API", _s(s["to_arrival_seen"])),
        ("arrival seen - hover start", f"{_s(s['after_hover'])} -> {'PASS' if s['pass'] else 'FAIL'}"
                                       f" (limit {HOVER_LIMIT_S:g} s)"),
        ("arrival seen - arrived milestone", _s(s["detection"])),
        ("sim flight: lift-off -> hover", _s(s["flight_truth"])),
        ("physical minimum from lift-off", f"2 m {p['airborne_s']:.2f} s; climb {alt:g} m {p['climb_s']:.2f} s +"
                                           f" {dist:g} m {p['cruise_s']:.2f} s = {p['over_scene_s']:.2f} s"
                                           f" (zone entry {p['zone_entry_s']:.2f} s); level from"
                                           f" {TURN_SHARE:g} x alt as the hub turns: {p['hub_profile_s']:.2f} s"),
        ("hub / physical, p50", f"airborne {q['airborne']}x; arrived {q['arrived']}x (zone entry);"
                                f" arrival seen {q['arrival_seen']}x; sim flight {q['sim_flight']}x"
                                f" (vs the hub's profile)"),
    ]


def _header(r: dict[str, Any]) -> list[str]:
    m, c, p = r["machine"], r["config"], r["physical"]
    return [f"{m['date']}; {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['kernel']}, Python {m['python']}",
            f"{c['drones']} drones x {c['rounds']} rounds, scenes {c['distance_m']:g} m from the docks, cruise"
            f" {c['cruise_alt_m']:g} m, arrival radius {c['radius_m']:g} m; simulator in real time, its limits"
            f" takeoff {p['takeoff_mps']:g} m/s at {p['accel_z_mps2']:g} m/s2, cruise {p['cruise_mps']:g} m/s at"
            f" {p['accel_mps2']:g} m/s2; API polled every {POLL_S * 1000:.0f} ms; `{r['command']}`"]


def table(r: dict[str, Any]) -> str:
    return "\n".join(["fieldhub bench drone-dispatch", *_header(r), "", *(f"  {k:<46} {v}" for k, v in rows(r))])


def markdown(r: dict[str, Any]) -> str:
    return "\n".join(["### Drone dispatch: incident -> airborne -> over a scene, next to the physical minimum", "",
                      *_header(r), "", "| measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows(r))])


# ------------------------------------------------------------------------- run
def scene_for(dock: DroneDock, rng: random.Random, distance_m: float) -> tuple[float, float]:
    """A point exactly ``distance_m`` from the dock in a random direction."""
    bearing = rng.uniform(0, 2 * math.pi)
    return offset(dock.lat, dock.lon, distance_m * math.cos(bearing), distance_m * math.sin(bearing))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def views(api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    return {v["drone_id"]: v for v in (await api.get("/api/v1/drones")).json()["drones"]}


async def wait_ready(api: httpx.AsyncClient, ids: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        seen = await views(api)
        if all(seen[i]["state"] == "ready" for i in ids):
            return
        if time.monotonic() > deadline:
            raise BenchError("drones not ready within {:g} s: {}".format(timeout_s, ", ".join(
                f"{i} {seen[i]['state']} ({seen[i].get('reason')})" for i in ids if seen[i]["state"] != "ready")))
        await asyncio.sleep(0.5)


async def sample_truth(sim: DroneFleetSim, active: list[Dispatch]) -> None:
    """Until cancelled: feed each active dispatch its copter's true state (``now_ms`` is the sim's clock, which
    runs on this machine's wall clock at ``speed=1``)."""
    while True:
        for d in active:
            copter = sim.drone(d.drone_id).copter
            lat, lon, alt = copter.position()
            d.observe_truth(copter.now_ms, alt, copter.body.flying, haversine_m(lat, lon, *d.scene),
                            copter.ground_speed())
        await asyncio.sleep(TRUTH_S)


async def start(api: httpx.AsyncClient, d: Dispatch) -> None:
    """Create the incident at the scene, then send this drone to it."""
    r = await api.post("/api/v1/incidents", json={
        "category": "bench_drone", "priority": 2, "lat": d.scene[0], "lon": d.scene[1], "arrival_radius_m": RADIUS_M,
        "summary": f"bench drone-dispatch round {d.round}"})
    r.raise_for_status()
    d.incident_id, d.received_ms = r.json()["id"], r.json()["received_at"]
    d.sent_ms = now_ms()
    answer = await api.post(f"/api/v1/incidents/{d.incident_id}/drone", json={"drone_id": d.drone_id})
    d.answered_ms, d.status = now_ms(), answer.status_code
    if answer.status_code != 201:
        d.error = f"dispatch answered {answer.status_code}: {answer.text[:300]}"


async def follow(api: httpx.AsyncClient, ds: list[Dispatch], timeout_s: float) -> None:
    """Poll the API every 100 ms until every dispatch was seen arriving (or failed, or timed out); close each
    incident as soon as its arrival is seen (which sends the drone home)."""
    def close(d: Dispatch, reason: str) -> None:
        closing.append(asyncio.create_task(api.post(f"/api/v1/incidents/{d.incident_id}/close",
                                                    json={"reason": f"bench: {reason}"})))

    closing: list[asyncio.Task[Any]] = []
    for d in ds:
        if d.error is not None and d.incident_id:
            close(d, "not dispatched")
    open_ = [d for d in ds if d.error is None]
    deadline = time.monotonic() + timeout_s
    while open_ and time.monotonic() < deadline:
        tick = time.monotonic()
        drones, incidents = await asyncio.gather(
            views(api), asyncio.gather(*(api.get(f"/api/v1/incidents/{d.incident_id}") for d in open_)))
        seen = now_ms()
        for d, answer in zip(list(open_), incidents, strict=True):
            a = next((x for x in answer.json()["assignments"] if x["unit_id"] == d.drone_id), None)
            if a is None or a["cancelled"] is not None:
                d.error = "assignment cancelled: " + "; ".join(
                    e.get("text") or e.get("reason") or e["type"] for e in answer.json()["log"][-3:])
            else:
                d.acknowledged_ms, d.arrived_ms = a["acknowledged"], a["arrived"]
                position = drones[d.drone_id]["position"] or {}
                if d.airborne_seen_ms is None and d.acknowledged_ms and (position.get("alt_m") or 0) >= AIRBORNE_M:
                    d.airborne_seen_ms = seen
                if d.arrived_ms is not None:
                    d.arrival_seen_ms = seen
            if d.error is not None or d.arrival_seen_ms is not None:
                open_.remove(d)
                close(d, "over the scene" if d.error is None else "assignment ended")
        await asyncio.sleep(max(0.0, POLL_S - (time.monotonic() - tick)))
    for d in open_:
        d.error = f"no arrival within {timeout_s:g} s"
        close(d, "timed out")
    await asyncio.gather(*closing, return_exceptions=True)


async def run_round(api: httpx.AsyncClient, sim: DroneFleetSim, docks: list[DroneDock], k: int,
                    rng: random.Random, args: argparse.Namespace) -> list[Dispatch]:
    await wait_ready(api, [d.drone_id for d in docks], args.ready_timeout)
    ds = [Dispatch(k, dock.drone_id, scene_for(dock, rng, args.distance),
                   hover_alt_m=HOVER_ALT_SHARE * args.cruise_alt) for dock in docks]
    sampler = asyncio.create_task(sample_truth(sim, ds))
    try:
        await asyncio.gather(*(start(api, d) for d in ds))
        await follow(api, ds, args.timeout)
    finally:
        await cancel_and_wait(sampler)
    return ds


async def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    facts, rng = machine_facts(), random.Random(args.seed)
    docks = drone_docks(police_stations(build_city(), args.drones), 1)
    workdir = Path(tempfile.mkdtemp(prefix="fieldhub-bench-drone-dispatch-"))
    keys = new_keys(docks)  # signed, as fielded drones are
    port = free_udp_port()
    stack = BenchStack(workdir, hub_env={
        "FIELDHUB_MAVLINK_URL": f"udpin:127.0.0.1:{port}",
        "FIELDHUB_DRONES": str(write_fleet(docks, workdir / "fleet.json")),
        "FIELDHUB_DRONE_KEYS": str(write_keys(docks, keys, workdir / "keys.json")),
        "FIELDHUB_DRONE_CRUISE_ALT_M": str(args.cruise_alt)}, database_url=args.database_url)
    dispatches: list[Dispatch] = []
    error = None
    try:
        await stack.start()
        async with DroneFleetSim(docks, ("127.0.0.1", port), keys=keys, params=dict(FLEET_PARAMS),
                                 speed=1.0, seed=args.seed) as sim, httpx.AsyncClient(
                base_url=stack.hub_url, headers={"authorization": f"Bearer {stack.token}"}, timeout=30.0) as api:
            for k in range(args.rounds):
                dispatches += await run_round(api, sim, docks, k, rng, args)
    except (BenchError, httpx.HTTPError) as exc:  # what was measured so far is still reported
        error = f"{type(exc).__name__}: {exc}"
    finally:
        await stack.stop_hub()
        stack.close()
    if error is None:
        shutil.rmtree(workdir, ignore_errors=True)  # kept (hub.log, pg/log) only when the run failed
    else:
        print(f"bench drone-dispatch: {error}; hub log in {stack.hub_log}:\n{stack.hub_log_tail()}", file=sys.stderr)
    physical = physical_minimum(CopterConfig(), args.cruise_alt, args.distance)
    return {"machine": facts, "command": command,
            "config": {"drones": len(docks), "rounds": args.rounds, "dispatches": len(docks) * args.rounds,
                       "distance_m": args.distance, "cruise_alt_m": args.cruise_alt, "radius_m": RADIUS_M,
                       "hover_alt_m": HOVER_ALT_SHARE * args.cruise_alt, "hover_mps": HOVER_MPS, "poll_s": POLL_S,
                       "seed": args.seed, "fleet_params": FLEET_PARAMS},
            "physical": physical, "summary": summarise(dispatches, physical),
            "dispatches": [d.to_dict() for d in dispatches], **({"error": error} if error else {})}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fieldhub bench drone-dispatch", description=__doc__.splitlines()[0])
    p.add_argument("--drones", type=int, default=5, help="drones dispatched at once, one per police station (1-10)")
    p.add_argument("--rounds", type=int, default=4, help="rounds; drones x rounds dispatches in all")
    p.add_argument("--distance", type=float, default=300.0, help="metres from each dock to its scene")
    p.add_argument("--cruise-alt", type=float, default=30.0, help="the hub's cruise altitude above the dock (m)")
    p.add_argument("--timeout", type=float, default=240.0, help="seconds a round waits for its arrivals")
    p.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for every drone `ready`")
    p.add_argument("--seed", type=int, default=1)
    add_database_url(p)
    p.add_argument("--out", type=Path, help="JSON results (default bench/results/drone-dispatch-<UTC date>.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (0 < args.drones <= 10 and args.rounds > 0 and 150 <= args.distance <= 3000 and 10 <= args.cruise_alt
            <= 120 and args.timeout > 0):
        print("--drones must be 1-10, --rounds positive, --distance 150-3000 m, --cruise-alt 10-120 m",
              file=sys.stderr)
        return 2
    passed: list[bool] = []

    def report(result: dict[str, Any]) -> tuple[str, str]:
        passed.append(bool(result["summary"]["pass"]) and "error" not in result)
        return table(result), markdown(result)

    code = run_bench("drone-dispatch", lambda command: run(args, command), argv, args.out, report)
    return code or (0 if all(passed) else 1)


if __name__ == "__main__":
    sys.exit(main())
