"""One publisher's encoded frames fanned out to many viewers and to the stream's sinks, never waiting on any.

Each viewer has a small bounded queue (a :class:`ViewerFeed`). A viewer only ever starts at a key frame:
a new viewer, or one whose queue overflowed (it stopped reading, or reads too slowly), drops frames
until the next key frame, and the relay asks the publisher for one. Asking is rate-limited: at most one
request outstanding (until a key frame answers it or ``keyframe_request_interval_s`` passes) and never
more often than a quarter of that interval, so many viewers joining at once cost one key frame, not many.

No aiortc here, so all of it is tested without a network. Viewers that cannot take the publisher's codec
are served by :mod:`video.transcode` (one more sink of the stream, feeding a second relay).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from video.frames import EncodedFrame, FrameSink

__all__ = ["Relay", "RelayCounters", "ViewerFeed"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RelayCounters:
    frames_in: int = 0
    keyframes_in: int = 0
    frames_out: int = 0  # frames handed to viewers' senders, all viewers together
    keyframe_requests: int = 0  # PLIs actually sent to the publisher
    keyframe_requests_suppressed: int = 0  # asked for while rate-limited
    viewer_keyframe_requests: int = 0  # PLI/FIR received from viewers
    gated: int = 0  # frames a viewer skipped while waiting for a key frame
    dropped_to_slow_viewer: int = 0  # frames thrown away because a viewer's queue was full
    sink_errors: int = 0


class ViewerFeed:
    """One viewer's queue. Its sender calls :meth:`next`; the relay fills it and never blocks on it."""

    def __init__(self, relay: Relay, capacity: int) -> None:
        self._relay = relay
        self._capacity = capacity
        self._frames: deque[EncodedFrame] = deque()
        self._wakeup = asyncio.Event()
        self.active = False  # set by the first next(): the sender is up and reading
        self.closed = False
        self.waiting_for_keyframe = True
        self.sent = 0
        self.dropped = 0
        self.first_frame_keyframe: bool | None = None

    async def next(self) -> EncodedFrame | None:
        """The next frame for this viewer, or None once the stream (or this viewer) has ended."""
        if not self.active and not self.closed:
            self.active = True
            self._relay.request_keyframe()
        while not self._frames:
            if self.closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.closed:
            return None
        frame = self._frames.popleft()
        if self.first_frame_keyframe is None:
            self.first_frame_keyframe = frame.keyframe
        self.sent += 1
        self._relay.counters.frames_out += 1
        return frame

    def offer(self, frame: EncodedFrame) -> None:
        if not self.active or self.closed:
            return
        if self.waiting_for_keyframe:
            if not frame.keyframe:
                self._relay.counters.gated += 1
                self._relay.request_keyframe()
                return
            self.waiting_for_keyframe = False
        if len(self._frames) >= self._capacity:
            # A stalled viewer: throw away what it has not taken and restart it at a key frame, so it
            # costs the others nothing and its picture is whole again when it reads on.
            lost = len(self._frames)
            self._frames.clear()
            if not frame.keyframe:
                lost += 1
                self.waiting_for_keyframe = True
                self._relay.request_keyframe()
            self.dropped += lost
            self._relay.counters.dropped_to_slow_viewer += lost
            log.warning("viewer queue full: dropped %d frames, waiting for a key frame", lost)
            if not frame.keyframe:
                return
        self._frames.append(frame)
        self._wakeup.set()

    def close(self) -> None:
        self.closed = True
        self._frames.clear()
        self._wakeup.set()


class Relay:
    """Fans one stream's frames out. ``request_upstream()`` sends the publisher a PLI (False: not yet)."""

    def __init__(self, request_upstream: Callable[[], bool], *, sinks: Iterable[FrameSink] = (),
                 keyframe_request_interval_s: float = 2.0, max_keyframe_gap_s: float | None = 10.0,
                 viewer_queue_frames: int = 24, clock: Callable[[], float] = time.monotonic) -> None:
        self._request_upstream = request_upstream
        self._sinks = list(sinks)
        self._interval = keyframe_request_interval_s
        self._max_gap = max_keyframe_gap_s
        self._queue_frames = viewer_queue_frames
        self._clock = clock
        self._feeds: list[ViewerFeed] = []
        self._outstanding_since: float | None = None
        self._last_request: float | None = None
        self._last_keyframe: float | None = None
        self.counters = RelayCounters()
        self.closed = False

    @property
    def viewers(self) -> int:
        return len(self._feeds)

    def add_viewer(self) -> ViewerFeed:
        feed = ViewerFeed(self, self._queue_frames)
        if self.closed:
            feed.close()
        else:
            self._feeds.append(feed)
        return feed

    def remove_viewer(self, feed: ViewerFeed) -> None:
        feed.close()
        if feed in self._feeds:
            self._feeds.remove(feed)

    def add_sink(self, sink: FrameSink) -> None:
        self._sinks.append(sink)

    def remove_sink(self, sink: FrameSink) -> None:
        """Stop feeding ``sink`` (without closing it)."""
        if sink in self._sinks:
            self._sinks.remove(sink)

    def push(self, frame: EncodedFrame) -> None:
        """One frame from the publisher: to every sink and every viewer's queue; never blocks."""
        if self.closed:
            return
        now = self._clock()
        self.counters.frames_in += 1
        if frame.keyframe:
            self.counters.keyframes_in += 1
            self._last_keyframe = now
            self._outstanding_since = None
        elif self._max_gap is not None and (self._last_keyframe is None or now - self._last_keyframe > self._max_gap):
            # Publishers (aiortc, browsers) send key frames only when asked: ask now and then, so a
            # recording can cut segments and a viewer that lost a packet never waits long.
            self.request_keyframe()
        for sink in list(self._sinks):
            try:
                sink.write(frame)
            except Exception:
                self.counters.sink_errors += 1
                log.exception("frame sink %r failed; it gets no more frames", sink)
                self._sinks.remove(sink)
        for feed in self._feeds:
            feed.offer(frame)

    def request_keyframe(self, *, from_viewer: bool = False) -> bool:
        """Ask the publisher for a key frame unless a request is outstanding or one went out just now."""
        if from_viewer:
            self.counters.viewer_keyframe_requests += 1
        if self.closed:
            return False
        now = self._clock()
        outstanding = self._outstanding_since is not None and now - self._outstanding_since < self._interval
        too_soon = self._last_request is not None and now - self._last_request < self._interval / 4
        if outstanding or too_soon:
            self.counters.keyframe_requests_suppressed += 1
            return False
        if not self._request_upstream():
            return False
        self.counters.keyframe_requests += 1
        self._outstanding_since = self._last_request = now
        return True

    def close(self) -> None:
        """The stream ended: viewers' senders get None, sinks are closed. Idempotent."""
        if self.closed:
            return
        self.closed = True
        for feed in self._feeds:
            feed.close()
        self._feeds.clear()
        for sink in self._sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing frame sink %r failed", sink)
        self._sinks.clear()
