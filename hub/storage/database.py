"""The PostgreSQL adapter: every SQL statement of the hub lives in this package."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from hub.errors import StorageRefused, StorageSetupError, StorageUnavailable, one_line
from hub.storage import partitions, retention, schema, timescale

log = logging.getLogger(__name__)

FIX_COLUMNS = ("device_id", "ts", "lat", "lon", "alt", "acc", "speed", "heading", "battery", "sats", "seq",
               "attrs", "received_at")
FIX_TYPES = ("text", "int8", "float8", "float8", "float4", "float4", "float4", "float4", "float4", "int2", "int8",
             "jsonb", "int8")
# Fixes are loaded into a temporary table wider than `fixes` (float8 for float4, int8 for int2): psycopg's
# binary dumpers wrap an out-of-range int2 (70000 -> 4464) and make a float4 overflow Infinity without a word,
# while the INSERT's assignment cast into `fixes` refuses them ("smallint out of range"), so the writer can
# isolate such a row instead of storing a wrong value.
_LOAD_TYPES = tuple("float8" if t == "float4" else "int8" if t == "int2" else t for t in FIX_TYPES)
_LOAD_TABLE = ("CREATE TEMP TABLE IF NOT EXISTS fixes_load ("
               + ", ".join(f"{c} {t}" for c, t in zip(FIX_COLUMNS, _LOAD_TYPES, strict=True))
               + ") ON COMMIT DELETE ROWS")
_LOAD_INSERT = (f"INSERT INTO fixes ({', '.join(FIX_COLUMNS)}) SELECT {', '.join(FIX_COLUMNS)} FROM fixes_load "
                "ON CONFLICT DO NOTHING")
REJECT_COLUMNS = ("received_at", "topic", "device_id", "reason", "detail", "size", "raw")
REJECT_TYPES = ("int8", "text", "text", "text", "text", "int4", "bytea")


@dataclass(slots=True)
class Batch:
    """Rows of one write transaction."""

    fixes: list[tuple[Any, ...]] = field(default_factory=list)
    rejects: list[tuple[Any, ...]] = field(default_factory=list)
    statuses: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.fixes) + len(self.rejects) + len(self.statuses) + len(self.events)

    def extend(self, other: Batch) -> None:
        self.fixes += other.fixes
        self.rejects += other.rejects
        self.statuses += other.statuses
        self.events += other.events


class Database:
    """Connection pool, migrations, partitions and queries."""

    def __init__(self, url: str, *, partition_days: int = 1, partitions_ahead: int = 3,
                 retention_days: int = 90, compress_after_days: int = 7, log_retention_days: int = 30,
                 pool_size: int = 4, connect_timeout_s: float = 5.0, log_batch_rows: int = 5000) -> None:
        self.url = url
        self.partition_days = partition_days
        self.partitions_ahead = partitions_ahead
        self.retention_days = retention_days
        self.compress_after_days = compress_after_days
        self.log_retention_days = log_retention_days
        self.connect_timeout_s = connect_timeout_s
        self.log_batch_rows = log_batch_rows
        self.mode = "unknown"
        self.mode_reason = ""
        self._retention_by_maintenance = True
        self._partitions: set[int] = set()
        # reconnect_timeout: the pool's background reconnection backs off exponentially without a cap (1, 2,
        # 4 ... s), so after a 30 s outage the next try could come 30 s after the database is back. Giving up
        # after 10 s hands reconnection back to the callers: the writer's next retry (every write_retry_s)
        # starts a fresh attempt, so the hub is writing again within seconds of the database's return.
        # connect_timeout: a host that does not answer fails an attempt instead of holding it for minutes.
        self.pool = AsyncConnectionPool(url, min_size=1, max_size=pool_size, open=False, reconnect_timeout=10.0,
                                        kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout_s))})

    @asynccontextmanager
    async def connection(self, timeout: float = 5.0) -> AsyncIterator[AsyncConnection]:
        """A pooled connection; an unreachable database becomes :class:`StorageUnavailable`."""
        try:
            async with self.pool.connection(timeout=timeout) as conn:
                yield conn
        except psycopg.errors.ProgramLimitExceeded:
            raise  # an OperationalError, but caused by a value (too large for an index...): not an outage
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            raise StorageUnavailable(str(exc)) from exc

    async def __aenter__(self) -> Database:
        """Set up the storage and open the pool; on any failure close what was opened and raise
        :class:`StorageSetupError` with a one-line reason (a half-open pool kept the process alive forever)."""
        try:
            await self.migrate()
            await self.pool.open(wait=True, timeout=self.connect_timeout_s)
            await self.maintain_fixes()  # a shorter retention applies at once, before anything is written
        except BaseException as exc:
            await self.pool.close()
            if isinstance(exc, (psycopg.Error, PoolTimeout, StorageUnavailable)):
                raise StorageSetupError(f"{schema.describe(self.url)}: {one_line(exc)}") from exc
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.close()

    # ------------------------------------------------- set-up and maintenance
    async def migrate(self) -> None:
        """Migrations, the fixes table and its policies (see :mod:`hub.storage.schema`), on a connection of its own."""
        plan = schema.StoragePlan(partition_days=self.partition_days, retention_days=self.retention_days,
                                  compress_after_days=self.compress_after_days,
                                  log_retention_days=self.log_retention_days)
        setup = await schema.set_up(self.url, plan, connect_timeout_s=self.connect_timeout_s)
        self.mode, self.mode_reason = setup.mode, setup.reason
        self._retention_by_maintenance = setup.retention_by_maintenance

    async def maintain(self, now_ms: int | None = None) -> list[str]:
        """The hourly maintenance (and at start): partitions and retention of fixes, retention of the device
        logs. Returns the fixes partitions or chunks dropped."""
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        dropped = await self.maintain_fixes(now_ms)
        await self.prune_logs(now_ms)
        return dropped

    async def maintain_fixes(self, now_ms: int | None = None) -> list[str]:
        """Create the coming native partitions; drop what is older than ``retention_days`` unless a TimescaleDB
        retention policy does it."""
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        cutoff = now_ms - self.retention_days * partitions.DAY_MS
        async with self.connection(timeout=30.0) as conn:
            if self.mode == "native":
                for day in range(-1, self.partitions_ahead + 1):
                    await self._ensure_partition(conn, now_ms + day * self.partition_days * partitions.DAY_MS)
                dropped = await partitions.drop_partitions_before(conn, cutoff, self.partition_days)
                self._partitions = await partitions.existing_partitions(conn)
            elif self.mode == "timescaledb" and self._retention_by_maintenance:
                dropped = await timescale.drop_chunks_before(conn, cutoff)
            else:
                dropped = []
        if dropped:
            log.info("retention (%d days) dropped %s", self.retention_days, ", ".join(dropped))
        return dropped

    async def prune_logs(self, now_ms: int | None = None) -> dict[str, int]:
        """Delete rejects, statuses and events that arrived more than ``log_retention_days`` ago."""
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        async with self.connection(timeout=30.0) as conn:
            deleted = await retention.prune_logs(conn, now_ms - self.log_retention_days * partitions.DAY_MS,
                                                 self.log_batch_rows)
        if deleted:
            log.info("log retention (%d days) deleted %s", self.log_retention_days,
                     ", ".join(f"{n} {table}" for table, n in deleted.items()))
        return deleted

    async def maintain_hourly(self) -> None:
        """Partitions and retention, hourly, until cancelled. The fixes were maintained when the database opened;
        the first run deletes only the device logs' backlog (in batches) while the hub already serves, so a large
        backlog does not delay the start."""
        run: Callable[[], Awaitable[object]] = self.prune_logs
        while True:
            try:
                await run()
            except StorageUnavailable as exc:
                log.warning("storage maintenance failed (%s); next try in an hour", one_line(exc))
            except Exception:
                log.exception("storage maintenance failed; next try in an hour")
            await asyncio.sleep(3600)
            run = self.maintain

    async def _ensure_partition(self, conn: AsyncConnection, ts_ms: int) -> None:
        start = partitions.partition_start(ts_ms, self.partition_days)
        if start not in self._partitions:
            await partitions.create_partition(conn, start, self.partition_days)
            self._partitions.add(start)

    # ----------------------------------------------------------------- writes
    async def write(self, batch: Batch) -> int:
        """Write one batch in one transaction; returns the number of new fixes.

        Fixes go through a binary COPY into a temporary table and then an
        ``INSERT ... ON CONFLICT DO NOTHING``, which makes re-delivery idempotent.
        A database that cannot be reached raises :class:`StorageUnavailable`; rows it
        refuses for what they hold (a NUL, a lone surrogate, a value beyond its
        column: any other error) raise :class:`StorageRefused` with its message.
        """
        try:
            return await self._write(batch)
        except StorageUnavailable:
            raise
        except (psycopg.Error, UnicodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise StorageRefused(f"{type(exc).__name__}: {one_line(exc)}") from exc

    async def _write(self, batch: Batch) -> int:
        async with self.connection() as conn:
            if self.mode == "native" and batch.fixes:
                for start in {partitions.partition_start(r[1], self.partition_days) for r in batch.fixes}:
                    await self._ensure_partition(conn, start)
            async with conn.transaction():
                inserted = 0
                if batch.fixes:
                    inserted = await self._copy_fixes(conn, batch.fixes)
                if batch.rejects:
                    await _copy(conn, "rejects", REJECT_COLUMNS, REJECT_TYPES, batch.rejects)
                # Events and statuses are few; a re-delivered one is stored once.
                if batch.events:
                    await _insert_new(conn, "device_events", ("device_id", "ts", "type", "data", "received_at"),
                                      batch.events)
                if batch.statuses:
                    await _insert_new(conn, "device_status", ("device_id", "ts", "state", "payload", "received_at"),
                                      batch.statuses)
                return inserted

    async def _copy_fixes(self, conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> int:
        await conn.execute(_LOAD_TABLE)
        await _copy(conn, "fixes_load", FIX_COLUMNS, _LOAD_TYPES, rows)
        cur = await conn.execute(_LOAD_INSERT)
        return cur.rowcount

    # ------------------------------------------------------- units & devices
    async def upsert_unit(self, unit: dict[str, Any]) -> None:
        async with self.connection() as conn, conn.transaction():
            home = unit.get("home") or {}
            await conn.execute(
                "INSERT INTO units (unit_id, name, kind, home_lat, home_lon, capabilities) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (unit_id) DO UPDATE SET name = EXCLUDED.name, "
                "kind = EXCLUDED.kind, home_lat = EXCLUDED.home_lat, home_lon = EXCLUDED.home_lon, "
                "capabilities = EXCLUDED.capabilities, updated_at = now()",
                (unit["unit_id"], unit["name"], unit["kind"], home.get("lat"), home.get("lon"),
                 Jsonb(unit.get("capabilities", []))),
            )
            await conn.execute("UPDATE devices SET unit_id = NULL WHERE unit_id = %s AND NOT device_id = ANY(%s)",
                               (unit["unit_id"], unit["devices"]))
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO devices (device_id, unit_id) VALUES (%s, %s) "
                    "ON CONFLICT (device_id) DO UPDATE SET unit_id = EXCLUDED.unit_id",
                    [(d, unit["unit_id"]) for d in unit["devices"]])

    async def load_units(self, unit_id: str | None = None) -> list[dict[str, Any]]:
        """Every unit with its devices (and the kinds they were registered with), or only ``unit_id``."""
        async with self.connection(timeout=30.0) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT u.unit_id, u.name, u.kind, u.home_lat, u.home_lon, u.capabilities, "
                "coalesce(array_agg(d.device_id ORDER BY d.device_id) FILTER (WHERE d.device_id IS NOT NULL), "
                "'{}') AS devices, coalesce(jsonb_object_agg(d.device_id, d.kind) FILTER (WHERE d.kind IS NOT NULL), "
                "'{}') AS device_kinds FROM units u LEFT JOIN devices d ON d.unit_id = u.unit_id "
                "WHERE %(unit)s::text IS NULL OR u.unit_id = %(unit)s GROUP BY u.unit_id", {"unit": unit_id})
            return await cur.fetchall()

    async def track(self, device_ids: list[str], from_ms: int, to_ms: int, limit: int) -> list[dict[str, Any]]:
        async with self.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT device_id, ts, lat, lon, alt, acc, speed, heading, battery FROM fixes "
                "WHERE device_id = ANY(%s) AND ts >= %s AND ts <= %s ORDER BY ts LIMIT %s",
                (device_ids, from_ms, to_ms, limit))
            return await cur.fetchall()

    # Tokens: hub/storage/tokens.py (TokenStore).

    # ------------------------------------------------------------- inspection
    async def scalar(self, query: str, params: tuple[Any, ...] = ()) -> Any:
        """One value from a read-only query (used by tests, benchmarks and health)."""
        async with self.connection(timeout=30.0) as conn:
            cur = await conn.execute(query, params)
            row = await cur.fetchone()
            return None if row is None else row[0]


async def _copy(conn: AsyncConnection, table: str, columns: tuple[str, ...], types: tuple[str, ...],
                rows: list[tuple[Any, ...]]) -> None:
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    async with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types(list(types))
        for row in rows:
            await copy.write_row(row)


async def _insert_new(conn: AsyncConnection, table: str, columns: tuple[str, ...],
                      rows: list[tuple[Any, ...]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING of rows shaped (device_id, ts, kind, json document, received_at)."""
    statement = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
                 "ON CONFLICT DO NOTHING")
    async with conn.cursor() as cur:
        await cur.executemany(statement, [(d, ts, kind, Jsonb(doc), r) for d, ts, kind, doc, r in rows])
