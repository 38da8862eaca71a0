"""Per-device rate limits: token buckets, and a summary of what they dropped.

Pure domain code: no I/O, time (epoch milliseconds) passed in. A device may
send ``per_s`` messages a second on average and up to ``burst`` at once (a
device back in coverage uploads its buffer in one go). What exceeds that is
dropped; :class:`DropSummaries` folds the drops of one device and channel into
one summary per window, so a flood cannot turn into a flood of reject rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Drop", "DropSummaries", "Limit", "RateLimiter"]


class Limit(NamedTuple):
    per_s: float
    burst: int


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_ms: int


class RateLimiter:
    """Token buckets per (kind, key), e.g. ("telemetry", device id).

    A bucket left alone long enough to refill is the same as no bucket, so
    :meth:`evict_idle` drops it without changing any later decision; the map
    holds only the keys that were busy in the last refill period.
    """

    def __init__(self, limits: dict[str, Limit]) -> None:
        for kind, limit in limits.items():
            if limit.per_s <= 0 or limit.burst < 1:
                raise ValueError(f"rate limit {kind}: per_s must be > 0 and burst >= 1, got {limit}")
        self.limits = dict(limits)
        # Per kind: its buckets, tokens gained per millisecond, and the burst (one look-up on the hot path).
        self._kinds: dict[str, tuple[dict[str, _Bucket], float, float]] = {
            kind: ({}, limit.per_s / 1000, float(limit.burst)) for kind, limit in limits.items()}

    def allow(self, kind: str, key: str, now_ms: int, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from the bucket if it holds them; a kind without a limit always passes."""
        entry = self._kinds.get(kind)
        if entry is None:
            return True
        buckets, per_ms, burst = entry
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = _Bucket(burst, now_ms)
        elif now_ms > bucket.updated_ms:
            tokens = bucket.tokens + (now_ms - bucket.updated_ms) * per_ms
            bucket.tokens = tokens if tokens < burst else burst
            bucket.updated_ms = now_ms
        if bucket.tokens < cost:
            return False
        bucket.tokens -= cost
        return True

    def evict_idle(self, now_ms: int) -> int:
        """Drop the buckets that are full again by ``now_ms``; returns how many."""
        evicted = 0
        for buckets, per_ms, burst in self._kinds.values():
            full = [key for key, b in buckets.items() if b.tokens + (now_ms - b.updated_ms) * per_ms >= burst]
            for key in full:
                del buckets[key]
            evicted += len(full)
        return evicted

    def forget(self, keep: set[str] | dict[str, object]) -> None:
        """Drop the buckets of every key not in ``keep`` (devices no longer known)."""
        for buckets, _, _ in self._kinds.values():
            for key in [k for k in buckets if k not in keep]:
                del buckets[key]

    def __len__(self) -> int:
        return sum(len(buckets) for buckets, _, _ in self._kinds.values())


@dataclass(slots=True)
class Drop:
    """What was dropped for one (key, kind) in one window: the first message stands for all."""

    key: str
    kind: str
    start_ms: int
    count: int
    topic: str
    first: bytes
    size: int


class DropSummaries:
    """Counts drops per (key, kind) in windows of ``window_ms`` starting at the first drop.

    :meth:`add` is called for every drop and stores only its count after the
    first one; :meth:`due` hands out the windows that have closed, oldest first.
    Windows open in time order, so the oldest is always at the head of the map.
    """

    def __init__(self, window_ms: int = 10_000, keep_bytes: int = 1024, max_open: int = 100_000) -> None:
        self.window_ms = window_ms
        self.keep_bytes = keep_bytes
        self.max_open = max_open
        self._open: dict[tuple[str, str], Drop] = {}

    def add(self, key: str, kind: str, topic: str, payload: bytes, now_ms: int) -> None:
        slot = (key, kind)
        drop = self._open.get(slot)
        if drop is not None:
            drop.count += 1
            return
        self._open[slot] = Drop(key, kind, now_ms, 1, topic, payload[: self.keep_bytes], len(payload))

    def due(self, now_ms: int) -> list[Drop]:
        """The windows closed by ``now_ms`` (and the oldest beyond ``max_open``), removed from the map."""
        closed: list[Drop] = []
        opened = self._open
        while opened:
            slot, drop = next(iter(opened.items()))
            if drop.start_ms + self.window_ms > now_ms and len(opened) <= self.max_open:
                break
            del opened[slot]
            closed.append(drop)
        return closed

    def flush(self) -> list[Drop]:
        """Every open window (on shutdown)."""
        closed, self._open = list(self._open.values()), {}
        return closed

    def __len__(self) -> int:
        return len(self._open)
