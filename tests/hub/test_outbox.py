"""The incident outbox's bounds: a job refused when it is full tells its caller (who may undo a reservation)."""

from __future__ import annotations

from hub.errors import StorageUnavailable
from hub.storage.outbox import Outbox


async def test_a_job_refused_by_a_full_outbox_calls_on_refused_and_a_kept_one_does_not() -> None:
    outbox = Outbox(limit=1)
    undone: list[str] = []

    async def down() -> None:
        raise StorageUnavailable("database away")

    assert not await outbox.run("a", "first", down, on_refused=lambda: undone.append("first"))
    assert len(outbox) == 1 and undone == []  # kept: it waits for the database
    assert not await outbox.run("b", "second", down, on_refused=lambda: undone.append("second"))
    assert len(outbox) == 1 and undone == ["second"] and outbox.dropped == 1
