"""The system under test: a private Mosquitto, a private PostgreSQL and the hub as a subprocess.

With ``database_url`` the stack starts no PostgreSQL and uses that one (an external PostgreSQL or
TimescaleDB), so the same benchmark measures the hub against it. Everything else
lives in one fresh directory and is stopped by :meth:`BenchStack.close`
(synchronous, bounded, safe to call twice and after a partial start). The hub
runs as its own process (``python -m fieldhub serve``) so its CPU and memory are
measured apart from the load generator and from the benchmark itself. Children
are started in their own session (Ctrl-C reaches only the benchmark, which then
stops them in order) and are asked by the kernel to end if the benchmark dies.

The broker runs as a deployment's does unless told otherwise (``security``, see
``SECURITY_MODES``): Mosquitto's dynamic-security plugin, no anonymous access, the
hub's own login on the loopback listener, devices over TLS with a CA of the stack's
own, each with the login the hub issued it; the API token is an admin's, made with
``fieldhub token create`` before the hub starts, so the bench can provision devices.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from bench.probes import find_process
from bench.processes import PROJECT_ROOT, die_with_parent, python_env, stop_process
from devices.broker import BrokerAddress
from hub.domain.device_login import StoredLogin, new_login, new_secret
from hub.infra.embedded import BrokerSecurity, EmbeddedPostgres, MosquittoBroker, free_port
from hub.infra.tls import ensure_ca
from hub.storage import Database
from hub.storage.device_logins import DeviceLoginStore

log = logging.getLogger(__name__)

HUB_CLIENT_ID = "fieldhub-bench-hub"
ADMIN_USER = "fieldhub-admin"  # hub.broker_setup.ADMIN_USER: the broker's dynamic-security administrator
# How the stack's devices reach the broker:
# - "secure": the deployment default: TLS (the broker verified against the stack's CA), one login per device,
#   the broker's ACL (a device writes only its own topics), no anonymous access;
# - "login": the same broker, logins and ACL, devices on the plaintext loopback listener (TLS's share of the cost);
# - "anonymous": the old anonymous plaintext broker, for measuring what security costs, nothing else.
SECURITY_MODES = ("secure", "login", "anonymous")
HUB_START_S = 90.0
HUB_STOP_S = 30.0


class BenchError(Exception):
    """The benchmark could not run (a service did not start, a run failed)."""


class BenchStack:
    """``database_url``: an external PostgreSQL or TimescaleDB to use instead of starting our own (the hub
    migrates it; the benchmark's rows stay in it). ``commit_timestamps``: the benchmark reads each row's
    commit time (``pg_xact_commit_timestamp``), so PostgreSQL must track them: our own is configured so, an
    external one must already be (``track_commit_timestamp = on``, which needs a server restart)."""

    def __init__(self, workdir: Path, hub_env: Mapping[str, str] | None = None, *, database_url: str | None = None,
                 commit_timestamps: bool = False, security: str = "secure", live_logins: bool = False) -> None:
        """``live_logins``: the hub has the broker's administrator login and every device it provisions can
        connect at once (the deployment's way; fine for a few hundred devices, see :meth:`reload_logins`)."""
        if security not in SECURITY_MODES:
            raise ValueError(f"security must be one of {', '.join(SECURITY_MODES)}")
        self.workdir = workdir
        self.security = security
        self.live_logins = live_logins
        # Extra FIELDHUB_* settings for the hub (e.g. a drone link); they win over the stack's own.
        self.hub_env = dict(hub_env or {})
        self.token = ""  # an admin token (it provisions devices), created in the database before the hub starts
        self.hub_secret = new_secret()
        self.admin_secret = new_secret()
        # Every device login the bench was given (device id -> secret), for the load processes: 0600, in workdir.
        self.logins: dict[str, str] = {}
        self.logins_file = workdir / "device-logins.json"
        self.broker = MosquittoBroker(workdir / "mosquitto")
        self.postgres = EmbeddedPostgres(workdir / "pg")
        self.external_database = database_url
        self.commit_timestamps = commit_timestamps
        self.database_url = ""
        self.hub: subprocess.Popen[bytes] | None = None
        self.hub_url = ""
        self.hub_log = workdir / "hub.log"

    @property
    def mqtt_port(self) -> int:
        """The loopback plaintext listener (the hub's; anonymous only in the "anonymous" stack)."""
        return self.broker.port

    @property
    def secure(self) -> bool:
        """Logins and ACL enforced by the broker (modes "secure" and "login")."""
        return self.security != "anonymous"

    @property
    def device_url(self) -> str:
        """Where the bench's devices connect, without a login: TLS with the CA for "secure", else loopback."""
        if self.security == "secure":
            return self.broker.device_url()
        return self.broker.url

    def hub_url_with_login(self) -> str:
        """The hub's MQTT URL (its own login, plaintext loopback); secret inside: never log it."""
        address = BrokerAddress.parse(self.broker.url)
        return address.with_login(HUB_CLIENT_ID, self.hub_secret).url() if self.secure else address.url()

    @property
    def admin_url(self) -> str | None:
        """The broker's dynamic-security administrator login (secret inside), None for the anonymous broker."""
        if not self.secure:
            return None
        return BrokerAddress.parse(self.broker.url).with_login(ADMIN_USER, self.admin_secret).url()

    def add_logins(self, logins: Mapping[str, str]) -> None:
        """Remember device logins and rewrite the file the load processes read them from (0600)."""
        self.logins.update(logins)
        fd = os.open(self.logins_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.logins, f)

    async def start(self) -> None:
        if not MosquittoBroker.available():
            raise BenchError("mosquitto is not on PATH (apt-get install mosquitto mosquitto-clients)")
        raise_fd_limit()
        self.add_logins({})
        await asyncio.to_thread(self.broker.start, self._broker_security([]))
        if self.external_database:
            self.database_url = self.external_database
            await asyncio.to_thread(self._check_external)
        else:
            self.database_url = await asyncio.to_thread(self.postgres.start)
            if self.commit_timestamps:
                await asyncio.to_thread(self._track_commit_timestamps)
        self.token = await self._admin_token()
        await self.start_hub()

    def _broker_security(self, devices: list[StoredLogin]) -> BrokerSecurity | None:
        """As the hub's own embedded broker: the hub's login pinned to its client id, the administrator, the device
        logins of the table, TLS from a CA of the stack's own (the same ports again at a restart)."""
        if not self.secure:
            return None
        return BrokerSecurity(hub=new_login(HUB_CLIENT_ID, self.hub_secret),
                              admin=new_login(ADMIN_USER, self.admin_secret), devices=devices,
                              pki=ensure_ca(self.workdir / "ca"), tls_port=self.broker.tls_port or 0,
                              mtls_port=self.broker.mtls_port or 0)

    async def reload_logins(self) -> int:
        """Restart the broker with every active device login of the hub's table, as the hub's embedded broker starts
        (the database is the truth); the hub reconnects to its persistent session. Returns the number of logins.

        Why not tell the running broker: the dynamic-security plugin rewrites its whole JSON file after every
        command, so adding logins one by one is quadratic (measured here: the first 500 logins 35 s, the fourth
        500 140 s; a 10,000-device fleet would take hours). So the hub runs without the administrator URL (the
        table only, as with a broker that reads the table itself) and the bench reloads the broker once."""
        if not self.secure or self.live_logins:
            return len(self.logins)
        async with Database(self.database_url) as db:
            logins = await DeviceLoginStore(db).active()
        await asyncio.to_thread(self.broker.stop)
        await asyncio.to_thread(self.broker.start, self._broker_security(logins))
        await asyncio.sleep(1.5)  # the hub notices the broker went away (then waits for it to be back)
        await self._wait_healthy()
        return len(logins)

    def _hub_settings(self) -> dict[str, str]:
        settings = {"FIELDHUB_MQTT_URL": self.hub_url_with_login(), "FIELDHUB_DATABASE_URL": self.database_url,
                    "FIELDHUB_DATA_DIR": str(self.workdir / "hub"), "FIELDHUB_MQTT_CLIENT_ID": HUB_CLIENT_ID}
        if self.secure:
            settings["FIELDHUB_DEVICE_MQTT_URL"] = self.broker.device_url()
            if self.live_logins:
                settings["FIELDHUB_MQTT_ADMIN_URL"] = self.admin_url or ""
        return {**settings, **self.hub_env}

    async def _admin_token(self) -> str:
        """An admin token made as an operator makes one (``fieldhub token create``) on the stack's database."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fieldhub", "token", "create", "--role", "admin", "--name", "bench",
            env=python_env(**self._hub_settings()), cwd=self.workdir, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        out, err = await asyncio.wait_for(proc.communicate(), HUB_START_S)
        lines = out.decode().split()
        if proc.returncode != 0 or not lines:
            raise BenchError(f"fieldhub token create failed ({proc.returncode}): {err.decode()[-500:]}")
        return lines[0]

    def _track_commit_timestamps(self) -> None:
        """Turn ``track_commit_timestamp`` on in our own PostgreSQL (a restart, well under a second)."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
        self.postgres.stop()
        self.postgres.restart()

    def _check_external(self) -> None:
        try:
            with psycopg.connect(self.database_url, autocommit=True, connect_timeout=10) as conn:
                row = conn.execute("SHOW track_commit_timestamp").fetchone()
        except psycopg.Error as exc:
            raise BenchError(f"the database at --database-url does not answer: {exc}") from exc
        if self.commit_timestamps and (row is None or row[0] != "on"):
            raise BenchError("this benchmark reads commit times: set track_commit_timestamp = on on the external "
                             "server (ALTER SYSTEM SET track_commit_timestamp = on; then restart it)")

    async def start_hub(self) -> None:
        port = free_port()
        env = python_env(**self._hub_settings())
        with self.hub_log.open("ab") as out:
            self.hub = subprocess.Popen(
                [sys.executable, "-m", "fieldhub", "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=env, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent)
        self.hub_url = f"http://127.0.0.1:{port}"
        await self._wait_healthy()

    async def _wait_healthy(self) -> None:
        assert self.hub is not None
        deadline = time.monotonic() + HUB_START_S
        async with httpx.AsyncClient(base_url=self.hub_url, timeout=2.0) as client:
            while True:
                if self.hub.poll() is not None:
                    raise BenchError(f"the hub exited with {self.hub.returncode} on start:\n{self.hub_log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    health = (await client.get("/healthz")).json()
                    if health.get("mqtt") and health.get("database"):
                        return
                if time.monotonic() > deadline:
                    raise BenchError(f"the hub was not healthy after {HUB_START_S:.0f} s:\n{self.hub_log_tail()}")
                await asyncio.sleep(0.1)

    async def stop_hub(self) -> int | None:
        """Stop the hub gracefully (it drains and flushes); returns its exit code."""
        hub, self.hub = self.hub, None
        if hub is None:
            return None
        if hub.poll() is None:
            hub.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + HUB_STOP_S
            while hub.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            stop_process(hub, 1.0)
        return hub.returncode

    def hub_log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.hub_log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # -------------------------------------------------------------- processes
    def hub_process(self) -> psutil.Process | None:
        return find_process(self.hub.pid if self.hub is not None and self.hub.poll() is None else None)

    def broker_process(self) -> psutil.Process | None:
        proc = self.broker.process
        return find_process(proc.pid if proc is not None else None)

    def postgres_process(self) -> psutil.Process | None:
        """The postmaster (its backends are its children); None for an external database."""
        if self.external_database:
            return None
        with contextlib.suppress(OSError, ValueError, IndexError):
            return find_process(int((self.postgres.data_dir / "postmaster.pid").read_text().split()[0]))
        return None

    def close(self) -> None:
        """Stop everything that was started (hub, broker, PostgreSQL), each bounded."""
        hub, self.hub = self.hub, None
        stop_process(hub, HUB_STOP_S)
        with contextlib.suppress(Exception):
            self.broker.stop()
        with contextlib.suppress(Exception):
            self.postgres.close()


def raise_fd_limit() -> None:
    """One connection per device: the broker (started from here) and the load processes inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def add_database_url(parser: argparse.ArgumentParser) -> None:
    """``--database-url``: run the benchmark against an external PostgreSQL or TimescaleDB (see :class:`BenchStack`)."""
    parser.add_argument("--database-url", metavar="URL",
                        help="an external PostgreSQL or TimescaleDB (postgresql://...) instead of a private one: "
                             "the hub migrates it and writes the benchmark's rows into it, and raw database limits "
                             "are measured against it")


def run_bench(name: str, run: Callable[[str], Coroutine[Any, Any, dict[str, Any]]], argv: Sequence[str] | None,
              out: Path | None, report: Callable[[dict[str, Any]], Sequence[str]]) -> int:
    """The end of a benchmark's ``main``: run it, time it, write its JSON (default
    ``bench/results/<name>-<UTC date>.json``) and print what ``report`` makes of the result."""
    command = f"fieldhub bench {name}" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    t0 = time.monotonic()
    try:
        result = asyncio.run(run(command))
    except BenchError as exc:
        print(f"bench {name}: {exc}", file=sys.stderr)
        return 1
    result["wall_s"] = round(time.monotonic() - t0, 1)
    out = out or PROJECT_ROOT / "bench" / "results" / f"{name}-{dt.datetime.now(dt.UTC):%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    first, *rest = report(result)
    print(first, f"\nwall time {result['wall_s']} s; results in {out}\n", *rest, sep="\n")
    return 0


def cancel_on_sigterm() -> asyncio.Event:
    """SIGTERM cancels the benchmark like Ctrl-C does, so the clean-up runs; the event tells which it was."""
    terminated = asyncio.Event()
    task = asyncio.current_task()

    def on_term() -> None:
        terminated.set()
        if task is not None:
            task.cancel()

    # ValueError: uvloop in a worker thread (``fieldhub bench`` runs benchmarks so) refuses signal handlers.
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_term)
    return terminated


async def run_on_stack(stack: BenchStack, workdir: Path, results: dict[str, Any],
                       body: Callable[[], Awaitable[None]]) -> tuple[bool, bool]:
    """Run a benchmark's ``body`` on ``stack`` and stop everything whatever happened; what went wrong lands in
    ``results["error"]`` (what was measured stays). Returns (failed, terminated by SIGTERM). A failed run keeps
    ``workdir`` (hub.log, mosquitto/, pg/log) for inspection."""
    terminated = cancel_on_sigterm()
    failed = True
    try:
        await body()
        failed = False
    except BenchError as exc:
        results["error"] = str(exc)
        log.error("benchmark failed: %s", exc)
    except Exception as exc:  # still clean up, still write what was measured
        results["error"] = repr(exc)
        log.exception("benchmark failed")
    except asyncio.CancelledError:
        results["error"] = "interrupted"
        if not terminated.is_set():
            raise
    finally:
        log.info("stopping the hub, the broker and PostgreSQL")
        await asyncio.to_thread(stack.close)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
        if failed and results.get("error") != "interrupted":
            log.warning("kept %s for inspection (hub.log, mosquitto/, pg/log)", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return failed, terminated.is_set()
