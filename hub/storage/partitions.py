"""Time partitioning of the fixes table: TimescaleDB when present, native otherwise.

Fix times are ``bigint`` epoch milliseconds (the wire format), so TimescaleDB
uses integer time with an ``integer_now`` function; native partitions are
ranges of whole UTC days named ``fixes_pYYYYMMDD``.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Final

from psycopg import AsyncConnection, sql

log = logging.getLogger(__name__)

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


async def timescale_available(conn: AsyncConnection) -> bool:
    cur = await conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return await cur.fetchone() is not None


async def create_fixes_table(conn: AsyncConnection, *, use_timescale: bool, partition_days: int,
                             compress_after_days: int, retention_days: int) -> str:
    """Create the fixes table once; returns the mode used ("timescaledb" or "native")."""
    if use_timescale:
        try:
            async with conn.transaction():
                await _create_hypertable(conn, partition_days, compress_after_days, retention_days)
            return "timescaledb"
        except Exception as exc:  # e.g. available but not in shared_preload_libraries
            log.warning("TimescaleDB present but unusable (%s); using native partitioning", exc)
    await conn.execute(f"CREATE TABLE fixes ({FIXES_COLUMNS}) PARTITION BY RANGE (ts)")
    return "native"


async def _create_hypertable(conn: AsyncConnection, partition_days: int,
                             compress_after_days: int, retention_days: int) -> None:
    # Written against the TimescaleDB 2.x API (create_hypertable with integer
    # time, set_integer_now_func, compression and retention policies, and a
    # continuous aggregate). Not exercised on this machine: no package ships it.
    await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    await conn.execute(f"CREATE TABLE fixes ({FIXES_COLUMNS})")
    await conn.execute(
        "SELECT create_hypertable('fixes', 'ts', chunk_time_interval => %s::bigint)",
        (partition_days * DAY_MS,),
    )
    await conn.execute(
        "CREATE FUNCTION fieldhub_now_ms() RETURNS bigint LANGUAGE sql STABLE AS "
        "$$ SELECT (extract(epoch FROM now()) * 1000)::bigint $$"
    )
    await conn.execute("SELECT set_integer_now_func('fixes', 'fieldhub_now_ms')")
    await conn.execute(
        "ALTER TABLE fixes SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id', "
        "timescaledb.compress_orderby = 'ts DESC')"
    )
    await conn.execute("SELECT add_compression_policy('fixes', compress_after => %s::bigint)",
                       (compress_after_days * DAY_MS,))
    await conn.execute("SELECT add_retention_policy('fixes', drop_after => %s::bigint)",
                       (retention_days * DAY_MS,))
    await conn.execute(
        "CREATE MATERIALIZED VIEW fixes_hourly WITH (timescaledb.continuous) AS "
        "SELECT device_id, time_bucket(3600000::bigint, ts) AS bucket, count(*) AS fixes, "
        "avg(lat) AS lat, avg(lon) AS lon, max(speed) AS max_speed "
        "FROM fixes GROUP BY device_id, bucket WITH NO DATA"
    )
    await conn.execute(
        "SELECT add_continuous_aggregate_policy('fixes_hourly', start_offset => %s::bigint, "
        "end_offset => 3600000::bigint, schedule_interval => INTERVAL '15 minutes')",
        (3 * DAY_MS,),
    )


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
