"""Live video through the hub: N streams at 720p30 x M viewers each, fps, CPU, latency, first frame.

Run: ``fieldhub bench video [--streams 8] [--viewers 4] [--seconds 180]``. The bench stack
(:mod:`bench.stack`) runs the hub as its own process (recording on, as deployed). One 10 s 1280x720 loop
is rendered with frame codes and VP8-encoded once (:mod:`bench.video_load`); ``--streams`` publishers in
this process replay it over WHIP at 30 fps with an admin token, each from another key frame and another
phase of the 33 ms frame interval, and jump to the next key frame when the hub sends a PLI. First
``--baseline`` s with no viewers (the hub's cost of ingest and recording alone); then ``--viewers`` WHEP
viewers per stream in two child processes (:mod:`bench.video_viewers`): one viewer per stream decodes
every picture and reads its frame code (latency = decode time minus the send of that loop frame, on the
machine's one monotonic clock), the others count whole encoded frames without decoding. ``--seconds`` of
load, CPU sampled once a second (hub, PostgreSQL, publishers, both viewer processes; the whole machine
too, so other work shows). Then ``--first`` new viewers, one at a time, each timed from its POST to its
first decoded picture. Last, with the hub stopped: the raw limit, one publisher straight to one aiortc
viewer with the same loop, ``--raw-seconds``. JSON in ``bench/results/video-<UTC date>.json``.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.drones import sampled, until
from bench.probes import find_process, machine_busy_seconds, scrape
from bench.processes import python_env
from bench.report import machine_facts
from bench.stack import BenchError, BenchStack, add_database_url, run_bench
from bench.video_load import FPS, DecodingViewer, LoopPublisher, encode_loop, frame_number, raw_pair
from bench.video_stats import (
    cores_summary,
    fps_of,
    fps_summary,
    latencies_ms,
    markdown,
    pairs,
    summary,
    table,
    verdicts,
    viewers_per_core,
)
from bench.video_viewers import ViewerProcess
from video.client import WhipPublisher

__all__ = ["build_parser", "main", "run"]

LOOP_FRAMES = 300
GOP = 60
SETTLE_S = 5.0
RELAY_COUNTERS = ("frames_in", "keyframes_in", "frames_out", "keyframe_requests", "viewer_keyframe_requests",
                  "gated", "dropped_to_slow_viewer")


async def create_token(stack: BenchStack, role: str) -> str:
    """An API token through the hub's own CLI against the stack's database."""
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "fieldhub", "token", "create", "--role", role,
                         "--name", f"bench-{role}"],
        env=python_env(FIELDHUB_DATABASE_URL=stack.database_url), cwd=stack.workdir, capture_output=True, text=True,
        timeout=60)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise BenchError(f"token create failed: {proc.stderr[-500:]}")
    return proc.stdout.strip().splitlines()[-1]


async def relay_counters(api: httpx.AsyncClient) -> dict[str, float]:
    prefix = "fieldhub_video_relay_total{counter="
    with contextlib.suppress(httpx.HTTPError):
        return {k[len(prefix):-1]: v for k, v in (await scrape(api)).items() if k.startswith(prefix)}
    return {}


async def first_frames(hub_url: str, token: str, stream_ids: list[str], n: int,
                       http: httpx.AsyncClient) -> tuple[list[float], int]:
    """Seconds from POST to the first decoded picture for ``n`` new viewers, one at a time; and the failures."""
    times: list[float] = []
    failed = 0
    for i in range(n):
        viewer = DecodingViewer(f"{hub_url}/whep/{stream_ids[i % len(stream_ids)]}", token, http)
        t0 = time.monotonic()
        try:
            await viewer.whep.start()
            picture = await viewer.first_picture(10.0)
            times.append(time.monotonic() - t0)
            if frame_number(picture) is None:
                failed += 1  # a picture, but not a whole one: the relay should start a viewer at a key frame
        except Exception:  # a refusal or a timeout is a result here, not the end of the run
            failed += 1
        finally:
            await viewer.stop()
        await asyncio.sleep(1.0)  # the relay rate-limits key-frame requests; do not measure the limiter
    return times, failed


async def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    facts = machine_facts()
    loop = await asyncio.to_thread(encode_loop, LOOP_FRAMES, GOP, args.kbps)
    workdir = Path(tempfile.mkdtemp(prefix="fieldhub-bench-video-"))
    stack = BenchStack(workdir, hub_env={} if args.record else {"FIELDHUB_VIDEO_RECORDING": "false"},
                       database_url=args.database_url)
    loads = [LoopPublisher(loop, (k * GOP) % LOOP_FRAMES, k / (args.streams * FPS)) for k in range(args.streams)]
    publishers: list[WhipPublisher] = []
    children = {name: ViewerProcess(workdir / f"{name}.log") for name in ("decoders", "counters")}
    seen: dict[str, list[dict[str, Any]]] = {}
    http = httpx.AsyncClient(timeout=30.0)  # WHIP/WHEP signalling; open until every session has ended
    try:
        await stack.start()
        admin = await create_token(stack, "admin")
        dispatcher = {"authorization": f"Bearer {stack.token}"}
        async with httpx.AsyncClient(base_url=stack.hub_url, headers=dispatcher, timeout=30.0) as api:
            for k in range(args.streams):
                (await api.put(f"/api/v1/units/bench-u{k + 1}", json={
                    "name": f"Bench unit {k + 1}", "devices": [f"bench-cam{k + 1}"]})).raise_for_status()
            for k, lp in enumerate(loads):
                publishers.append(await lp.publish(f"{stack.hub_url}/whip/bench-cam{k + 1}", admin, http))
            ids = [p.stream_id or "" for p in publishers]

            async def flowing() -> bool:
                return all(lp.sent > FPS for lp in loads)
            await until(flowing, 30, "all publishers sending")
            procs = {"hub": stack.hub_process(), "postgres": stack.postgres_process()}
            await asyncio.sleep(SETTLE_S)
            ingest, _ = await sampled(procs, asyncio.sleep(args.baseline))

            await children["decoders"].start(stack.hub_url, stack.token, [(i, True) for i in ids])
            await children["counters"].start(stack.hub_url, stack.token,
                                             [(i, False) for i in ids for _ in range(args.viewers - 1)])
            procs.update({k: find_process(c.proc.pid if c.proc else None) for k, c in children.items()})
            await asyncio.sleep(SETTLE_S)
            for lp in loads:
                lp.late_max_s = 0.0  # schedule slips are counted for the load window only
            relay0, start, busy0 = await relay_counters(api), time.monotonic(), machine_busy_seconds()
            cpu, _ = await sampled(procs, asyncio.sleep(args.seconds))
            end, busy1, relay1 = time.monotonic(), machine_busy_seconds(), await relay_counters(api)
            late_ms = round(1000 * max(lp.late_max_s for lp in loads), 1)
            listed = (await api.get("/api/v1/streams")).json()["streams"]
            first, first_failed = await first_frames(stack.hub_url, stack.token, ids, args.first, http)
            for name, child in children.items():
                seen[name] = await child.stop()
    finally:
        for child in children.values():
            await child.close()
        for publisher in publishers:
            with contextlib.suppress(Exception):
                await publisher.stop()
        await http.aclose()
        await stack.stop_hub()
        stack.close()
    raw_pub, raw_seen = await raw_pair(loop, args.raw_seconds)
    shutil.rmtree(workdir, ignore_errors=True)  # kept (with the hub's and viewers' logs) only when the run failed

    viewers = [*seen["decoders"], *seen["counters"]]
    sends = {sid: pairs(lp.sends) for sid, lp in zip(ids, loads, strict=True)}
    if args.samples is not None:  # the raw series, to look into a result (large: ~1 MB per viewer-minute)
        args.samples.write_text(json.dumps({"start": start, "end": end, "sends": sends, "viewers": viewers}))
    lat: list[float] = []
    unmatched = 0
    for v in seen["decoders"]:
        values, missed = latencies_ms(sends[v["stream_id"]], pairs(v["pictures"]), start, end)
        lat += values
        unmatched += missed
    raw_lat, _ = latencies_ms(pairs(raw_pub.sends), pairs(raw_seen.pictures), raw_seen.arrivals[0] + 2.0
                              if raw_seen.arrivals else 0.0)  # past the connection's first seconds
    per_viewer = [fps_of(v["arrivals"], start, end) for v in viewers]
    fps = {**fps_summary(per_viewer), "per_viewer": [v["mean"] for v in per_viewer]}
    hub_cpu, ingest_cpu = cores_summary(cpu["hub"]), cores_summary(ingest["hub"])
    latency: dict[str, Any] = {**summary(lat), "unreadable": sum(v["unreadable"] for v in seen["decoders"]),
                               "unmatched": unmatched}
    ff = summary(first, 2)
    raw: dict[str, Any] = {"latency_ms": summary(raw_lat), "sent": raw_pub.sent, "decoded": len(raw_seen.arrivals)}
    bench_cpu = [sum(x) for x in zip(cpu["bench"], cpu["decoders"], cpu["counters"], strict=False)]
    load_cpu = {**{k: cores_summary(v) for k, v in cpu.items() if k != "hub_rss_mib"},
                "bench_total": cores_summary(bench_cpu)}
    machine = round((busy1 - busy0) / (end - start), 2)
    ours = sum(load_cpu[k].get("mean_cores", 0.0) for k in ("hub", "postgres", "bench_total"))
    return {
        "machine": facts, "command": command,
        "config": {"streams": args.streams, "viewers_per_stream": args.viewers, "decoders": len(seen["decoders"]),
                   "seconds": args.seconds, "baseline_s": args.baseline, "first": args.first,
                   "raw_seconds": args.raw_seconds, "recording": args.record},
        "loop": {"frames": LOOP_FRAMES, "gop": GOP, "width": loop.width, "height": loop.height,
                 "kbit_per_s": round(loop.kbit_per_s), "encode_s": loop.encode_s},
        "ingest_cpu": {k: cores_summary(v) for k, v in ingest.items() if k != "hub_rss_mib"},
        "load": {"window_s": round(end - start, 1), "fps": fps, "latency_ms": latency,
                 "cpu": load_cpu, "machine_busy_cores": machine, "others_cores": round(max(0.0, machine - ours), 2),
                 "hub_rss_mib": round(max(cpu["hub_rss_mib"], default=0), 1),
                 "relay": {k: int(relay1[k] - relay0.get(k, 0)) for k in RELAY_COUNTERS if k in relay1},
                 "streams_listed": len(listed), "viewers_listed": sum(s["viewers"] for s in listed),
                 "publisher": {"sent": sum(lp.sent for lp in loads), "jumps": sum(lp.jumps for lp in loads),
                               "late_max_ms": late_ms}},
        "first_frame_s": ff, "first_frame_failed": first_failed,
        "viewers_per_core": viewers_per_core(len(viewers), hub_cpu, ingest_cpu),
        "raw": raw,
        "ratio": {q: round(latency[q] / raw["latency_ms"][q], 1) if latency.get(q) and raw["latency_ms"].get(q)
                  else None for q in ("p50", "p95")},
        "verdicts": verdicts(fps, hub_cpu, latency, ff, first_failed),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fieldhub bench video", description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=8, help="publishers, 1280x720 VP8 at 30 fps each")
    p.add_argument("--viewers", type=int, default=4, help="viewers per stream (one of them decodes)")
    p.add_argument("--seconds", type=float, default=180.0, help="length of the load window")
    p.add_argument("--baseline", type=float, default=30.0, help="seconds with the publishers and no viewers")
    p.add_argument("--first", type=int, default=10, help="new viewers timed to their first picture, after the load")
    p.add_argument("--raw-seconds", type=float, default=20.0, help="length of the raw (no hub) run")
    p.add_argument("--kbps", type=int, default=2000, help="the loop's VP8 bitrate in kbit/s")
    p.add_argument("--no-record", dest="record", action="store_false", help="turn the hub's recording off")
    p.add_argument("--samples", type=Path, help="also write every send and arrival time to this JSON file")
    add_database_url(p)
    p.add_argument("--out", type=Path, help="JSON results (default bench/results/video-<UTC date>.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for noisy in ("aioice", "aiortc"):  # `fieldhub` logs at INFO: one line per ICE check of 40 connections
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not 0 < args.streams <= 32 or not 0 < args.viewers <= 32 or args.seconds < 2 or args.baseline < 2 \
            or args.first < 0 or args.raw_seconds < 5 or args.kbps < 100:
        print("--streams and --viewers must be 1-32; --seconds, --baseline >= 2; --raw-seconds >= 5;"
              " --first >= 0; --kbps >= 100", file=sys.stderr)
        return 2
    return run_bench("video", lambda command: run(args, command), argv, args.out,
                     lambda result: (table(result), markdown(result)))


if __name__ == "__main__":
    sys.exit(main())
