"""One shared transcoder per stream and target codec: for viewers that cannot take the publisher's codec.

A :class:`Transcoder` is one more sink of the publisher's relay: it decodes the stream once and encodes
it once into the other codec, into a second relay that all those viewers share — never an encoder per
viewer (about 0.3 core each at 720p30 on this kind of machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, cast

import av
from av.video.codeccontext import VideoCodecContext

from video.bitstream import is_keyframe
from video.frames import CLOCK_RATE, EncodedFrame
from video.relay import Relay

__all__ = ["Transcoder"]

log = logging.getLogger(__name__)


_DECODERS = {"VP8": "vp8", "H264": "h264"}  # FFmpeg's own decoders: fast, and they tolerate a lost frame


def _encoder(codec: str, width: int, height: int) -> VideoCodecContext:
    # Real-time settings like aiortc's own encoders: no look-ahead, key frames only when asked for.
    context = cast(VideoCodecContext, av.CodecContext.create("libvpx" if codec == "VP8" else "libx264", "w"))
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.time_base = fractions.Fraction(1, CLOCK_RATE)
    context.bit_rate = 1_000_000
    context.gop_size = 3000
    if codec == "VP8":
        context.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "error-resilient": "1"}
    else:
        context.profile = "Baseline"
        context.options = {"preset": "ultrafast", "tune": "zerolatency", "level": "31"}
    return context


class Transcoder:
    """One stream decoded once and encoded once into ``codec``, for every viewer that needs ``codec``.

    It is a :class:`FrameSink` of the publisher's relay; the encoded frames go into ``output``, the relay
    those viewers share (made with ``relay_options``). The codec work runs in one thread; frames reach it
    through a small queue and, when it falls behind, it skips to the next key frame instead of delaying
    everything. A key frame request from ``output`` makes the next encoded picture a key frame: the
    publisher is not asked.
    """

    def __init__(self, codec: str, request_source_keyframe: Callable[[], bool], *, queue_frames: int = 8,
                 **relay_options: Any) -> None:
        self.codec = codec
        self.output = Relay(self.request_keyframe, **relay_options)
        self._request_source_keyframe = request_source_keyframe
        self._loop = asyncio.get_running_loop()
        self._queue: queue.Queue[EncodedFrame | None] = queue.Queue(maxsize=queue_frames)
        self._force_keyframe = threading.Event()
        self._waiting_for_keyframe = True
        self._closed = False
        self.decoded = self.encoded = self.dropped = self.errors = 0
        self._thread = threading.Thread(target=self._run, name=f"transcode-{codec}", daemon=True)
        self._thread.start()

    def write(self, frame: EncodedFrame) -> None:
        if self._closed:
            return
        if self._waiting_for_keyframe:
            if not frame.keyframe:
                self._request_source_keyframe()
                return
            self._waiting_for_keyframe = False
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self.dropped += 1
            self._waiting_for_keyframe = True
            self._request_source_keyframe()

    def request_keyframe(self) -> bool:
        self._force_keyframe.set()
        return True

    def close(self) -> None:
        """Stop the thread (it finishes the frame in hand) and end ``output``'s viewers."""
        if self._closed:
            return
        self._closed = True
        self.output.close()
        while True:
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
                return

    def _emit(self, frame: EncodedFrame) -> None:
        if not self._closed:
            self.output.push(frame)

    def _run(self) -> None:
        decoder: VideoCodecContext | None = None
        encoder: VideoCodecContext | None = None
        last: int | None = None
        pts = 0
        while (frame := self._queue.get()) is not None:
            try:
                if decoder is None:
                    decoder = cast(VideoCodecContext, av.CodecContext.create(_DECODERS[frame.codec], "r"))
                pictures = decoder.decode(av.Packet(frame.data))
            except (av.FFmpegError, KeyError, ValueError):
                self.errors += 1
                continue
            if last is not None:
                pts += (frame.timestamp - last) % (1 << 32) or 1  # the encoder needs rising pts
            last = frame.timestamp
            for picture in pictures:
                self.decoded += 1
                if encoder is None or (encoder.width, encoder.height) != (picture.width, picture.height):
                    encoder = _encoder(self.codec, picture.width, picture.height)
                    self._force_keyframe.set()
                picture = picture.reformat(format="yuv420p")
                picture.pts, picture.time_base = pts, fractions.Fraction(1, CLOCK_RATE)
                # The decoder marks the source's key frames I; only a request should make one here.
                picture.pict_type = av.video.frame.PictureType.NONE
                if self._force_keyframe.is_set():
                    self._force_keyframe.clear()
                    picture.pict_type = av.video.frame.PictureType.I
                data = b"".join(bytes(p) for p in encoder.encode(picture))
                if data:
                    self.encoded += 1
                    out = EncodedFrame(self.codec, data, frame.timestamp, is_keyframe(self.codec, data),
                                       frame.received_ms)
                    try:
                        self._loop.call_soon_threadsafe(self._emit, out)
                    except RuntimeError:  # the loop is gone: nobody is watching any more
                        return
