"""API tokens in PostgreSQL: digests only, with expiry and revocation; and the connection that listens for changes.

Times are epoch milliseconds. Expiry is computed by the database (``now() + interval``), so every writer (CLI,
REST, another hub) stamps it on the same clock as ``created_at``. Migration 007 makes every change NOTIFY
:data:`CHANNEL` (see :class:`hub.access.tokens.TokenRegistry`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import AsyncConnection

from hub.errors import StorageUnavailable, one_line
from hub.storage.database import Database
from hub.storage.schema import describe

__all__ = ["CHANNEL", "LISTENER_NAME", "TokenRecord", "TokenStore", "fetch_all", "fetch_one", "listen"]

CHANNEL: Final = "fieldhub_tokens"
LISTENER_NAME: Final = "fieldhub-token-listener"  # its application_name: the listening session in pg_stat_activity

_COLUMNS = ("token_id, hash, name, role, device_id, "
            "(extract(epoch FROM created_at) * 1000)::int8, "
            "(extract(epoch FROM expires_at) * 1000)::int8, "
            "(extract(epoch FROM revoked_at) * 1000)::int8")


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One row of ``tokens``. ``digest`` is what authenticates: it never leaves the hub (see :meth:`view`)."""

    token_id: int
    digest: str
    name: str
    role: str
    device_id: str | None
    created_at: int
    expires_at: int | None  # None: never
    revoked_at: int | None

    def state(self, now_ms: int) -> str:
        """``revoked``, ``expired`` or ``valid`` at ``now_ms``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now_ms:
            return "expired"
        return "valid"

    def view(self, now_ms: int) -> dict[str, Any]:
        """What a listing shows: everything but the digest."""
        return {"id": self.token_id, "name": self.name, "role": self.role, "device_id": self.device_id,
                "created_at": self.created_at, "expires_at": self.expires_at, "revoked_at": self.revoked_at,
                "state": self.state(now_ms)}


def _record(row: tuple[Any, ...]) -> TokenRecord:
    return TokenRecord(int(row[0]), str(row[1]), str(row[2]), str(row[3]), row[4], int(row[5]),
                       None if row[6] is None else int(row[6]), None if row[7] is None else int(row[7]))


async def fetch_all(conn: AsyncConnection) -> list[TokenRecord]:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM tokens ORDER BY token_id")
    return [_record(row) for row in await cur.fetchall()]


async def fetch_one(conn: AsyncConnection, token_id: int) -> TokenRecord | None:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM tokens WHERE token_id = %s", (token_id,))
    row = await cur.fetchone()
    return None if row is None else _record(row)


async def listen(url: str, timeout_s: float) -> AsyncConnection:
    """A connection of its own (not the pool's: it stays LISTENing) subscribed to :data:`CHANNEL`.

    TCP keepalives make a peer that vanished without closing (a cut network) show as an error within about
    20 s even while no notification comes; the registry's heartbeat query does the same for a hung server.
    """
    try:
        conn = await asyncio.wait_for(AsyncConnection.connect(
            url, autocommit=True, connect_timeout=max(1, int(timeout_s)), application_name=LISTENER_NAME,
            keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=2), timeout_s + 1)
    except (psycopg.Error, OSError, TimeoutError) as exc:
        raise StorageUnavailable(f"cannot connect to {describe(url)}: {one_line(exc)}") from exc
    try:
        await conn.execute(f"LISTEN {CHANNEL}")
    except psycopg.Error as exc:
        await conn.close()
        raise StorageUnavailable(f"LISTEN {CHANNEL} failed: {one_line(exc)}") from exc
    return conn


class TokenStore:
    """Token rows through the hub's (or the CLI's) connection pool."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, name: str, role: str, digest: str, *, device_id: str | None = None,
                     expires_in_s: float | None = None) -> TokenRecord:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                f"INSERT INTO tokens (name, role, hash, device_id, expires_at) VALUES (%s, %s, %s, %s, "
                f"CASE WHEN %s::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => %s::float8) END) "
                f"RETURNING {_COLUMNS}", (name, role, digest, device_id, expires_in_s, expires_in_s))
            row = await cur.fetchone()
            assert row is not None
            return _record(row)

    async def revoke(self, token_id: int) -> TokenRecord | None:
        """Revoke (a revoked token keeps its first revocation time); None if there is no such token."""
        async with self.db.connection() as conn:
            cur = await conn.execute(
                f"UPDATE tokens SET revoked_at = coalesce(revoked_at, now()) WHERE token_id = %s RETURNING {_COLUMNS}",
                (token_id,))
            row = await cur.fetchone()
            return None if row is None else _record(row)

    async def all(self) -> list[TokenRecord]:
        async with self.db.connection(timeout=30.0) as conn:
            return await fetch_all(conn)

    async def get(self, token_id: int) -> TokenRecord | None:
        async with self.db.connection() as conn:
            return await fetch_one(conn, token_id)
