"""Storage set-up at start: connect, migrate, create the fixes table, reconcile and record the policies.

A hub that cannot set up its storage must say why and stop, within seconds: every fault here becomes a
:class:`StorageSetupError` with a one-line reason. The connection has a connect timeout, the migration lock and
the DDL a lock timeout, and TimescaleDB is tried on connections of its own, so nothing waits forever and a FATAL
there cannot take the rest of the set-up with it. The set-up runs on its own connection, not the pool's, and
holds the migration lock for the session: closing the connection releases it, whatever state it is in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from importlib import resources
from typing import Final

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict

from hub.errors import StorageSetupError, one_line
from hub.storage import partitions, timescale
from hub.storage.timescale import NOT_INSTALLED

log = logging.getLogger(__name__)

MIGRATION_LOCK: Final = 0x66686231  # pg_advisory_lock key: "fhb1"
LOCK_WAIT_S: Final = 5


@dataclass(frozen=True, slots=True)
class StoragePlan:
    """The configuration the storage follows (FIELDHUB_* settings)."""

    partition_days: int = 1
    retention_days: int = 90
    compress_after_days: int = 7
    log_retention_days: int = 30


@dataclass(frozen=True, slots=True)
class StorageSetup:
    """What the set-up applied: the mode of the fixes table and why, and who runs its retention."""

    mode: str
    reason: str
    compression: bool
    retention_by_maintenance: bool  # False: a TimescaleDB retention policy drops old chunks itself


def describe(url: str) -> str:
    """``host:port/dbname`` of a database URL, without credentials."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.Error:
        return "(invalid URL)"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


async def connect(url: str, timeout_s: float) -> AsyncConnection:
    """A fresh autocommit connection, or StorageSetupError within about ``timeout_s``."""
    try:
        conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise StorageSetupError(f"invalid database URL: {one_line(exc)}") from exc
    try:
        # libpq's connect_timeout covers each host; wait_for bounds the whole attempt (DNS included).
        return await asyncio.wait_for(
            AsyncConnection.connect(url, autocommit=True, connect_timeout=max(1, int(timeout_s))), timeout_s + 1)
    except (psycopg.Error, OSError, TimeoutError) as exc:
        raise StorageSetupError(f"cannot connect to {describe(url)}: {one_line(exc)}") from exc


async def set_up(url: str, plan: StoragePlan, *, connect_timeout_s: float) -> StorageSetup:
    """Migrate the database and bring the fixes table and its policies to ``plan``."""
    for name in ("partition_days", "retention_days", "log_retention_days"):
        if getattr(plan, name) < 1:
            raise StorageSetupError(f"FIELDHUB_{name.upper()} must be at least 1 (is {getattr(plan, name)})")
    conn = await connect(url, connect_timeout_s)
    async with conn:
        try:
            await conn.execute(f"SET lock_timeout = '{LOCK_WAIT_S}s'")
            try:
                await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
            except psycopg.errors.LockNotAvailable as exc:
                raise StorageSetupError(f"another hub holds the migration lock of {describe(url)} "
                                        f"(waited {LOCK_WAIT_S} s)") from exc
            done = await _migrate(conn)
            setup = await _fixes(conn, url, plan, done, connect_timeout_s)
            await _record(conn, plan, setup)
        except StorageSetupError:
            raise
        except psycopg.Error as exc:
            raise StorageSetupError(f"set-up of {describe(url)} failed: {one_line(exc)}") from exc
    return setup


async def _migrate(conn: AsyncConnection) -> set[str]:
    await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, "
                       "applied_at timestamptz NOT NULL DEFAULT now())")
    cur = await conn.execute("SELECT name FROM schema_migrations")
    done = {str(row[0]) for row in await cur.fetchall()}
    folder = resources.files("hub.storage") / "migrations"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql") or entry.name in done:
            continue
        try:
            async with conn.transaction():
                await conn.execute(entry.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (entry.name,))
        except psycopg.Error as exc:
            raise StorageSetupError(f"migration {entry.name} failed: {one_line(exc)}") from exc
        done.add(entry.name)
        log.info("applied migration %s", entry.name)
    return done


async def _fixes(conn: AsyncConnection, url: str, plan: StoragePlan, done: set[str],
                 connect_timeout_s: float) -> StorageSetup:
    """Create the fixes table at the first start (TimescaleDB if it works, else native); reconcile its policies."""
    def fresh() -> Awaitable[AsyncConnection]:  # TimescaleDB is tried on connections of its own
        return connect(url, connect_timeout_s)

    if "fixes" not in done:
        why = await timescale.create_hypertable(fresh, plan.partition_days)
        if why is None:
            mode, reason = "timescaledb", ""
        else:
            async with conn.transaction():
                await partitions.create_native_fixes(conn)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ('fixes'), ('fixes:native')")
            mode, reason = "native", why
            (log.info if why == NOT_INSTALLED else log.warning)("storage: native partitions, not TimescaleDB: %s", why)
    else:
        mode = next((n for n in done if n.startswith("fixes:")), "fixes:native").split(":", 1)[1]
        cur = await conn.execute("SELECT value, detail FROM storage_policies WHERE name = 'mode'")
        row = await cur.fetchone()
        reason = str(row[1]) if row and row[0] == mode else f"{mode} chosen at the first start (reason not recorded)"
    if mode != "timescaledb":
        return StorageSetup(mode, reason, compression=False, retention_by_maintenance=True)
    features = await timescale.reconcile(fresh, retention_days=plan.retention_days,
                                         compress_after_days=plan.compress_after_days)
    reason = "TimescaleDB hypertable" + ("; " + "; ".join(features.missing) if features.missing else
                                         " with compression and retention policies")
    (log.warning if features.missing else log.info)("storage: %s", reason)
    return StorageSetup(mode, reason, features.compression, retention_by_maintenance=not features.retention_policy)


async def _record(conn: AsyncConnection, plan: StoragePlan, setup: StorageSetup) -> None:
    """Write what was applied to storage_policies; log every value that changed since the last start."""
    if setup.mode == "native":
        retention = "native partitions dropped by the hub's maintenance"
    elif setup.retention_by_maintenance:
        retention = "drop_chunks by the hub's maintenance (no TimescaleDB retention policy)"
    else:
        retention = "TimescaleDB retention policy"
    wanted = {
        "mode": (setup.mode, setup.reason),
        "retention_days": (str(plan.retention_days), retention),
        "compress_after_days": (str(plan.compress_after_days) if setup.compression else "off",
                                "TimescaleDB compression policy" if setup.compression else "no compression"),
        "log_retention_days": (str(plan.log_retention_days),
                               "rejects, device_status, device_events deleted by the hub's maintenance"),
    }
    cur = await conn.execute("SELECT name, value, detail FROM storage_policies")
    current = {str(name): (str(value), str(detail)) for name, value, detail in await cur.fetchall()}
    for name, (value, detail) in wanted.items():
        old = current.get(name)
        if old == (value, detail):
            continue
        await conn.execute(
            "INSERT INTO storage_policies (name, value, detail) VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE "
            "SET value = EXCLUDED.value, detail = EXCLUDED.detail, applied_at = now()", (name, value, detail))
        if old is None:
            log.info("storage policy %s: %s (%s)", name, value, detail)
        else:
            log.warning("storage policy %s changed: %s -> %s (%s)", name, old[0], value, detail)
