"""Storage policies follow the configuration at every start; the storage mode says why; the device logs expire.

The TimescaleDB paths run here only against stand-in extensions (see standin_timescaledb.py): TimescaleDB cannot
be installed on this machine, so what is tested is the hub's reaction to each fault, on a real PostgreSQL.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devices.client import DeviceClient
from devices.clock import now_ms
from devices.payloads import Fix
from fieldhub.cli import serve_city
from hub.config import Settings
from hub.errors import StorageSetupError
from hub.server import Hub
from hub.storage import Batch, Database
from hub.storage.partitions import DAY_MS, partition_name
from tests.conftest import RunningHub, running_hub, wait_for
from tests.hub import standin_timescaledb as standin

NOW = 1_795_000_000_000


def fix_row(device: str, ts: int) -> tuple[object, ...]:
    return (device, ts, 34.2, 117.2, None, 5.0, None, None, None, None, None, None, ts)


async def policies(db: Database) -> dict[str, str]:
    async with db.connection() as conn:
        cur = await conn.execute("SELECT name, value FROM storage_policies")
        return {str(name): str(value) for name, value in await cur.fetchall()}


async def test_a_shorter_retention_applies_at_the_next_start(settings: Settings,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    now = now_ms()
    old, recent = now - 40 * DAY_MS, now - 20 * DAY_MS
    first = settings.model_copy(update={"retention_days": 90})
    async with Hub(first, city=serve_city(first)) as hub:
        await hub.db.write(Batch(fixes=[fix_row("r1", old), fix_row("r1", recent)]))
        assert (await policies(hub.db))["retention_days"] == "90"
    caplog.set_level(logging.INFO, logger="hub.storage")
    async with running_hub(settings.model_copy(update={"retention_days": 30})) as rh:
        # Dropped at start, before anything was written: the partition of 40 days ago is gone.
        gone = partition_name(old - old % DAY_MS)
        assert await rh.count("SELECT count(*) FROM pg_class WHERE relname = %s", gone) == 0
        assert await rh.count("SELECT count(*) FROM fixes WHERE device_id = 'r1'") == 1
        recorded = await policies(rh.hub.db)
        assert recorded["retention_days"] == "30" and recorded["mode"] == "native"
        assert "storage policy retention_days changed: 90 -> 30" in caplog.text
        # The accepted-age window is the same setting: a fix older than 30 days is refused, a younger one stored.
        await rh.put_unit("R2", ["r2-trk"])
        async with DeviceClient("r2-trk", await rh.device_url("r2-trk"), unit_id="R2") as dev:
            dev.send_fix(Fix(now - 31 * DAY_MS, 34.2, 117.2))
            dev.send_fix(Fix(now - 29 * DAY_MS, 34.2, 117.2))
            await wait_for(lambda: rh.count("SELECT count(*) FROM rejects WHERE device_id = 'r2-trk' "
                                            "AND reason = 'ts_out_of_window'"), timeout=10)
            await wait_for(lambda: rh.count("SELECT count(*) FROM fixes WHERE device_id = 'r2-trk'"), timeout=10)
        assert await rh.count("SELECT min(ts) FROM fixes WHERE device_id = 'r2-trk'") == now - 29 * DAY_MS


async def test_device_logs_older_than_their_retention_are_deleted_in_batches(database_url: str) -> None:
    async with Database(database_url, log_retention_days=30, log_batch_rows=3) as db:
        old, recent = NOW - 31 * DAY_MS, NOW - 29 * DAY_MS
        rejects = [(t + i, "fieldhub/v1/dev/x/telemetry", "x", "invalid_json", "bad", 1, b"{")
                   for t in (old, recent) for i in range(7)]
        statuses = [("d1", t + i, "online", {"state": "online"}, t + i) for t in (old, recent) for i in range(4)]
        events: list[tuple[object, ...]] = [("d1", t + i, "sos", {}, t + i) for t in (old, recent) for i in range(2)]
        await db.write(Batch(rejects=rejects, statuses=statuses, events=events))
        assert await db.prune_logs(now_ms=NOW) == {"rejects": 7, "device_status": 4, "device_events": 2}
        for table in ("rejects", "device_status", "device_events"):
            assert await db.scalar(f"SELECT min(received_at) FROM {table}") == recent
        assert await db.scalar("SELECT count(*) FROM rejects") == 7
        assert await db.prune_logs(now_ms=NOW) == {}
        # The hourly maintenance runs it too.
        await db.write(Batch(rejects=rejects[:7]))
        await db.maintain(now_ms=NOW)
        assert await db.scalar("SELECT count(*) FROM rejects") == 7


async def test_healthz_and_metrics_say_which_storage_mode_and_why(hub: RunningHub) -> None:
    health = (await hub.api.get("/healthz")).json()
    assert health["storage_mode"] == "native"
    assert health["storage_mode_reason"] == "TimescaleDB is not installed on the database server"
    metrics = (await hub.api.get("/metrics")).text
    assert ('fieldhub_storage_mode{mode="native",reason="TimescaleDB is not installed on the database server"} 1.0'
            in metrics)


async def test_timescaledb_that_closes_its_connection_falls_back_on_a_fresh_one(
        database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    standin.install(database_url, tmp_path / "ts", standin.CLOSES_ITS_CONNECTION)
    async with Database(database_url) as db:
        assert db.mode == "native"
        assert "closed its connection" in db.mode_reason and "shared_preload_libraries" in db.mode_reason
        assert await db.write(Batch(fixes=[fix_row("d1", now_ms())])) == 1
    assert "storage: native partitions, not TimescaleDB" in caplog.text
    async with Database(database_url) as db:  # a later start keeps the mode and still says why
        assert db.mode == "native" and "closed its connection" in db.mode_reason


async def test_a_role_that_may_not_create_extensions_gets_native_partitions_and_says_so(
        database_url: str, tmp_path: Path) -> None:
    standin.install(database_url, tmp_path / "ts", standin.APACHE_ONLY)
    info = conninfo_to_dict(database_url)
    role = f"limited_{info['dbname']}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"ALTER DATABASE {info['dbname']} OWNER TO {role}")
    async with Database(make_conninfo(database_url, user=role)) as db:
        assert db.mode == "native"
        assert "may not create the timescaledb extension" in db.mode_reason
        assert "permission denied" in db.mode_reason


async def test_apache_only_timescaledb_keeps_the_hypertable_without_the_licensed_features(
        database_url: str, tmp_path: Path) -> None:
    standin.install(database_url, tmp_path / "ts", standin.APACHE_ONLY)
    async with Database(database_url, retention_days=30) as db:
        assert db.mode == "timescaledb"
        assert "no compression" in db.mode_reason and "no retention policy" in db.mode_reason
        assert (await policies(db))["compress_after_days"] == "off"
        await db.write(Batch(fixes=[fix_row("d1", NOW - 40 * DAY_MS), fix_row("d1", NOW)]))
        # Without a retention policy the hub's maintenance calls drop_chunks with the configured window.
        assert await db.maintain(now_ms=NOW) != []
        assert await db.scalar("SELECT count(*) FROM fixes") == 1


async def test_a_failed_set_up_closes_what_it_opened(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE units (id integer)")  # not the shape migration 001 creates
    db = Database(database_url)
    expected = re.escape('migration 001_init.sql failed: relation "units" already exists')
    with pytest.raises(StorageSetupError, match=expected):
        async with db:
            pass
    assert db.pool.closed
    with psycopg.connect(database_url, autocommit=True) as conn:  # and left no connection behind
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid()").fetchone()
        assert row is not None and row[0] == 0
