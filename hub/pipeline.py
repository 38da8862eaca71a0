"""The ingest pipeline: decode -> validate -> dedupe -> state -> persist -> publish.

MQTT messages are handed over raw (``submit`` is cheap and never blocks) into a
bounded inbox. One task takes the inbox in cuts and runs every stage over the
cut in arrival order, so per-device order is kept. Each stage has one concern;
the list of stages is declared once in :meth:`Pipeline.__init__`. A message a
stage refuses is rejected with a reason and still stored (as a reject); a
failing stage never loses the other messages of the cut.

Every cut shares one future that resolves when its rows are committed; the
MQTT bridge acknowledges QoS 1 messages only then.
"""

from __future__ import annotations

import asyncio
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
from hub.live import LiveState
from hub.storage import Batch
from hub.writer import BatchWriter

log = logging.getLogger(__name__)

DAY_MS = 86_400_000



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
    # Elements of a batch refused on their own: (index, error).
    element_rejects: list[tuple[int, PayloadError]] = field(default_factory=list)


Stage = Callable[[list[Message]], None]
Listener = Callable[[Message], None]


class Pipeline:
    def __init__(self, live: LiveState, writer: BatchWriter, *, retention_days: int = 90,
                 inbox_limit: int = 200_000, raw_limit: int = 1024) -> None:
        self.live = live
        self.writer = writer
        self.retention_ms = retention_days * DAY_MS
        self.inbox_limit = inbox_limit
        self.raw_limit = raw_limit
        self.listeners: list[Listener] = []
        self.stages: list[tuple[str, Stage]] = [
            ("decode", self.decode),
            ("validate", self.validate),
            ("dedupe", self.dedupe),
            ("state", self.apply_state),
            ("persist", self.persist),
            ("publish", self.publish),
        ]
        self._inbox: deque[Message] = deque()
        self._future: asyncio.Future[None] | None = None
        self._pending_future: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._recent: dict[str, deque[int]] = {}
        # Counters (read by metrics and benchmarks).
        self.messages: dict[str, int] = {"telemetry": 0, "status": 0, "event": 0, "other": 0}
        self.fixes_accepted = 0
        self.duplicates_dropped = 0
        self.rejects: dict[str, int] = {}
        self.stage_seconds: dict[str, float] = {name: 0.0 for name, _ in self.stages}
        self.cuts = 0

    # -------------------------------------------------------------- intake
    def submit(self, topic: str, payload: bytes, qos: int) -> asyncio.Future[None] | None:
        """Hand over one raw message; returns the future of its commit (QoS 1) or None."""
        message = Message(topic, payload, now_ms())
        if len(self._inbox) >= self.inbox_limit and qos == 0:
            # QoS 0 has no back-pressure: refuse it, counted, rather than grow without bound.
            message.reject = PayloadError("overload", f"inbox holds {len(self._inbox)} messages")
        self._inbox.append(message)
        self._wake.set()
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        return self._future if qos else None

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
        """Process everything already submitted (used on shutdown)."""
        while self._inbox:
            self._process_cut()
            await asyncio.sleep(0)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._inbox:
                self._process_cut()
                # Give the event loop (MQTT reads, HTTP, writer) a turn between cuts.
                await asyncio.sleep(0)

    def _process_cut(self, max_messages: int = 2000) -> None:
        inbox = self._inbox
        cut = [inbox.popleft() for _ in range(min(max_messages, len(inbox)))]
        future = None
        if not inbox:
            future, self._future = self._future, None
        self._pending_future = future
        for name, stage in self.stages:
            started = time.perf_counter()
            try:
                stage(cut)
            except Exception:  # a broken stage must not take the cut down with it
                log.exception("stage %s failed on a cut of %d messages", name, len(cut))
            self.stage_seconds[name] += time.perf_counter() - started
        self.cuts += 1

    # -------------------------------------------------------------- stages
    def decode(self, cut: list[Message]) -> None:
        """Topic to (device, channel); payload to fixes/status/event by the contract."""
        for m in cut:
            if m.reject is not None:
                continue
            parsed = topics.parse_device_topic(m.topic)
            if parsed is None:
                m.reject = PayloadError("bad_topic", m.topic[:200])
                continue
            m.device_id, m.channel = parsed
            self.messages[m.channel if m.channel in self.messages else "other"] += 1
            if m.device_id not in self.live.devices and not topics.is_valid_id(m.device_id):
                m.reject = PayloadError("invalid_id", f"device id {m.device_id[:80]!r}")
                continue
            try:
                if m.channel == "telemetry":
                    m.fixes, m.element_rejects = payloads.decode_fixes(m.payload, m.received_ms)
                elif m.channel == "status":
                    m.status = payloads.decode_status(m.payload, m.received_ms)
                elif m.channel == "event":
                    m.event = payloads.decode_event(m.payload, m.received_ms)
                else:
                    m.reject = PayloadError("bad_topic", f"devices do not publish on {m.channel}")
            except PayloadError as exc:
                m.reject = exc

    def validate(self, cut: list[Message]) -> None:
        """Hub rules on top of the contract: a known device, a fix inside retention."""
        for m in cut:
            if m.reject is not None:
                continue
            if not self.live.is_known(m.device_id):
                m.reject = PayloadError("unknown_device", m.device_id)
                m.fixes = []
                continue
            if m.fixes:
                oldest = m.received_ms - self.retention_ms
                kept = []
                for index, fix in enumerate(m.fixes):
                    if fix.ts < oldest:
                        m.element_rejects.append(
                            (index, PayloadError("ts_out_of_window", f"ts={fix.ts} older than retention")))
                    else:
                        kept.append(fix)
                m.fixes = kept

    def dedupe(self, cut: list[Message]) -> None:
        """Drop fixes this hub has just seen (QoS 1 re-delivery); the database catches the rest."""
        recent_by_device = self._recent
        for m in cut:
            if not m.fixes:
                continue
            recent = recent_by_device.get(m.device_id)
            if recent is None:
                recent = recent_by_device[m.device_id] = deque(maxlen=64)
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

    def apply_state(self, cut: list[Message]) -> None:
        live = self.live
        for m in cut:
            if m.reject is not None:
                continue
            for fix in m.fixes:
                live.apply_fix(m.device_id, fix, m.received_ms)
            if m.status is not None:
                live.apply_status(m.device_id, m.status, m.received_ms)

    def persist(self, cut: list[Message]) -> None:
        batch = Batch()
        for m in cut:
            if m.reject is not None:
                self._reject_row(batch, m, m.reject, m.payload)
                continue
            for index, exc in m.element_rejects:
                self._reject_row(batch, m, exc, m.payload, f"[{index}] ")
            received = m.received_ms
            for f in m.fixes:
                batch.fixes.append((m.device_id, f.ts, f.lat, f.lon, f.alt, f.acc, f.speed, f.heading, f.battery,
                                    f.sats, f.seq, f.attrs, received))
            self.fixes_accepted += len(m.fixes)
            if m.status is not None:
                batch.statuses.append((m.device_id, m.status.ts, m.status.state, payloads.decode_json(m.payload),
                                       received))
            if m.event is not None:
                batch.events.append((m.device_id, m.event.ts, m.event.type, m.event.data, received))
        self.writer.add(batch, self._pending_future)

    def _reject_row(self, batch: Batch, m: Message, exc: PayloadError, raw: bytes, prefix: str = "") -> None:
        self.rejects[exc.reason] = self.rejects.get(exc.reason, 0) + 1
        batch.rejects.append((m.received_ms, m.topic[:512], m.device_id or None, exc.reason,
                              (prefix + exc.detail)[:500], len(raw), raw[: self.raw_limit]))

    def publish(self, cut: list[Message]) -> None:
        """Tell listeners (detectors, the live feed's extras) about accepted messages."""
        if not self.listeners:
            return
        for m in cut:
            if m.reject is None:
                for listener in self.listeners:
                    try:
                        listener(m)
                    except Exception:
                        log.exception("listener %r failed", listener)

    # ------------------------------------------------------------- queries
    def rejects_total(self) -> int:
        return sum(self.rejects.values())

    def counters(self) -> dict[str, Any]:
        return {"messages": dict(self.messages), "fixes_accepted": self.fixes_accepted,
                "duplicates_dropped": self.duplicates_dropped, "rejects": dict(self.rejects)}
