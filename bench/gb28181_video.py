"""The GB/T 28181 benchmark's video part: camera streams (H.264 in MPEG-PS over RTP) x WHEP viewers, then WHIP.

GB/T 28181 side: ``--streams`` simulated cameras, one child process each (:mod:`bench.gb28181_cameras`: PyAV
draws, libx264-encodes, PS-muxes and RTP-sends live, ``--width`` x ``--height`` at 25 fps, ``--kbps``), are
provisioned, register, answer the hub's catalog query, and are opened on demand (``POST
/api/v1/cameras/{id}/live``, the hub INVITEs them). ``--baseline`` s with no viewer, then ``--viewers`` WHEP
viewers per stream in two child processes (:mod:`bench.gb28181_viewers`): one per stream decodes and reads the
send time burned into each picture, the others count whole frames. Latency = decode time minus the camera's
burned-in wall-clock ms (taken before it draws, so it includes the camera's own draw+encode+mux, timed apart
in the first camera's process: ``calibration_ms``).

WHIP side, same invocation and hub: the video benchmark's load (:mod:`bench.video_load`, :mod:`bench.video_viewers`):
one pre-encoded VP8 loop of the same size, ``--streams`` publishers at 30 fps from this process, the same viewers
per stream; latency = decode time minus the publisher's send of that loop frame (no encode in it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import httpx

from bench.drones import sampled, until
from bench.gb28181_cameras import CameraProcess
from bench.gb28181_fleet import PASSWORD, PREFIX, SERVER_ID, gb_metrics, provision
from bench.gb28181_viewers import GbViewerProcess
from bench.probes import find_process, machine_busy_seconds
from bench.stack import BenchError, BenchStack
from bench.video import RELAY_COUNTERS, create_token, relay_counters
from bench.video_load import FPS, LoopPublisher, encode_loop
from bench.video_stats import cores_summary, fps_of, fps_summary, latencies_ms, pairs, summary
from bench.video_viewers import ViewerProcess
from sim.gb28181_fleet import device_ids
from video.client import WhipPublisher

__all__ = ["run_video"]

CAMERA_FPS = 25.0
SETTLE_S = 5.0
CALIBRATE_FRAMES = 50


async def run_video(stack: BenchStack, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"streams": args.streams, "viewers_per_stream": args.viewers, "seconds": args.video_seconds,
                           "size": f"{args.width}x{args.height}", "kbps": args.kbps, "recording": args.record}
    viewer_token = await create_token(stack, "dispatcher")
    for side, body in (("gb28181", _gb_side), ("whip", _whip_side)):
        if side == "whip" and not args.whip:
            continue
        result: dict[str, Any] = {}
        out[side] = result
        try:
            result.update(await body(stack, workdir, args, viewer_token))
        except (BenchError, httpx.HTTPError, OSError, TimeoutError) as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
    return out


def _procs(stack: BenchStack, children: dict[str, Any]) -> dict[str, Any]:
    procs = {"hub": stack.hub_process(), "postgres": stack.postgres_process()}
    for name, child in children.items():
        procs[name] = find_process(child.proc.pid if child.proc is not None else None)
    return procs


def _group(cpu: dict[str, list[float]], prefix: str) -> list[float]:
    """Per-second sums of the samples of every process named ``prefix...``."""
    series = [v for k, v in cpu.items() if k.startswith(prefix)]
    return [sum(x) for x in zip(*series, strict=False)] if series else []


def _cpu(cpu: dict[str, list[float]], groups: tuple[str, ...]) -> dict[str, Any]:
    out = {k: cores_summary(v) for k, v in cpu.items() if k != "hub_rss_mib" and not k.startswith(groups)}
    out.update({g: cores_summary(_group(cpu, g)) for g in groups})
    return out


async def _viewers(stack: BenchStack, workdir: Path, token: str, ids: list[str], viewers: int, tag: str,
                   kind: type[ViewerProcess]) -> dict[str, ViewerProcess]:
    children = {f"decoders-{tag}": kind(workdir / f"decoders-{tag}.log"),
                f"counters-{tag}": kind(workdir / f"counters-{tag}.log")}
    await children[f"decoders-{tag}"].start(stack.hub_url, token, [(i, True) for i in ids])
    if viewers > 1:
        await children[f"counters-{tag}"].start(stack.hub_url, token,
                                                [(i, False) for i in ids for _ in range(viewers - 1)])
    else:
        del children[f"counters-{tag}"]
    return children


async def _window(stack: BenchStack, api: httpx.AsyncClient, procs: dict[str, Any],
                  seconds: float) -> tuple[dict[str, list[float]], float, float, float, dict[str, int]]:
    """Sample ``seconds``; (cpu samples, start, end (monotonic), machine busy cores, relay counter deltas)."""
    relay0, busy0, start = await relay_counters(api), machine_busy_seconds(), time.monotonic()
    cpu, _ = await sampled(procs, asyncio.sleep(seconds))
    end, busy1, relay1 = time.monotonic(), machine_busy_seconds(), await relay_counters(api)
    relay = {k: int(relay1[k] - relay0.get(k, 0)) for k in RELAY_COUNTERS if k in relay1}
    return cpu, start, end, round((busy1 - busy0) / (end - start), 2), relay


def _figures(seen: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    per_viewer = [fps_of(v["arrivals"], start, end) for v in seen]
    return {**fps_summary(per_viewer), "per_viewer": [v["mean"] for v in per_viewer]}


async def _gb_side(stack: BenchStack, workdir: Path, args: argparse.Namespace, token: str) -> dict[str, Any]:
    ids = device_ids(PREFIX, args.streams, first=900_001)
    port = int(stack.hub_env["FIELDHUB_GB28181_PORT"])
    cameras = {f"camera{k}": CameraProcess(workdir / f"camera-{k}.log") for k in range(args.streams)}
    viewers: dict[str, ViewerProcess] = {}
    stream = {"width": args.width, "height": args.height, "fps": CAMERA_FPS, "bitrate": args.kbps * 1000}
    out: dict[str, Any] = {"label": f"{args.streams} GB/T 28181 cameras, live H.264 {args.width}x{args.height}"
                                    f" {CAMERA_FPS:g} fps {args.kbps} kbit/s in PS over RTP/UDP, x {args.viewers}"
                                    " WHEP viewers",
                           "latency_note": "camera's wall-clock ms before drawing -> decoded (includes the camera's"
                                           " draw+encode+mux)"}
    admin = {"authorization": f"Bearer {stack.token}"}
    try:
        async with httpx.AsyncClient(base_url=stack.hub_url, headers=admin, timeout=60.0) as api:
            await provision(api, ids)

            def config(k: int) -> dict[str, Any]:
                return {"server_id": SERVER_ID, "host": "127.0.0.1", "port": port, "password": PASSWORD,
                        "device_ids": [ids[k]], "first": k, "stream": stream, "register_timeout_s": 60.0,
                        "calibrate": CALIBRATE_FRAMES if k == 0 else 0}

            first = await cameras["camera0"].start(config(0), 120.0)
            out["calibration_ms"] = first["calibration_ms"]
            await asyncio.gather(*(c.start(config(k), 120.0) for k, c in enumerate(cameras.values()) if k))
            children = list(cameras.values())

            async def catalogued() -> bool:  # the hub INVITEs the catalog's channel: wait for the answers
                return sum([(await c.status())["queries_answered"] for c in children]) >= 2 * args.streams

            await until(catalogued, 60, "the cameras' catalog and device-info answers")
            stream_ids = []
            for device_id in ids:
                r = await api.post(f"/api/v1/cameras/{device_id}/live", headers={"authorization": f"Bearer {token}"})
                if r.status_code != 200:
                    raise BenchError(f"open camera {device_id}: {r.status_code} {r.text[:300]}")
                stream_ids.append(r.json()["stream_id"])
            await asyncio.sleep(SETTLE_S)
            procs = _procs(stack, cameras)
            ingest, _ = await sampled(procs, asyncio.sleep(args.baseline))
            out["ingest_cpu"] = _cpu(ingest, ("camera",))
            viewers = await _viewers(stack, workdir, token, stream_ids, args.viewers, "gb", GbViewerProcess)
            procs = _procs(stack, {**cameras, **viewers})
            await asyncio.sleep(SETTLE_S)
            sent0 = sum([(await c.status())["frames_sent"] for c in children])
            cpu, start, end, busy, relay = await _window(stack, api, procs, args.video_seconds)
            sent1 = sum([(await c.status())["frames_sent"] for c in children])
            seen = [v for child in viewers.values() for v in await child.stop()]
            out["gb_metrics"] = {k: v for k, v in (await gb_metrics(api)).items() if not k.startswith("sip.")}
            totals = [await c.stop() for c in children]
    finally:
        for viewer in viewers.values():
            await viewer.close()
        for camera in cameras.values():
            await camera.close()
    lat = [x for v in seen if v["decode"] for t, x in pairs(v["pictures"]) if start <= t <= end]
    out.update({
        "stream_ids": stream_ids, "fps": _figures(seen, start, end),
        "sender_fps": {"mean_per_stream": round((sent1 - sent0) / (end - start) / args.streams, 2),
                       "target": CAMERA_FPS},
        "latency_ms": {**summary(lat), "unreadable": sum(v["unreadable"] for v in seen if v["decode"])},
        "cpu": _cpu(cpu, ("camera",)), "machine_busy_cores": busy, "relay": relay, "window_s": round(end - start, 1),
        "hub_rss_mib": round(max(cpu["hub_rss_mib"], default=0), 1),
        "cameras": {k: sum(t[k] for t in totals) for k in ("invites", "streams_started", "frames_sent")},
        "camera_rejected": {k: n for t in totals for k, n in t["rejected"].items()},
    })
    return out


async def _whip_side(stack: BenchStack, workdir: Path, args: argparse.Namespace, token: str) -> dict[str, Any]:
    loop = await asyncio.to_thread(encode_loop, 300, 60, args.kbps, args.width, args.height)
    loads = [LoopPublisher(loop, (k * 60) % 300, k / (args.streams * FPS)) for k in range(args.streams)]
    publishers: list[WhipPublisher] = []
    viewers: dict[str, ViewerProcess] = {}
    out: dict[str, Any] = {"label": f"{args.streams} WHIP publishers, pre-encoded VP8 loop {loop.width}x{loop.height}"
                                    f" {FPS} fps {loop.kbit_per_s:.0f} kbit/s, x {args.viewers} WHEP viewers",
                           "latency_note": "publisher's send of the (pre-encoded) frame -> decoded",
                           "loop_encode_s": loop.encode_s}
    http = httpx.AsyncClient(timeout=30.0)
    admin = {"authorization": f"Bearer {stack.token}"}
    try:
        async with httpx.AsyncClient(base_url=stack.hub_url, headers=admin, timeout=30.0) as api:
            for k in range(args.streams):
                (await api.put(f"/api/v1/units/whip-u{k + 1}", json={
                    "name": f"WHIP unit {k + 1}", "devices": [f"whip-cam{k + 1}"]})).raise_for_status()
            for k, lp in enumerate(loads):
                publishers.append(await lp.publish(f"{stack.hub_url}/whip/whip-cam{k + 1}", stack.token, http))
            ids = [p.stream_id or "" for p in publishers]

            async def flowing() -> bool:
                return all(lp.sent > FPS for lp in loads)

            await until(flowing, 30, "all WHIP publishers sending")
            await asyncio.sleep(SETTLE_S)
            ingest, _ = await sampled(_procs(stack, {}), asyncio.sleep(args.baseline))
            out["ingest_cpu"] = _cpu(ingest, ())
            viewers = await _viewers(stack, workdir, token, ids, args.viewers, "whip", ViewerProcess)
            procs = _procs(stack, viewers)
            await asyncio.sleep(SETTLE_S)
            for lp in loads:
                lp.late_max_s = 0.0
            sent0 = sum(lp.sent for lp in loads)
            cpu, start, end, busy, relay = await _window(stack, api, procs, args.video_seconds)
            sent1 = sum(lp.sent for lp in loads)
            seen = [v for child in viewers.values() for v in await child.stop()]
    finally:
        for child in viewers.values():
            await child.close()
        for publisher in publishers:
            with contextlib.suppress(Exception):
                await publisher.stop()
        await http.aclose()
    sends = {sid: pairs(lp.sends) for sid, lp in zip(ids, loads, strict=True)}
    lat: list[float] = []
    for v in seen:
        if v["decode"]:
            lat += latencies_ms(sends[v["stream_id"]], pairs(v["pictures"]), start, end)[0]
    out.update({
        "fps": _figures(seen, start, end),
        "sender_fps": {"mean_per_stream": round((sent1 - sent0) / (end - start) / args.streams, 2), "target": FPS,
                       "late_max_ms": round(1000 * max(lp.late_max_s for lp in loads), 1),
                       "keyframe_jumps": sum(lp.jumps for lp in loads)},
        "latency_ms": {**summary(lat), "unreadable": sum(v["unreadable"] for v in seen if v["decode"])},
        "cpu": _cpu(cpu, ()), "machine_busy_cores": busy, "relay": relay, "window_s": round(end - start, 1),
        "hub_rss_mib": round(max(cpu["hub_rss_mib"], default=0), 1),
    })
    return out
