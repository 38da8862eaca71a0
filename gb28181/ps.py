"""MPEG-PS (ISO/IEC 13818-1 program stream) carrying H.264, both ways, through PyAV/FFmpeg.

:class:`PsMuxer` is the camera side (the simulator); :class:`PsDemuxer` the receiving side. Parsing the PS is
FFmpeg's ``mpeg`` demuxer's job; this module feeds it, runs it off the event loop, and turns its PES payloads
into whole H.264 access units (:mod:`gb28181.h264`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import threading
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av

from .h264 import AccessUnit, AccessUnitSplitter
from .ps_pipe import PACK_START, ChunkPipe

__all__ = ["PACK_START", "AccessUnit", "PsDemuxer", "PsMuxer", "camera_chunk", "program_stream_map"]

log = logging.getLogger(__name__)

_CLOCK = Fraction(1, 90_000)
# Open the stream as soon as one packet is in, and keep every packet: a live stream has no header to probe.
_DEMUX_OPTIONS = {"fflags": "noparse", "probesize": "32", "analyzeduration": "0"}
_MUX_OPTIONS = {"avoid_negative_ts": "disabled", "preload": "0"}
_MAX_CONSECUTIVE_ERRORS = 20
_END_CODE = b"\x00\x00\x01\xb9"  # MPEG_program_end_code
_SYSTEM_HEADER = b"\x00\x00\x01\xbb"
_ALIGNED_STREAK = 3  # pictures that began exactly at a chunk start before a drained pipe ends a picture


class PsMuxer:
    """H.264 packets in, MPEG-2 PS bytes out, through FFmpeg's ``vob`` flavour of the ``mpeg`` muxer (MPEG-2 pack
    headers, PES of stream 0xE2 with PTS/DTS).

    ``aligned=True`` (the default) makes each :meth:`mux` return one whole picture the way GB/T 28181 cameras
    send it: a pack header, on key frames a system header and a program stream map (stream type 0x1B, H.264),
    then the picture's PES packets. FFmpeg's muxer fills packs across pictures and writes no PSM, so each
    picture goes through a muxer of its own (about 2 ms of CPU per 720p picture) and the PSM is added here.
    ``aligned=False`` keeps one muxer (about 0.1 ms per picture), but a picture's last bytes then come out with
    the next picture's call.
    """

    def __init__(self, width: int, height: int, fps: int, *, aligned: bool = True) -> None:
        self.width = width
        self.height = height
        self.fps = fps
        self.aligned = aligned
        self._out = io.BytesIO()
        self._container: Any = None if aligned else self._open()
        self._pictures = 0
        self._closed = False

    def _open(self) -> Any:
        # Keep the caller's timestamps (libavformat would move each muxer's first one to zero), and with no
        # preload, so the SCR (dts - preload) never goes below zero.
        container: Any = av.open(self._out, "w", format="vob", options=_MUX_OPTIONS)
        stream = container.add_stream("h264", rate=self.fps)
        stream.width = self.width
        stream.height = self.height
        stream.time_base = _CLOCK
        return container

    def mux(self, packet: av.Packet[Any]) -> bytes:
        """``packet``'s pts is kept (converted to 90 kHz); a packet without one gets the picture count."""
        if self._closed:
            raise ValueError("muxer closed")
        container = self._container if self._container is not None else self._open()
        out = av.Packet(bytes(packet))
        if packet.pts is not None and packet.time_base is not None:
            out.pts = int(packet.pts * packet.time_base / _CLOCK)
        else:
            out.pts = self._pictures * 90_000 // self.fps
        out.dts = out.pts
        out.is_keyframe = packet.is_keyframe
        out.stream = container.streams.video[0]
        self._pictures += 1
        container.mux(out)
        if self._container is not None:
            return self._take()
        container.close()
        return camera_chunk(self._take(), keyframe=packet.is_keyframe)

    def close(self) -> bytes:
        """The muxer's last bytes (unaligned: the tail of the last picture and the program end code)."""
        if self._closed:
            return b""
        self._closed = True
        if self._container is None:
            return b""
        self._container.close()
        return self._take()

    def _take(self) -> bytes:
        data = self._out.getvalue()
        self._out.seek(0)
        self._out.truncate()
        return data


def camera_chunk(chunk: bytes, *, keyframe: bool) -> bytes:
    """One picture as FFmpeg wrote it (pack header, system header, PES..., end code) as a camera sends it:
    the system header and a PSM on key frames only, no program end code."""
    if chunk.endswith(_END_CODE):
        chunk = chunk[: -len(_END_CODE)]
    if not chunk.startswith(PACK_START) or len(chunk) < 14:
        return chunk
    head = 14 + (chunk[13] & 0x07)  # MPEG-2 pack header and its stuffing bytes
    body = chunk[head:]
    system = b""
    if body.startswith(_SYSTEM_HEADER):
        size = 6 + int.from_bytes(body[4:6], "big")
        system, body = body[:size], body[size:]
    if not keyframe:
        return chunk[:head] + body
    return chunk[:head] + system + program_stream_map({0xE2: 0x1B}) + body


def program_stream_map(streams: dict[int, int]) -> bytes:
    """A PSM (ISO/IEC 13818-1 2.5.4) listing ``{stream_id: stream_type}``, version 0, with its CRC."""
    entries = b"".join(bytes([kind, sid, 0, 0]) for sid, kind in streams.items())
    body = b"\xe0\xff" + b"\x00\x00" + len(entries).to_bytes(2, "big") + entries
    head = b"\x00\x00\x01\xbc" + (len(body) + 4).to_bytes(2, "big")
    return head + body + _crc32_mpeg(head + body).to_bytes(4, "big")


def _crc32_mpeg(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


class PsDemuxer:
    """PS chunks in (from RTP, on the event loop), H.264 access units out (on the event loop).

    FFmpeg reads with blocking calls, so it runs in its own thread over a bounded :class:`ChunkPipe`. When
    the pipe runs dry and the sender has shown that its chunks are whole pictures (cameras send one picture
    per RTP timestamp), the pending picture is delivered at once instead of when the next one begins.
    A run of demuxer errors, or :meth:`discontinuity`, starts a new demuxer at the next sync point (a pack with
    a system header or PSM). :meth:`stop` lets the thread finish what is queued (at most ``max_buffer`` bytes),
    delivers the last picture and ends the thread; it never waits longer than its timeout.
    """

    def __init__(self, on_access_unit: Callable[[AccessUnit], None], *, max_buffer: int = 8 << 20) -> None:
        self.on_access_unit = on_access_unit
        self._counters: Counter[str] = Counter()
        self._counters_lock = threading.Lock()  # counted from the event loop and from the demux thread
        self._video_stream: int | None = None
        self._pipe = ChunkPipe(max_buffer, on_drain=self._drained)
        self._splitter = AccessUnitSplitter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._aligned = 0
        self._after_drain = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="ps-demux", daemon=True)
        self._thread.start()

    @property
    def counters(self) -> Counter[str]:
        """A copy of what was counted: access units, refused chunks and demuxer errors by reason."""
        with self._counters_lock:
            return self._counters.copy()

    def _count(self, reason: str) -> None:
        with self._counters_lock:
            self._counters[reason] += 1

    def feed(self, chunk: bytes) -> bool:
        """Queue one chunk of PS bytes; False (counted) when the pipe is full or the chunk was skipped."""
        accepted = self._pipe.feed(chunk)
        if not accepted:
            self._count(self._pipe.last_refusal)
        return accepted

    def discontinuity(self) -> None:
        """Bytes were lost before the next chunk: start a new demuxer at the next sync point."""
        self._pipe.resync()

    async def stop(self, timeout: float = 5.0) -> None:
        self._pipe.close()
        thread = self._thread
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join, timeout)
            if thread.is_alive():
                self._count("thread_hung")
                log.error("ps demuxer thread did not end in %.1f s", timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- demux thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._pipe.closed:
            try:
                self._open_and_demux()
            except Exception as exc:  # FFmpeg could not even open the stream here: start at the next sync point
                if self._pipe.closed:
                    break
                if self._pipe.restart_delivered:
                    continue  # a resync cut the opening short; what follows it is already queued
                self._count("demux_open_error")
                log.debug("ps demux open error: %s", exc)
                self._pipe.resync(restart=False)
        for unit in self._splitter.flush():
            self._deliver(unit)

    def _open_and_demux(self) -> None:
        self._pipe.reopened()
        self._splitter.reset()
        self._video_stream = None
        with av.open(self._pipe, "r", format="mpeg", options=_DEMUX_OPTIONS) as container:
            errors = 0
            while not self._pipe.closed:
                try:
                    for packet in container.demux():
                        errors = 0
                        self._packet(packet)
                    return  # end of stream: the pipe was closed, or a resync asks for a new demuxer
                except av.error.FFmpegError as exc:
                    # The demuxer skips what it cannot read and goes on; only a run of errors means it is lost.
                    self._count("demux_error")
                    errors += 1
                    log.debug("ps demux error: %s", exc)
                    if errors >= _MAX_CONSECUTIVE_ERRORS:
                        self._pipe.resync(restart=False)
                        return

    def _packet(self, packet: av.Packet[Any]) -> None:
        if packet.size == 0:
            return
        stream = packet.stream
        if stream.type != "video":
            self._count("non_video_packets")
            return
        codec = stream.codec_context.name
        if codec != "h264":
            self._count(f"unsupported_{codec}")
            return
        if self._video_stream is None:
            self._video_stream = stream.index
        elif stream.index != self._video_stream:
            self._count("other_video_packets")  # a second H.264 stream: one picture stream per session
            return
        self._video(bytes(packet), packet.pts)

    def _video(self, data: bytes, pts: int | None) -> None:
        if self._after_drain:
            # Did the picture after the pause begin exactly where the chunk began?
            self._after_drain = False
            starts = data.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01"))
            self._aligned = self._aligned + 1 if starts else 0
        for unit in self._splitter.push(data, pts):
            self._deliver(unit)

    def _drained(self) -> None:
        # Called by the pipe, in the demux thread, when FFmpeg has consumed every byte fed so far.
        self._after_drain = True
        if self._aligned >= _ALIGNED_STREAK:
            for unit in self._splitter.flush():
                self._deliver(unit)

    def _deliver(self, unit: AccessUnit) -> None:
        self._count("access_units")
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us: nobody left to deliver to
            loop.call_soon_threadsafe(self._on_loop, unit)

    def _on_loop(self, unit: AccessUnit) -> None:
        try:
            self.on_access_unit(unit)
        except Exception:
            self._count("callback_errors")
            log.exception("access unit callback failed")
