"""The incident log in PostgreSQL: append-only events per incident, plus one summary row each.

`IncidentStore.append` writes a batch of accepted domain events and the incident's summary in one
transaction, guarded by optimistic concurrency: the caller says which version it built its state on,
and a writer that lost the race gets `ConcurrencyConflict` instead of interleaving its events.
State is never stored, only events; the hub rebuilds incidents with `Incident.replay` from `load`,
`load_open` (start-up) or `incidents_received_between` (reports).

Times (`from_ms`, `to_ms`) are epoch milliseconds; ranges are half-open: `from_ms <= t < to_ms`.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from hub.domain.events import Event, event_from_dict
from hub.domain.incident import Incident
from hub.errors import HubError
from hub.storage.database import Database

__all__ = ["SUMMARY_FIELDS", "ConcurrencyConflict", "IncidentStore", "summary_of"]

SUMMARY_FIELDS = ("category", "priority", "status", "policy", "lat", "lon", "received_at", "closed_at")
_PREFIX = re.compile(r"^[A-Za-z0-9_-]{0,16}$")
_SUMMARY_COLUMNS = ", ".join(SUMMARY_FIELDS)


class ConcurrencyConflict(HubError):
    """The incident's log moved on since the caller read it: reload, re-apply, retry."""

    def __init__(self, incident_id: str, expected: int, actual: int | None = None) -> None:
        found = "" if actual is None else f", found {actual}"
        super().__init__(f"incident {incident_id}: expected version {expected}{found}")
        self.incident_id = incident_id
        self.expected = expected
        self.actual = actual


def summary_of(incident: Incident) -> dict[str, Any]:
    """The summary row of an incident (it must have been created: else `IllegalTransition`)."""
    received = incident.received
    created = incident.created
    assert created is not None  # `received` has checked it
    return {"category": created.category, "priority": created.priority, "status": incident.status,
            "policy": created.policy, "lat": created.lat, "lon": created.lon, "received_at": received,
            "closed_at": None if incident.closed is None else incident.closed.ts}


class IncidentStore:
    """Reads and appends incident logs through a `Database`'s pool; outages raise `StorageUnavailable`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def append(self, incident_id: str, expected_version: int, events: Sequence[Event],
                     summary: Mapping[str, Any]) -> int:
        """Append `events` after version `expected_version` (0 for a new incident); returns the new version.

        Raises `ConcurrencyConflict` when the log is not at `expected_version`; nothing is written then.
        """
        if not events:
            raise ValueError("append needs at least one event")
        if expected_version < 0:
            raise ValueError(f"expected_version must be >= 0, got {expected_version}")
        missing = [name for name in SUMMARY_FIELDS if name not in summary]
        if missing:
            raise ValueError(f"summary lacks {missing}")
        rows = [(incident_id, expected_version + i, e.type, e.ts, Jsonb(e.to_dict()))
                for i, e in enumerate(events, start=1)]
        async with self.db.connection() as conn:
            try:
                async with conn.transaction():
                    cur = await conn.execute(
                        "SELECT coalesce(max(version), 0) FROM incident_events WHERE incident_id = %s",
                        (incident_id,))
                    row = await cur.fetchone()
                    actual = 0 if row is None else int(row[0])
                    if actual != expected_version:
                        raise ConcurrencyConflict(incident_id, expected_version, actual)
                    async with conn.cursor() as c:
                        # A writer racing past the check above trips the UNIQUE (incident_id, version).
                        await c.executemany(
                            "INSERT INTO incident_events (incident_id, version, type, ts, data) "
                            "VALUES (%s, %s, %s, %s, %s)", rows)
                    await conn.execute(
                        f"INSERT INTO incidents (incident_id, {_SUMMARY_COLUMNS}) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (incident_id) DO UPDATE SET "
                        "category = EXCLUDED.category, priority = EXCLUDED.priority, status = EXCLUDED.status, "
                        "policy = EXCLUDED.policy, lat = EXCLUDED.lat, lon = EXCLUDED.lon, "
                        "received_at = EXCLUDED.received_at, closed_at = EXCLUDED.closed_at, updated_at = now()",
                        (incident_id, *(summary[name] for name in SUMMARY_FIELDS)))
            except psycopg.errors.UniqueViolation as exc:
                raise ConcurrencyConflict(incident_id, expected_version) from exc
        return expected_version + len(events)

    async def load(self, incident_id: str) -> list[Event]:
        """The incident's events in version order; empty when it does not exist."""
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT data FROM incident_events WHERE incident_id = %s ORDER BY version", (incident_id,))
            return [event_from_dict(data) for (data,) in await cur.fetchall()]

    async def load_open(self) -> dict[str, list[Event]]:
        """Every event of every incident not closed (diverted ones included), for rebuilding state on start-up.

        Incidents come in order of reception, each log in version order."""
        return await self._logs(
            "SELECT e.incident_id, e.data FROM incident_events e JOIN incidents i USING (incident_id) "
            "WHERE i.status <> 'closed' ORDER BY i.received_at, e.incident_id, e.version", ())

    async def incidents_received_between(self, from_ms: int, to_ms: int) -> dict[str, list[Event]]:
        """The whole logs of the incidents received in [from_ms, to_ms), for reports."""
        return await self._logs(
            "SELECT e.incident_id, e.data FROM incident_events e JOIN incidents i USING (incident_id) "
            "WHERE i.received_at >= %s AND i.received_at < %s ORDER BY i.received_at, e.incident_id, e.version",
            (from_ms, to_ms))

    async def events_between(self, from_ms: int, to_ms: int) -> list[tuple[str, Event]]:
        """(incident_id, event) for every event whose `ts` is in [from_ms, to_ms), by `ts`, then append order."""
        async with self.db.connection(timeout=30.0) as conn:
            cur = await conn.execute(
                "SELECT incident_id, data FROM incident_events WHERE ts >= %s AND ts < %s ORDER BY ts, seq",
                (from_ms, to_ms))
            return [(incident_id, event_from_dict(data)) for incident_id, data in await cur.fetchall()]

    async def next_id(self, prefix: str = "I", *, now_ms: int | None = None, tz: tzinfo = UTC) -> str:
        """A new readable incident id, e.g. ``I20261123-000042``: prefix, date (in `tz`), a database sequence.

        The number never repeats, also across restarts; ids sort in creation order while it stays below
        a million."""
        if not _PREFIX.match(prefix):
            raise ValueError(f"invalid incident id prefix {prefix!r}")
        moment = datetime.now(tz) if now_ms is None else datetime.fromtimestamp(now_ms / 1000, tz)
        async with self.db.connection() as conn:
            cur = await conn.execute("SELECT nextval('incident_number_seq')")
            row = await cur.fetchone()
            assert row is not None
        return f"{prefix}{moment:%Y%m%d}-{int(row[0]):06d}"

    async def list(self, status: str | None = None, limit: int = 100) -> builtins.list[dict[str, Any]]:
        """Summaries, newest received first; `status` is open, diverted or closed (None: all)."""
        async with self.db.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT incident_id, {_SUMMARY_COLUMNS} FROM incidents WHERE %(status)s::text IS NULL "
                "OR status = %(status)s ORDER BY received_at DESC, incident_id DESC LIMIT %(limit)s",
                {"status": status, "limit": limit})
            return await cur.fetchall()

    async def heatmap(self, from_ms: int, to_ms: int, cell_m: float) -> builtins.list[dict[str, Any]]:
        """Incidents received in [from_ms, to_ms) counted per grid cell of about `cell_m` metres (diverted
        ones too: a hotspot of calls is a hotspot), each cell at the mean position of its incidents."""
        lat_step = cell_m / 111_320.0
        async with self.db.connection(timeout=30.0) as conn:
            cur = conn.cursor(row_factory=dict_row)
            # Longitude cells shrink with latitude: the step is scaled by the cosine of the window's mean latitude.
            await cur.execute(
                "WITH w AS (SELECT lat, lon FROM incidents WHERE received_at >= %(f)s AND received_at < %(t)s), "
                "s AS (SELECT %(d)s::float8 / greatest(cos(radians(coalesce(avg(lat), 0))), 0.01) AS lon_step FROM w) "
                "SELECT avg(lat) AS lat, avg(lon) AS lon, count(*) AS count FROM w, s "
                "GROUP BY floor(lat / %(d)s::float8), floor(lon / s.lon_step) ORDER BY count DESC LIMIT 5000",
                {"f": from_ms, "t": to_ms, "d": lat_step})
            return await cur.fetchall()

    async def _logs(self, query: str, params: tuple[Any, ...]) -> dict[str, builtins.list[Event]]:
        logs: dict[str, builtins.list[Event]] = {}
        async with self.db.connection(timeout=30.0) as conn:
            cur = await conn.execute(query, params)
            for incident_id, data in await cur.fetchall():
                logs.setdefault(incident_id, []).append(event_from_dict(data))
        return logs
