"""Batched, ordered writes to the database with commit futures.

Rows arrive with the future of the MQTT messages they came from. A batch is
flushed when it holds ``batch_rows`` rows or ``interval_s`` has passed; only
after its transaction commits are the futures resolved, which is when the hub
acknowledges those QoS 1 messages to the broker. While the database is down
batches are kept and retried, so nothing acknowledged is ever lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from hub.errors import StorageUnavailable
from hub.storage import Batch

log = logging.getLogger(__name__)

WriteFn = Callable[[Batch], Awaitable[int]]


class BatchWriter:
    def __init__(self, write: WriteFn, *, batch_rows: int = 5000, interval_s: float = 0.1,
                 retry_s: float = 1.0) -> None:
        self._write = write
        self.batch_rows = batch_rows
        self.interval_s = interval_s
        self.retry_s = retry_s
        self._pending = Batch()
        self._futures: list[asyncio.Future[None]] = []
        self._oldest: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Counters read by metrics and benchmarks.
        self.fixes_written = 0
        self.fixes_duplicate = 0
        self.batches = 0
        self.failures = 0
        self.last_lag_s = 0.0
        self.available = True

    @property
    def pending_rows(self) -> int:
        return len(self._pending)

    def add(self, batch: Batch, future: asyncio.Future[None] | None) -> None:
        """Queue rows; ``future`` resolves once they are committed."""
        if len(batch) == 0 and future is None:
            return
        self._pending.extend(batch)
        if future is not None:
            self._futures.append(future)
        if self._oldest is None:
            self._oldest = time.monotonic()
        if len(self._pending) >= self.batch_rows:
            self._wake.set()

    async def __aenter__(self) -> BatchWriter:
        self._task = asyncio.create_task(self._run(), name="batch-writer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, timeout: float = 10.0) -> None:
        """Flush what is pending (bounded by ``timeout`` if the database is down) and stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                log.error("writer closed with %d rows unwritten (database down); they were not acknowledged",
                          len(self._pending))

    async def _run(self) -> None:
        while True:
            if not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            if not self._pending and not self._futures:
                if self._closing:
                    return
                continue
            await self._flush()
            if self._closing and not self._pending:
                return

    async def _flush(self) -> None:
        batch, futures, oldest = self._pending, self._futures, self._oldest
        self._pending, self._futures, self._oldest = Batch(), [], None
        while True:
            try:
                inserted = await self._write(batch) if len(batch) else 0
                break
            except Exception as exc:
                self.failures += 1
                if not isinstance(exc, StorageUnavailable):
                    log.exception("write failed unexpectedly; holding %d rows and retrying", len(batch))
                elif self.available:
                    log.warning("database unavailable, holding %d rows: %s", len(batch), exc)
                self.available = False
                await asyncio.sleep(self.retry_s)
                # Merge what came in meanwhile so the next attempt writes it too, in order.
                batch.extend(self._pending)
                futures += self._futures
                self._pending, self._futures, self._oldest = Batch(), [], None
        if not self.available:
            log.info("database back, wrote %d held rows", len(batch))
        self.available = True
        self.batches += 1
        self.fixes_written += inserted
        self.fixes_duplicate += len(batch.fixes) - inserted
        if oldest is not None:
            self.last_lag_s = time.monotonic() - oldest
        for future in futures:
            if not future.done():
                future.set_result(None)
