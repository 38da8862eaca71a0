"""TimescaleDB for the fixes table: the hypertable, its optional features and its policies.

Written against the TimescaleDB 2.x API: ``create_hypertable`` with integer time and ``set_integer_now_func``;
compression (``ALTER TABLE ... SET (timescaledb.compress ...)``) with ``add/remove_compression_policy``;
``add/remove_retention_policy``; a continuous aggregate; ``drop_chunks``. No package ships TimescaleDB here: the
tests run these paths against stand-in ``timescaledb`` extensions in a real PostgreSQL (a build that closes its
connection, an Apache-only build that refuses the licensed features), not against TimescaleDB itself.

Every attempt runs on a connection of its own, closed afterwards: TimescaleDB installed but not preloaded answers
``CREATE EXTENSION`` with a FATAL that closes the connection, and nothing else may run on that connection.
Compression, policies and continuous aggregates are under the Timescale licence, which an Apache-only build refuses:
each is optional, and the hypertable is kept without what is refused (retention then runs in ``drop_chunks``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
from psycopg import AsyncConnection

from hub.errors import StorageSetupError, one_line
from hub.storage.partitions import DAY_MS, FIXES_COLUMNS

log = logging.getLogger(__name__)

Connect = Callable[[], Awaitable[AsyncConnection]]

NOT_INSTALLED: Final = "TimescaleDB is not installed on the database server"

ENABLE_COMPRESSION: Final = ("ALTER TABLE fixes SET (timescaledb.compress, timescaledb.compress_segmentby = "
                             "'device_id', timescaledb.compress_orderby = 'ts DESC')")
# Integer time: the windows are bigint milliseconds, measured from fieldhub_now_ms() (set_integer_now_func).
REMOVE_COMPRESSION: Final = "SELECT remove_compression_policy('fixes', if_exists => true)"
ADD_COMPRESSION: Final = "SELECT add_compression_policy('fixes', compress_after => %s::bigint)"
REMOVE_RETENTION: Final = "SELECT remove_retention_policy('fixes', if_exists => true)"
ADD_RETENTION: Final = "SELECT add_retention_policy('fixes', drop_after => %s::bigint)"
CONTINUOUS_AGGREGATE: Final = (
    "CREATE MATERIALIZED VIEW fixes_hourly WITH (timescaledb.continuous) AS "
    "SELECT device_id, time_bucket(3600000::bigint, ts) AS bucket, count(*) AS fixes, "
    "avg(lat) AS lat, avg(lon) AS lon, max(speed) AS max_speed "
    "FROM fixes GROUP BY device_id, bucket WITH NO DATA")
AGGREGATE_POLICY: Final = (
    "SELECT add_continuous_aggregate_policy('fixes_hourly', start_offset => %s::bigint, "
    "end_offset => 3600000::bigint, schedule_interval => INTERVAL '15 minutes')")


@dataclass(slots=True)
class Features:
    """What the hypertable has; ``missing`` says why for everything it lacks."""

    compression: bool = False
    retention_policy: bool = False
    missing: list[str] = field(default_factory=list)


async def create_hypertable(connect: Connect, partition_days: int) -> str | None:
    """Create ``fixes`` as a hypertable and record it; None when done, else why TimescaleDB cannot be used."""
    try:
        conn = await connect()
    except StorageSetupError as exc:
        return f"no connection for the TimescaleDB attempt: {exc}"
    try:
        async with conn:
            cur = await conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
            if await cur.fetchone() is None:
                return NOT_INSTALLED
            async with conn.transaction():
                await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                await conn.execute(f"CREATE TABLE fixes ({FIXES_COLUMNS})")
                await conn.execute("SELECT create_hypertable('fixes', 'ts', chunk_time_interval => %s::bigint)",
                                   (partition_days * DAY_MS,))
                await conn.execute(
                    "CREATE OR REPLACE FUNCTION fieldhub_now_ms() RETURNS bigint LANGUAGE sql STABLE AS "
                    "$$ SELECT (extract(epoch FROM now()) * 1000)::bigint $$")
                await conn.execute("SELECT set_integer_now_func('fixes', 'fieldhub_now_ms')")
                # Recorded in the same transaction: a hypertable exists exactly when the record says so.
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ('fixes'), ('fixes:timescaledb')")
        return None
    except psycopg.errors.InsufficientPrivilege as exc:
        return f"this database role may not create the timescaledb extension ({one_line(exc)})"
    except psycopg.OperationalError as exc:  # a FATAL, e.g. "must be preloaded": the connection is gone
        return f"TimescaleDB closed its connection (is it in shared_preload_libraries?): {one_line(exc)}"
    except psycopg.Error as exc:
        return f"TimescaleDB is unusable: {one_line(exc)}"


async def reconcile(connect: Connect, *, retention_days: int, compress_after_days: int) -> Features:
    """Bring compression and retention of ``fixes`` to the configuration; run at every start.

    A policy whose window differs from the setting is removed and added again (TimescaleDB keeps the old one when
    ``add_*_policy`` meets an existing policy). ``compress_after_days <= 0`` removes the compression policy.
    """
    features = Features()
    conn = await connect()
    async with conn:
        try:
            jobs = await _policy_windows(conn)
            features.compression = await _compression_enabled(conn) or await _attempt(
                conn, features, "compression", (ENABLE_COMPRESSION, ()))
            if features.compression:
                features.compression = await _policy(conn, features, "compression", jobs.get("policy_compression"),
                                                      compress_after_days * DAY_MS, REMOVE_COMPRESSION,
                                                      ADD_COMPRESSION)
            features.retention_policy = await _policy(conn, features, "retention", jobs.get("policy_retention"),
                                                      retention_days * DAY_MS, REMOVE_RETENTION, ADD_RETENTION)
            cur = await conn.execute("SELECT to_regclass('fixes_hourly') IS NOT NULL")
            row = await cur.fetchone()
            if not (row and row[0]):
                await _attempt(conn, features, "continuous aggregate fixes_hourly",
                               (CONTINUOUS_AGGREGATE, ()), (AGGREGATE_POLICY, (3 * DAY_MS,)))
        except psycopg.OperationalError as exc:
            raise StorageSetupError(f"TimescaleDB closed its connection while its policies were set: "
                                    f"{one_line(exc)}") from exc
        except psycopg.Error as exc:  # the information views themselves: not a TimescaleDB we know
            raise StorageSetupError(f"TimescaleDB policies cannot be read: {one_line(exc)}") from exc
    return features


async def drop_chunks_before(conn: AsyncConnection, cutoff_ms: int) -> list[str]:
    """Retention without a policy (an Apache-only build): drop every chunk that ends at or before ``cutoff_ms``."""
    cur = await conn.execute("SELECT drop_chunks('fixes', older_than => %s::bigint)::text", (cutoff_ms,))
    return [str(name) for (name,) in await cur.fetchall()]


async def _policy_windows(conn: AsyncConnection) -> dict[str, int | None]:
    cur = await conn.execute(
        "SELECT proc_name, coalesce(config->>'drop_after', config->>'compress_after') "
        "FROM timescaledb_information.jobs WHERE hypertable_name = 'fixes' "
        "AND proc_name IN ('policy_retention', 'policy_compression')")
    windows: dict[str, int | None] = {}
    for name, value in await cur.fetchall():
        try:
            windows[str(name)] = int(value)
        except (TypeError, ValueError):  # an interval-valued window: not ours, replace it
            windows[str(name)] = None
    return windows


async def _compression_enabled(conn: AsyncConnection) -> bool:
    cur = await conn.execute(
        "SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_name = 'fixes'")
    row = await cur.fetchone()
    return bool(row and row[0])


async def _policy(conn: AsyncConnection, features: Features, what: str, current: int | None, want_ms: int,
                  remove: str, add: str) -> bool:
    """Make the policy's window ``want_ms`` (none when <= 0); False when TimescaleDB refuses."""
    if want_ms <= 0:
        await _attempt(conn, features, f"{what} policy", (remove, ()))
        return False
    if current == want_ms:
        return True
    done = await _attempt(conn, features, f"{what} policy", (remove, ()), (add, (want_ms,)))
    if done:
        log.info("TimescaleDB %s policy of fixes: %s -> %g days", what,
                 "none" if current is None else f"{current / DAY_MS:g} days", want_ms / DAY_MS)
    return done


async def _attempt(conn: AsyncConnection, features: Features, what: str,
                   *statements: tuple[str, tuple[Any, ...]]) -> bool:
    """Run ``statements`` in one transaction; a refusal (e.g. the licence) is noted, not raised."""
    try:
        async with conn.transaction():
            for statement, params in statements:
                await conn.execute(statement, params)
        return True
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        features.missing.append(f"no {what}: {one_line(exc)}")
        log.warning("TimescaleDB: no %s for fixes: %s", what, one_line(exc))
        return False
