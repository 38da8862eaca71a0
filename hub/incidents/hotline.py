"""Hand-over of diverted incidents to the 12345 government service hotline (非警务警情分流, "110 -> 12345").

A diverted incident (双非: non-emergency, non-police) is POSTed as JSON to the hotline's webhook and retried
until the hotline accepts it; only then is `on_accepted` awaited, with which the incident service commits
`HandedOver`. Nothing is ever dropped: a refusal (4xx) is kept and retried at the slowest pace, because the
receiving system's configuration can be fixed; with no webhook configured a hand-over waits, visible, as
`not_configured`. Pending hand-overs live in memory only: on its next start the incident service re-submits
every diverted incident its log does not show as handed over, and the `Idempotency-Key` (the incident id) lets
the hotline recognise a repeat.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC
from typing import Any, Literal

import httpx

from devices.clock import now_ms
from hub.errors import HubError

__all__ = ["Backoff", "HotlineError", "HotlineHandOver", "PendingHandOver", "classify", "parse_ref",
           "parse_retry_after"]

log = logging.getLogger(__name__)

OnAccepted = Callable[[str, int, str], Awaitable[None]]
Outcome = Literal["accepted", "retry", "refused"]

MAX_BODY = 64 * 1024  # of an answer: enough for a ticket, not a memory sink
REASON_BYTES = 500  # of a refusal's body, kept as its reason
MAX_REF = 200
STOP_WAIT_S = 2.0


class HotlineError(HubError):
    """A hand-over that cannot even be queued: a bad incident id or a payload that is not JSON."""


@dataclass(frozen=True)
class Backoff:
    """Retry pacing: `first_s` after the first failure, doubling, at most `cap_s`, spread by +-`jitter`."""

    first_s: float = 1.0
    cap_s: float = 60.0
    jitter: float = 0.2

    def delay(self, attempt: int, rand: float = 0.5) -> float:
        """Seconds to wait after failed attempt number `attempt` (1 = the first); `rand` is in [0, 1)."""
        exponent = min(max(attempt, 1) - 1, 32)  # 2**32 s is far past any cap; no float overflow
        base = min(self.cap_s, self.first_s * 2.0**exponent)
        return max(0.0, min(self.cap_s, base * (1.0 + self.jitter * (2.0 * rand - 1.0))))


def classify(status: int) -> Outcome:
    """2xx accepted; 408, 429 and 5xx worth a retry; anything else (4xx, 3xx) refused until fixed."""
    if 200 <= status < 300:
        return "accepted"
    if status in (408, 429) or status >= 500:
        return "retry"
    return "refused"


def parse_ref(body: bytes) -> str:
    """The hotline's ticket: the `ref` or `ticket` field of a JSON object body, else ""."""
    try:
        data = json.loads(body)
    except ValueError:  # not JSON, or not UTF-8
        return ""
    if not isinstance(data, dict):
        return ""
    for key in ("ref", "ticket"):
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and value:
            return value[:MAX_REF]
    return ""


def parse_retry_after(value: str | None, now: int) -> float | None:
    """`Retry-After` as seconds from `now` (epoch ms): delta-seconds or an HTTP date; None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now / 1000)


@dataclass(frozen=True)
class PendingHandOver:
    """What the API and metrics see of one hand-over not completed yet."""

    incident_id: str
    state: str  # not_configured | queued | in_flight | retrying | refused | recording
    submitted_at: int
    attempts: int  # POSTs made
    next_attempt_at: int | None  # epoch ms; None while in flight, not configured or stopped
    last_error: str
    failure: str  # reason class of the last failure, "" if none yet
    accepted_at: int | None  # the hotline took it, `on_accepted` is still to succeed ("recording")
    ref: str


@dataclass
class _Entry:
    incident_id: str
    payload: Any
    submitted_at: int
    attempts: int = 0
    callbacks: int = 0
    next_attempt_at: int | None = None
    last_error: str = ""
    failure: str = ""
    accepted_at: int | None = None
    ref: str = ""
    in_flight: bool = False

    def view(self, configured: bool) -> PendingHandOver:
        if not configured:
            state = "not_configured"
        elif self.in_flight:
            state = "in_flight"
        elif self.accepted_at is not None:
            state = "recording"
        elif self.failure == "refused":
            state = "refused"
        else:
            state = "retrying" if self.attempts else "queued"
        return PendingHandOver(self.incident_id, state, self.submitted_at, self.attempts, self.next_attempt_at,
                               self.last_error, self.failure, self.accepted_at, self.ref)


class HotlineHandOver:
    """Hands diverted incidents to the 12345 webhook, `concurrency` at a time, until each is accepted."""

    def __init__(self, url: str | None, *, on_accepted: OnAccepted, token: str | None = None,
                 clock: Callable[[], int] = now_ms, timeout_s: float = 10.0, connect_timeout_s: float = 5.0,
                 backoff: Backoff | None = None, max_retry_after_s: float = 600.0, concurrency: int = 4,
                 rand: Callable[[], float] = random.random) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.url = url or ""
        self.on_accepted = on_accepted
        self.token = token
        self.clock = clock
        self.timeout_s = timeout_s
        self.connect_timeout_s = min(connect_timeout_s, timeout_s)
        self.backoff = backoff or Backoff()
        self.max_retry_after_s = max_retry_after_s
        self.concurrency = concurrency
        self._rand = rand
        self.accepted = 0  # hand-overs completed: accepted by the hotline and recorded by `on_accepted`
        self.attempts = 0  # POSTs made
        self.duplicates = 0  # submits of an id already pending
        self.failures: Counter[str] = Counter()  # by reason class, see `_post`; "not_configured" counts submits
        self._entries: dict[str, _Entry] = {}
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._running = False

    @property
    def configured(self) -> bool:
        return bool(self.url)

    @property
    def running(self) -> bool:
        return self._running

    @property
    def pending(self) -> dict[str, PendingHandOver]:
        return {i: e.view(self.configured) for i, e in self._entries.items()}

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state for the API and metrics."""
        return {"configured": self.configured, "running": self._running, "accepted": self.accepted,
                "attempts": self.attempts, "duplicates": self.duplicates, "failures": dict(self.failures),
                "pending": [asdict(p) for p in self.pending.values()]}

    def submit(self, incident_id: str, payload: Mapping[str, Any]) -> bool:
        """Queue a hand-over; False if that incident is already pending (its first payload is kept)."""
        if incident_id in self._entries:
            self.duplicates += 1
            return False
        if not incident_id or not incident_id.isascii() or not incident_id.isprintable() or len(incident_id) > 200:
            raise HotlineError(f"incident id {incident_id!r} cannot be an Idempotency-Key")
        try:  # a deep copy, and the proof it will serialise
            body = json.loads(json.dumps(payload, ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise HotlineError(f"incident {incident_id}: payload is not JSON: {exc}") from exc
        entry = self._entries[incident_id] = _Entry(incident_id, body, self.clock())
        if not self.configured:
            self.failures["not_configured"] += 1
            entry.failure, entry.last_error = "not_configured", "no 12345 hotline URL is configured"
            log.warning("incident %s: diverted, but no 12345 hotline URL is configured; hand-over kept pending",
                        incident_id)
        elif self._workers:
            self._ready.put_nowait(incident_id)
        return True

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        if not self.configured:
            return
        headers = {"User-Agent": "fieldhub-hotline", "Content-Type": "application/json; charset=utf-8"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self._client = httpx.AsyncClient(headers=headers, follow_redirects=False,
                                         timeout=httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s),
                                         limits=httpx.Limits(max_connections=self.concurrency))
        self._ready = asyncio.Queue()
        for incident_id in self._entries:  # kept from before a stop(): due now
            self._ready.put_nowait(incident_id)
        self._workers = [asyncio.create_task(self._work(), name=f"hotline-{n}") for n in range(self.concurrency)]

    async def stop(self) -> None:
        """Cancel the workers (a request in flight is abandoned); pending hand-overs stay, and are reported."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        workers, self._workers = self._workers, []
        for task in workers:
            task.cancel()
        if workers:
            _, stuck = await asyncio.wait(workers, timeout=STOP_WAIT_S)
            if stuck:
                log.error("12345 hand-over: %d worker(s) ignored cancellation", len(stuck))
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.aclose(), STOP_WAIT_S)
            except Exception:
                log.exception("12345 hand-over: closing the HTTP client failed")
        for entry in self._entries.values():
            entry.next_attempt_at = None
        self._running = False
        if self._entries:
            ids = sorted(self._entries)
            log.warning("12345 hand-over stopped with %d pending: %s%s", len(ids), ", ".join(ids[:20]),
                        " ..." if len(ids) > 20 else "")

    async def __aenter__(self) -> HotlineHandOver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _work(self) -> None:
        while True:
            incident_id = await self._ready.get()
            entry = self._entries.get(incident_id)
            if entry is None or entry.in_flight or incident_id in self._timers:
                continue  # done, or a stray duplicate of a wake-up
            entry.in_flight, entry.next_attempt_at = True, None
            try:
                delay = await self._advance(entry)
            except Exception as exc:  # a bug here must not end the worker, nor lose the hand-over
                log.exception("incident %s: 12345 hand-over failed unexpectedly", incident_id)
                delay = self._fail(entry, "internal", repr(exc), self.backoff.cap_s)
            finally:
                entry.in_flight = False
            if delay is not None:
                self._schedule(entry, delay)

    async def _advance(self, entry: _Entry) -> float | None:
        """One step: POST (unless already accepted), then record; the delay before the next step, or None: done."""
        if entry.accepted_at is None:
            delay = await self._post(entry)
            if delay is not None:
                return delay
        return await self._record(entry)

    async def _post(self, entry: _Entry) -> float | None:
        entry.attempts += 1
        self.attempts += 1
        content = json.dumps({"incident": entry.payload, "source": "fieldhub", "sent_at": self.clock()},
                             ensure_ascii=False).encode()
        try:
            async with asyncio.timeout(self.timeout_s):  # the whole exchange, not each read
                status, retry_after, body = await self._exchange(entry.incident_id, content)
        except (TimeoutError, httpx.TimeoutException):
            return self._fail(entry, "timeout", f"no answer within {self.timeout_s:g} s")
        except httpx.ConnectError as exc:
            return self._fail(entry, "connect", f"cannot connect: {str(exc) or type(exc).__name__}")
        except httpx.HTTPError as exc:
            return self._fail(entry, "network", f"{type(exc).__name__}: {exc}")
        outcome = classify(status)
        if outcome == "accepted":
            entry.accepted_at, entry.ref = self.clock(), parse_ref(body)
            log.info("incident %s: accepted by the 12345 hotline (HTTP %d, ref %r, attempt %d)",
                     entry.incident_id, status, entry.ref, entry.attempts)
            return None
        reason = f"HTTP {status}: {body[:REASON_BYTES].decode('utf-8', 'replace')}".strip()
        if outcome == "refused":
            return self._fail(entry, "refused", reason, self.backoff.cap_s)
        failure = {408: "server_timeout", 429: "rate_limited"}.get(status, "server_error")
        wait = parse_retry_after(retry_after, self.clock())
        if wait is not None:  # honoured, but never sooner than a first retry nor later than the limit
            wait = min(max(wait, self.backoff.first_s), self.max_retry_after_s)
        return self._fail(entry, failure, reason, wait)

    async def _exchange(self, incident_id: str, content: bytes) -> tuple[int, str | None, bytes]:
        assert self._client is not None
        async with self._client.stream("POST", self.url, content=content,
                                       headers={"Idempotency-Key": incident_id}) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= MAX_BODY:
                    break
            return response.status_code, response.headers.get("retry-after"), bytes(body[:MAX_BODY])

    async def _record(self, entry: _Entry) -> float | None:
        assert entry.accepted_at is not None
        entry.callbacks += 1
        try:
            await self.on_accepted(entry.incident_id, entry.accepted_at, entry.ref)
        except Exception as exc:  # the hotline has it: only the recording is retried, never the POST
            log.warning("incident %s: recording the 12345 hand-over failed (%r); will retry", entry.incident_id, exc)
            return self._fail(entry, "callback", f"on_accepted: {exc!r}",
                              self.backoff.delay(entry.callbacks, self._rand()))
        del self._entries[entry.incident_id]
        self.accepted += 1
        return None

    def _fail(self, entry: _Entry, failure: str, reason: str, delay: float | None = None) -> float:
        """Count a failure; the delay before the next try (`delay`, or the backoff for the attempt number)."""
        self.failures[failure] += 1
        if failure != entry.failure:
            log.warning("incident %s: 12345 hand-over attempt %d: %s", entry.incident_id, entry.attempts, reason)
        else:
            log.debug("incident %s: 12345 hand-over attempt %d: %s", entry.incident_id, entry.attempts, reason)
        entry.failure, entry.last_error = failure, reason
        return self.backoff.delay(entry.attempts, self._rand()) if delay is None else delay

    def _schedule(self, entry: _Entry, delay: float) -> None:
        entry.next_attempt_at = self.clock() + round(delay * 1000)
        old = self._timers.pop(entry.incident_id, None)
        if old is not None:
            old.cancel()
        self._timers[entry.incident_id] = asyncio.get_running_loop().call_later(delay, self._due, entry.incident_id)

    def _due(self, incident_id: str) -> None:
        self._timers.pop(incident_id, None)
        self._ready.put_nowait(incident_id)
