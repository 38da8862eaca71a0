"""Native time partitioning of the fixes table (TimescaleDB's hypertable is in ``timescale.py``).

Fix times are ``bigint`` epoch milliseconds (the wire format); native partitions
are ranges of whole UTC days named ``fixes_pYYYYMMDD``.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from psycopg import AsyncConnection, sql

DAY_MS: Final = 86_400_000

FIXES_COLUMNS: Final = """
    device_id    text NOT NULL,
    ts           bigint NOT NULL,
    lat          double precision NOT NULL,
    lon          double precision NOT NULL,
    alt          real,
    acc          real,
    speed        real,
    heading      real,
    battery      real,
    sats         smallint,
    seq          bigint,
    attrs        jsonb,
    received_at  bigint NOT NULL,
    PRIMARY KEY (device_id, ts)
"""


def partition_name(start_ms: int) -> str:
    day = dt.datetime.fromtimestamp(start_ms / 1000, tz=dt.UTC)
    return f"fixes_p{day:%Y%m%d}"


def partition_start(ts_ms: int, days: int = 1) -> int:
    width = days * DAY_MS
    return ts_ms - ts_ms % width


async def create_native_fixes(conn: AsyncConnection) -> None:
    """The fixes table as native range partitions of ``ts`` (the partitions come from ``create_partition``)."""
    await conn.execute(f"CREATE TABLE fixes ({FIXES_COLUMNS}) PARTITION BY RANGE (ts)")


async def existing_partitions(conn: AsyncConnection) -> set[int]:
    """Start (epoch ms) of every native partition of ``fixes``."""
    cur = await conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'fixes'"
    )
    starts = set()
    for (name,) in await cur.fetchall():
        day = dt.datetime.strptime(name.removeprefix("fixes_p"), "%Y%m%d").replace(tzinfo=dt.UTC)
        starts.add(int(day.timestamp() * 1000))
    return starts


async def create_partition(conn: AsyncConnection, start_ms: int, days: int) -> None:
    await conn.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF fixes FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier(partition_name(start_ms)), sql.Literal(start_ms), sql.Literal(start_ms + days * DAY_MS)
        )
    )


async def drop_partitions_before(conn: AsyncConnection, cutoff_ms: int, days: int) -> list[str]:
    """Retention: drop every native partition that ends at or before ``cutoff_ms``."""
    dropped = []
    for start in sorted(await existing_partitions(conn)):
        if start + days * DAY_MS <= cutoff_ms:
            name = partition_name(start)
            await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
            dropped.append(name)
    return dropped
