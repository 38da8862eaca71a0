"""The audit log: who did what to what, and when (issue 13 point 7), append-only in PostgreSQL.

Every credential, token and role change, every dispatch, cancel and close and every drone command is
one row of ``audit_log``: the actor (a token's name, or ``hub`` for what the hub does by itself), its
role, a dotted action (:data:`ACTIONS`), the target and a JSON detail. The table refuses UPDATE,
DELETE and TRUNCATE itself (migration 008), so nothing here can rewrite history, and neither can a
bug elsewhere.

A row must not be lost silently when the database is away. A row is recorded after its action was
done, so refusing the action is no longer possible, and answering 503 would make a client repeat a
dispatch that did happen. So once the incident service runs, :meth:`AuditLog.defer_to` hands the log
its :class:`~hub.outbox.Outbox`: a row that meets an outage waits there, in order, with the time of
the action (not of the late write), and is written when the database is back. Without an outbox (the
hub still starting, a test) :meth:`AuditLog.record` raises :class:`StorageUnavailable` and the route
answers 503. A row the outbox cannot take (full) is logged in full at error level and counted in
``lost``: never silent.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from devices.clock import now_ms
from hub.errors import StorageRefused, StorageUnavailable, one_line
from hub.storage.database import Database
from hub.storage.outbox import Outbox

__all__ = ["ACTIONS", "HUB_ACTOR", "MAX_LIMIT", "AuditLog", "AuditRecorder"]

log = logging.getLogger(__name__)

HUB_ACTOR: Final = "hub"  # the actor of what the hub does by itself (auto-dispatch, escalation)
MAX_LIMIT: Final = 1000
ACTIONS: Final = frozenset({
    "token.create", "token.revoke", "device.add", "device.rotate", "device.revoke", "device.certificate", "unit.put",
    "incident.dispatch", "incident.cancel", "incident.close", "incident.event", "incident.divert",
    "drone.goto", "drone.rtl", "drone.land", "incident.drone"})
_COLUMNS: Final = ("id, (extract(epoch FROM at) * 1000)::bigint AS at, actor, role, action, target, detail")
_EPOCH_MS: Final = "('epoch'::timestamptz + %s * interval '1 millisecond')"  # exact: no float seconds


class AuditRecorder(Protocol):
    """What a component that records needs of the log (the incident service takes this, not the class)."""

    async def record(self, actor: str, action: str, target: str, detail: dict[str, object] | None = None, *,
                     role: str | None = None) -> None: ...


def storable(value: Any) -> Any:
    """``value`` with every string PostgreSQL can keep: NUL and lone surrogates (refused by text and jsonb)
    escaped, so an audit row is never refused for what a name or reason holds."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    if isinstance(value, Mapping):
        return {storable(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [storable(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return storable(str(value))


class AuditLog:
    def __init__(self, db: Database, *, clock: Callable[[], int] = now_ms) -> None:
        self.db = db
        self.clock = clock
        self.outbox: Outbox | None = None
        self.recorded = 0  # rows written at once
        self.lost = 0  # rows the outbox refused (full): logged at error level

    def defer_to(self, outbox: Outbox) -> None:
        """Rows that meet an outage wait in ``outbox`` from now on (set by the composition root)."""
        self.outbox = outbox

    async def record(self, actor: str, action: str, target: str, detail: dict[str, object] | None = None, *,
                     role: str | None = None) -> None:
        """Append one row, stamped now. See the module's docstring for what an outage does."""
        row = (storable(actor), storable(role) if role is not None else None, storable(action), storable(target),
               Jsonb(storable(detail or {})), self.clock())
        what = f"audit {row[2]} of {row[3]} by {row[0]}"

        async def job() -> None:
            await self._insert(row)

        if self.outbox is None:
            await job()
            self.recorded += 1
            return

        def refused() -> None:
            self.lost += 1
            log.error("audit row lost (outbox full): actor=%s role=%s action=%s target=%s detail=%s at=%d",
                      row[0], row[1], row[2], row[3], row[4].obj, row[5])

        if await self.outbox.run(f"audit:{row[3]}", what, job, on_refused=refused):
            self.recorded += 1

    async def _insert(self, row: tuple[Any, ...]) -> None:
        try:
            async with self.db.connection() as conn:
                await conn.execute("INSERT INTO audit_log (actor, role, action, target, detail, at) "
                                   f"VALUES (%s, %s, %s, %s, %s, {_EPOCH_MS})", row)
        except StorageUnavailable:
            raise
        except psycopg.Error as exc:  # retrying cannot help; the caller sees why
            raise StorageRefused(f"audit row refused: {one_line(exc)}") from exc

    async def list(self, *, since_ms: int | None = None, until_ms: int | None = None, action: str | None = None,
                   actor: str | None = None, limit: int = 100,
                   before_id: int | None = None) -> builtins.list[dict[str, Any]]:
        """Rows newest first; ``since_ms <= at < until_ms`` (epoch ms); ``before_id`` pages back (the smallest
        ``id`` of the previous page). ``at`` comes back as epoch ms."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIMIT}, is {limit}")
        where: builtins.list[str] = []
        params: builtins.list[object] = []
        for clause, value in ((f"at >= {_EPOCH_MS}", since_ms), (f"at < {_EPOCH_MS}", until_ms),
                              ("action = %s", action), ("actor = %s", actor), ("id < %s", before_id)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = (f"SELECT {_COLUMNS} FROM audit_log" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY id DESC LIMIT %s")
        async with self.db.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(sql, (*params, limit))
            return list(await cur.fetchall())
