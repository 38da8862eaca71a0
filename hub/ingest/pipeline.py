"""The ingest pipeline: route -> limit -> decode -> validate -> dedupe -> state -> persist -> publish.

MQTT messages are handed over raw (``submit`` is cheap and never blocks) into a
bounded inbox. One task takes the inbox in cuts and runs every stage over the
cut in arrival order, so per-device order is kept. Each stage has one concern
and handles one message; the list of stages is declared once in
:meth:`Pipeline.__init__`. A stage sees only the messages no stage has refused.
A message a stage refuses, or that makes a stage raise (reason ``internal``),
is rejected with a reason and stored as a reject: one bad message is only its
own, never the rest of its cut.

Every cut shares one future that resolves when its rows are committed; the
MQTT bridge acknowledges QoS 1 messages only then.

Memory: QoS 0 messages beyond ``inbox_limit`` are dropped (``overload``). QoS 1
is bounded by the broker: it has at most the session's receive maximum
(``mqtt_receive_maximum``) unacknowledged messages in flight to the hub. A
broker that ignores it meets a hard cap (``inbox_limit`` plus the largest receive
maximum MQTT allows): beyond it a QoS 1 message is neither queued nor
acknowledged, so the broker still holds it and sends it again on the next
connection. When the writer holds ``max_pending_rows`` rows (database slow or
down) the pipeline stops taking cuts: the inbox fills, PUBACKs stop, and the
broker holds the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from devices import payloads, topics
from devices.clock import now_ms
from devices.errors import PayloadError
from devices.payloads import Event, Fix, Status
from hub.domain.ratelimit import Drop, DropSummaries, Limit, RateLimiter
from hub.ingest.live import LiveState
from hub.ingest.writer import BatchWriter
from hub.signals import Signal
from hub.storage import Batch

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
# The largest receive maximum MQTT 5 allows: a compliant broker never has more QoS 1 messages in flight.
QOS1_HEADROOM = 65_535
CATCH_UP_FACTOR = 50  # how much wider the limits are while the broker delivers the backlog of a resumed session
HOUSEKEEPING_MS = 10_000  # idle rate buckets and dedupe memory of forgotten devices go this often


@dataclass(slots=True)
class Message:
    """One MQTT message on its way through the stages."""

    topic: str
    payload: bytes
    received_ms: int
    device_id: str = ""
    channel: str = ""
    fixes: list[Fix] = field(default_factory=list)
    status: Status | None = None
    event: Event | None = None
    reject: PayloadError | None = None
    retained: bool = False  # the device set the retain flag (seen because the hub subscribes retain-as-published)
    # Elements of a batch refused on their own: (index, error).
    element_rejects: list[tuple[int, PayloadError]] = field(default_factory=list)


Stage = Callable[[Message], None]


class Pipeline:
    def __init__(self, live: LiveState, writer: BatchWriter, *, retention_days: int = 90,
                 inbox_limit: int = 200_000, raw_limit: int = 1024,
                 max_future_ms: int = payloads.MAX_FUTURE_SKEW_MS, rate_limits: dict[str, Limit] | None = None,
                 catch_up_ms: int = 60_000) -> None:
        self.live = live
        self.writer = writer
        self.retention_ms = retention_days * DAY_MS
        self.inbox_limit = inbox_limit
        self.raw_limit = raw_limit
        self.max_future_ms = max_future_ms
        # Kinds: the channels (messages per second) and "fixes" (fixes per second, charged after decoding).
        self.limiter = RateLimiter(rate_limits or {})
        # When the MQTT session resumes, the broker delivers what it held for the hub at line speed: a device's
        # 1 Hz fixes of a ten-minute outage arrive within a second. The limits measure the hub's receive time,
        # so for ``catch_up_ms`` (see :meth:`catch_up`) they are CATCH_UP_FACTOR times wider rather than drop
        # that backlog as a flood; a flood meanwhile is still bounded (by default 1,000 messages/s a device).
        self.catch_up_limiter = RateLimiter({kind: Limit(limit.per_s * CATCH_UP_FACTOR, limit.burst * CATCH_UP_FACTOR)
                                             for kind, limit in (rate_limits or {}).items()})
        self.catch_up_ms = catch_up_ms
        self._limits_from_ms = 0
        self.drops = DropSummaries(keep_bytes=raw_limit)
        # Every accepted message, after its rows are in the batch (detectors, the video desk); each subscriber
        # fails alone, so a broken one neither rejects the message nor stops the others.
        self.accepted: Signal[[Message]] = Signal("accepted")
        self.stages: list[tuple[str, Stage]] = [
            ("route", self.route),
            ("limit", self.limit),
            ("decode", self.decode),
            ("validate", self.validate),
            ("dedupe", self.dedupe),
            ("state", self.apply_state),
            ("persist", self.persist),
            ("publish", self.publish),
        ]
        self._inbox: deque[Message] = deque()
        self._future: asyncio.Future[None] | None = None
        self._batch = Batch()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._recent: dict[str, deque[int]] = {}
        self._housekeeping_ms = 0
        # Counters (read by metrics and benchmarks).
        self.messages: dict[str, int] = {"telemetry": 0, "status": 0, "event": 0, "other": 0}
        self.fixes_accepted = 0
        self.duplicates_dropped = 0
        self.rejects: dict[str, int] = {}
        self.internal_failures = 0
        self.qos1_refused = 0  # beyond the hard cap: not acknowledged, the broker sends them again
        self.stage_seconds: dict[str, float] = {name: 0.0 for name, _ in self.stages}
        self.cuts = 0

    # -------------------------------------------------------------- intake
    def submit(self, topic: str, payload: bytes, qos: int, retained: bool = False) -> asyncio.Future[None] | None:
        """Hand over one raw message; returns the future of its commit (QoS 1), or None (QoS 0, or refused)."""
        depth = len(self._inbox)
        if depth >= self.inbox_limit:
            if qos == 0:  # no back-pressure for QoS 0: drop it, counted, rather than grow without bound
                self.rejects["overload"] = self.rejects.get("overload", 0) + 1
                self.drops.add("", "overload", topic, payload, now_ms())
                return None
            if depth >= self.inbox_limit + QOS1_HEADROOM:
                self.qos1_refused += 1
                return None
        self._inbox.append(Message(topic, payload, now_ms(), retained=retained))
        self._wake.set()
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        return self._future if qos else None

    def device_known(self, topic: str) -> bool:
        parsed = topics.parse_device_topic(topic)
        return parsed is not None and parsed[0] in self.live.devices and parsed[1] in topics.DEVICE_CHANNELS

    def catch_up(self) -> None:
        """The MQTT session resumed: wider limits while the broker delivers its backlog."""
        self._limits_from_ms = now_ms() + self.catch_up_ms

    @property
    def inbox_depth(self) -> int:
        return len(self._inbox)

    async def __aenter__(self) -> Pipeline:
        self._task = asyncio.create_task(self._run(), name="ingest-pipeline")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drain()
        if self._task is not None:
            self._task.cancel()

    async def drain(self) -> None:
        """Process everything already submitted, and close every drop summary (used on shutdown)."""
        while self._inbox:
            self._process_cut()
            await asyncio.sleep(0)
        batch = Batch()
        for drop in self.drops.flush():
            self._drop_row(batch, drop)
        self.writer.add(batch, None)

    async def _run(self) -> None:
        while True:
            if self.drops:  # a summary waits for its window to close, even if nothing else comes
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
            else:
                await self._wake.wait()
            self._wake.clear()
            try:
                if not self._inbox:
                    self._process_cut()  # an empty cut: closes the due drop summaries
                while self._inbox:
                    # Back-pressure: while the writer is full, the inbox is not drained and PUBACKs stop.
                    await self.writer.wait_for_room()
                    self._process_cut()
                    # Give the event loop (MQTT reads, HTTP, writer) a turn between cuts.
                    await asyncio.sleep(0)
            except Exception:  # never expected (stages fail per message): the loop must outlive it
                log.exception("ingest cut failed")

    def _process_cut(self, max_messages: int = 2000) -> None:
        inbox = self._inbox
        cut = [inbox.popleft() for _ in range(min(max_messages, len(inbox)))]
        future = None
        if not inbox:
            future, self._future = self._future, None
        self._batch = batch = Batch()
        try:
            for name, stage in self.stages:
                started = time.perf_counter()
                for m in cut:
                    if m.reject is None:
                        try:
                            stage(m)
                        except Exception as exc:  # one message's failure is only its own
                            self._failed(m, name, exc)
                self.stage_seconds[name] += time.perf_counter() - started
            for m in cut:
                if m.reject is not None:
                    self._keep_reject(batch, m)
            now = now_ms()
            for drop in self.drops.due(now):  # looks at the oldest open summary only
                self._drop_row(batch, drop)
            if now >= self._housekeeping_ms:
                self._housekeep(now)
        finally:  # whatever happened, the cut's commit future goes to the writer: its PUBACKs never stall
            self.writer.add(batch, future)
            self.cuts += 1

    def _failed(self, m: Message, stage: str, exc: Exception) -> None:
        try:
            text = f"{stage}: {type(exc).__name__}: {exc}"
        except Exception:  # an exception that cannot even say what it is
            text = f"{stage}: {type(exc).__name__}"
        m.reject = PayloadError("internal", payloads.storable_text(text, 500))
        self.internal_failures += 1
        if self.internal_failures <= 10 or self.internal_failures % 1000 == 0:  # not a stream of tracebacks
            log.error("stage %s failed on a message on %s (failure #%d); rejected as internal", stage,
                      m.topic[:200], self.internal_failures, exc_info=exc)

    def _housekeep(self, now: int) -> None:
        """Forget rate buckets and dedupe memory that no longer matter."""
        self._housekeeping_ms = now + HOUSEKEEPING_MS
        self.limiter.evict_idle(now)
        self.catch_up_limiter.evict_idle(now)
        known = self.live.devices
        if len(self._recent) > len(known) or any(d not in known for d in self._recent):
            self._recent = {d: r for d, r in self._recent.items() if d in known}

    # -------------------------------------------------------------- stages
    def route(self, m: Message) -> None:
        """Topic to (device, channel); only known devices and the device channels go on."""
        parsed = topics.parse_device_topic(m.topic)
        if parsed is None:
            m.reject = PayloadError("bad_topic", m.topic[:200])
            return
        m.device_id, m.channel = parsed
        self.messages[m.channel if m.channel in self.messages else "other"] += 1
        if m.device_id not in self.live.devices:
            if not topics.is_valid_id(m.device_id):
                m.reject = PayloadError("invalid_id", f"device id {m.device_id[:80]!r}")
            else:
                m.reject = PayloadError("unknown_device", m.device_id)
        elif m.channel not in topics.DEVICE_CHANNELS:
            m.reject = PayloadError("bad_topic", f"devices do not publish on {m.channel[:80]}")
        elif m.retained and m.channel != "status":
            # The broker cannot refuse a retained publish per topic (its ACLs do not see the flag); the hub refuses
            # it here and the bridge has already cleared it from the broker, so no later subscriber is fed it.
            m.reject = PayloadError("retained", f"a device may retain only its status, not its {m.channel}")

    def limit(self, m: Message) -> None:
        """The device's message bucket for this channel, before any decoding: a flood costs little."""
        limiter = self._limiter(m)
        if not limiter.allow(m.channel, m.device_id, m.received_ms):
            per_s, burst = limiter.limits[m.channel]
            m.reject = PayloadError("rate_limited", f"more than {per_s:g} {m.channel} messages/s (burst {burst})")

    def _limiter(self, m: Message) -> RateLimiter:
        return self.limiter if m.received_ms >= self._limits_from_ms else self.catch_up_limiter

    def decode(self, m: Message) -> None:
        """Payload to fixes/status/event by the contract."""
        try:
            if m.channel == "telemetry":
                m.fixes, m.element_rejects = payloads.decode_fixes(m.payload, m.received_ms,
                                                                   max_future_ms=self.max_future_ms)
            elif m.channel == "status":
                m.status = payloads.decode_status(m.payload, m.received_ms, max_future_ms=self.max_future_ms)
            else:
                m.event = payloads.decode_event(m.payload, m.received_ms, max_future_ms=self.max_future_ms)
        except PayloadError as exc:
            m.reject = exc

    def validate(self, m: Message) -> None:
        """Hub rules on top of the contract: fixes inside retention, within the device's fix rate."""
        if not m.fixes:
            return
        oldest = m.received_ms - self.retention_ms
        kept = []
        for index, fix in enumerate(m.fixes):
            if fix.ts < oldest:
                m.element_rejects.append((index, PayloadError("ts_out_of_window", f"ts={fix.ts} older than retention")))
            else:
                kept.append(fix)
        m.fixes = kept
        limiter = self._limiter(m)
        if m.fixes and not limiter.allow("fixes", m.device_id, m.received_ms, len(m.fixes)):
            per_s, burst = limiter.limits["fixes"]
            m.reject = PayloadError("rate_limited", f"{len(m.fixes)} fixes exceed {per_s:g} fixes/s (burst {burst})")

    def dedupe(self, m: Message) -> None:
        """Drop fixes this hub has just seen (QoS 1 re-delivery); the database catches the rest."""
        if not m.fixes:
            return
        recent = self._recent.get(m.device_id)
        if recent is None:
            recent = self._recent[m.device_id] = deque(maxlen=64)
        kept = []
        for fix in m.fixes:
            # Fast path: fixes mostly come in order, newer than anything seen.
            if recent and fix.ts <= recent[-1] and fix.ts in recent:
                self.duplicates_dropped += 1
                continue
            if not recent or fix.ts > recent[-1]:
                recent.append(fix.ts)
            kept.append(fix)
        m.fixes = kept

    def apply_state(self, m: Message) -> None:
        for fix in m.fixes:
            self.live.apply_fix(m.device_id, fix, m.received_ms)
        if m.status is not None:
            self.live.apply_status(m.device_id, m.status, m.received_ms)

    def persist(self, m: Message) -> None:
        """The message's rows, all built before any is added: a row that cannot be built rejects the message."""
        device, received = m.device_id, m.received_ms
        fixes = [(device, f.ts, f.lat, f.lon, f.alt, f.acc, f.speed, f.heading, f.battery, f.sats, f.seq, f.attrs,
                  received) for f in m.fixes]
        status = event = None
        if m.status is not None:
            status = (device, m.status.ts, m.status.state, payloads.decode_json(m.payload), received)
        if m.event is not None:
            event = (device, m.event.ts, m.event.type, m.event.data, received)
        batch = self._batch
        for index, exc in m.element_rejects:
            self._reject_row(batch, m, exc, f"[{index}] ")
        batch.fixes += fixes
        self.fixes_accepted += len(fixes)
        if status is not None:
            batch.statuses.append(status)
        if event is not None:
            batch.events.append(event)

    def publish(self, m: Message) -> None:
        """Announce an accepted message to the subscribers of `accepted` (see :class:`hub.signals.Signal`)."""
        self.accepted.emit(m)

    # ------------------------------------------------------------- rejects
    def _keep_reject(self, batch: Batch, m: Message) -> None:
        assert m.reject is not None
        try:
            if m.reject.reason == "rate_limited":  # counted one by one, stored as one summary per window
                self.rejects["rate_limited"] = self.rejects.get("rate_limited", 0) + 1
                self.drops.add(m.device_id, m.channel, m.topic, m.payload, m.received_ms)
            else:
                self._reject_row(batch, m, m.reject)
        except Exception:  # never expected; the message is still counted and kept
            log.exception("keeping a reject failed")
            self.rejects["internal"] = self.rejects.get("internal", 0) + 1
            batch.rejects.append((m.received_ms, "", None, "internal", "its reject could not be built",
                                  len(m.payload), m.payload[: self.raw_limit]))

    def _reject_row(self, batch: Batch, m: Message, exc: PayloadError, prefix: str = "") -> None:
        self.rejects[exc.reason] = self.rejects.get(exc.reason, 0) + 1
        text = payloads.storable_text
        batch.rejects.append((m.received_ms, text(m.topic, 512), text(m.device_id, 128) or None, exc.reason,
                              text(prefix + exc.detail, 500), len(m.payload), m.payload[: self.raw_limit]))

    def _drop_row(self, batch: Batch, drop: Drop) -> None:
        text = payloads.storable_text
        if drop.kind == "overload":
            reason, detail = "overload", f"{drop.count} QoS 0 messages dropped: the inbox was full"
        else:
            reason = "rate_limited"
            detail = (f"{drop.count} {drop.kind} messages dropped within {self.drops.window_ms // 1000} s by the "
                      "device's rate limits")
        batch.rejects.append((drop.start_ms, text(drop.topic, 512), drop.key or None, reason, text(detail, 500),
                              drop.size, drop.first))

    # ------------------------------------------------------------- queries
    def rejects_total(self) -> int:
        return sum(self.rejects.values())

    def counters(self) -> dict[str, Any]:
        return {"messages": dict(self.messages), "fixes_accepted": self.fixes_accepted,
                "duplicates_dropped": self.duplicates_dropped, "rejects": dict(self.rejects)}
