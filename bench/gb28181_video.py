"""The GB/T 28181 benchmark's video part: camera streams (H.264 in MPEG-PS over RTP) x WHEP viewers, then WHIP.

Both sides carry the same pictures in the same codec, encoded once in this process: a 300-picture H.264 loop
(:func:`bench.video_load.encode_loop`, libx264 ultrafast/zerolatency, no B-frames, a key frame every 60, frame
code = loop index), ``--width`` x ``--height``, ``--kbps`` at each side's frame rate. No live encoding anywhere,
so the senders leave the CPU to the hub.

GB/T 28181 side: ``--streams`` simulated cameras, one child process each (:mod:`bench.gb28181_cameras`), are
provisioned, register, answer the hub's catalog query, and are opened on demand (``POST
/api/v1/cameras/{id}/live``, the hub INVITEs them). Each call replays the loop, muxed once into PS chunks, as
RTP over UDP at 25 fps (:mod:`bench.gb28181_replay`). ``--baseline`` s with no viewer, then ``--viewers`` WHEP
viewers per stream in two child processes (:mod:`bench.gb28181_viewers`): one per stream decodes and reads the
loop index of each picture, the others count whole frames.

WHIP side, same invocation and hub: ``--streams`` :class:`bench.video_load.LoopPublisher` s of the loop at 30 fps
from this process, the same viewers per stream. On both sides latency = decode time minus the sender's send of
that loop picture, on the machine's one monotonic clock (no encode in it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import httpx

from bench.drones import sampled, until
from bench.gb28181_cameras import CameraProcess
from bench.gb28181_fleet import PASSWORD, PREFIX, SERVER_ID, gb_metrics, provision
from bench.gb28181_replay import mux_loop, save_loop
from bench.gb28181_viewers import GbViewerProcess
from bench.probes import find_process, machine_busy_seconds
from bench.stack import BenchError, BenchStack
from bench.video import RELAY_COUNTERS, create_token, relay_counters
from bench.video_load import FPS, EncodedLoop, LoopPublisher, encode_loop
from bench.video_stats import cores_summary, fps_of, fps_summary, latencies_ms, pairs, summary
from bench.video_viewers import ViewerProcess
from sim.gb28181_fleet import device_ids
from video.client import WhipPublisher

__all__ = ["run_video"]

CAMERA_FPS = 25
SETTLE_S = 5.0
LOOP_FRAMES = 300
GOP = 60
COUNTERS_PER_PROCESS = 24


async def _h264_loop(args: argparse.Namespace, fps: int) -> EncodedLoop:
    """The loop at ``--kbps`` when sent at ``fps`` (the encoder is told 30 fps, the WHIP publishers' rate)."""
    return await asyncio.to_thread(encode_loop, LOOP_FRAMES, GOP, args.kbps * FPS // fps, args.width, args.height,
                                   "H264")


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
    """One process of decoding viewers (one per stream), and the counting ones in processes of at most
    :data:`COUNTERS_PER_PROCESS`.

    A viewer process that gets less CPU than it needs (24 aiortc peers at 720p want ~0.45 core) falls behind,
    the kernel drops datagrams at its full sockets (``udp.RcvbufErrors``), aiortc discards every picture that
    lost a packet, and after ~30 s the hub's ICE consent checks, lost with the media, expire and the hub ends the
    viewer (``viewers_lost_by_end``): the clients, not the hub, are then measured. Splitting the counters over
    more processes helped them on a machine saturated by other work but starved the decoders more (CFS shares
    CPU by runnable task), so the default 8 x 3 counters stay in one process, as before."""
    children = {f"decoders-{tag}": kind(workdir / f"decoders-{tag}.log")}
    await children[f"decoders-{tag}"].start(stack.hub_url, token, [(i, True) for i in ids])
    counting = [(i, False) for i in ids for _ in range(viewers - 1)]
    for n, at in enumerate(range(0, len(counting), COUNTERS_PER_PROCESS)):
        child = children[f"counters-{tag}-{n}"] = kind(workdir / f"counters-{tag}-{n}.log")
        await child.start(stack.hub_url, token, counting[at:at + COUNTERS_PER_PROCESS])
    return children


def udp_counters() -> dict[str, int]:
    """The kernel's UDP counters for the whole machine (``/proc/net/snmp``): ``RcvbufErrors`` are datagrams
    dropped because a socket's receive buffer was full (its process did not read in time)."""
    try:
        lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    except OSError:
        return {}
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=False)} if len(lines) >= 2 else {}


async def _window(stack: BenchStack, api: httpx.AsyncClient, procs: dict[str, Any],
                  seconds: float) -> tuple[dict[str, list[float]], float, float, float, dict[str, int]]:
    """Sample ``seconds``; (cpu samples, start, end (monotonic), machine busy cores, relay counter deltas and
    the machine's UDP ones, ``udp.*``)."""
    relay0, udp0, busy0, start = await relay_counters(api), udp_counters(), machine_busy_seconds(), time.monotonic()
    cpu, _ = await sampled(procs, asyncio.sleep(seconds))
    end, busy1, udp1, relay1 = time.monotonic(), machine_busy_seconds(), udp_counters(), await relay_counters(api)
    relay = {k: int(relay1[k] - relay0.get(k, 0)) for k in RELAY_COUNTERS if k in relay1}
    relay.update({f"udp.{k}": udp1[k] - udp0.get(k, 0) for k in ("InDatagrams", "RcvbufErrors", "SndbufErrors")
                  if k in udp1})
    return cpu, start, end, round((busy1 - busy0) / (end - start), 2), relay


def _keep_seen(args: argparse.Namespace, workdir: Path, side: str, seen: list[dict[str, Any]], start: float,
               end: float) -> None:
    """With ``--keep``: every viewer's raw arrivals and pictures, and the window, for a look afterwards."""
    if args.keep:
        (workdir / f"viewers-{side}.json").write_text(json.dumps({"start": start, "end": end, "viewers": seen}))


def _figures(seen: list[dict[str, Any]], start: float, end: float, sent_fps: float) -> dict[str, Any]:
    """Viewer fps over the window: all viewers, then decoders and counters apart (they are received differently).
    ``below_target`` counts viewers under 28/30 of the rate sent (the video benchmark's 28 of 30)."""
    def of(group: list[dict[str, Any]]) -> dict[str, Any]:
        per_viewer = [fps_of(v["arrivals"], start, end) for v in group]
        return {**fps_summary(per_viewer, sent_fps * 28 / 30), "per_viewer": [v["mean"] for v in per_viewer]}

    return {**of(seen), "decoders": of([v for v in seen if v["decode"]]),
            "counters": of([v for v in seen if not v["decode"]]),
            "viewers_lost_by_end": sum(1 for v in seen if v.get("lost_at") is not None and v["lost_at"] <= end)}


def _latencies(seen: list[dict[str, Any]], sends: dict[str, list[tuple[float, int]]], start: float,
               end: float) -> tuple[list[float], int]:
    """Decoders' pictures in the window matched with their stream's sends; (latencies ms, pictures unmatched)."""
    lat: list[float] = []
    unmatched = 0
    for v in seen:
        if v["decode"]:
            found, missed = latencies_ms(sends.get(v["stream_id"], []), pairs(v["pictures"]), start, end)
            lat += found
            unmatched += missed
    return lat, unmatched


async def _gb_side(stack: BenchStack, workdir: Path, args: argparse.Namespace, token: str) -> dict[str, Any]:
    ids = device_ids(PREFIX, args.streams, first=900_001)
    port = int(stack.hub_env["FIELDHUB_GB28181_PORT"])
    cameras = {f"camera{k}": CameraProcess(workdir / f"camera-{k}.log") for k in range(args.streams)}
    viewers: dict[str, ViewerProcess] = {}
    stream = {"width": args.width, "height": args.height, "fps": CAMERA_FPS, "bitrate": args.kbps * 1000}
    loop = await _h264_loop(args, CAMERA_FPS)
    ps = await asyncio.to_thread(mux_loop, loop, CAMERA_FPS)
    await asyncio.to_thread(save_loop, ps, workdir / "gb-loop.ps")
    out: dict[str, Any] = {"label": f"{args.streams} GB/T 28181 cameras replaying an H.264 loop {args.width}x"
                                    f"{args.height} {CAMERA_FPS} fps {ps.kbit_per_s:.0f} kbit/s (PS incl.) in PS over"
                                    f" RTP/UDP, x {args.viewers} WHEP viewers",
                           "latency_note": "camera's send of the (pre-encoded, pre-muxed) picture -> decoded",
                           "loop_encode_s": loop.encode_s,
                           "loop_kbit_per_s": {"h264": round(sum(map(len, loop.frames)) * 8 * CAMERA_FPS
                                                             / len(loop.frames) / 1000), "ps": round(ps.kbit_per_s)}}
    admin = {"authorization": f"Bearer {stack.token}"}
    try:
        async with httpx.AsyncClient(base_url=stack.hub_url, headers=admin, timeout=60.0) as api:
            await provision(api, ids)

            def config(k: int) -> dict[str, Any]:
                return {"server_id": SERVER_ID, "host": "127.0.0.1", "port": port, "password": PASSWORD,
                        "device_ids": [ids[k]], "first": k, "stream": stream, "register_timeout_s": 60.0,
                        "replay": {"path": str(workdir / "gb-loop.ps"), "start": (k * GOP) % LOOP_FRAMES,
                                   "phase_s": k / (args.streams * CAMERA_FPS)}}

            await asyncio.gather(*(c.start(config(k), 120.0) for k, c in enumerate(cameras.values())))
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
            _keep_seen(args, workdir, "gb", seen, start, end)
            out["gb_metrics"] = {k: v for k, v in (await gb_metrics(api)).items() if not k.startswith("sip.")}
            totals = [await c.stop() for c in children]
    finally:
        for viewer in viewers.values():
            await viewer.close()
        for camera in cameras.values():
            await camera.close()
    sends = {sid: [p for s in t["sends"] for p in pairs(s)] for sid, t in zip(stream_ids, totals, strict=True)}
    lat, unmatched = _latencies(seen, sends, start, end)
    out.update({
        "stream_ids": stream_ids, "fps": _figures(seen, start, end, CAMERA_FPS),
        "sender_fps": {"mean_per_stream": round((sent1 - sent0) / (end - start) / args.streams, 2),
                       "target": CAMERA_FPS, "late_max_ms_whole_run": max(t.get("late_max_ms", 0) for t in totals)},
        "latency_ms": {**summary(lat), "unreadable": sum(v["unreadable"] for v in seen if v["decode"]),
                       "unmatched": unmatched},
        "cpu": _cpu(cpu, ("camera", "counters")), "machine_busy_cores": busy, "relay": relay,
        "window_s": round(end - start, 1),
        "hub_rss_mib": round(max(cpu["hub_rss_mib"], default=0), 1),
        "cameras": {k: sum(t[k] for t in totals) for k in ("invites", "streams_started", "frames_sent")},
        "camera_rejected": {k: n for t in totals for k, n in t["rejected"].items()},
    })
    return out


async def _whip_side(stack: BenchStack, workdir: Path, args: argparse.Namespace, token: str) -> dict[str, Any]:
    loop = await _h264_loop(args, FPS)
    loads = [LoopPublisher(loop, (k * GOP) % LOOP_FRAMES, k / (args.streams * FPS)) for k in range(args.streams)]
    publishers: list[WhipPublisher] = []
    viewers: dict[str, ViewerProcess] = {}
    out: dict[str, Any] = {"label": f"{args.streams} WHIP publishers, pre-encoded H.264 loop {loop.width}x{loop.height}"
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
            viewers = await _viewers(stack, workdir, token, ids, args.viewers, "whip", GbViewerProcess)
            procs = _procs(stack, viewers)
            await asyncio.sleep(SETTLE_S)
            for lp in loads:
                lp.late_max_s = 0.0
            sent0 = sum(lp.sent for lp in loads)
            cpu, start, end, busy, relay = await _window(stack, api, procs, args.video_seconds)
            sent1 = sum(lp.sent for lp in loads)
            seen = [v for child in viewers.values() for v in await child.stop()]
            _keep_seen(args, workdir, "whip", seen, start, end)
    finally:
        for child in viewers.values():
            await child.close()
        for publisher in publishers:
            with contextlib.suppress(Exception):
                await publisher.stop()
        await http.aclose()
    lat, unmatched = _latencies(seen, {sid: pairs(lp.sends) for sid, lp in zip(ids, loads, strict=True)}, start,
                                end)
    out.update({
        "fps": _figures(seen, start, end, FPS),
        "sender_fps": {"mean_per_stream": round((sent1 - sent0) / (end - start) / args.streams, 2), "target": FPS,
                       "late_max_ms": round(1000 * max(lp.late_max_s for lp in loads), 1),
                       "keyframe_jumps": sum(lp.jumps for lp in loads)},
        "latency_ms": {**summary(lat), "unreadable": sum(v["unreadable"] for v in seen if v["decode"]),
                       "unmatched": unmatched},
        "cpu": _cpu(cpu, ("counters",)), "machine_busy_cores": busy, "relay": relay, "window_s": round(end - start, 1),
        "hub_rss_mib": round(max(cpu["hub_rss_mib"], default=0), 1),
    })
    return out
