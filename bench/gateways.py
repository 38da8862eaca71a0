"""Device gateways through the hub: a JT/T 808 fleet's cost, and the hub's CPU per fix on each path next to MQTT.

Run: ``fieldhub bench gateways [--terminals 5000] [--seconds 180] [--procs 2] [--cost-rate 200]
[--cost-seconds 60] [--part all|fleet|cost]``. Both parts on one bench stack (:mod:`bench.stack`: the hub as its
own process with FIELDHUB_JT808, FIELDHUB_OWNTRACKS and FIELDHUB_OSMAND on, a broker that takes new device logins
live), one after the other:

1. the fleet (:mod:`bench.jt808_fleet`): ``--terminals`` JT/T 808 terminals over TCP in ``--procs`` child
   processes, registering and authenticating at once, then a report every 10 s and a heartbeat each 60 s: hub
   CPU-s per 1,000 terminals per minute and MiB RSS per 1,000 against the idle hub, the registration burst, and
   the positions sent against answered and stored;
2. the per-fix cost (:mod:`bench.gateway_cost`): ``--cost-rate`` fixes/s for ``--cost-seconds`` over MQTT,
   JT/T 808, OsmAnd HTTP, OwnTracks HTTP and OwnTracks MQTT: µs of hub CPU per fix (the idle hub's subtracted),
   each with its ratio to MQTT.

CPU is sampled per process and for the whole machine so contention shows. JSON in
``bench/results/gateways-<UTC date>.json``; a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.gateway_cost import run_cost
from bench.gateways_report import markdown, table
from bench.jt808_fleet import hub_env, run_fleet
from bench.report import machine_facts
from bench.stack import BenchStack, run_bench

__all__ = ["build_parser", "main", "run"]

log = logging.getLogger(__name__)


async def _part(name: str, results: dict[str, Any], body: Any) -> bool:
    """One part; its figures (or its error) in ``results[name]``. False when it failed."""
    part: dict[str, Any] = {}
    results[name] = part
    try:
        part.update(await body())
    except Exception as exc:  # what was measured stays, the error says why the rest is missing
        part["error"] = f"{type(exc).__name__}: {exc}"
        log.exception("part %s failed", name)
        return False
    return True


async def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Both parts on one stack, stopped whatever happens. Not :func:`bench.stack.run_on_stack`: ``fieldhub bench``
    runs this in a worker thread, where uvloop refuses its SIGTERM handler (as :mod:`bench.gb28181` says)."""
    results: dict[str, Any] = {"machine": machine_facts(), "command": command,
                               "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    workdir = Path(tempfile.mkdtemp(prefix="fieldhub-bench-gateways-"))
    stack = BenchStack(workdir, hub_env=hub_env(), live_logins=True)
    ok = True
    try:
        await stack.start()
        if args.part in ("all", "fleet"):
            ok &= await _part("fleet", results, lambda: run_fleet(
                stack, workdir, terminals=args.terminals, seconds=args.seconds, idle=args.idle, procs=args.procs))
        if args.part in ("all", "cost"):
            ok &= await _part("cost", results, lambda: run_cost(
                stack, workdir, rate=args.cost_rate, seconds=args.cost_seconds))
    except Exception as exc:  # the stack did not start: say so in the results
        results["error"] = f"{type(exc).__name__}: {exc}"
        log.exception("the gateways benchmark failed")
        ok = False
    finally:
        await asyncio.to_thread(stack.close)
        if not ok or args.keep:
            log.warning("kept %s for inspection (hub.log, terminal and generator logs)", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fieldhub bench gateways", description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("all", "fleet", "cost"), default="all")
    p.add_argument("--terminals", type=int, default=5000, help="JT/T 808 terminals of the fleet part")
    p.add_argument("--seconds", type=float, default=180.0, help="steady window of the fleet part")
    p.add_argument("--idle", type=float, default=30.0, help="seconds of the idle hub before the fleet registers")
    p.add_argument("--procs", type=int, default=2, help="child processes the fleet's terminals run in")
    p.add_argument("--cost-rate", type=float, default=200.0, help="fixes per second on each path of the cost part")
    p.add_argument("--cost-seconds", type=float, default=60.0, help="load window of each path (and the idle one)")
    p.add_argument("--keep", action="store_true", help="keep the stack's directory (hub.log, children's logs)")
    p.add_argument("--out", type=Path, help="JSON results (default bench/results/gateways-<UTC date>.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 < args.terminals <= 100_000 or args.seconds < 10 or args.idle < 2 or not 0 < args.procs <= 16 \
            or not 0 < args.cost_rate <= 5000 or args.cost_seconds < 5:
        print("--terminals 1-100000, --seconds >= 10, --idle >= 2, --procs 1-16, --cost-rate 0-5000,"
              " --cost-seconds >= 5", file=sys.stderr)
        return 2
    return run_bench("gateways", lambda command: run(args, command), argv, args.out,
                     lambda result: (table(result), markdown(result)))


if __name__ == "__main__":
    sys.exit(main())
