"""A bounded, blocking byte pipe between the event loop (writer) and FFmpeg's demuxer thread (reader).

FFmpeg's custom I/O reads with ``read(n)`` and treats an empty result as the end of the stream, so ``read``
blocks until bytes arrive or the pipe is closed. The writer never blocks: a chunk that would pass the bound is
refused and counted by the caller. Pure threading, no PyAV.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable

__all__ = ["PACK_START", "ChunkPipe", "sync_point"]

PACK_START = b"\x00\x00\x01\xba"  # pack_start_code: every picture a camera sends begins with one
# Where a demuxer can start: at a pack with a system header (0xBB) or program stream map (0xBC), which cameras
# send with every key frame. FFmpeg has to guess the codec of a stream it meets without them, and mid-GOP it has
# been seen to take H.264 for MP3, so a stream is never joined anywhere else.
_SYNC = re.compile(rb"\x00\x00\x01[\xbb\xbc]")


def sync_point(chunk: bytes) -> int:
    """Offset of the pack header a demuxer may start at in ``chunk``, or -1."""
    at = chunk.find(PACK_START)
    if at < 0 or not _SYNC.search(chunk, at):
        return -1
    return at


class ChunkPipe:
    """Chunks in, bytes out. ``on_drain`` is called (in the reader's thread) each time the reader has taken
    every byte fed so far and is about to wait: the end of the last chunk has been consumed."""

    def __init__(self, max_bytes: int, *, on_drain: Callable[[], None] | None = None) -> None:
        self.max_bytes = max_bytes
        self.on_drain = on_drain
        self.closed = False
        self.last_refusal = ""
        self.restart_delivered = False  # the last end of stream was a resync's, not a real one
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._resync = True  # a demuxer must start at a sync point
        self._cond = threading.Condition()
        self._drain_told = True
        self._restart = False
        self._served = 0

    @property
    def buffered(self) -> int:
        return self._size

    def feed(self, chunk: bytes) -> bool:
        with self._cond:
            if self.closed:
                self.last_refusal = "closed"
                return False
            if self._resync:
                at = sync_point(chunk)
                if at < 0:
                    self.last_refusal = "resync_skipped"
                    return False
                chunk = chunk[at:]
                self._resync = False
            if self._size + len(chunk) > self.max_bytes:
                self.last_refusal = "demux_backlog"
                self._resync = True  # what follows would continue a chunk we threw away
                return False
            if chunk:
                self._chunks.append(chunk)
                self._size += len(chunk)
                self._drain_told = False
                self._cond.notify()
            return True

    def resync(self, *, restart: bool = True) -> None:
        """Throw away what is queued and accept bytes again only from the next sync point. With ``restart``
        the reader gets one end of stream first (if it has read anything since :meth:`reopened`): a demuxer
        may be inside a PES whose length came from lost or forged bytes, and only a new one starts clean."""
        with self._cond:
            self._chunks.clear()
            self._size = 0
            self._resync = True
            if restart and self._served:
                self._restart = True
                self._cond.notify_all()

    def reopened(self) -> None:
        """The reader starts a new demuxer: nothing it has read matters any more."""
        with self._cond:
            self._served = 0
            self._restart = False
            self.restart_delivered = False

    def close(self) -> None:
        """No more chunks: the reader gets what is queued (bounded by ``max_bytes``), then the end of stream."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def read(self, size: int) -> bytes:
        """At most ``size`` bytes; blocks while empty; b"" once closed and drained (FFmpeg's end of stream)."""
        with self._cond:
            while not self._chunks and not self.closed and not self._restart:
                if not self._drain_told and self.on_drain is not None:
                    self._drain_told = True
                    self._cond.release()
                    try:
                        self.on_drain()
                    finally:
                        self._cond.acquire()
                    continue
                self._cond.wait()
            if self._restart:
                self._restart = False
                self.restart_delivered = True
                return b""
            if not self._chunks:
                return b""  # closed and drained
            data = self._take(size)
            self._served += len(data)
            return data

    def _take(self, size: int) -> bytes:
        parts: list[bytes] = []
        want = size
        while want > 0 and self._chunks:
            head = self._chunks[0]
            if len(head) <= want:
                parts.append(self._chunks.popleft())
                want -= len(head)
            else:
                parts.append(head[:want])
                self._chunks[0] = head[want:]
                want = 0
        data = b"".join(parts)
        self._size -= len(data)
        return data
