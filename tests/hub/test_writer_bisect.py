"""The writer's second line of defence, against a real PostgreSQL: rows the database refuses are isolated
(bisect), stored as rejects, and never hold the good rows or the acknowledgments back.

The batches are built by hand, bypassing the codec that refuses these values at the edge.
"""

from __future__ import annotations

import asyncio
import math

from hub.ingest.writer import BatchWriter
from hub.storage import Batch, Database

NOW = 1_795_000_000_000


def fix_row(device: str, ts: int, attrs: object = None, sats: int | None = None) -> tuple[object, ...]:
    return (device, ts, 34.2, 117.2, None, 5.0, None, None, None, sats, None, attrs, ts + 10)


class CountingWrite:
    """The real Database.write, counting the transactions it is asked for."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.calls = 0

    async def __call__(self, batch: Batch) -> int:
        self.calls += 1
        return await self.db.write(batch)


def hostile_batches() -> tuple[list[Batch], int]:
    """Three cuts of 400 good fixes each, with bad rows of every kind among them; returns them and k."""
    cuts = [Batch(fixes=[fix_row("good", NOW + c * 1000 + i) for i in range(400)]) for c in range(3)]
    cuts[0].fixes[17] = fix_row("bad-1", NOW, {"x": "a\x00b"})  # NUL in a jsonb value
    cuts[0].fixes[300] = fix_row("bad-1", NOW + 1, {"k\x00": 1})  # NUL in a key
    cuts[1].fixes[5] = fix_row("bad-1", NOW + 2, {"s": "\ud800"})  # a lone surrogate
    cuts[1].fixes[399] = fix_row("bad-1", NOW + 3, sats=70_000)  # beyond int2
    cuts[2].rejects.append((NOW, "fieldhub/v1/dev/x\x00/telemetry", "x", "invalid_json", "de\x00tail", 3, b"\x00\x01"))
    cuts[2].rejects.append((NOW, "fieldhub/v1/dev/y/telemetry", "y", "invalid_json", "fine", 2, b"{}"))
    cuts[2].statuses.append(("bad-1", NOW, "online", {"ts": NOW, "state": "online", "fw": "1.\x002"}, NOW))
    cuts[2].statuses.append(("good", NOW, "online", {"ts": NOW, "state": "online"}, NOW))
    cuts[2].events.append(("bad-1", NOW, "sos", {"note": "x\x00"}, NOW))
    cuts[2].events.append(("good", NOW, "ptt", {"on": True}, NOW))
    return cuts, 7


async def test_refused_rows_become_rejects_and_the_rest_is_committed_and_acknowledged(database_url: str) -> None:
    async with Database(database_url) as db:
        write = CountingWrite(db)
        async with BatchWriter(write, batch_rows=5000, interval_s=0.05, retry_s=0.1) as writer:
            cuts, k = hostile_batches()
            loop = asyncio.get_running_loop()
            futures = [loop.create_future() for _ in cuts]
            for cut, future in zip(cuts, futures, strict=True):
                writer.add(cut, future)
            await asyncio.wait_for(asyncio.gather(*futures), 20)
            assert writer.available is True and writer.failures == 0
            assert writer.rows_refused == k and writer.rows_lost == 0
            assert writer.fixes_written == 1196
        n = sum(len(c) for c in cuts)
        # One transaction at first; each bad row costs at most two per halving, then one for the rejects.
        assert write.calls <= 2 * k * math.ceil(math.log2(n)) + 2
        assert writer.splits >= k - 1
        assert await db.scalar("SELECT count(*) FROM fixes WHERE device_id = 'good'") == 1196
        assert await db.scalar("SELECT count(*) FROM fixes WHERE device_id = 'bad-1'") == 0
        assert await db.scalar("SELECT count(*) FROM device_status") == 1
        assert await db.scalar("SELECT count(*) FROM device_events") == 1
        assert await db.scalar("SELECT count(*) FROM rejects WHERE reason = 'invalid_json'") == 1
        assert await db.scalar("SELECT count(*) FROM rejects WHERE reason = 'storage_refused'") == k
        refused = await db.scalar(
            "SELECT array_agg(topic ORDER BY topic) FROM rejects WHERE reason = 'storage_refused'")
        assert sorted(refused) == sorted(["fieldhub/v1/dev/bad-1/telemetry"] * 4 + [
            "fieldhub/v1/dev/bad-1/status", "fieldhub/v1/dev/bad-1/event", "fieldhub/v1/dev/x\ufffd/telemetry"])
        # The database's own words are kept, and the refused row itself as (storable) JSON.
        async with db.connection() as conn:
            cur = await conn.execute("SELECT detail, raw FROM rejects WHERE reason = 'storage_refused'")
            rows = {bytes(raw): detail for detail, raw in await cur.fetchall()}
        nul = next(detail for raw, detail in rows.items() if b'"a\\u0000b"' in raw)
        assert nul.startswith("UntranslatableCharacter: unsupported Unicode escape sequence")
        int2 = next(detail for raw, detail in rows.items() if b"70000" in raw)
        assert int2 == "NumericValueOutOfRange: smallint out of range"  # not silently wrapped to 4464
        assert await db.scalar("SELECT max(length(raw)) FROM rejects") <= 1024
        # A refused reject keeps its raw bytes (bytea stores anything).
        assert await db.scalar("SELECT raw FROM rejects WHERE topic LIKE '%%x\ufffd%%'") == b"\x00\x01"


async def test_a_reject_the_database_refuses_again_ends_as_a_minimal_reject_or_counted_lost(
        database_url: str) -> None:
    async with Database(database_url) as db:
        async with db.connection() as conn:
            # A rule the rows cannot know: every detail mentioning "forbidden" is refused.
            await conn.execute(
                "ALTER TABLE rejects ADD CONSTRAINT no_forbidden CHECK (detail NOT LIKE '%%forbidden%%')")
        async with BatchWriter(db.write, interval_s=0.05) as writer:
            future = asyncio.get_running_loop().create_future()
            writer.add(Batch(fixes=[fix_row("good", NOW + i) for i in range(50)],
                             rejects=[(NOW, "t", "d", "invalid_json", "forbidden", 1, b"x")]), future)
            await asyncio.wait_for(future, 10)
            assert writer.rows_refused == 1 and writer.rows_lost == 0
        assert await db.scalar("SELECT count(*) FROM fixes") == 50
        # Its refusal quotes the row ("forbidden" again): the last resort is a minimal reject of fixed words.
        assert await db.scalar("SELECT detail FROM rejects") == (
            "the database refused this reject row; what it held could not be stored")
        async with db.connection() as conn:
            await conn.execute(
                "ALTER TABLE rejects ADD CONSTRAINT nothing_refused CHECK (reason <> 'storage_refused') NOT VALID")
        async with BatchWriter(db.write, interval_s=0.05) as writer:
            future = asyncio.get_running_loop().create_future()
            writer.add(Batch(fixes=[fix_row("good", NOW + 100)], rejects=[(NOW, "t", "d", "x", "forbidden", 1, b"")]),
                       future)
            await asyncio.wait_for(future, 10)  # resolved all the same: nothing loops
            assert writer.rows_refused == 1 and writer.rows_lost == 1
        assert await db.scalar("SELECT count(*) FROM fixes") == 51


async def test_the_database_away_still_means_hold_and_retry(database_url: str) -> None:
    async with Database(database_url) as db, BatchWriter(db.write, interval_s=0.05, retry_s=0.1) as writer:
        await db.pool.close()  # the pool is gone: every write is "unavailable", not "refused"
        future = asyncio.get_running_loop().create_future()
        writer.add(Batch(fixes=[fix_row("good", NOW)]), future)
        await asyncio.sleep(0.5)
        assert not future.done() and writer.available is False and writer.rows_refused == 0
        assert writer.failures >= 2
        writer._closing = True  # let close() give up at once: the rows stay unacknowledged
        await writer.close(timeout=0.2)
        assert not future.done()
