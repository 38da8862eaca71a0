"""Storage: PostgreSQL (TimescaleDB when present), and everything the hub keeps in it.

Owns the connection pool, migrations, partitions or hypertables and retention (:mod:`~hub.storage.database`,
:mod:`~hub.storage.schema`, :mod:`~hub.storage.partitions`, :mod:`~hub.storage.timescale`), one store per
capability (incidents, drones, video, tokens, device logins), the audit log and the outbox of writes that wait
for the database. May import hub.domain and the base modules only.
"""

from __future__ import annotations

from hub.storage.database import Batch, Database

__all__ = ["Batch", "Database"]
