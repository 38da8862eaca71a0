"""A hub that cannot start says why in one line and exits non-zero within 10 s, leaving nothing running.

Each case runs ``python -m fieldhub serve`` as its own process against a real fault: a migration that fails on a
conflicting table, a connection killed during the TimescaleDB fallback, a database port nobody listens on, a
server that accepts and never answers, a bad setting, and the embedded services started and then stopped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from hub.config import Settings
from hub.infra.embedded import EmbeddedPostgres, free_port
from tests.conftest import hub_env
from tests.hub import standin_timescaledb as standin

LIMIT_S = 10.0
PREFIX = "fieldhub: cannot start: "


def serve(env: dict[str, str], limit_s: float = LIMIT_S) -> tuple[str, float]:
    """Run `fieldhub serve` to its end; the one line of its reason, and how long it took. Asserts the exit
    status, the time limit and that nothing of its own (children included) is left running."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "fieldhub", "serve", "--port", str(free_port())], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=limit_s + 20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        raise AssertionError(f"the hub still ran after {limit_s + 20} s:\n{err}") from None
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, err
    reasons = [line for line in err.splitlines() if line.startswith(PREFIX)]
    assert len(reasons) == 1, err
    assert "Traceback" not in err, err
    assert elapsed < limit_s, f"took {elapsed:.1f} s: {err}"
    assert not list(_session_processes(proc.pid)), "processes of the hub's session outlived it"
    return reasons[0].removeprefix(PREFIX), elapsed


def _session_processes(sid: int) -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp, session
            yield int(entry.name)


def test_a_failing_migration_exits_with_its_reason(settings: Settings, database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE units (id integer)")  # not the shape migration 001 creates
    reason, _ = serve(hub_env(settings))
    assert reason.startswith("storage: migration 001_init.sql failed: ")
    assert 'relation "units" already exists' in reason


def test_a_connection_killed_during_the_timescaledb_fallback_exits_with_its_reason(
        settings: Settings, database_url: str, tmp_path: Path) -> None:
    # The stand-in extension's script kills every connection to the database, the hub's set-up connection too,
    # while the hub tries TimescaleDB: the native fallback then meets a dead connection.
    standin.install(database_url, tmp_path / "ts", standin.CLOSES_EVERY_CONNECTION)
    reason, _ = serve(hub_env(settings))
    assert reason.startswith("storage: set-up of "), reason
    assert "terminat" in reason or "closed" in reason, reason


def test_an_unreachable_database_exits_with_its_reason(settings: Settings) -> None:
    port = free_port()  # nobody listens there
    env = hub_env(settings) | {"FIELDHUB_DATABASE_URL": f"postgresql://fieldhub@127.0.0.1:{port}/fieldhub"}
    reason, _ = serve(env)
    assert reason.startswith(f"storage: cannot connect to 127.0.0.1:{port}/fieldhub: "), reason
    assert "refused" in reason.lower()


def test_a_database_that_never_answers_exits_within_the_limit(settings: Settings) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        env = hub_env(settings) | {"FIELDHUB_DATABASE_URL": f"postgresql://fieldhub@127.0.0.1:{port}/fieldhub"}
        reason, _ = serve(env)
    assert reason.startswith(f"storage: cannot connect to 127.0.0.1:{port}/fieldhub: "), reason
    assert "timeout" in reason.lower()


def test_an_unreachable_broker_exits_with_its_reason(settings: Settings) -> None:
    port = free_port()  # nobody listens there
    reason, _ = serve(hub_env(settings) | {"FIELDHUB_MQTT_URL": f"mqtt://127.0.0.1:{port}"})
    assert reason.startswith(f"mqtt: MQTT broker 127.0.0.1:{port} not reachable"), reason


def test_a_broker_that_never_answers_exits_within_the_limit(settings: Settings) -> None:
    with socket.socket() as silent:  # accepts the TCP connection, never sends a CONNACK
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        reason, _ = serve(hub_env(settings) | {"FIELDHUB_MQTT_URL": f"mqtt://127.0.0.1:{port}"})
    assert reason.startswith(f"mqtt: MQTT broker 127.0.0.1:{port} "), reason


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("FIELDHUB_RETENTION_DAYS", "ninety", "configuration: FIELDHUB_RETENTION_DAYS: "),
    ("FIELDHUB_RETENTION_DAYS", "0", "storage: FIELDHUB_RETENTION_DAYS must be at least 1 (is 0)"),
    ("FIELDHUB_LOG_RETENTION_DAYS", "-1", "storage: FIELDHUB_LOG_RETENTION_DAYS must be at least 1 (is -1)"),
])
def test_a_bad_setting_exits_with_its_name(settings: Settings, name: str, value: str, expected: str) -> None:
    reason, _ = serve(hub_env(settings) | {name: value})
    assert reason.startswith(expected), reason


def test_the_embedded_services_are_stopped_when_storage_fails(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    pg = EmbeddedPostgres(data_dir / "pg")  # the hub's own embedded cluster, prepared with a conflicting table
    url = pg.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE units (id integer)")
    finally:
        pg.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDHUB_")}
    env["FIELDHUB_DATA_DIR"] = str(data_dir)
    # The embedded PostgreSQL (and Mosquitto) start before the storage set-up fails: their start, a few seconds
    # on this machine, comes on top of the limit.
    reason, _ = serve(env, limit_s=LIMIT_S + 20)
    assert reason.startswith("storage: migration 001_init.sql failed: "), reason
    assert not (data_dir / "pg" / "postmaster.pid").exists(), "the embedded PostgreSQL still runs"
    assert not any(str(data_dir) in _cmdline(pid) for pid in _all_pids()), "a service of the hub still runs"


def _all_pids() -> Iterator[int]:
    return (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
