"""Recording of streams as evidence: encoded frames muxed into segment files, never decoded or re-encoded.

VP8 goes into WebM, H.264 into Matroska, one file per ``segment_s`` under ``root/{stream_id}/``, each
starting at a key frame so it plays on its own. Next to each file a small JSON sidecar holds the segment's
hub-clock window (arrival of its first picture + media duration) and frame count. Why a sidecar rather than
reading the files: the hub links recordings to an incident's dispatched-to-cleared window by hub wall-clock
time, which the media files do not carry (their timestamps start at 0); listing stays cheap (no demuxing of
hundreds of files); and the sidecar exists from the segment's first frame (``complete: false``, refreshed
at every key frame), so a segment being recorded, or cut short by a crash, is listed too.

:class:`SegmentRecorder` is a :class:`~video.frames.FrameSink`: ``write`` runs on the event loop and only
queues; a worker thread muxes. Nothing it meets (full queue, garbage frames, disk errors) raises into the
relay: it is counted in :meth:`SegmentRecorder.stats` and recording resumes at the next key frame.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from fractions import Fraction
from pathlib import Path

import av

from video.bitstream import h264_parameter_sets, h264_size, is_keyframe, is_well_formed, vp8_size
from video.frames import CLOCK_RATE, EncodedFrame
from video.segments import CONTAINERS, BadStreamId, Segment, list_segments, prune_recordings, stream_dir

__all__ = ["BadStreamId", "Segment", "SegmentRecorder", "list_segments", "prune_recordings"]

log = logging.getLogger(__name__)

_WRAP = 1 << 32
_DEFAULT_FRAME_TICKS = CLOCK_RATE // 30
# A jump of the publisher's clock beyond this (either way) ends the segment: no file spans a long hole or
# runs backwards, and the next segment's hub-clock start is right again.
_MAX_GAP_TICKS = 5 * CLOCK_RATE
_MUX_ERRORS = (av.FFmpegError, OSError, ValueError)
_COUNTERS = (
    "frames_in",  # write() calls
    "frames_written",  # muxed into a file (the newest frame waits in memory for its duration)
    "segments",
    "waiting_for_keyframe",  # dropped: no key frame since the start or since a gap
    "queue_full",  # dropped on the event loop: the worker fell behind
    "bad_frame",  # dropped: empty/garbage/cut framing, or a key frame without a size
    "unsupported_codec",
    "mux_errors",  # segments closed early by an error
    "timestamps_fixed",  # non-increasing timestamps nudged forward
    "after_close",
)


class _Timeline:
    """Unwraps 32-bit RTP timestamps into one increasing-ish 64-bit count (a step back stays a step back)."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._extended = 0

    def extend(self, timestamp: int) -> int:
        timestamp %= _WRAP
        if self._last is None:
            self._extended = timestamp
        else:
            delta = (timestamp - self._last) % _WRAP
            self._extended += delta - _WRAP if delta >= _WRAP // 2 else delta
        self._last = timestamp
        return self._extended


class _SegmentFile:
    """One open segment. Holds back one frame so each packet gets its real duration (the next one's start)."""

    def __init__(self, directory: Path, name: str, stream_id: str, codec: str, size: tuple[int, int],
                 start_ms: int, first_ts: int) -> None:  # fmt: skip
        codec_name, container_format, suffix = CONTAINERS[codec]
        self.path = directory / f"{name}{suffix}"
        self.codec, self.size, self.first_ts, self.last_ts = codec, size, first_ts, first_ts
        self._sidecar = self.path.with_suffix(".json")
        self._meta: dict[str, object] = {"file": self.path.name, "stream_id": stream_id, "codec": codec,
                                         "width": size[0], "height": size[1], "start_ms": start_ms}  # fmt: skip
        self._start_ms = start_ms
        self.frames = 0
        self.fixed_timestamps = 0
        self._pending: tuple[bytes, int, bool] | None = None
        self._last_pts = -1
        self._last_duration = _DEFAULT_FRAME_TICKS
        directory.mkdir(parents=True, exist_ok=True)
        # Python opens the file, not FFmpeg: PyAV calls avio_open holding the GIL, so an open that stalls (a
        # hung network disk) would freeze every thread, the event loop included; Python's open and write
        # release it. The container closes the file.
        self._container = av.open(open(self.path, "wb"), "w", format=container_format)  # noqa: SIM115
        try:
            self._stream = self._container.add_mux_stream(codec_name, width=size[0], height=size[1])
            self._write_sidecar(complete=False)
        except BaseException:
            self._container.close()
            raise

    def add(self, data: bytes, ts: int, keyframe: bool) -> None:
        self.last_ts = ts
        pts = ts - self.first_ts
        if pts <= self._last_pts:  # players need strictly increasing timestamps
            pts = self._last_pts + 1
            self.fixed_timestamps += 1
        if self._pending is not None:
            self._mux(*self._pending, duration=pts - self._pending[1])
        self._pending = (data, pts, keyframe)
        self._last_pts = pts
        if keyframe and self.frames:  # keeps an open segment's window current for the hub and after a crash
            self._write_sidecar(complete=False)

    def finish(self) -> Segment:
        if self._pending is not None:
            self._mux(*self._pending, duration=self._last_duration)
            self._pending = None
        self._container.close()
        return self._write_sidecar(complete=True)

    def abandon(self) -> None:
        """After an error: close what can be closed and leave the sidecar saying it is incomplete."""
        with contextlib.suppress(Exception):
            self._container.close()
        with contextlib.suppress(OSError):
            self._write_sidecar(complete=False)

    def _mux(self, data: bytes, pts: int, keyframe: bool, *, duration: int) -> None:
        packet = av.Packet(data)
        packet.stream = self._stream
        packet.time_base = Fraction(1, CLOCK_RATE)
        packet.pts = packet.dts = pts
        packet.duration = duration
        packet.is_keyframe = keyframe
        self._container.mux(packet)
        self.frames += 1
        self._last_duration = duration

    def _write_sidecar(self, *, complete: bool) -> Segment:
        end_ms = self._start_ms
        if self.frames:
            end_ms += (self._last_pts + self._last_duration) * 1000 // CLOCK_RATE
        self._meta.update(end_ms=end_ms, frames=self.frames, complete=complete)
        temporary = self._sidecar.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self._meta))
        os.replace(temporary, self._sidecar)  # readers never see half a sidecar
        return Segment(self.path, self._start_ms, end_ms, self.frames, self.codec, complete)


class SegmentRecorder:
    """Records one stream's encoded frames into segment files (a :class:`~video.frames.FrameSink`)."""

    def __init__(self, root: Path | str, stream_id: str, *, segment_s: float = 60.0, queue_size: int = 300,
                 close_timeout_s: float = 2.0) -> None:  # fmt: skip
        self.stream_id = stream_id
        self._directory = stream_dir(root, stream_id)
        self._segment_ticks = int(segment_s * CLOCK_RATE)
        self._close_timeout_s = close_timeout_s
        # Bounded by write() (a slow disk costs dropped frames, counted, never memory or event-loop time); the
        # queue itself is not, so close() can always hand the worker its end marker without waiting.
        self._queue: queue.SimpleQueue[tuple[EncodedFrame, bool] | None] = queue.SimpleQueue()
        self._queue_size = queue_size
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._counts_lock = threading.Lock()
        self._closed = False
        self._gap = False  # a frame was dropped on the loop side: the worker must wait for a key frame
        # Worker-only state.
        self._timeline = _Timeline()
        self._segment: _SegmentFile | None = None
        self._waiting = True
        self._sequence = 0
        self._h264_parameter_sets: bytes | None = None
        self._thread = threading.Thread(target=self._run, name=f"recorder-{stream_id}", daemon=True)
        self._thread.start()

    def write(self, frame: EncodedFrame) -> None:
        """Queue a frame; never blocks. Called on the event loop."""
        self._count("frames_in")
        if self._closed:
            self._count("after_close")
            return
        if self._queue.qsize() >= self._queue_size:
            if not self._gap:
                log.warning("recorder %s: queue full, dropping frames until the next key frame", self.stream_id)
            self._gap = True
            self._count("queue_full")
            return
        self._queue.put((frame, self._gap))
        self._gap = False

    def close(self) -> None:
        """Flush the queue and finish the current file. Idempotent.

        Waits for the worker at most ``close_timeout_s`` (it runs on the event loop); a worker stuck on a
        stalled disk finishes the file on its own if the disk comes back.
        """
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=self._close_timeout_s)
        if self._thread.is_alive():
            log.warning("recorder %s: still writing after %.1f s; it finishes in the background",
                        self.stream_id, self._close_timeout_s)  # fmt: skip

    def stats(self) -> dict[str, int]:
        with self._counts_lock:
            return dict(self._counts)

    def _count(self, name: str, amount: int = 1) -> None:
        with self._counts_lock:
            self._counts[name] += amount

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            frame, after_gap = item
            try:
                self._record(frame, after_gap)
            except Exception:  # a dead worker would silently end the recording: log, count, resume
                log.exception("recorder %s: muxing failed, segment closed", self.stream_id)
                self._count("mux_errors")
                self._drop_segment()
        self._finish_segment()

    def _record(self, frame: EncodedFrame, after_gap: bool) -> None:
        if after_gap:  # the dropped frames broke the decoding chain
            self._waiting = True
        codec, data = frame.codec.upper(), frame.data
        if codec not in CONTAINERS:
            self._count("unsupported_codec")
            return
        if not is_well_formed(codec, data):
            self._count("bad_frame")
            self._waiting = True  # it may have been a real picture that later ones refer to
            return
        ts = self._timeline.extend(frame.timestamp)
        if self._segment is not None and abs(ts - self._segment.last_ts) > _MAX_GAP_TICKS:
            self._finish_segment()
            self._waiting = True
        keyframe = is_keyframe(codec, data)
        if not keyframe:
            if self._waiting or self._segment is None or self._segment.codec != codec:
                self._count("waiting_for_keyframe")
                return
            self._add(data, ts, keyframe)
            return
        if codec == "H264":
            data = self._with_parameter_sets(data)
        size = vp8_size(data) if codec == "VP8" else h264_size(data)
        if size is None:
            self._count("bad_frame")
            self._waiting = True
            return
        segment = self._segment
        if segment is not None and (
            (segment.codec, segment.size) != (codec, size) or ts - segment.first_ts >= self._segment_ticks
        ):
            self._finish_segment()
        if self._segment is None:
            self._segment = self._open_segment(codec, size, frame.received_ms, ts)
        self._waiting = False
        self._add(data, ts, keyframe)

    def _with_parameter_sets(self, data: bytes) -> bytes:
        """Remember the latest SPS/PPS; give a key frame that lacks them the last ones seen (a segment needs them)."""
        found = h264_parameter_sets(data)
        if found is not None:
            self._h264_parameter_sets = found
            return data
        return (self._h264_parameter_sets or b"") + data

    def _add(self, data: bytes, ts: int, keyframe: bool) -> None:
        segment = self._segment
        assert segment is not None
        frames, fixed = segment.frames, segment.fixed_timestamps
        try:
            segment.add(data, ts, keyframe)
        finally:
            self._count("frames_written", segment.frames - frames)
            self._count("timestamps_fixed", segment.fixed_timestamps - fixed)

    def _open_segment(self, codec: str, size: tuple[int, int], start_ms: int, first_ts: int) -> _SegmentFile:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start_ms / 1000))
        while True:  # a restarted hub may meet its own files from the same second
            self._sequence += 1
            name = f"{stamp}-{self._sequence:04d}"
            if not (self._directory / f"{name}.json").exists():
                break
        segment = _SegmentFile(self._directory, name, self.stream_id, codec, size, start_ms, first_ts)
        self._count("segments")
        return segment

    def _finish_segment(self) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        frames = segment.frames
        try:
            segment.finish()
        except _MUX_ERRORS as exc:
            log.error("recorder %s: finishing %s failed: %s", self.stream_id, segment.path.name, exc)
            self._count("mux_errors")
            segment.abandon()
            self._waiting = True
        finally:
            self._count("frames_written", segment.frames - frames)

    def _drop_segment(self) -> None:
        segment, self._segment = self._segment, None
        self._waiting = True
        if segment is not None:
            segment.abandon()
