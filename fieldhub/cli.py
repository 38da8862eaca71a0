"""The ``fieldhub`` command line: the subcommands of the hub, the simulator and the benchmarks on one parser.

Only composition lives here. ``serve`` gets the simulated city of ``city_seed`` as its base map and, when
``road_graph == "city"``, as the road graph of dispatch ETAs (``sim.city.build_city``), so the hub itself
never depends on the simulator.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial

from bench.cli import add_bench, cmd_bench_module
from geo.roads import RoadGraph
from hub.cli import add_device, add_serve, add_token, configure_logging, run
from hub.config import Settings
from sim.cli import add_demo, add_sim

__all__ = ["build_parser", "main", "serve_city"]


def serve_city(settings: Settings) -> Callable[[], RoadGraph]:
    """The road network `fieldhub serve` gives the hub: the simulated city of ``city_seed``, built when needed."""
    from sim.city import build_city

    return partial(build_city, seed=settings.city_seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fieldhub", description="Field-unit device and telemetry hub")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve(sub, serve_city)
    add_demo(sub)
    add_sim(sub)
    add_device(sub)
    add_token(sub)
    add_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "func", None) is cmd_bench_module:
        args.options = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    configure_logging(args.verbose)
    return run(args.func(args))
