"""Batched, ordered writes to the database with commit futures.

Rows arrive per pipeline cut, with the future of the MQTT messages they came
from. A transaction takes whole cuts, in order, up to about ``batch_rows`` rows;
it runs when that many rows wait or ``interval_s`` has passed. Only after it
commits are the cuts' futures resolved, which is when the hub acknowledges
those QoS 1 messages to the broker. While the database is down the rows are
kept and retried, so nothing acknowledged is ever lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from hub.errors import StorageUnavailable
from hub.storage import Batch

log = logging.getLogger(__name__)

WriteFn = Callable[[Batch], Awaitable[int]]
Entry = tuple[Batch, "asyncio.Future[None] | None", float]


class BatchWriter:
    def __init__(self, write: WriteFn, *, batch_rows: int = 5000, interval_s: float = 0.1,
                 retry_s: float = 1.0) -> None:
        self._write = write
        self.batch_rows = batch_rows
        self.interval_s = interval_s
        self.retry_s = retry_s
        self._queue: deque[Entry] = deque()
        self._rows = 0
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
        return self._rows

    def add(self, batch: Batch, future: asyncio.Future[None] | None) -> None:
        """Queue the rows of one cut; ``future`` resolves once they are committed."""
        if len(batch) == 0 and future is None:
            return
        self._queue.append((batch, future, time.monotonic()))
        self._rows += len(batch)
        if self._rows >= self.batch_rows:
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
                          self._rows)

    async def _run(self) -> None:
        while True:
            if not self._closing and self._rows < self.batch_rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            if not self._queue:
                if self._closing:
                    return
                continue
            await self._flush()

    def _take(self) -> tuple[Batch, list[asyncio.Future[None]], float]:
        """Whole cuts from the head of the queue, up to about ``batch_rows`` rows."""
        batch, futures = Batch(), []
        oldest = self._queue[0][2]
        while self._queue and (len(batch) == 0 or len(batch) + len(self._queue[0][0]) <= self.batch_rows):
            rows, future, _ = self._queue.popleft()
            batch.extend(rows)
            if future is not None:
                futures.append(future)
        return batch, futures, oldest

    async def _flush(self) -> None:
        batch, futures, oldest = self._take()
        while True:
            try:
                inserted = await self._write(batch) if len(batch) else 0
                break
            except Exception as exc:
                self.failures += 1
                if not isinstance(exc, StorageUnavailable):
                    log.exception("write failed unexpectedly; holding %d rows and retrying", len(batch))
                elif self.available:
                    log.warning("database unavailable, holding %d rows: %s", len(batch) + self._rows, exc)
                self.available = False
                await asyncio.sleep(self.retry_s)
        if not self.available:
            log.info("database back; writing the held rows")
        self.available = True
        self._rows -= len(batch)
        self.batches += 1
        self.fixes_written += inserted
        self.fixes_duplicate += len(batch.fixes) - inserted
        self.last_lag_s = time.monotonic() - oldest
        for future in futures:
            if not future.done():
                future.set_result(None)
