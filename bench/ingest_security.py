"""``fieldhub bench ingest --security both|all``: the same ingest benchmark on two or three stacks in one invocation,
and what security costs per fix.

Each stack is fresh and runs the whole benchmark (:func:`bench.ingest.one_stack`): ``secure`` (TLS, one login per
device, the broker's ACL), optionally ``login`` (logins and ACL over plaintext loopback) and ``anonymous`` (the old
anonymous plaintext broker). Every stack has one connection per device, so they differ in security alone. Compared:
the rate held, loss, latency (commit lag of the ingest run; publish -> live feed of the latency run), and CPU
seconds per 1,000 stored fixes of the broker, the hub and the load generator, as ratios to the anonymous stack.
With the ``login`` stack the extra CPU splits into TLS (secure - login) and logins + ACL (login - anonymous).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import Any

from bench.report import clean, table
from bench.stack import PROJECT_ROOT

__all__ = ["compare", "main", "summary_table"]

OneStack = Callable[[argparse.Namespace, str], Awaitable[tuple[dict[str, Any], bool, bool]]]
PROCESSES = ("broker", "hub", "generator")


async def main(args: argparse.Namespace, modes: list[str], one_stack: OneStack) -> int:
    out = args.out or PROJECT_ROOT / "bench" / "results" / f"ingest-security-{dt.datetime.now(dt.UTC):%Y-%m-%d}.json"
    results: dict[str, Any] = {"command": "fieldhub bench ingest --security " + args.security, "runs": {}}
    failed_any = False
    for mode in modes:
        run, failed, terminated = await one_stack(args, mode)
        results["runs"][mode] = run
        failed_any = failed_any or failed or not clean(run)
        results["comparison"] = compare(results["runs"])
        _write(out, results)  # after every stack: what was measured survives an interruption
        if terminated:
            return 143
        print(table(run), flush=True)
    print("\n" + "\n".join(summary_table(results["comparison"])), flush=True)
    print(f"\nresults: {out}", flush=True)
    return 1 if failed_any else 0


def _write(out: Any, results: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")


def per_thousand(run: dict[str, Any]) -> dict[str, float | None]:
    """CPU seconds of each process per 1,000 fixes stored in the ingest run."""
    ingest = run.get("ingest") or {}
    stored = (ingest.get("stored") or {}).get("count") or 0
    seconds = (ingest.get("cpu") or {}).get("seconds") or {}
    return {p: round(1000 * seconds[p] / stored, 4) if stored and p in seconds else None for p in PROCESSES}


def _dist(d: dict[str, Any] | None) -> dict[str, Any]:
    d = d or {}
    return {"p50": d.get("p50"), "p99": d.get("p99")}


def outcome(run: dict[str, Any]) -> dict[str, Any]:
    ingest, latency = run.get("ingest") or {}, run.get("latency") or {}
    raw = (run.get("raw") or {}).get("mosquitto") or {}
    return {
        "target_rate": run["config"]["rate"], "sustained_rate": ingest.get("sustained_rate"),
        "loss": (ingest.get("stored") or {}).get("loss"), "rejects": (ingest.get("stored") or {}).get("rejects"),
        "commit_lag_ms": _dist(ingest.get("commit_lag_ms")),
        "live_latency_ms": _dist((latency.get("watcher") or {}).get("latency_ms")),
        "cpu_s_per_1000_fixes": per_thousand(run), "logins": run.get("logins"),
        "raw_mosquitto_rate": raw.get("rate"), "error": run.get("error")}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _diff_us(a: float | None, b: float | None) -> float | None:
    """Microseconds per fix between two per-1,000-fixes CPU figures."""
    return round(1000 * (a - b), 1) if a is not None and b is not None else None


def compare(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    stacks = {mode: outcome(run) for mode, run in runs.items()}
    result: dict[str, Any] = {"stacks": stacks}
    base = stacks.get("anonymous")
    if base is None:
        return result
    cost = {p: base["cpu_s_per_1000_fixes"][p] for p in PROCESSES}
    for mode in ("secure", "login"):
        if mode in stacks:
            mine = stacks[mode]["cpu_s_per_1000_fixes"]
            result[f"{mode}_vs_anonymous"] = {
                "cpu_ratio": {p: _ratio(mine[p], cost[p]) for p in PROCESSES},
                "extra_cpu_us_per_fix": {p: _diff_us(mine[p], cost[p]) for p in PROCESSES}}
    if "secure" in stacks and "login" in stacks:
        secure, login = stacks["secure"]["cpu_s_per_1000_fixes"], stacks["login"]["cpu_s_per_1000_fixes"]
        result["cpu_us_per_fix_of"] = {
            "tls": {p: _diff_us(secure[p], login[p]) for p in PROCESSES},
            "logins_and_acl": {p: _diff_us(login[p], cost[p]) for p in PROCESSES}}
    return result


def summary_table(comparison: dict[str, Any]) -> list[str]:
    lines = ["SECURITY  stack       rate held    loss  commit lag p50/p99 ms  live p50/p99 ms  "
             "CPU s per 1,000 fixes: broker / hub / generator   raw broker msg/s"]
    for mode, o in comparison["stacks"].items():
        cpu = o["cpu_s_per_1000_fixes"]
        lines.append(f"          {mode:<10} {o['sustained_rate'] or '-':>9}/{o['target_rate']:<6} {o['loss']!s:>5}  "
                     f"{o['commit_lag_ms']['p50']!s:>8} / {o['commit_lag_ms']['p99']!s:<8}  "
                     f"{o['live_latency_ms']['p50']!s:>6} / {o['live_latency_ms']['p99']!s:<6}  "
                     f"{cpu['broker']!s:>8} / {cpu['hub']!s} / {cpu['generator']!s}   {o['raw_mosquitto_rate']!s}"
                     + (f"  ERROR {o['error']}" if o["error"] else ""))
    for mode in ("secure", "login"):
        versus = comparison.get(f"{mode}_vs_anonymous")
        if versus:
            lines.append(f"  {mode} / anonymous CPU: " + ", ".join(
                f"{p} x{versus['cpu_ratio'][p]} (+{versus['extra_cpu_us_per_fix'][p]} us/fix)" for p in PROCESSES))
    split = comparison.get("cpu_us_per_fix_of")
    if split:
        for what, values in split.items():
            lines.append(f"  {what}: " + ", ".join(f"{p} {values[p]} us/fix" for p in PROCESSES))
    return lines
