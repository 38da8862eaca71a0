"""The GB/T 28181 benchmark's first part: N simulated cameras registered, keeping alive, reporting positions.

Against one hub (:class:`bench.stack.BenchStack`, FIELDHUB_GB28181 on, SIP on a free loopback port), in order:
provision N cameras through the API as an operator would (a unit each, then the device with its password),
``idle`` s of the hub with no camera (its baseline CPU and RSS), then the registration phase: every camera of
the child processes (:mod:`bench.gb28181_cameras`) starts at once, REGISTERs with digest, and the hub subscribes
to its positions and asks its catalog and device info; timed until the hub's gauge counts N registered and its
counter N subscriptions, hub CPU sampled. Then ``seconds`` of steady state: keepalives (60 s, the devices'
default) and a MobilePosition NOTIFY every 5 s per camera (the hub's subscription interval, its default);
hub CPU, RSS, and the positions the cameras sent against the fixes the hub counted and stored. Last the cameras
unregister and the totals are compared: positions built by the cameras, answered 200, counted by the hub
(``fieldhub_gb28181_events_total{event="fixes"}``) and rows in ``fixes``.

Shared with the video part: :func:`hub_env`, :func:`provision`, :func:`gb_metrics`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.drones import sampled, sampled_window, until
from bench.gb28181_cameras import CameraProcess
from bench.probes import machine_busy_seconds, scrape
from bench.stack import BenchError, BenchStack
from bench.video_stats import cores_summary
from hub.infra.embedded import free_port
from sim.gb28181_fleet import device_ids

__all__ = ["PASSWORD", "PREFIX", "SERVER_ID", "gb_metrics", "hub_env", "provision", "run_fleet"]

SERVER_ID = "34020000002000000001"  # the hub's default GB/T 28181 server id (FIELDHUB_GB28181_SERVER_ID)
PREFIX = "3402000000"
PASSWORD = "bench-gb-pass"
SETTLE_S = 5.0


def hub_env(port: int | None = None) -> dict[str, str]:
    """The hub's GB/T 28181 settings for the bench: on, loopback, a free port; on-demand streams kept while the
    bench switches phases (the idle hang-up is the deployment's business, not what is measured)."""
    return {"FIELDHUB_GB28181": "true", "FIELDHUB_GB28181_HOST": "127.0.0.1",
            "FIELDHUB_GB28181_PORT": str(port or free_port()), "FIELDHUB_GB28181_IDLE_S": "900"}


async def provision(api: httpx.AsyncClient, ids: list[str], concurrency: int = 16) -> float:
    """A unit per camera, then the camera itself (``protocol: gb28181`` with its password); the seconds it took."""
    gate = asyncio.Semaphore(concurrency)

    async def one(k: int, device_id: str) -> None:
        async with gate:
            unit = f"gb-u{k + 1}"
            r = await api.put(f"/api/v1/units/{unit}", json={"name": f"Body camera unit {k + 1}",
                                                             "devices": [device_id]})
            if r.status_code >= 300:
                raise BenchError(f"PUT unit {unit}: {r.status_code} {r.text[:200]}")
            r = await api.post("/api/v1/devices", json={"device_id": device_id, "unit_id": unit,
                                                        "protocol": "gb28181", "password": PASSWORD})
            if r.status_code >= 300:
                raise BenchError(f"POST device {device_id}: {r.status_code} {r.text[:200]}")

    t0 = time.monotonic()
    await asyncio.gather(*(one(k, d) for k, d in enumerate(ids)))
    return round(time.monotonic() - t0, 1)


async def gb_metrics(api: httpx.AsyncClient) -> dict[str, float]:
    """The hub's GB/T 28181 figures: registered now, and the gateway's and registrar's counters."""
    flat = await scrape(api)
    out = {"registered": flat.get("fieldhub_gb28181_registered", 0.0)}
    for family, short in (("fieldhub_gb28181_events_total{event=", "events."), ("fieldhub_gb28181_sip_total{event=",
                                                                                 "sip."),
                          ("fieldhub_gb28181_rejected_total{reason=", "rejected."),
                          ("fieldhub_gb28181_dropped_total{reason=", "dropped.")):
        for key, value in flat.items():
            if key.startswith(family):
                out[short + key[len(family):-1]] = value
    out["fixes_stored_total"] = flat.get("fieldhub_fixes_stored_total", 0.0)
    return out


def _slices(ids: list[str], procs: int) -> list[list[str]]:
    size = -(-len(ids) // procs)
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def _rss_mib(samples: dict[str, list[float]]) -> float | None:
    values = samples.get("hub_rss_mib", [])
    return round(sum(values[-5:]) / len(values[-5:]), 1) if values else None


def _cpu(samples: dict[str, list[float]]) -> dict[str, Any]:
    return {k: cores_summary(v) for k, v in samples.items() if k != "hub_rss_mib"}


async def _sum_status(children: list[CameraProcess]) -> dict[str, Any]:
    answers = [await c.status() for c in children]
    return {k: sum(a[k] for a in answers) for k in ("registered_now", "positions_built", "positions_sent",
                                                    "keepalives", "registered")}


async def _stored_fixes(database_url: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        row = await (await conn.execute("SELECT count(*) FROM fixes WHERE device_id LIKE %s",
                                        (PREFIX + "%",))).fetchone()
    return int(row[0]) if row else 0


async def run_fleet(stack: BenchStack, workdir: Path, *, cameras: int, seconds: float, idle: float,
                    procs: int) -> dict[str, Any]:
    """The fleet part on a started ``stack`` whose hub has :func:`hub_env`; its figures."""
    port = int(stack.hub_env["FIELDHUB_GB28181_PORT"])
    ids = device_ids(PREFIX, cameras)
    children = [CameraProcess(workdir / f"cameras-{k}.log") for k in range(procs)]
    out: dict[str, Any] = {"cameras": cameras, "camera_processes": procs}
    admin = {"authorization": f"Bearer {stack.token}"}
    try:
        async with httpx.AsyncClient(base_url=stack.hub_url, headers=admin, timeout=60.0) as api:
            out["provision_s"] = await provision(api, ids)
            hub = {"hub": stack.hub_process(), "postgres": stack.postgres_process()}
            await asyncio.sleep(SETTLE_S)
            idle_cpu, _, idle_busy = await sampled_window(hub, idle)
            out["idle"] = {"seconds": idle, "cpu": _cpu(idle_cpu), "hub_rss_mib": _rss_mib(idle_cpu),
                           "machine_busy_cores": idle_busy}

            async def register() -> dict[str, Any]:
                t_start = time.monotonic()
                configs = [{"server_id": SERVER_ID, "host": "127.0.0.1", "port": port, "password": PASSWORD,
                            "device_ids": part, "first": k * len(_slices(ids, procs)[0]), "stream": None,
                            "register_timeout_s": 300.0}
                           for k, part in enumerate(_slices(ids, procs))]
                answers = await asyncio.gather(*(c.start(cfg, 330.0) for c, cfg in zip(children, configs,
                                                                                        strict=True)))
                t_registered = time.monotonic()

                async def all_registered() -> bool:
                    return (await gb_metrics(api))["registered"] >= cameras

                async def all_subscribed() -> bool:  # each camera's first NOTIFY answered 200
                    return sum([(await c.status())["subscribed"] for c in children]) >= cameras

                await until(all_registered, 120, f"{cameras} cameras registered at the hub", 0.25)
                t_hub = time.monotonic()
                await until(all_subscribed, 120, f"{cameras} cameras' first position answered", 0.25)
                return {"cameras_registered": sum(a["registered"] for a in answers),
                        "camera_side_s": max(a["seconds"] for a in answers),
                        "all_registered_s": round(max(t_registered, t_hub) - t_start, 2),
                        "all_positioned_s": round(time.monotonic() - t_start, 2)}

            busy0, t0 = machine_busy_seconds(), time.monotonic()
            reg_cpu, reg = await sampled({**hub, **{f"cameras{k}": _child(c) for k, c in enumerate(children)}},
                                         register())
            out["registration"] = {**reg, "cpu": _cpu(reg_cpu), "machine_busy_cores": round(
                (machine_busy_seconds() - busy0) / (time.monotonic() - t0), 2),
                "hub_cpu_seconds": round(sum(reg_cpu["hub"]) / 100, 2)}
            await asyncio.sleep(SETTLE_S)
            out["steady"] = await _steady(api, hub, children, seconds)
            final_status = await _sum_status(children)
            totals = [await c.stop() for c in children]
            await asyncio.sleep(3.0)  # the last NOTIFYs answered and committed
            end_metrics = await gb_metrics(api)
            out["totals"] = _totals(totals, final_status, end_metrics, await _stored_fixes(stack.database_url))
    finally:
        for c in children:
            await c.close()
    return out


def _child(c: CameraProcess) -> Any:
    from bench.probes import find_process

    return find_process(c.proc.pid if c.proc is not None else None)


async def _steady(api: httpx.AsyncClient, hub: dict[str, Any], children: list[CameraProcess],
                  seconds: float) -> dict[str, Any]:
    """``seconds`` of keepalives and positions: CPU, RSS, positions sent and fixes counted in the window."""
    procs = {**hub, **{f"cameras{k}": _child(c) for k, c in enumerate(children)}}
    s0, m0 = await _sum_status(children), await gb_metrics(api)
    cpu, wall, busy = await sampled_window(procs, seconds)
    s1, m1 = await _sum_status(children), await gb_metrics(api)
    hub_cpu = cores_summary(cpu["hub"])
    cameras = s1["registered_now"]
    per_k = 1000 / cameras if cameras else 0.0
    return {
        "seconds": round(wall, 1), "registered_now": cameras, "cpu": _cpu(cpu), "machine_busy_cores": busy,
        "hub_rss_mib": _rss_mib(cpu), "hub_rss_peak_mib": round(max(cpu["hub_rss_mib"], default=0.0), 1),
        "hub_cpu_s_per_1000_per_min": round(hub_cpu.get("mean_cores", 0.0) * 60 * per_k, 2),
        "positions_built": s1["positions_built"] - s0["positions_built"],
        "positions_acked": s1["positions_sent"] - s0["positions_sent"],
        "keepalives_acked": s1["keepalives"] - s0["keepalives"],
        "fixes_counted": int(m1.get("events.fixes", 0) - m0.get("events.fixes", 0)),
        "fixes_per_s": round((m1.get("events.fixes", 0) - m0.get("events.fixes", 0)) / wall, 1),
        "hub_events": {k: int(m1[k] - m0.get(k, 0)) for k in m1 if k.startswith("events.") and m1[k] != m0.get(k)},
    }


def _totals(answers: list[dict[str, Any]], status: dict[str, Any], metrics: dict[str, float],
            stored: int) -> dict[str, Any]:
    built = sum(a["positions_built"] for a in answers)
    refused: dict[str, int] = {}
    for a in answers:
        for key, n in a["refused"].items():
            refused[key] = refused.get(key, 0) + n
    return {"positions_built": built, "positions_acked": sum(a["positions_sent"] for a in answers),
            "fixes_counted": int(metrics.get("events.fixes", 0)), "fixes_in_database": stored,
            "loss": built - stored, "registrations": sum(a["registered"] for a in answers),
            "registered_at_end": status["registered_now"], "camera_refused": refused,
            "hub": {k: int(v) for k, v in sorted(metrics.items()) if k != "registered"}}
