"""Video in PostgreSQL: `video_start` publish tokens (digests only) and the record of every stream.

Times are epoch milliseconds. A token row is written before its `video_start` goes out, so a device
that publishes the moment the command arrives finds it, and a hub restart keeps it valid. A token opens
one WHIP session: `claim_token` marks it used (atomically, so two publishes cannot both win), `bind_token`
records the session it opened, and a restart finds it used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row

from hub.storage.database import Database

__all__ = ["StreamRecord", "VideoStore", "VideoToken"]


@dataclass(frozen=True, slots=True)
class VideoToken:
    digest: str
    device_id: str
    unit_id: str | None
    incident_id: str | None
    cmd_id: str
    issued_at: int
    expires_at: int
    stopped_at: int | None = None
    used_at: int | None = None  # a publish with it began (migration 009)
    session_id: str | None = None  # the WHIP session it opened


@dataclass(frozen=True, slots=True)
class StreamRecord:
    stream_id: str
    device_id: str
    unit_id: str | None
    incident_id: str | None
    codec: str | None
    started_at: int
    ended_at: int | None = None


_TOKEN_COLUMNS = ("hash, device_id, unit_id, incident_id, cmd_id, issued_at, expires_at, stopped_at, used_at, "
                  "session_id")
_STREAM_COLUMNS = "stream_id, device_id, unit_id, incident_id, codec, started_at, ended_at"


class VideoStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --------------------------------------------------------------- tokens
    async def add_token(self, token: VideoToken) -> None:
        async with self.db.connection() as conn:
            await conn.execute(
                f"INSERT INTO video_tokens ({_TOKEN_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (token.digest, token.device_id, token.unit_id, token.incident_id, token.cmd_id, token.issued_at,
                 token.expires_at, token.stopped_at, token.used_at, token.session_id))

    async def find_token(self, digest: str) -> VideoToken | None:
        async with self.db.connection(timeout=2.0) as conn:
            cur = await conn.execute(f"SELECT {_TOKEN_COLUMNS} FROM video_tokens WHERE hash = %s", (digest,))
            row = await cur.fetchone()
        return None if row is None else VideoToken(*row)

    async def claim_token(self, digest: str, now_ms: int) -> bool:
        """Mark the token used by a publish that begins now; False if it was used already (by anyone)."""
        async with self.db.connection(timeout=2.0) as conn:
            cur = await conn.execute("UPDATE video_tokens SET used_at = %s WHERE hash = %s AND used_at IS NULL",
                                     (now_ms, digest))
            return cur.rowcount == 1

    async def bind_token(self, digest: str, session_id: str) -> None:
        """Record the session the token's publish opened."""
        async with self.db.connection(timeout=2.0) as conn:
            await conn.execute("UPDATE video_tokens SET session_id = %s WHERE hash = %s AND session_id IS NULL",
                               (session_id, digest))

    async def release_token(self, digest: str) -> None:
        """The publish failed before any session existed (a bad offer): the token may publish again."""
        async with self.db.connection(timeout=2.0) as conn:
            await conn.execute("UPDATE video_tokens SET used_at = NULL WHERE hash = %s AND session_id IS NULL",
                               (digest,))

    async def stop_tokens(self, incident_id: str, stopped_at: int,
                          device_ids: list[str] | None = None) -> list[tuple[str, str | None]]:
        """Mark the incident's live tokens (of `device_ids`, None: all) stopped; returns the (device, unit)
        pairs that had one, each once: the devices that must get `video_stop`."""
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "UPDATE video_tokens SET stopped_at = %(now)s WHERE incident_id = %(i)s AND stopped_at IS NULL "
                "AND (%(d)s::text[] IS NULL OR device_id = ANY(%(d)s::text[])) RETURNING device_id, unit_id",
                {"now": stopped_at, "i": incident_id, "d": device_ids})
            rows = await cur.fetchall()
        return sorted({(r[0], r[1]) for r in rows})

    # -------------------------------------------------------------- streams
    async def stream_started(self, record: StreamRecord) -> None:
        async with self.db.connection() as conn:
            await conn.execute(
                f"INSERT INTO video_streams ({_STREAM_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (stream_id) DO NOTHING",
                (record.stream_id, record.device_id, record.unit_id, record.incident_id, record.codec,
                 record.started_at, record.ended_at))

    async def stream_ended(self, stream_id: str, ended_at: int, codec: str | None) -> None:
        async with self.db.connection() as conn:
            await conn.execute(
                "UPDATE video_streams SET ended_at = %s, codec = coalesce(%s, codec) "
                "WHERE stream_id = %s AND ended_at IS NULL", (ended_at, codec, stream_id))

    async def end_dangling(self, ended_at: int) -> int:
        """Streams a previous run left live (it stopped without ending them): ended now."""
        async with self.db.connection(timeout=30.0) as conn:
            cur = await conn.execute("UPDATE video_streams SET ended_at = %s WHERE ended_at IS NULL", (ended_at,))
            return cur.rowcount

    async def streams_of_devices(self, device_ids: list[str], from_ms: int,
                                 to_ms: int | None) -> list[StreamRecord]:
        """Streams of `device_ids` live at some time in [from_ms, to_ms] (to_ms None: until now)."""
        async with self.db.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_STREAM_COLUMNS} FROM video_streams WHERE device_id = ANY(%(d)s) "
                "AND (ended_at IS NULL OR ended_at >= %(f)s) AND (%(t)s::bigint IS NULL OR started_at <= %(t)s) "
                "ORDER BY started_at", {"d": device_ids, "f": from_ms, "t": to_ms})
            return [StreamRecord(*row) for row in await cur.fetchall()]

    async def streams_of_incident(self, incident_id: str) -> list[StreamRecord]:
        """Streams published with a token issued for the incident."""
        async with self.db.connection() as conn:
            cur = await conn.execute(f"SELECT {_STREAM_COLUMNS} FROM video_streams WHERE incident_id = %s "
                                     "ORDER BY started_at", (incident_id,))
            return [StreamRecord(*row) for row in await cur.fetchall()]

    async def stream(self, stream_id: str) -> dict[str, Any] | None:
        async with self.db.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"SELECT {_STREAM_COLUMNS} FROM video_streams WHERE stream_id = %s", (stream_id,))
            return await cur.fetchone()
