"""Incident writes that wait for the database: kept in order per incident, retried until it is back.

While PostgreSQL is down, a device's milestone (an ack, a contact, a detected departure or arrival)
or an SOS's incident cannot be appended to the log. Dropping it would lose an acknowledged fact and
could escalate a unit that did acknowledge; so the incident service hands such a write to the outbox
as a job (an async callable that raises `StorageUnavailable` while the database is away). Jobs run in
the order they came, per key (an incident id, or an SOS's unit); once any job waits, new ones queue
behind it instead of trying first, so order holds and nobody waits out a connection time-out per
message. One task retries the oldest job with a backoff (`retry_s` doubling up to `max_retry_s`).
A job that fails for any other reason is logged, counted and dropped. The outbox is bounded: at
`limit` a new job is refused (counted in `dropped`, logged), never grown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable

from devices.tasks import cancel_and_wait
from hub.errors import StorageUnavailable

__all__ = ["Job", "Outbox"]

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[object]]


class Outbox:
    def __init__(self, *, limit: int = 10_000, retry_s: float = 0.5, max_retry_s: float = 5.0) -> None:
        self.limit = limit
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.deferred = 0  # jobs that had to wait
        self.written = 0  # waiting jobs done once the database was back
        self.dropped = 0  # jobs refused (outbox full) or failed for another reason than the outage
        self._jobs: OrderedDict[str, deque[tuple[str, Job]]] = OrderedDict()  # key -> (what, job), in order
        self._size = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return self._size

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="incident-outbox")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """One last try to write what waits (the database may be back), then stop; what still waits is logged."""
        await cancel_and_wait(self._task)
        self._task = None
        if self._size:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drain(), timeout_s)
        if self._size:
            log.error("outbox: %d incident write(s) lost at shutdown, the database is still unreachable: %s",
                      self._size, ", ".join(what for jobs in self._jobs.values() for what, _ in jobs)[:2000])

    async def run(self, key: str, what: str, job: Job, *, on_refused: Callable[[], object] | None = None) -> bool:
        """Run `job` now, or keep it for later (True: done now; False: waiting or refused). `on_refused` is
        called when the outbox is full and the job is dropped, so a caller can undo what it reserved for it."""
        if self._size:  # something waits: the database is down, and order must hold
            self._keep(key, what, job, on_refused)
            return False
        try:
            await job()
        except StorageUnavailable as exc:
            log.warning("outbox: %s waits for the database (%s)", what, exc)
            self._keep(key, what, job, on_refused)
            return False
        return True

    def _keep(self, key: str, what: str, job: Job, on_refused: Callable[[], object] | None) -> None:
        if self._size >= self.limit:
            self.dropped += 1
            log.error("outbox full (%d): %s dropped", self._size, what)
            if on_refused is not None:
                on_refused()
            return
        self._jobs.setdefault(key, deque()).append((what, job))
        self._size += 1
        self.deferred += 1
        self._wake.set()

    async def _run(self) -> None:
        delay = self.retry_s
        while True:
            await self._wake.wait()
            await asyncio.sleep(delay)
            if await self._drain():
                delay = self.retry_s
                self._wake.clear()
            else:
                delay = min(self.max_retry_s, delay * 2)

    async def _drain(self) -> bool:
        """Run waiting jobs in order; False when the database is still down (the rest keeps waiting)."""
        while self._jobs:
            key, jobs = next(iter(self._jobs.items()))
            what, job = jobs[0]
            try:
                await job()
            except StorageUnavailable:
                return False
            except Exception:
                self.dropped += 1
                log.exception("outbox: %s failed and was dropped", what)
            else:
                self.written += 1
                log.info("outbox: %s written after the outage", what)
            jobs.popleft()
            self._size -= 1
            if not jobs:
                del self._jobs[key]
        return True
