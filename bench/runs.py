"""One load run against the running stack: generate, sample, drain, count, and what it all means."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg

from bench.latency import LiveWatcher
from bench.loadgen import GeneratorProcess, GeneratorRun
from bench.probes import CpuMeter, Sampler, Timeline, find_process, machine_busy_seconds, metric_sum
from bench.publisher import MqttProtocolError
from bench.report import commit_lags, distribution, rate_between, time_reaching, value_at
from bench.stack import BenchError, BenchStack

log = logging.getLogger(__name__)

DRAIN_S = 60.0
STAGES = ("decode", "validate", "dedupe", "state", "persist", "publish")


@dataclass(frozen=True, slots=True)
class Load:
    rate: float
    duration: float
    devices: int  # one MQTT connection each, with the device's own login
    qos: int
    warmup: float = 5.0


async def count_fixes(database_url: str) -> tuple[int, int]:
    """Exact ``count(*)`` and ``count(DISTINCT (device_id, ts))`` of ``fixes``."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        cur = await asyncio.wait_for(conn.execute("SELECT count(*), count(DISTINCT (device_id, ts)) FROM fixes"), 300)
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def run_load(stack: BenchStack, http: httpx.AsyncClient, load: Load,
                   watcher: LiveWatcher | None = None) -> dict[str, Any]:
    before = await count_fixes(stack.database_url)
    gen = GeneratorProcess(stack.device_url, stack.logins_file, rate=load.rate, duration=load.duration,
                           devices=load.devices, qos=load.qos)
    latency = None
    try:
        await _start(gen)
        sampler = Sampler(http, {
            "hub": CpuMeter(stack.hub_process), "broker": CpuMeter(stack.broker_process),
            "postgres": CpuMeter(stack.postgres_process), "generator": CpuMeter(lambda: find_process(gen.pid)),
            "bench": time.process_time, "machine": machine_busy_seconds,
        }, stack.hub_process)
        await sampler.sample_once()
        if not sampler.timeline.metrics:
            raise BenchError(f"the hub's /metrics did not answer:\n{stack.hub_log_tail()}")
        sampler.start()
        try:
            if watcher is not None:
                watcher.begin()
            gen.go()
            log.info("load: %g fixes/s for %g s over %d devices (%s), one connection each", load.rate,
                     load.duration, load.devices, stack.security)
            try:
                run = await gen.finish()
            except (MqttProtocolError, TimeoutError) as exc:
                raise BenchError(f"load generator: {exc!r}") from exc
            if run.summary.get("error"):
                raise BenchError(f"load generator: {run.summary['error']}")
            await _drain(sampler, stack, int(run.summary["acked"] if load.qos else run.summary["published"]))
            latency = watcher.end() if watcher is not None else None
        finally:
            timeline = await sampler.stop()
    finally:
        await gen.close()
    after = await count_fixes(stack.database_url)
    result = analyze(load, run, timeline, (after[0] - before[0], after[1] - before[1]))
    if latency is not None:
        result["watcher"] = latency
    return result


async def _start(gen: GeneratorProcess) -> None:
    try:
        await gen.start()
    except (MqttProtocolError, TimeoutError, OSError) as exc:
        raise BenchError(f"load generator did not start: {exc!r}") from exc


async def _drain(sampler: Sampler, stack: BenchStack, expected: int) -> None:
    """Wait (at most ``DRAIN_S``) until the hub stored what the broker acknowledged and its queues are empty."""
    base = sampler.timeline.metrics[0][1].get("fieldhub_fixes_stored_total", 0.0)
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline:
        if stack.hub_process() is None:
            raise BenchError(f"the hub died during the run:\n{stack.hub_log_tail()}")
        metrics = sampler.timeline.metrics[-1][1]
        if (metrics.get("fieldhub_fixes_stored_total", 0.0) - base >= expected
                and metric_sum(metrics, "fieldhub_queue_depth") == 0):
            return
        await asyncio.sleep(0.1)
    log.warning("backlog not drained after %.0f s", DRAIN_S)


def analyze(load: Load, run: GeneratorRun, timeline: Timeline, stored: tuple[int, int]) -> dict[str, Any]:
    summary = run.summary
    t_first, t_last = float(summary["t_first"]), float(summary["t_last"])
    published = [(t, float(p)) for t, p, _ in run.samples]
    base = timeline.metrics[0][1]
    stored_curve = [(t, v - base.get("fieldhub_fixes_stored_total", 0.0)) for t, v in timeline.stored()]
    expected = summary["acked"] if load.qos else summary["published"]
    warmup = min(load.warmup, load.duration / 4)
    window = (t_first + warmup, t_last)
    reached = time_reaching(stored_curve, expected)
    last = timeline.metrics[-1][1]

    def delta(name: str) -> float:
        return metric_sum(last, name) - metric_sum(base, name)

    count = stored[0]
    cpu = cpu_usage(timeline)
    cpu_s = cpu["seconds"]
    stages = {s: delta(f"fieldhub_stage_seconds_total{{stage={s}}}") for s in STAGES}
    outside = cpu_s.get("hub", 0.0) - sum(stages.values())
    rss = [r for _, _, r in timeline.processes if r]
    return {
        "load": {"rate": load.rate, "duration": load.duration, "devices": load.devices,
                 "connections": load.devices, "qos": load.qos},
        "generator": {k: summary[k] for k in ("published", "acked", "rate", "cpu_s", "slices", "late_slices",
                                               "max_backlog_ms", "unknown_acks")},
        "stored": {"count": count, "distinct": stored[1], "loss": expected - stored[1],
                   "duplicates": round(delta("fieldhub_duplicates_total")),
                   "rejects": round(delta("fieldhub_rejects_total"))},
        "sustained_rate": round(rate_between(stored_curve, *window)),
        "window_s": [round(warmup, 1), round(t_last - t_first, 1)],
        "drain_s": round(reached - t_last, 2) if reached is not None else None,
        "commit_lag_ms": distribution([round(1000 * lag) for lag in commit_lags(published, stored_curve,
                                                                                t_first, t_last)]),
        "hub_rss_mib": {"idle": _mib(rss[0]) if rss else None, "peak": _mib(max(rss)) if rss else None,
                        "end": _mib(rss[-1]) if rss else None},
        "devices_tracked": round(last.get("fieldhub_devices_tracked", 0)),
        "cpu": cpu,
        "hub_time": {"stage_seconds": {s: round(v, 3) for s, v in stages.items()},
                     "stages_s": round(sum(stages.values()), 2), "outside_stages_s": round(outside, 2),
                     "us_per_fix": {"stages": _per(sum(stages.values()), count), "outside_stages": _per(outside, count),
                                    "total": _per(cpu_s.get("hub", 0.0), count)}},
        "max_queue_depth": {q: max((m.get(f"fieldhub_queue_depth{{queue={q}}}", 0) for _, m in timeline.metrics),
                                   default=0) for q in ("inbox", "writer")},
        "series": _series(published, stored_curve, timeline, t_first),
    }


def cpu_usage(timeline: Timeline) -> dict[str, Any]:
    """CPU seconds and cores of each measured process between the first and the last process sample."""
    (t0, first_cpu, _), (t1, last_cpu, _) = timeline.processes[0], timeline.processes[-1]
    cpu_s = {k: (last_cpu.get(k) or 0.0) - (first_cpu.get(k) or 0.0) for k in last_cpu}
    # Whatever else ran on the machine meanwhile (other users' processes, the kernel's own threads).
    cpu_s["others"] = max(0.0, cpu_s.pop("machine", 0.0) - sum(cpu_s.values()))
    return {"wall_s": round(t1 - t0, 2), "seconds": {k: round(v, 2) for k, v in cpu_s.items()},
            "cores": {k: round(v / (t1 - t0), 2) if t1 > t0 else None for k, v in cpu_s.items()}}


def _per(seconds: float, fixes: int) -> float:
    """Microseconds per fix."""
    return round(1e6 * seconds / max(1, fixes), 1)


def _series(published: list[tuple[float, float]], stored: list[tuple[float, float]], timeline: Timeline,
            t_first: float) -> list[dict[str, Any]]:
    """Per second: published and stored counts, the hub's CPU % and RSS."""
    rows = []
    procs = timeline.processes
    for (t0, c0, _), (t1, c1, rss) in itertools.pairwise(procs):
        hub = (c1.get("hub") or 0.0) - (c0.get("hub") or 0.0)
        rows.append({"t": round(t1 - t_first, 2), "published": round(value_at(published, t1)),
                     "stored": round(value_at(stored, t1)), "hub_cpu_pct": round(100 * hub / (t1 - t0), 1),
                     "hub_rss_mib": _mib(rss) if rss else None})
    return rows


def _mib(n: int) -> int:
    return round(n / 2**20)
