"""Storage: migrations, native time partitions and retention, idempotent writes."""

from __future__ import annotations

import time

from hub.storage import Batch, Database
from hub.storage.partitions import DAY_MS, partition_name

NOW = 1_795_000_000_000


def fix_row(device: str, ts: int) -> tuple[object, ...]:
    return (device, ts, 34.2, 117.2, None, 5.0, None, None, None, None, None, {"k": 1}, ts)


async def test_migrations_are_idempotent_and_fixes_table_is_partitioned(database_url: str) -> None:
    async with Database(database_url) as db:
        assert db.mode == "native"
    async with Database(database_url) as db:  # a second start applies nothing twice
        assert db.mode == "native"
        assert await db.scalar("SELECT count(*) FROM schema_migrations WHERE name = '001_init.sql'") == 1
        strategy = await db.scalar("SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'fixes'::regclass")
        assert strategy == "r"
        today = partition_name(int(time.time() * 1000) // DAY_MS * DAY_MS)
        assert await db.scalar("SELECT count(*) FROM pg_class WHERE relname = %s", (today,)) == 1


async def test_write_creates_partitions_on_demand_and_is_idempotent(database_url: str) -> None:
    async with Database(database_url) as db:
        old = NOW - 20 * DAY_MS  # a backlog from three weeks ago
        rows = [fix_row("d1", old + i) for i in range(10)] + [fix_row("d1", NOW + i) for i in range(10)]
        assert await db.write(Batch(fixes=rows)) == 20
        assert await db.write(Batch(fixes=rows)) == 0  # re-delivery changes nothing
        assert await db.scalar("SELECT count(*) FROM fixes") == 20
        assert await db.scalar("SELECT count(*) FROM " + partition_name(old - old % DAY_MS)) == 10
        assert await db.scalar("SELECT attrs->>'k' FROM fixes LIMIT 1") == "1"


async def test_retention_drops_whole_old_partitions(database_url: str) -> None:
    async with Database(database_url, retention_days=30) as db:
        await db.write(Batch(fixes=[fix_row("d1", NOW - 40 * DAY_MS), fix_row("d1", NOW - 10 * DAY_MS),
                                    fix_row("d1", NOW)]))
        dropped = await db.maintain(now_ms=NOW)
        assert dropped == [partition_name((NOW - 40 * DAY_MS) // DAY_MS * DAY_MS)]
        assert await db.scalar("SELECT count(*) FROM fixes") == 2
        # Partitions for the coming days exist before their data arrives.
        ahead = partition_name((NOW + 3 * DAY_MS) // DAY_MS * DAY_MS)
        assert await db.scalar("SELECT count(*) FROM pg_class WHERE relname = %s", (ahead,)) == 1


async def test_rejects_events_and_statuses_in_one_transaction(database_url: str) -> None:
    async with Database(database_url) as db:
        batch = Batch(
            fixes=[fix_row("d1", NOW)],
            rejects=[(NOW, "fieldhub/v1/dev/x/telemetry", "x", "invalid_json", "bad", 5, b"{nope")],
            events=[("d1", NOW, "sos", {"note": "help"}, NOW)],
            statuses=[("d1", NOW, "online", {"ts": NOW, "state": "online"}, NOW)],
        )
        assert await db.write(batch) == 1
        assert await db.scalar("SELECT raw FROM rejects") == b"{nope"
        assert await db.scalar("SELECT data->>'note' FROM device_events") == "help"
        assert await db.scalar("SELECT state FROM device_status") == "online"
