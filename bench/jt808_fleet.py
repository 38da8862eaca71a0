"""The gateways benchmark's fleet part: N JT/T 808 terminals over TCP registered, reporting, heart-beating.

Against one hub (:class:`bench.stack.BenchStack`, FIELDHUB_JT808 on, the JT/T 808 server on a free loopback
port), in order: provision N terminals through the API as an operator would (a unit each, then the device with
``protocol: jt808`` and its phone number), ``idle`` s of the hub with no terminal (its baseline CPU and RSS), then
the registration burst: every terminal of the child processes (:mod:`bench.jt808_terminals`) connects at once,
registers (0x0100, the hub issues a code and stores its hash) and authenticates (0x0102); timed until the children
count N authenticated. Then ``seconds`` of steady state: a 0x0200 every 10 s per terminal (phases spread), a
heartbeat each 60 s, 1 % of the reports a 0x0704 blind-area batch of 5; hub CPU mean/p95 and RSS. Last the
terminals stop and the totals are compared: positions sent, answered result 0, and rows in ``fixes``.

Shared with the cost part: :func:`hub_env`, :func:`provision_terminals`, :func:`stored_fixes`, :func:`slices`,
:func:`jt808_metrics`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.drones import sampled, sampled_window
from bench.gateways_report import cpu_s_per_1000_per_min, merge_tallies, rss_mib_per_1000
from bench.jt808_terminals import TerminalProcess
from bench.probes import find_process, machine_busy_seconds, scrape
from bench.stack import BenchError, BenchStack
from bench.video_stats import cores_summary
from hub.infra.embedded import free_port

__all__ = ["FLEET_PREFIX", "hub_env", "jt808_metrics", "phones", "provision_terminals", "run_fleet", "slices",
           "stored_fixes"]

FLEET_PREFIX = "jtf"
FLEET_PHONE = 139_0000_0000  # terminal k (from 1) has phone 13900000000 + k
REPORT_S = 10.0
HEARTBEAT_S = 60.0
BATCH_SHARE = 0.01
SETTLE_S = 5.0
PROVISION_CONCURRENCY = 16


def hub_env(port: int | None = None) -> dict[str, str]:
    """The hub's gateway settings for the bench: JT/T 808 on loopback at a free port, OwnTracks and OsmAnd on."""
    return {"FIELDHUB_JT808": "true", "FIELDHUB_JT808_HOST": "127.0.0.1",
            "FIELDHUB_JT808_PORT": str(port or free_port()), "FIELDHUB_OWNTRACKS": "true", "FIELDHUB_OSMAND": "true"}


def phones(base: int, count: int) -> list[str]:
    return [str(base + k + 1) for k in range(count)]


def slices(items: list[str], procs: int) -> list[list[str]]:
    size = -(-len(items) // procs)
    return [items[i:i + size] for i in range(0, len(items), size)]


async def provision_terminals(api: httpx.AsyncClient, prefix: str, numbers: list[str],
                              concurrency: int = PROVISION_CONCURRENCY) -> tuple[list[str], float]:
    """A unit per terminal, then the terminal (``protocol: jt808`` with its phone); its device ids and seconds."""
    gate = asyncio.Semaphore(concurrency)
    ids = [f"{prefix}-{k + 1:05d}" for k in range(len(numbers))]

    async def one(k: int) -> None:
        async with gate:
            unit = f"{prefix}-u{k + 1:05d}"
            r = await api.put(f"/api/v1/units/{unit}", json={"name": f"Vehicle {prefix} {k + 1}",
                                                             "devices": [ids[k]]})
            if r.status_code >= 300:
                raise BenchError(f"PUT unit {unit}: {r.status_code} {r.text[:200]}")
            r = await api.post("/api/v1/devices", json={"device_id": ids[k], "unit_id": unit, "protocol": "jt808",
                                                        "phone": numbers[k]})
            if r.status_code >= 300:
                raise BenchError(f"POST device {ids[k]}: {r.status_code} {r.text[:200]}")

    t0 = time.monotonic()
    await asyncio.gather(*(one(k) for k in range(len(numbers))))
    return ids, round(time.monotonic() - t0, 1)


async def jt808_metrics(api: httpx.AsyncClient) -> dict[str, float]:
    """Every ``fieldhub_jt808*`` figure of the hub's /metrics (whatever the lead names them), and fixes stored."""
    flat = await scrape(api)
    out = {k[len("fieldhub_"):]: v for k, v in flat.items() if k.startswith("fieldhub_jt808")}
    out["fixes_stored_total"] = flat.get("fieldhub_fixes_stored_total", 0.0)
    return out


async def stored_fixes(database_url: str, prefix: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        row = await (await conn.execute("SELECT count(*) FROM fixes WHERE device_id LIKE %s",
                                        (prefix + "-%",))).fetchone()
    return int(row[0]) if row else 0


def _rss_mib(samples: dict[str, list[float]]) -> float | None:
    values = samples.get("hub_rss_mib", [])[-5:]
    return round(sum(values) / len(values), 1) if values else None


def _cpu(samples: dict[str, list[float]]) -> dict[str, Any]:
    return {k: cores_summary(v) for k, v in samples.items() if k != "hub_rss_mib"}


def _child(c: TerminalProcess) -> Any:
    return find_process(c.proc.pid if c.proc is not None else None)


async def _status(children: list[TerminalProcess]) -> dict[str, Any]:
    return merge_tallies([await c.status() for c in children])


async def run_fleet(stack: BenchStack, workdir: Path, *, terminals: int, seconds: float, idle: float,
                    procs: int) -> dict[str, Any]:
    """The fleet part on a started ``stack`` whose hub has :func:`hub_env`; its figures."""
    port = int(stack.hub_env["FIELDHUB_JT808_PORT"])
    numbers = phones(FLEET_PHONE, terminals)
    parts = slices(numbers, procs)
    children = [TerminalProcess(workdir / f"terminals-{k}.log") for k in range(len(parts))]
    out: dict[str, Any] = {"terminals": terminals, "terminal_processes": procs}
    admin = {"authorization": f"Bearer {stack.token}"}
    try:
        async with httpx.AsyncClient(base_url=stack.hub_url, headers=admin, timeout=60.0) as api:
            _, out["provision_s"] = await provision_terminals(api, FLEET_PREFIX, numbers)
            hub = {"hub": stack.hub_process(), "postgres": stack.postgres_process()}
            await asyncio.sleep(SETTLE_S)
            idle_cpu, _, idle_busy = await sampled_window(hub, idle)
            out["idle"] = {"seconds": idle, "cpu": _cpu(idle_cpu), "hub_rss_mib": _rss_mib(idle_cpu),
                           "machine_busy_cores": idle_busy}
            timeout = max(120.0, terminals * 0.05)

            async def register() -> dict[str, Any]:
                t_start = time.monotonic()
                configs = [{"host": "127.0.0.1", "port": port, "phones": part, "first": k * len(parts[0]),
                            "interval_s": REPORT_S, "heartbeat_s": HEARTBEAT_S, "batch_share": BATCH_SHARE,
                            "register_timeout_s": timeout} for k, part in enumerate(parts)]
                answers = await asyncio.gather(*(c.start(cfg, timeout + 60) for c, cfg in
                                                 zip(children, configs, strict=True)))
                m = await jt808_metrics(api)
                return {"authenticated": sum(a["authenticated"] for a in answers),
                        "all_authenticated_s": round(time.monotonic() - t_start, 2),
                        "terminal_side_s": max(a["seconds"] for a in answers),
                        "failures": merge_tallies([{"failures": a["failures"]} for a in answers])["failures"],
                        "hub": m}

            busy0, t0 = machine_busy_seconds(), time.monotonic()
            reg_cpu, reg = await sampled(hub, register())  # the children start inside: their CPU is not sampled
            out["registration"] = {**reg, "cpu": _cpu(reg_cpu), "machine_busy_cores": round(
                (machine_busy_seconds() - busy0) / (time.monotonic() - t0), 2),
                "hub_cpu_seconds": round(sum(reg_cpu["hub"]) / 100, 2)}
            if reg["authenticated"] < terminals:
                raise BenchError(f"only {reg['authenticated']} of {terminals} terminals authenticated: "
                                 f"{reg['failures']}")
            for c in children:
                await c.go()
            await asyncio.sleep(SETTLE_S + REPORT_S)  # every terminal has reported once
            out["steady"] = await _steady(api, hub, children, seconds, out["idle"].get("hub_rss_mib"))
            final = [await c.stop() for c in children]
            await asyncio.sleep(3.0)  # the last reports committed
            end = await jt808_metrics(api)
            out["totals"] = _totals(merge_tallies(final), end, await stored_fixes(stack.database_url, FLEET_PREFIX))
    finally:
        for c in children:
            await c.close()
    return out


async def _steady(api: httpx.AsyncClient, hub: dict[str, Any], children: list[TerminalProcess], seconds: float,
                  idle_rss: float | None) -> dict[str, Any]:
    """``seconds`` of reports and heartbeats: CPU, RSS, reports sent and answered and fixes stored in the window."""
    procs = {**hub, **{f"terminals{k}": _child(c) for k, c in enumerate(children)}}
    s0, m0 = await _status(children), await jt808_metrics(api)
    cpu, wall, busy = await sampled_window(procs, seconds)
    s1, m1 = await _status(children), await jt808_metrics(api)
    hub_cpu = cores_summary(cpu["hub"])
    connected = s1["connected"]
    rss = _rss_mib(cpu)
    stored = m1["fixes_stored_total"] - m0["fixes_stored_total"]
    return {
        "seconds": round(wall, 1), "connected": connected, "cpu": _cpu(cpu), "machine_busy_cores": busy,
        "hub_rss_mib": rss, "hub_rss_peak_mib": round(max(cpu["hub_rss_mib"], default=0.0), 1),
        "hub_cpu_s_per_1000_per_min": cpu_s_per_1000_per_min(hub_cpu.get("mean_cores", 0.0), connected),
        "hub_rss_mib_per_1000": rss_mib_per_1000(rss, idle_rss, connected),
        "sent": {k: v - s0["sent"].get(k, 0) for k, v in s1["sent"].items() if v != s0["sent"].get(k, 0)},
        "ok": {k: v - s0["ok"].get(k, 0) for k, v in s1["ok"].items() if v != s0["ok"].get(k, 0)},
        "positions_sent": s1["positions_sent"] - s0["positions_sent"],
        "positions_ok": s1["positions_ok"] - s0["positions_ok"],
        "fixes_stored": int(stored), "fixes_per_s": round(stored / wall, 1),
        "hub": {k: round(v - m0.get(k, 0.0), 3) for k, v in m1.items() if v != m0.get(k)},
    }


def _totals(tally: dict[str, Any], metrics: dict[str, float], stored: int) -> dict[str, Any]:
    return {"positions_sent": tally["positions_sent"], "positions_ok": tally["positions_ok"],
            "fixes_in_database": stored, "loss": tally["positions_sent"] - stored,
            "unanswered_or_refused": tally["positions_sent"] - tally["positions_ok"],
            "sent": tally["sent"], "ok": tally["ok"], "failed": tally["failed"], "failures": tally["failures"],
            "hub": {k: round(v, 3) for k, v in sorted(metrics.items())}}
