"""Retention of the device logs: rejects, statuses and events older than the window, deleted in batches.

They are kept by arrival time (``received_at``, the hub's clock): a device's own timestamps may be anything.
Each batch is one short statement of its own, so a large backlog never holds long locks or one huge transaction
while ingest writes to the same tables.
"""

from __future__ import annotations

from typing import Final

from psycopg import AsyncConnection, sql

LOG_TABLES: Final = ("rejects", "device_status", "device_events")


async def prune_logs(conn: AsyncConnection, cutoff_ms: int, batch_rows: int) -> dict[str, int]:
    """Delete every log row that arrived before ``cutoff_ms``; rows deleted per table (tables with none left out)."""
    deleted: dict[str, int] = {}
    for table in LOG_TABLES:
        statement = sql.SQL("DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE received_at < %s "
                            "LIMIT %s))").format(t=sql.Identifier(table))
        total = 0
        while True:
            cur = await conn.execute(statement, (cutoff_ms, batch_rows))
            total += cur.rowcount
            if cur.rowcount < batch_rows:
                break
        if total:
            deleted[table] = total
    return deleted
