"""Drone commands end to end: API -> COMMAND_ACK round trip with N drones flying, and link-loss detection.

Run: ``fieldhub bench drones [--drones 20] [--seconds 120] [--interval 2] [--cuts 10]``. The bench stack
(:mod:`bench.stack`) runs the hub with a MAVLink link on a free loopback UDP port; the drones are simulated
in this process, each on its own socket. Every drone is launched (one ``goto`` 300-800 m out, 40 m up) and
followed until the hub has sent it on its way. Then ``--seconds`` of load: a new ``goto`` near its target
per drone every ``--interval`` s, staggered, one client task each; POST -> 202 covers the hub's DO_SET_MODE
and DO_REPOSITION ACKs and the audit row in PostgreSQL. CPU is sampled once a second. The raw limit, same
run, load stopped: our own ground station (system 251, own socket) sends DO_REPOSITION straight to one
drone, alone and after DO_SET_MODE as the hub does; then the hub's goto to that drone, unloaded. Link loss:
``--cuts`` drones in turn lose their radio for 8 s; time until the API says ``lost`` (polled every 50 ms;
PASS within 5 s) and ``ok`` again. Then RTL all. JSON in ``bench/results/drones-<UTC date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

os.environ.setdefault("MAVLINK20", "1")  # before pymavlink is imported, here and in the simulator
import httpx
import psutil
from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from bench.drones_report import CUT_S, cpu_summary, link_verdict, markdown, ratio, summary, table
from bench.probes import cpu_seconds, machine_busy_seconds
from bench.processes import python_env
from bench.report import machine_facts
from bench.stack import BenchError, BenchStack, add_database_url, run_bench
from geo.geodesy import offset
from sim.city import build_city
from sim.drone_runner import FLEET_PARAMS, write_keys
from sim.drones import DroneFleetSim, new_keys
from sim.stations import DroneDock, drone_docks, fleet_entries, police_stations

M = mavlink2
ALT_M = 40.0
LINK_TIMEOUT_S = 3.0
GCS_SYSTEM_ID = 251
GUIDED = 4
T = TypeVar("T")
Targets = dict[str, tuple[float, float]]


# ------------------------------------------------------------- ground station
class RawGcs(asyncio.DatagramProtocol):
    """A bare MAVLink 2 ground station on its own socket: the drone answers to the sender's address."""

    def __init__(self, system_id: int) -> None:
        self.mav = M.MAVLink(self, srcSystem=GCS_SYSTEM_ID, srcComponent=190)
        self.system_id, self.addr = system_id, ("127.0.0.1", 0)
        self.transport: asyncio.DatagramTransport | None = None
        self.waiter: tuple[int, asyncio.Future[int]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def write(self, buf: bytes) -> None:  # pymavlink's MAVLink.send writes here
        assert self.transport is not None
        self.transport.sendto(buf, self.addr)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        for msg in self.mav.parse_buffer(data) or ():
            if msg.get_type() == "COMMAND_ACK" and self.waiter and msg.command == self.waiter[0] \
                    and not self.waiter[1].done():
                self.waiter[1].set_result(msg.result)

    async def command(self, msg: Any) -> float:
        """Send one command; ms until its ACCEPTED ack (raises on a refusal or after 2 s)."""
        self.waiter = (msg.command, asyncio.get_running_loop().create_future())
        t0 = time.perf_counter()
        self.mav.send(msg)
        if await asyncio.wait_for(self.waiter[1], 2.0) != M.MAV_RESULT_ACCEPTED:
            raise BenchError(f"drone refused command {msg.command}")
        return (time.perf_counter() - t0) * 1000

    def reposition(self, lat: float, lon: float) -> Any:  # exactly what the hub's Vehicle.goto sends
        return M.MAVLink_command_int_message(
            self.system_id, 1, M.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT, M.MAV_CMD_DO_REPOSITION, 0, 0, -1,
            M.MAV_DO_REPOSITION_FLAGS_CHANGE_MODE, 0, math.nan, round(lat * 1e7), round(lon * 1e7), ALT_M)

    def set_mode(self) -> Any:
        return M.MAVLink_command_long_message(self.system_id, 1, M.MAV_CMD_DO_SET_MODE, 0,
                                              M.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, GUIDED, 0, 0, 0, 0, 0)


# ------------------------------------------------------------------------- run
def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def near(lat: float, lon: float, rng: random.Random, low_m: float, high_m: float) -> tuple[float, float]:
    bearing, dist = rng.uniform(0, 2 * math.pi), rng.uniform(low_m, high_m)
    return offset(lat, lon, dist * math.cos(bearing), dist * math.sin(bearing))


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, every_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not reached within {timeout_s:g} s")
        await asyncio.sleep(every_s)


async def sample_cpu(procs: dict[str, psutil.Process | None], stop: asyncio.Event) -> dict[str, list[float]]:
    """% of one core per process tree, per 1 s window, until ``stop``; plus the hub's RSS in MiB."""
    me = psutil.Process()  # own CPU only: the hub and broker are this process's children

    def read() -> dict[str, float | None]:
        return {"bench": sum(me.cpu_times()[:2]), **{k: cpu_seconds(p) for k, p in procs.items()}}

    out: dict[str, list[float]] = {k: [] for k in ("bench", *procs, "hub_rss_mib")}
    t0, c0 = time.monotonic(), read()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        t1, c1 = time.monotonic(), read()
        for k, v in c1.items():
            if v is not None and c0[k] is not None:
                out[k].append(100 * (v - c0[k]) / (t1 - t0))  # type: ignore[operator]
        with contextlib.suppress(psutil.Error, AttributeError):
            out["hub_rss_mib"].append(procs["hub"].memory_info().rss / 2**20)  # type: ignore[union-attr]
        t0, c0 = t1, c1
    return out


async def sampled(procs: dict[str, psutil.Process | None], work: Awaitable[T]) -> tuple[dict[str, list[float]], T]:
    """Run ``work`` while the CPU is sampled; the samples and its result."""
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_cpu(procs, stop))
    try:
        result = await work
    finally:
        stop.set()
    return await sampler, result


async def sampled_window(procs: dict[str, psutil.Process | None], seconds: float
                         ) -> tuple[dict[str, list[float]], float, float]:
    """``seconds`` of CPU samples of ``procs``: the samples, the window's wall time, and how many of the machine's
    cores were busy meanwhile (everything on it, the bench's own processes included)."""
    busy0, t0 = machine_busy_seconds(), time.monotonic()
    cpu, _ = await sampled(procs, asyncio.sleep(seconds))
    wall = time.monotonic() - t0
    return cpu, wall, round((machine_busy_seconds() - busy0) / wall, 2)


async def create_operator_token(stack: BenchStack) -> str:
    """A drone_operator token through the hub's own CLI against the stack's database."""
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "fieldhub", "token", "create", "--role", "drone_operator",
                         "--name", "bench-op"], env=python_env(FIELDHUB_DATABASE_URL=stack.database_url),
        cwd=stack.workdir, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise BenchError(f"token create failed: {proc.stderr[-500:]}")
    return proc.stdout.strip().splitlines()[-1]


async def timed_goto(api: httpx.AsyncClient, drone_id: str, lat: float, lon: float) -> tuple[float, int | str]:
    t0 = time.perf_counter()
    try:
        status: int | str = (await api.post(f"/api/v1/drones/{drone_id}/goto",
                                             json={"lat": lat, "lon": lon, "alt": ALT_M})).status_code
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    return (time.perf_counter() - t0) * 1000, status


async def views(api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    return {v["drone_id"]: v for v in (await api.get("/api/v1/drones")).json()["drones"]}


async def launch(api: httpx.AsyncClient, docks: list[DroneDock], rng: random.Random) -> tuple[list[float], Targets]:
    """One goto per drone, all at once; waits until the hub has also sent each its goto after the climb."""
    targets = {d.drone_id: near(d.lat, d.lon, rng, 300, 800) for d in docks}
    answers = await asyncio.gather(*(timed_goto(api, i, *xy) for i, xy in targets.items()))
    if any(s != 202 for _, s in answers):
        raise BenchError(f"launch failed: {[s for _, s in answers]}")

    async def en_route() -> bool:
        trails = await asyncio.gather(*(api.get(f"/api/v1/drones/{i}/commands") for i in targets))
        return all(sum(c["command"] == "goto" and c["result"] == "accepted" for c in t.json()["commands"]) >= 2
                   for t in trails)
    await until(en_route, 120, "all drones en route", every_s=1.0)
    return [ms for ms, _ in answers], targets


async def load(api: httpx.AsyncClient, targets: Targets, args: argparse.Namespace,
               rng: random.Random) -> tuple[list[float], Counter[str], float]:
    """Each drone a new goto every interval, staggered; round trips of the 202s, failures by status."""
    round_trips: list[float] = []
    failures: Counter[str] = Counter()
    start = time.monotonic()

    async def drive(k: int, drone_id: str) -> None:
        due = start + k * args.interval / len(targets)
        while due < start + args.seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            ms, status = await timed_goto(api, drone_id, *near(*targets[drone_id], rng, 0, 100))
            if status == 202:
                round_trips.append(ms)
            else:
                failures[str(status)] += 1
            due += args.interval  # a fixed schedule: a slow answer does not lower the offered rate
    await asyncio.gather(*(drive(k, i) for k, i in enumerate(targets)))
    return round_trips, failures, time.monotonic() - start


async def raw_series(sim: DroneFleetSim, dock: DroneDock, target: tuple[float, float], n: int,
                     rng: random.Random) -> tuple[list[float], list[float]]:
    """DO_REPOSITION alone, then DO_SET_MODE + DO_REPOSITION, ``n`` each, sequential, from our own socket."""
    gcs = RawGcs(dock.system_id)
    key = sim.keys.get(dock.drone_id)
    if key is not None:  # the drone signs, so it hears signed commands only
        gcs.mav.signing.secret_key, gcs.mav.signing.sign_outgoing = key, True
        gcs.mav.signing.timestamp = int((time.time() - 1_420_070_400) * 100_000)  # 10 us since 2015-01-01
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: gcs, local_addr=("127.0.0.1", 0))
    try:
        gcs.addr = sim.drone(dock.drone_id).local_addr
        alone = [await gcs.command(gcs.reposition(*near(*target, rng, 0, 100))) for _ in range(n)]
        pair = [await gcs.command(gcs.set_mode()) + await gcs.command(gcs.reposition(*near(*target, rng, 0, 100)))
                for _ in range(n)]
    finally:
        transport.close()
    return alone, pair


async def link_cuts(api: httpx.AsyncClient, sim: DroneFleetSim, ids: list[str]) -> list[dict[str, Any]]:
    """Cut one drone's radio at a time; seconds from the cut to ``lost`` and from its end to ``ok``."""
    cuts = []
    for drone_id in ids:
        t_cut = time.monotonic()
        sim.cut_link(drone_id, CUT_S)
        seen: dict[str, float] = {}
        for want, deadline in (("lost", t_cut + CUT_S), ("ok", t_cut + CUT_S + 10)):
            while time.monotonic() < deadline and (want == "lost" or "lost" in seen):
                if (await views(api))[drone_id]["link"] == want:
                    seen[want] = time.monotonic()  # an upper bound: the change happened within the last poll
                    break
                await asyncio.sleep(0.05)
        cuts.append({"drone_id": drone_id, "detect_s": round(seen["lost"] - t_cut, 3) if "lost" in seen else None,
                     "recover_s": round(seen["ok"] - t_cut - CUT_S, 3) if "ok" in seen else None})
    return cuts


async def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    facts, rng, cores = machine_facts(), random.Random(args.seed), os.cpu_count() or 1
    docks = drone_docks(police_stations(build_city(), math.ceil(args.drones / 2)), 2)[:args.drones]
    ids = [d.drone_id for d in docks]
    workdir = Path(tempfile.mkdtemp(prefix="fieldhub-bench-drones-"))
    (workdir / "fleet.json").write_text(json.dumps(fleet_entries(docks)))
    keys = new_keys(docks)  # signed, as fielded drones are
    port = free_udp_port()
    stack = BenchStack(workdir, hub_env={"FIELDHUB_MAVLINK_URL": f"udpin:127.0.0.1:{port}",
                                         "FIELDHUB_DRONES": str(workdir / "fleet.json"),
                                         "FIELDHUB_DRONE_KEYS": str(write_keys(docks, keys, workdir / "keys.json")),
                                         "FIELDHUB_DRONE_LINK_TIMEOUT_S": str(LINK_TIMEOUT_S)},
                       database_url=args.database_url)
    try:
        await stack.start()
        headers = {"authorization": f"Bearer {await create_operator_token(stack)}"}
        # A police fleet's parameters (link failsafe on): with a stock autopilot's no drone is ever `ready`.
        async with DroneFleetSim(docks, ("127.0.0.1", port), seed=args.seed, keys=keys,
                                 params=dict(FLEET_PARAMS)) as sim, httpx.AsyncClient(
                base_url=stack.hub_url, headers=headers, timeout=30.0,
                limits=httpx.Limits(max_connections=len(ids) + 4)) as api:
            async def all_ready() -> bool:
                return all(v["link"] == "ok" and v["state"] == "ready" for v in (await views(api)).values())
            await until(all_ready, 60, "all drones ready with link ok")
            launch_ms, targets = await launch(api, docks, rng)
            procs = {"hub": stack.hub_process(), "postgres": stack.postgres_process()}
            baseline = await sampled(procs, asyncio.sleep(args.baseline))
            cpu, (round_trips, failures, load_s) = await sampled(procs, load(api, targets, args, rng))
            reposition, pair = await raw_series(sim, docks[0], targets[ids[0]], args.raw, rng)
            hub_idle = [ms for ms, s in [await timed_goto(api, ids[0], *near(*targets[ids[0]], rng, 0, 100))
                                         for _ in range(args.raw)] if s == 202]
            cuts = await link_cuts(api, sim, ids[:args.cuts])
            rtl = await asyncio.gather(*(api.post(f"/api/v1/drones/{i}/rtl") for i in ids), return_exceptions=True)
    finally:
        await stack.stop_hub()
        stack.close()
    shutil.rmtree(workdir, ignore_errors=True)  # kept (with hub.log) only when the run failed
    detect = [c["detect_s"] for c in cuts]
    lo: dict[str, Any] = {"round_trip_ms": summary(round_trips), "failures": dict(failures),
                          "rate_per_s": round((len(round_trips) + sum(failures.values())) / load_s, 2),
                          "cpu": {k: cpu_summary(cpu[k], cores) for k in ("hub", "postgres", "bench")},
                          "hub_rss_mib": round(max(cpu["hub_rss_mib"], default=0), 1)}
    raw: dict[str, Any] = {"drone": ids[0], "reposition_ms": summary(reposition), "pair_ms": summary(pair),
           "hub_idle_ms": summary(hub_idle)}
    return {
        "machine": facts, "command": command,
        "config": {"drones": len(ids), "seconds": args.seconds, "interval_s": args.interval, "raw": args.raw,
                   "cuts": args.cuts, "cut_s": CUT_S, "link_timeout_s": LINK_TIMEOUT_S, "seed": args.seed},
        "launch_ms": summary(launch_ms), "baseline_cpu": {"hub": cpu_summary(baseline[0]["hub"], cores)},
        "load": lo, "raw": raw,
        "ratio": {"loaded_vs_raw": ratio(lo["round_trip_ms"], raw["reposition_ms"]),
                  "idle_vs_pair": ratio(raw["hub_idle_ms"], raw["pair_ms"])},
        "link_loss": {"cuts": cuts, "detect_s": summary([d for d in detect if d is not None]),
                      "recover_s": summary([c["recover_s"] for c in cuts if c["recover_s"] is not None]),
                      "pass": link_verdict(detect)},
        "rtl": {"accepted": sum(getattr(x, "status_code", None) == 202 for x in rtl)},
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fieldhub bench drones", description=__doc__.splitlines()[0])
    p.add_argument("--drones", type=int, default=20, help="simulated drones, two per police station (max 250)")
    p.add_argument("--seconds", type=float, default=120.0, help="length of the load phase")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between one drone's gotos under load")
    p.add_argument("--baseline", type=float, default=10.0, help="seconds of flight without commands, CPU sampled")
    p.add_argument("--raw", type=int, default=200, help="sequential commands per raw and idle-hub series")
    p.add_argument("--cuts", type=int, default=10, help="link cuts, one drone at a time")
    p.add_argument("--seed", type=int, default=1)
    add_database_url(p)
    p.add_argument("--out", type=Path, help="JSON results (default bench/results/drones-<UTC date>.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 < args.drones <= 250 or args.seconds <= 0 or args.interval <= 0 or args.raw < 1 or args.cuts < 0:
        print("--drones must be 1-250; --seconds, --interval, --raw positive; --cuts >= 0", file=sys.stderr)
        return 2
    args.cuts = min(args.cuts, args.drones)
    return run_bench("drones", lambda command: run(args, command), argv, args.out,
                     lambda result: (table(result), markdown(result)))


if __name__ == "__main__":
    sys.exit(main())
