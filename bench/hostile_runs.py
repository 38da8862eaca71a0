"""One scenario of ``fieldhub bench hostile`` against the running stack, and what the database says of it.

A scenario is paced good fixes (``bench.hostile_load --mode hostile``, with or without hostile messages
mixed in) and optionally a flooding device in a process and connection of its own
(``--mode flood``). While it runs, the hub's /metrics and every process's CPU are sampled; afterwards the
backlog drains and the database is asked, per good fix:

- **publish -> commit**: the generator writes the wall clock at publish into each good fix's ``ts``
  (milliseconds; on loopback the benchmark, the generator and PostgreSQL share the clock), and PostgreSQL
  knows when the row's transaction committed (``pg_xact_commit_timestamp(xmin)``, with
  ``track_commit_timestamp = on``). Their difference is the latency of *every* good fix, not a sample and
  not a count-curve estimate. (The device's PUBACK cannot tell: MQTT acknowledges per hop, so the
  generator's PUBACK comes from the broker when it has the message; the hub's PUBACK-after-commit goes to
  the broker.)
- **stored rate**: good fixes whose commit fell in the steady window, per second;
- **loss**: good fixes published minus good fixes stored (exact; ``(device_id, ts)`` is the key and every
  good fix has its own).

Good fixes are the rows of devices ``bench-NNNNN`` with ``ts`` inside the run and no attributes: hostile
fixes that get stored carry an attribute or a ``ts`` outside the run (see :mod:`bench.hostile_payloads`),
and the flooding device is ``bench-flood-00000``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx
import psutil
import psycopg

from bench.hostile_payloads import FUTURE_MS
from bench.loadgen import GeneratorProcess, device_ids
from bench.probes import CpuMeter, Sampler, find_process, machine_busy_seconds, metric_sum
from bench.publisher import MqttProtocolError
from bench.runs import cpu_usage
from bench.stack import BenchError, BenchStack

log = logging.getLogger(__name__)

DRAIN_S = 60.0
SETTLE_S = 1.5  # queues empty and nothing stored for this long: the backlog is drained
GOOD_PATTERN = r"^bench-[0-9]+$"
FLOOD_DEVICE = device_ids(1, "bench-flood-")[0]
QUERY_TIMEOUT_S = 300.0

GOOD_SQL = """
SELECT count(*), count(*) FILTER (WHERE c IS NULL),
       count(*) FILTER (WHERE c >= %(w0)s AND c < %(w1)s),
       count(c) FILTER (WHERE ts >= %(steady)s),
       percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY c - ts) FILTER (WHERE ts >= %(steady)s),
       max(c - ts) FILTER (WHERE ts >= %(steady)s), avg(c - ts) FILTER (WHERE ts >= %(steady)s)
FROM (SELECT ts, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 * 1000 AS c
      FROM fixes WHERE device_id ~ %(pattern)s AND ts BETWEEN %(lo)s AND %(hi)s AND attrs IS NULL) AS good
"""
MIXED_SQL = """
SELECT count(*) FILTER (WHERE attrs->>'bench' = 'mixed_batch'),
       count(*) FILTER (WHERE attrs->>'bench' IS DISTINCT FROM 'mixed_batch')
FROM fixes WHERE device_id ~ %(pattern)s AND ts BETWEEN %(lo)s AND %(hi)s
"""
FUTURE_SQL = "SELECT count(*) FROM fixes WHERE device_id ~ %(pattern)s AND ts BETWEEN %(lo)s AND %(hi)s"
FLOOD_SQL = "SELECT count(*) FROM fixes WHERE device_id = %(device)s AND ts BETWEEN %(lo)s AND %(hi)s"
REJECTS_SQL = """
SELECT reason, count(*) FROM rejects WHERE received_at BETWEEN %(lo)s AND %(hi)s GROUP BY reason ORDER BY reason
"""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    rate: float  # good fixes per second
    duration: float
    devices: int
    connections: int
    qos: int = 1
    warmup: float = 5.0
    hostile_every: int = 0  # one hostile message after every N good fixes; 0: none
    seed: int = 1
    flood_rate: float = 0.0  # messages per second of the flooding device; 0: no flood
    flood_qos: int = 1


def generators(stack: BenchStack, sc: Scenario) -> dict[str, GeneratorProcess]:
    gens = {"good": GeneratorProcess(
        stack.device_url, stack.logins_file, rate=sc.rate, duration=sc.duration, devices=sc.devices,
        qos=sc.qos, module="bench.hostile_load",
        extra_argv=["--mode", "hostile", "--hostile-every", str(sc.hostile_every), "--seed", str(sc.seed)])}
    if sc.flood_rate > 0:
        gens["flood"] = GeneratorProcess(
            stack.device_url, stack.logins_file, rate=sc.flood_rate, duration=sc.duration, devices=1,
            qos=sc.flood_qos, module="bench.hostile_load",
            extra_argv=["--mode", "flood", "--device-prefix", "bench-flood-"])
    return gens


async def run_scenario(stack: BenchStack, http: httpx.AsyncClient, sc: Scenario) -> dict[str, Any]:
    gens = generators(stack, sc)
    try:
        try:
            await asyncio.gather(*(g.start() for g in gens.values()))
        except (MqttProtocolError, TimeoutError, OSError) as exc:
            raise BenchError(f"{sc.name}: a load generator did not start: {exc!r}") from exc
        cpu = {"hub": CpuMeter(stack.hub_process), "broker": CpuMeter(stack.broker_process),
               "postgres": CpuMeter(stack.postgres_process)}
        for name, gen in gens.items():
            cpu[f"{name}_generator"] = CpuMeter(functools.partial(_process_of, gen))
        sampler = Sampler(http, {**cpu, "bench": time.process_time, "machine": machine_busy_seconds},
                          stack.hub_process)
        await sampler.sample_once()
        if not sampler.timeline.metrics:
            raise BenchError(f"the hub's /metrics did not answer:\n{stack.hub_log_tail()}")
        sampler.start()
        try:
            for gen in gens.values():
                gen.go()
            log.info("%s: %g good fixes/s for %g s over %d devices%s%s", sc.name, sc.rate, sc.duration, sc.devices,
                     f", 1 hostile message per {sc.hostile_every} good fixes" if sc.hostile_every else "",
                     f", one device flooding {sc.flood_rate:g} msg/s (QoS {sc.flood_qos})" if sc.flood_rate else "")
            try:
                runs = {name: await gen.finish() for name, gen in gens.items()}
            except (MqttProtocolError, TimeoutError) as exc:
                raise BenchError(f"{sc.name}: load generator: {exc!r}") from exc
            for name, run in runs.items():
                if run.summary.get("error"):
                    raise BenchError(f"{sc.name}: {name} generator: {run.summary['error']}")
            drained = await drain(sampler, stack)
        finally:
            timeline = await sampler.stop()
    finally:
        await asyncio.gather(*(g.close() for g in gens.values()))
    end = time.time()
    good = runs["good"].summary
    result: dict[str, Any] = {
        "scenario": dataclasses.asdict(sc),
        "generator": {k: good[k] for k in ("published", "acked", "good", "hostile", "rate", "cpu_s", "late_slices",
                                            "slices", "max_backlog_ms", "ts_ahead")},
        "drained": drained,
        "cpu": cpu_usage(timeline),
        "rejects_counted": reject_deltas(timeline.metrics[0][1], timeline.metrics[-1][1]),
        "hub_rss_mib_peak": round(max((r for _, _, r in timeline.processes if r), default=0) / 2**20),
        "max_queue_depth": max((metric_sum(m, "fieldhub_queue_depth") for _, m in timeline.metrics), default=0),
    }
    if sc.hostile_every:
        result["hostile"] = {k: good[k] for k in ("hostile_by_kind", "hostile_bytes_by_kind", "expected_rejects",
                                                   "good_elements")}
    if "flood" in runs:
        f = runs["flood"].summary
        result["flood"] = {k: f[k] for k in ("device", "published", "acked", "rate", "cpu_s", "ts_range")}
    result.update(await from_database(stack.database_url, sc, runs, end))
    return result


async def drain(sampler: Sampler, stack: BenchStack) -> bool:
    """Wait until the hub's queues are empty and nothing more is stored (at most ``DRAIN_S``)."""
    deadline = time.monotonic() + DRAIN_S
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        if stack.hub_process() is None:
            raise BenchError(f"the hub died during the run:\n{stack.hub_log_tail()}")
        metrics = sampler.timeline.metrics[-1][1]
        stored = metrics.get("fieldhub_fixes_stored_total", 0.0)
        if stored != last or metric_sum(metrics, "fieldhub_queue_depth") > 0:
            last, since = stored, time.monotonic()
        elif time.monotonic() - since >= SETTLE_S:
            return True
        await asyncio.sleep(0.1)
    log.warning("backlog not drained after %.0f s", DRAIN_S)
    return False


def _process_of(gen: GeneratorProcess) -> psutil.Process | None:
    return find_process(gen.pid)


def reject_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """Rejects the hub counted during the run, by reason (``fieldhub_rejects_total{reason=...}``)."""
    prefix = "fieldhub_rejects_total{"
    deltas = {}
    for key, value in after.items():
        if key.startswith(prefix):
            labels = dict(part.split("=", 1) for part in key[len(prefix):-1].split(",") if "=" in part)
            delta = round(value - before.get(key, 0.0))
            if delta:
                deltas[labels.get("reason", "?")] = delta
    return dict(sorted(deltas.items()))


async def from_database(url: str, sc: Scenario, runs: dict[str, Any], end: float) -> dict[str, Any]:
    good = runs["good"].summary
    t_first, t_last = float(good["t_first"]), float(good["t_last"])
    warmup = min(sc.warmup, sc.duration / 4)
    steady_ms, last_ms = (t_first + warmup) * 1000, t_last * 1000
    # ts is bumped per device to stay strictly increasing; at a few fixes/s per device by far < 2 s.
    lo, hi = math.floor(t_first * 1000) - 1, math.ceil(t_last * 1000) + 2000
    window = {"pattern": GOOD_PATTERN, "lo": lo, "hi": hi, "steady": steady_ms, "w0": steady_ms, "w1": last_ms}
    out: dict[str, Any] = {}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=10) as conn:
        async def one(sql: str, params: dict[str, Any]) -> tuple[Any, ...]:
            cur = await asyncio.wait_for(conn.execute(sql, params), QUERY_TIMEOUT_S)
            row = await cur.fetchone()
            assert row is not None
            return tuple(row)

        stored, no_commit_ts, in_window, samples, pcts, worst, mean = await one(GOOD_SQL, window)
        published = int(good["good"])
        out["good"] = {"published": published, "stored": stored, "lost": published - stored,
                       "stored_rate": round(in_window / (last_ms - steady_ms) * 1000) if last_ms > steady_ms else None,
                       "window_s": [round(warmup, 1), round(t_last - t_first, 1)],
                       "without_commit_ts": no_commit_ts}
        out["latency_ms"] = ({"count": samples, "p50": round(pcts[0], 1), "p95": round(pcts[1], 1),
                              "p99": round(pcts[2], 1), "max": round(worst, 1), "mean": round(mean, 1)}
                             if samples else {"count": 0})
        if sc.hostile_every:
            past_lo, past_hi = good["reserved_ts"]
            mixed, other = await one(MIXED_SQL, {"pattern": GOOD_PATTERN, "lo": past_lo, "hi": past_hi})
            future = await one(FUTURE_SQL, {"pattern": GOOD_PATTERN, "lo": lo + FUTURE_MS, "hi": hi + FUTURE_MS + 1000})
            h = out["hostile_stored"] = {"good_elements": good["good_elements"], "good_elements_stored": mixed,
                                         "good_elements_lost": good["good_elements"] - mixed,
                                         "hostile_fixes_stored": other + future[0]}
            h["hostile_fixes_stored_detail"] = {"reserved_past_ts": other, "future_ts": future[0]}
        if "flood" in runs:
            flood_lo, flood_hi = runs["flood"].summary["ts_range"]
            out["flood_stored"] = (await one(FLOOD_SQL, {"device": FLOOD_DEVICE, "lo": flood_lo, "hi": flood_hi}))[0]
        cur = await conn.execute(REJECTS_SQL, {"lo": lo - 1000, "hi": math.ceil(end * 1000)})
        out["rejects_kept"] = {reason: count for reason, count in await cur.fetchall()}
    return out
