"""PostgreSQL storage adapter (TimescaleDB when present)."""

from __future__ import annotations

from hub.storage.database import Batch, Database

__all__ = ["Batch", "Database"]
