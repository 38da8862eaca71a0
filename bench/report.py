"""Turning samples into numbers, and numbers into the printed table.

Curves are lists of ``(wall time, count)`` samples of a non-decreasing counter;
between samples they are read by linear interpolation.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from bisect import bisect_left
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

Curve = Sequence[tuple[float, float]]


# ------------------------------------------------------------------- analysis
def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def distribution(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {"count": len(ordered), "p50": percentile(ordered, 50), "p95": percentile(ordered, 95),
            "p99": percentile(ordered, 99), "max": ordered[-1], "mean": round(sum(ordered) / len(ordered), 1)}


def value_at(curve: Curve, t: float) -> float:
    """The counter at time ``t`` (held flat outside the samples)."""
    times = [p[0] for p in curve]
    i = bisect_left(times, t)
    if i == 0:
        return curve[0][1]
    if i == len(curve):
        return curve[-1][1]
    (t0, v0), (t1, v1) = curve[i - 1], curve[i]
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1


def time_reaching(curve: Curve, n: float) -> float | None:
    """When the counter first reached ``n``; None if it never did."""
    previous = None
    for t, v in curve:
        if v >= n:
            if previous is None or v == previous[1]:
                return t
            t0, v0 = previous
            return t0 + (t - t0) * (n - v0) / (v - v0)
        previous = (t, v)
    return None


def commit_lags(published: Curve, stored: Curve, start: float, end: float, step_s: float = 1.0) -> list[float]:
    """For each ``step_s`` of the run: time from the published count reaching N to the stored count reaching N."""
    lags = []
    t = start + step_s
    while t <= end + 1e-9:
        n = value_at(published, t)
        reached = time_reaching(stored, n)
        if n > 0 and reached is not None:
            lags.append(max(0.0, reached - time_reaching(published, n)))  # type: ignore[operator]
        t += step_s
    return lags


def rate_between(curve: Curve, start: float, end: float) -> float:
    return (value_at(curve, end) - value_at(curve, start)) / (end - start) if end > start else 0.0


def machine_facts() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu": model, "cores": os.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "kernel": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


# ---------------------------------------------------------------------- table
def run_header(r: dict[str, Any]) -> str:
    """One line saying where and how a bench run ran: date, machine, load at start, the command."""
    m = r["machine"]
    return (f"{m['date']}; {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['kernel']}, Python"
            f" {m['python']}; load average at start {m['load_average_at_start']}; `{r['command']}`")


def rows_table(name: str, r: dict[str, Any], rows: Sequence[tuple[str, str]], width: int) -> str:
    """The printed table of a bench whose results are (measure, value) rows."""
    return "\n".join([f"fieldhub bench {name}", run_header(r), "", *(f"  {k:<{width}} {v}" for k, v in rows)])


def rows_markdown(title: str, r: dict[str, Any], rows: Sequence[tuple[str, str]]) -> str:
    """The same rows as a BENCHMARKS.md section."""
    return "\n".join([f"### {title}", "", run_header(r), "", "| measure | value |", "|---|---|",
                      *(f"| {k.strip()} | {v} |" for k, v in rows)])


def fmt_number(value: Any, digits: int = 0) -> str:
    """A count or rate for a table: thousands separated, '-' for none."""
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{round(value):,}"


def _ms(d: dict[str, Any], keys: Sequence[str] = ("p50", "p95", "p99", "max")) -> str:
    if not d.get("count"):
        return "no samples"
    return "  ".join(f"{k} {_n(d[k])}" for k in keys) + " ms"


def clean(results: dict[str, Any]) -> bool:
    """No loss and no rejects in any run of an ingest benchmark's results."""
    runs = [results[k]["stored"] for k in ("ingest", "latency") if k in results]
    return all(r["loss"] == 0 and r["rejects"] == 0 for r in runs)


def table(results: dict[str, Any]) -> str:
    m, cfg = results["machine"], results["config"]
    out = [f"fieldhub bench ingest  {m['date']}",
           f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['kernel']}, Python {m['python']};"
           f" load average at start {m['load_average_at_start'][0]}", ""]
    r = results.get("ingest")
    if r:
        g, s, c, h = r["generator"], r["stored"], r["cpu"], r["hub_time"]
        out += [f"INGEST  target {_n(cfg['rate'])} fixes/s x {cfg['duration']:g} s, {_n(cfg['devices'])} devices,"
                f" {cfg['connections']} MQTT connections, QoS {cfg['qos']}",
                f"  generator        published {_n(g['published'])} at {_n(g['rate'], 1)}/s, PUBACKed"
                f" {_n(g['acked'])}; late slices {g['late_slices']}/{g['slices']},"
                f" max backlog {g['max_backlog_ms']} ms",
                f"  stored           {_n(s['count'])} rows, {_n(s['distinct'])} distinct (device_id, ts);"
                f" loss {_n(s['loss'])}, duplicates {_n(s['duplicates'])}, rejects {_n(s['rejects'])}",
                f"  sustained rate   {_n(r['sustained_rate'])} fixes/s stored over the steady window"
                f" ({r['window_s'][0]:g}-{r['window_s'][1]:g} s); " + (
                    f"backlog drained {r['drain_s']:.1f} s after the last publish" if r["drain_s"] is not None
                    else "backlog NOT drained within the wait: loss counts what was still queued"),
                f"  publish->commit  {_ms(r['commit_lag_ms'], ('p50', 'p99', 'max'))}"
                f"  (per second of the run, {r['commit_lag_ms'].get('count', 0)} points)",
                f"  hub memory       RSS {_n(r['hub_rss_mib']['idle'])} MiB idle with {_n(r['devices_tracked'])}"
                f" devices tracked, {_n(r['hub_rss_mib']['peak'])} MiB peak under load",
                f"  where the time goes: CPU seconds over {c['wall_s']:g} s of load + drain"
                f" ({m['cores']} cores = {_n(c['wall_s'] * (m['cores'] or 1))} core-s)",
                "    per process (cores)   " + "  ".join(f"{k} {v:.1f} ({c['cores'][k]:.2f})"
                                                         for k, v in c["seconds"].items()),
                "    hub pipeline stages   " + "  ".join(f"{k} {v:.1f}" for k, v in h["stage_seconds"].items())
                + f"  = {h['stages_s']:.1f}",
                f"    hub outside stages    {h['outside_stages_s']:.1f}  (MQTT client, writer/COPY, live feed, event"
                " loop, GC)",
                f"    per stored fix        hub {h['us_per_fix']['total']:.0f} us = stages"
                f" {h['us_per_fix']['stages']:.0f} + outside {h['us_per_fix']['outside_stages']:.0f}", ""]
    lat = results.get("latency")
    if lat:
        w = lat["watcher"]
        out += [f"LATENCY publish -> WebSocket at {_n(lat['rate'])} fixes/s x {lat['duration']:g} s"
                f" (generator {_n(lat['generator']['rate'], 1)}/s, loss {_n(lat['loss'])})",
                f"  {_n(w['positions'])} unit positions   {_ms(w['latency_ms'])}",
                f"  frame -> client {_ms(w['frame_to_client_ms'], ('p50', 'p99'))};  {w['frames']} frames,"
                f" {_n(w['ws_bytes_per_s'] / 1024, 1)} KiB/s on the WebSocket", ""]
    raw = results.get("raw")
    if raw:
        hub_rate = (r or {}).get("sustained_rate") or 0
        out.append("RAW LIMITS (same machine, same run)                      rate        hub sustained / limit")
        for label, key, unit in (("Mosquitto pass-through, C pub -> C sub, QoS 0", "mosquitto", "msg/s"),
                                 ("PostgreSQL binary COPY, 500k rows, PK", "copy", "rows/s"),
                                 ("hub storage path alone (Database.write)", "hub_write", "rows/s")):
            rate = raw.get(key, {}).get("rate")
            ratio = f"{100 * hub_rate / rate:.1f} %" if rate else "-"
            out.append(f"  {label:<54} {_n(rate):>8} {unit:<7} {ratio}")
    return "\n".join(out)


_n = fmt_number
