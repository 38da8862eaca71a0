"""The benchmarks' subcommands of the ``fieldhub`` command line: ``fieldhub bench NAME [options]``.

``ingest``, ``hostile`` and ``accuracy`` parse their options here; the others (:data:`MODULE_BENCHES`) have a
command line of their own and get every option after their name. :mod:`fieldhub.cli` adds them.
"""

from __future__ import annotations

import argparse
import asyncio

__all__ = ["MODULE_BENCHES", "add_bench", "cmd_bench_module"]


async def cmd_bench(args: argparse.Namespace) -> int:
    from bench import ingest

    return await ingest.main(args)


async def cmd_bench_accuracy(args: argparse.Namespace) -> int:
    from bench import e2e_accuracy

    return await e2e_accuracy.main_async(args)


# Benchmarks with their own command line, run as `fieldhub bench NAME [their options]`.
MODULE_BENCHES = {
    "render": ("bench.render", "one-map rendering of N live units in headless Chromium: fps, first paint"),
    "dispatch": ("bench.dispatch_latency", "incident POST -> dispatch command on the wire with N live units"),
    "recommender": ("bench.dispatch", "the dispatch recommender alone with N units (pure, in-process)"),
    "detectors": ("bench.accuracy", "arrival/departure detectors offline against ground truth (pure)"),
    "drones": ("bench.drones", "drone commands: API -> COMMAND_ACK round trip, N drones at once, link-loss detection"),
    "drone-dispatch": ("bench.drone_dispatch", "drone dispatch: incident -> airborne -> over a scene 300 m away,"
                                               " p50/p95 next to the physical minimum"),
    "video": ("bench.video", "live video: N 720p30 streams x M viewers via the hub: fps, CPU, latency, first frame"),
    "gb28181": ("bench.gb28181", "GB/T 28181 cameras: N registered (CPU, RSS, loss) and M PS/RTP streams x viewers"
                                 " next to WHIP"),
    "gateways": ("bench.gateways", "device gateways: N JT/T 808 terminals (CPU, RSS, loss) and hub CPU per fix by path"
                                   " vs MQTT"),
}


async def cmd_bench_module(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(MODULE_BENCHES[args.bench_command][0])
    # Their main() runs its own event loop: give it a thread of its own.
    result: int | None = await asyncio.to_thread(module.main, args.options)
    return result or 0


def add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``fieldhub bench NAME``. The composition passes the options a module benchmark did not parse to it."""
    p = sub.add_parser("bench", help="benchmarks")
    bsub = p.add_subparsers(dest="bench_command", required=True)
    b = bsub.add_parser("ingest", help="sustained ingest: rate, loss, latency, raw limits")
    from bench.ingest import add_arguments

    add_arguments(b)
    b.set_defaults(func=cmd_bench)
    b = bsub.add_parser("hostile", help="1 %% hostile messages and a flooding device vs clean runs: loss, rate, p99")
    from bench import hostile

    hostile.add_arguments(b)
    b.set_defaults(func=hostile.main)
    b = bsub.add_parser("accuracy", help="end-to-end arrival/departure accuracy against the simulator's truth")
    from bench.e2e_accuracy import add_arguments as add_accuracy_arguments

    add_accuracy_arguments(b)
    b.set_defaults(func=cmd_bench_accuracy)
    for name, (_module, text) in MODULE_BENCHES.items():
        # Its options (--help too) are the module's own: main() passes what it does not know through.
        b = bsub.add_parser(name, help=text, add_help=False)
        b.set_defaults(func=cmd_bench_module)
