"""Batched, ordered writes to the database with commit futures.

Rows arrive per pipeline cut, with the future of the MQTT messages they came
from. A transaction takes whole cuts, in order, up to about ``batch_rows`` rows;
it runs when that many rows wait or ``interval_s`` has passed. Only after it
commits are the cuts' futures resolved, which is when the hub acknowledges
those QoS 1 messages to the broker.

Two kinds of failure, two answers:

- the database is away (:class:`StorageUnavailable`): the rows are kept and
  retried, so nothing acknowledged is ever lost. At ``max_pending_rows`` the
  writer stops taking more (:meth:`wait_for_room`), which stops the pipeline,
  which stops the PUBACKs: the broker holds the rest;
- the database refuses what some rows hold (any other error): the batch is
  split in halves until the refused rows are found. They become rejects
  (``storage_refused``, with the database's message), the other rows are
  committed, and then the futures resolve. k bad rows among N cost
  O(k log N) transactions; the same rows are never retried forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from devices import topics
from devices.payloads import storable_text
from hub.errors import StorageRefused, StorageUnavailable
from hub.storage import Batch

log = logging.getLogger(__name__)

WriteFn = Callable[[Batch], Awaitable[int]]
Entry = tuple[Batch, "asyncio.Future[None] | None", float]
Refused = tuple[Batch, str]  # one row, and why the database refused it

# The four row lists of a batch, in write order, and the device channel each comes from.
_KINDS = (("fixes", "telemetry"), ("rejects", ""), ("statuses", "status"), ("events", "event"))
_LAST_RESORT = "the database refused this reject row; what it held could not be stored"


class BatchWriter:
    def __init__(self, write: WriteFn, *, batch_rows: int = 5000, interval_s: float = 0.1,
                 retry_s: float = 1.0, max_pending_rows: int = 500_000, raw_limit: int = 1024) -> None:
        self._write = write
        self.batch_rows = batch_rows
        self.interval_s = interval_s
        self.retry_s = retry_s
        self.max_pending_rows = max_pending_rows
        self.raw_limit = raw_limit
        self._queue: deque[Entry] = deque()
        self._rows = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Counters read by metrics and benchmarks.
        self.fixes_written = 0
        self.fixes_duplicate = 0
        self.batches = 0
        self.failures = 0  # writes that found the database away
        self.splits = 0  # batches split to isolate refused rows
        self.rows_refused = 0  # rows the database refused, stored as rejects instead
        self.rows_lost = 0  # refused rows whose reject was refused too (never expected)
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
        if self._rows >= self.max_pending_rows:
            self._room.clear()

    async def wait_for_room(self) -> None:
        """Return once fewer than ``max_pending_rows`` rows wait (at once, normally)."""
        while self._rows >= self.max_pending_rows:
            self._room.clear()
            await self._room.wait()

    async def __aenter__(self) -> BatchWriter:
        self._task = asyncio.create_task(self._run(), name="batch-writer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, timeout: float = 10.0) -> None:
        """Flush what is pending (bounded by ``timeout`` if the database is down) and stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None and not self._task.done():
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
        inserted, refused = await self._bisect(batch)
        if refused:
            await self._keep_refused(refused)
        self._rows -= len(batch)
        if self._rows < self.max_pending_rows:
            self._room.set()
        self.batches += 1
        self.fixes_written += inserted
        self.fixes_duplicate += len(batch.fixes) - sum(1 for b, _ in refused if b.fixes) - inserted
        self.last_lag_s = time.monotonic() - oldest
        for future in futures:
            if not future.done():
                future.set_result(None)

    async def _bisect(self, batch: Batch) -> tuple[int, list[Refused]]:
        """Commit every row of ``batch`` the database accepts; returns the new fixes and the refused rows."""
        inserted, refused = 0, []
        todo = [batch]
        while todo:
            part = todo.pop()
            if not len(part):
                continue
            try:
                inserted += await self._write_held(part)
            except Exception as exc:  # not "away" (that is held in _write_held): what the rows hold
                if len(part) == 1:
                    refused.append((part, _message(exc)))
                    continue
                if part is batch:
                    log.warning("the database refused a batch of %d rows (%s); isolating the refused rows",
                                len(batch), _message(exc)[:200])
                self.splits += 1
                first, second = _halves(part)
                todo += [second, first]
        return inserted, refused

    async def _write_held(self, part: Batch) -> int:
        """Write ``part``; while the database is away, hold it and retry."""
        while True:
            try:
                inserted = await self._write(part)
            except StorageUnavailable as exc:
                self.failures += 1
                if self.available:
                    log.warning("database unavailable, holding %d rows: %s", self._rows, exc)
                self.available = False
                await asyncio.sleep(self.retry_s)
                continue
            if not self.available:
                log.info("database back; writing the held rows")
            self.available = True
            return inserted

    async def _keep_refused(self, refused: list[Refused]) -> None:
        """Store refused rows as rejects; a reject refused in turn is stored as a minimal one, else counted lost."""
        self.rows_refused += len(refused)
        _, again = await self._bisect(Batch(rejects=[_reject_of(b, why, self.raw_limit) for b, why in refused]))
        if again:
            _, lost = await self._bisect(Batch(rejects=[_minimal_reject(b) for b, _ in again]))
            if lost:
                self.rows_lost += len(lost)
                log.error("the database refused %d minimal reject rows (%s); they are lost", len(lost), lost[0][1])


def _halves(batch: Batch) -> tuple[Batch, Batch]:
    """Split the rows of ``batch`` (in write order across its four lists) into two halves."""
    half = len(batch) // 2
    first, second = Batch(), Batch()
    for name, _ in _KINDS:
        rows: list[tuple[Any, ...]] = getattr(batch, name)
        take = min(half, len(rows))
        getattr(first, name).extend(rows[:take])
        getattr(second, name).extend(rows[take:])
        half -= take
    return first, second


def _message(exc: BaseException) -> str:
    """The database's words (Database.write names the error's class already), storable."""
    try:
        text = " ".join(str(exc).split())
    except Exception:
        text = ""
    if not isinstance(exc, StorageRefused):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return storable_text(text, 500)


def _reject_of(one: Batch, why: str, raw_limit: int) -> tuple[Any, ...]:
    """The reject row that stands for one refused row: its device and channel, the database's message,
    and the row itself as JSON (ASCII, so it is storable whatever it holds)."""
    name, channel = next((n, c) for n, c in _KINDS if getattr(one, n))
    row: tuple[Any, ...] = getattr(one, name)[0]
    if name == "rejects":  # a reject itself refused: keep its raw bytes, make its text storable
        received, topic, device, reason, _, size, raw = row
        return (_int(received), storable_text(str(topic), 512), _device(device), "storage_refused",
                storable_text(f"{reason}: {why}", 500), _int(size, 31), raw if isinstance(raw, bytes) else b"")
    try:
        raw = json.dumps(list(row), ensure_ascii=True, default=repr).encode()
    except Exception:  # a value json cannot walk (too deep, ...): the message says the rest
        raw = b""
    device = _device(row[0])
    topic = topics.device_topic(device, channel) if device else ""  # type: ignore[arg-type]
    return (_int(row[-1]), topic, device, "storage_refused", why, len(raw), raw[:raw_limit])


def _minimal_reject(one: Batch) -> tuple[Any, ...]:
    row = one.rejects[0]
    return (_int(row[0]), "", None, "storage_refused", _LAST_RESORT, 0, b"")


def _device(value: object) -> str | None:
    return storable_text(value, 128) or None if isinstance(value, str) else None


def _int(value: object, bits: int = 63) -> int:
    return value if type(value) is int and -(2**bits) <= value < 2**bits else 0
