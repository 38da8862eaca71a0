"""The drone command audit trail in PostgreSQL (``drone_commands``): append and read back."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from hub.storage.database import Database

__all__ = ["CommandRecord", "DroneAudit"]


@dataclass(frozen=True, slots=True)
class CommandRecord:
    ts: int
    drone_id: str
    command: str
    principal: str
    role: str
    result: str
    done_at: int
    params: dict[str, Any] = field(default_factory=dict)
    incident_id: str | None = None
    detail: str = ""


class DroneAudit:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def append(self, record: CommandRecord) -> None:
        async with self.db.connection() as conn:
            await conn.execute(
                "INSERT INTO drone_commands (ts, drone_id, command, params, principal, role, incident_id, result, "
                "detail, done_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (record.ts, record.drone_id, record.command, Jsonb(record.params), record.principal, record.role,
                 record.incident_id, record.result, record.detail, record.done_at))

    async def recent(self, drone_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT ts, drone_id, command, params, principal, role, incident_id, result, detail, done_at "
                "FROM drone_commands WHERE %(d)s::text IS NULL OR drone_id = %(d)s ORDER BY id DESC LIMIT %(n)s",
                {"d": drone_id, "n": limit})
            return list(await cur.fetchall())

    @staticmethod
    def as_dict(record: CommandRecord) -> dict[str, Any]:
        return asdict(record)
