"""The forwarding adapter: aiortc moves encoded frames through the hub without decoding or encoding them.

aiortc has no public API for this, so this module is the one place that reaches into aiortc 1.16
internals (``pyproject.toml`` pins ``aiortc>=1.16,<1.17``). Three hooks:

1. **Receiver tap.** A publisher's :class:`RTCRtpReceiver` reassembles RTP packets into encoded frames
   (jitter buffer + depayloading) and puts ``(codec, JitterFrame)`` on a ``queue.Queue`` read by a decoder
   thread it starts in ``receive()``. :class:`ReceiverTap` replaces that queue with itself, so every
   whole encoded frame arrives here on the event loop, and makes ``receive()`` start a stand-in instead
   of the decoder thread. NACKs, RTCP reports and REMB stay aiortc's.
2. **Encoded track.** An :class:`RTCRtpSender` whose track returns ``av.Packet`` s packetizes them as
   they are (``Encoder.pack``, what ``MediaPlayer(decode=False)`` relies on). :class:`EncodedTrack` is
   such a track; it re-bases the publisher's timestamps so every viewer starts at 0.
3. **Keyframe requests.** A viewer's PLI/FIR makes the sender call ``self._send_keyframe()``;
   :func:`route_keyframe_requests` points that at the relay, which asks the publisher with a PLI
   (:meth:`ReceiverTap.request_keyframe`, via the receiver's ``_send_rtcp_pli``).

:func:`check_internals` verifies every name and call shape relied on and raises
:class:`~video.errors.ForwardingUnavailable` naming the installed aiortc version if one moved;
``tests/video/test_forward.py`` runs it so an aiortc upgrade breaks the tests, not production.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import types
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiortc
import av
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc import rtcrtpreceiver as receiver_module
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import VIDEO_TIME_BASE, MediaStreamError, MediaStreamTrack

from video.errors import ForwardingUnavailable
from video.frames import EncodedFrame

__all__ = ["SUPPORTED_AIORTC", "EncodedTrack", "ReceiverTap", "check_internals", "route_keyframe_requests"]

log = logging.getLogger(__name__)

SUPPORTED_AIORTC = "1.16"
_QUEUE = "_RTCRtpReceiver__decoder_queue"  # name-mangled RTCRtpReceiver.__decoder_queue
_THREAD = "_RTCRtpReceiver__decoder_thread"
_WRAP = 1 << 32


def _fail(what: str) -> ForwardingUnavailable:
    return ForwardingUnavailable(
        f"aiortc {aiortc.__version__} is not supported by the forwarding relay ({what}); it is written against "
        f"aiortc {SUPPORTED_AIORTC}.x internals: see video/forward.py"
    )


def _require(owner: type, name: str, params: list[str]) -> str:
    """Check ``owner.name`` exists with exactly these parameters; return its source (for the checks below)."""
    func = getattr(owner, name, None)
    if func is None or not callable(func) or list(inspect.signature(func).parameters) != params:
        raise _fail(f"{owner.__name__}.{name}({', '.join(params[1:])}) is gone or changed")
    try:
        return inspect.getsource(func)
    except (OSError, TypeError):
        return ""


@functools.cache
def check_internals() -> None:
    """Raise :class:`ForwardingUnavailable` unless every aiortc internal used here is where it should be."""
    if not aiortc.__version__.startswith(SUPPORTED_AIORTC + "."):
        raise _fail("version")
    receive = _require(RTCRtpReceiver, "receive", ["self", "parameters"])
    # The stand-in thread is swapped in for the duration of receive(): that is only safe while receive()
    # never yields to the loop before starting its decoder thread.
    if not inspect.iscoroutinefunction(RTCRtpReceiver.receive) or "threading.Thread(" not in receive \
            or "await " in receive.split("threading.Thread(")[0]:
        raise _fail("RTCRtpReceiver.receive() no longer starts its decoder thread the same way")
    if not hasattr(receiver_module, "threading") or not callable(getattr(receiver_module, "decoder_worker", None)):
        raise _fail("aiortc.rtcrtpreceiver.threading / decoder_worker")
    rtp = _require(RTCRtpReceiver, "_handle_rtp_packet", ["self", "packet", "arrival_time_ms"])
    if "__decoder_queue.put((codec, encoded_frame))" not in rtp or "self.__decoder_thread" not in rtp:
        raise _fail("RTCRtpReceiver._handle_rtp_packet no longer queues (codec, frame) for a decoder thread")
    _require(RTCRtpReceiver, "_send_rtcp_pli", ["self", "media_ssrc"])
    _require(RTCRtpReceiver, "getSynchronizationSources", ["self"])
    _require(RTCRtpSender, "_send_keyframe", ["self"])
    if "self._send_keyframe()" not in _require(RTCRtpSender, "_handle_rtcp_packet", ["self", "packet"]):
        raise _fail("RTCRtpSender._handle_rtcp_packet no longer calls _send_keyframe() on PLI/FIR")
    if "self.__encoder.pack(data)" not in _require(RTCRtpSender, "_next_encoded_frame", ["self", "codec"]):
        raise _fail("RTCRtpSender no longer packs pre-encoded av.Packet s")
    for encoder in (Vp8Encoder, H264Encoder):
        _require(encoder, "pack", ["self", "packet"])


class _NoDecoderThread:
    """Takes the place of the decoder thread ``RTCRtpReceiver.receive()`` would start: nothing runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass


@contextlib.contextmanager
def _decoder_thread_suppressed() -> Iterator[None]:
    real = receiver_module.threading
    receiver_module.threading = types.SimpleNamespace(Thread=_NoDecoderThread)  # type: ignore[assignment]
    try:
        yield
    finally:
        receiver_module.threading = real


class ReceiverTap:
    """Takes whole encoded frames off a publisher's receiver instead of letting aiortc decode them.

    ``on_frame(codec, data, timestamp)`` is called on the event loop for each frame, in order;
    ``on_end()`` once when the receiver stops (RTCP BYE, disconnect or close). Install it before the
    receiver starts, i.e. between ``setRemoteDescription`` and the connection coming up.
    """

    def __init__(self, receiver: RTCRtpReceiver, on_frame: Callable[[str, bytes, int], None],
                 on_end: Callable[[], None]) -> None:
        check_internals()
        if not hasattr(receiver, _QUEUE) or getattr(receiver, _THREAD, "missing") is not None:
            raise _fail("the receiver has no idle decoder queue: already started, or the internals moved")
        self.frames = 0
        self._receiver = receiver
        self._on_frame = on_frame
        self._on_end: Callable[[], None] | None = on_end
        self._rtx_ssrcs: set[int] = set()
        self._tasks: set[asyncio.Future[None]] = set()
        setattr(receiver, _QUEUE, self)  # aiortc now calls self.put(...) where it fed its decoder thread
        original = receiver.receive

        async def receive(parameters: Any) -> None:
            self._rtx_ssrcs = {e.rtx.ssrc for e in parameters.encodings if e.rtx is not None}
            with _decoder_thread_suppressed():
                await original(parameters)

        receiver.receive = receive  # type: ignore[method-assign]

    def put(self, item: tuple[Any, Any] | None) -> None:
        """The receiver's decoder-queue interface: ``(codec, JitterFrame)``, or None when it stops."""
        if item is None:
            on_end, self._on_end = self._on_end, None
            if on_end is not None:
                on_end()
            return
        codec, frame = item
        self.frames += 1
        try:
            # aiortc has re-based the timestamp to the stream's first frame; keep it an RTP timestamp.
            self._on_frame(codec.name.upper(), bytes(frame.data), frame.timestamp % _WRAP)
        except Exception:  # a bug downstream must not break aiortc's RTP handling
            log.exception("forwarding a frame failed")

    def request_keyframe(self) -> bool:
        """Send the publisher a PLI for its media SSRC; False if no media has arrived yet."""
        sources = [s for s in self._receiver.getSynchronizationSources() if s.source not in self._rtx_ssrcs]
        if not sources:
            return False
        ssrc = max(sources, key=lambda s: s.timestamp).source
        task = asyncio.ensure_future(self._receiver._send_rtcp_pli(ssrc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True


class _Rebaser:
    """Maps the publisher's wrapping 32-bit RTP timestamps to a viewer's pts, 0 at its first frame."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._pts = 0

    def pts(self, timestamp: int) -> int:
        if self._last is not None:
            delta = (timestamp - self._last) % _WRAP
            if delta < _WRAP // 2:  # a step back (or a huge jump) keeps the pts where it was
                self._pts += delta
        self._last = timestamp
        return self._pts


class EncodedTrack(MediaStreamTrack):
    """A video track whose frames are already encoded: an :class:`RTCRtpSender` sends them as they are.

    ``next_frame()`` gives the next frame for this viewer, or None when the stream has ended.
    """

    kind = "video"

    def __init__(self, next_frame: Callable[[], Awaitable[EncodedFrame | None]]) -> None:
        super().__init__()
        self._next_frame = next_frame
        self._rebaser = _Rebaser()

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._next_frame()
        if frame is None:
            self.stop()
            raise MediaStreamError
        packet = av.Packet(frame.data)
        packet.pts = self._rebaser.pts(frame.timestamp)
        packet.time_base = VIDEO_TIME_BASE
        return packet


def route_keyframe_requests(sender: RTCRtpSender, on_request: Callable[[], None]) -> None:
    """Make a viewer's PLI/FIR, arriving at its sender, call ``on_request`` instead of flagging an encoder."""
    check_internals()
    sender._send_keyframe = on_request  # type: ignore[method-assign]
