"""The system under test: a private Mosquitto, a private PostgreSQL and the hub as a subprocess.

Everything lives in one fresh directory and is stopped by :meth:`BenchStack.close`
(synchronous, bounded, safe to call twice and after a partial start). The hub
runs as its own process (``python -m hub.main serve``) so its CPU and memory are
measured apart from the load generator and from the benchmark itself. Children
are started in their own session (Ctrl-C reaches only the benchmark, which then
stops them in order) and are asked by the kernel to end if the benchmark dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime as dt
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.probes import find_process
from hub.embedded import EmbeddedPostgres, MosquittoBroker, free_port

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HUB_START_S = 90.0
HUB_STOP_S = 30.0
_PR_SET_PDEATHSIG = 1
# Loaded here, not in the forked child: preexec code should do as little as possible.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


class BenchError(Exception):
    """The benchmark could not run (a service did not start, a run failed)."""


def python_env(**extra: str) -> dict[str, str]:
    """Environment of a Python child of the benchmark.

    The project root goes first on PYTHONPATH so the hub and the generator run
    this checkout's code, installed or not (``hub.main`` imports ``bench``).
    """
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def die_with_parent() -> None:
    """``preexec_fn``: the kernel sends SIGTERM to the child when the benchmark dies (Linux)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


class BenchStack:
    def __init__(self, workdir: Path, hub_env: Mapping[str, str] | None = None) -> None:
        self.workdir = workdir
        # Extra FIELDHUB_* settings for the hub (e.g. a drone link); they win over the stack's own.
        self.hub_env = dict(hub_env or {})
        self.token = "fh_bench_" + secrets.token_urlsafe(16)
        self.broker = MosquittoBroker(workdir / "mosquitto")
        self.postgres = EmbeddedPostgres(workdir / "pg")
        self.database_url = ""
        self.hub: subprocess.Popen[bytes] | None = None
        self.hub_url = ""
        self.hub_log = workdir / "hub.log"

    @property
    def mqtt_port(self) -> int:
        return self.broker.port

    async def start(self) -> None:
        if not MosquittoBroker.available():
            raise BenchError("mosquitto is not on PATH (apt-get install mosquitto mosquitto-clients)")
        await asyncio.to_thread(self.broker.start)
        self.database_url = await asyncio.to_thread(self.postgres.start)
        await self.start_hub()

    async def start_hub(self) -> None:
        port = free_port()
        settings = {"FIELDHUB_MQTT_URL": self.broker.url, "FIELDHUB_DATABASE_URL": self.database_url,
                    "FIELDHUB_BOOTSTRAP_TOKEN": self.token, "FIELDHUB_DATA_DIR": str(self.workdir / "hub"),
                    "FIELDHUB_MQTT_CLIENT_ID": "fieldhub-bench-hub"}
        env = python_env(**{**settings, **self.hub_env})
        with self.hub_log.open("ab") as out:
            self.hub = subprocess.Popen(
                [sys.executable, "-m", "hub.main", "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=env, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent)
        self.hub_url = f"http://127.0.0.1:{port}"
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
        """The postmaster (its backends are its children)."""
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
