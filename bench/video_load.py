"""The video benchmark's load: one pre-encoded 720p loop, publishers that replay it, viewers that count or decode.

Encoding 8 live 720p30 streams would take this 2-core machine's whole CPU, so the picture is encoded
once: :func:`encode_loop` renders ``frames`` scenes of :class:`sim.camera.SceneTrack` (each with its
frame code, frame number = loop index) and encodes them with PyAV's libvpx at a camera-like bitrate,
a key frame every ``gop`` frames. A :class:`LoopPublisher` sends the loop at 30 fps through
:class:`video.forward.EncodedTrack` and notes the monotonic time each loop frame left. A real camera
answers a PLI with a key frame of what it sees now; the replay does the same by jumping to the loop's
next key frame, which keeps the bitstream exact (no P frame ever refers to a picture it did not get).

:class:`CountingViewer` counts whole encoded frames with :class:`video.forward.ReceiverTap` (no decode);
:class:`DecodingViewer` decodes and reads the frame code of every picture. Every time is
``time.monotonic()``, one clock for all processes on the machine, so sends and arrivals compare across
the benchmark's processes.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender

from sim.camera import SceneTrack
from sim.framecode import read_code
from video.client import WhepViewer, WhipPublisher
from video.forward import EncodedTrack, ReceiverTap, route_keyframe_requests
from video.frames import CLOCK_RATE, EncodedFrame

__all__ = ["CountingViewer", "DecodingViewer", "EncodedLoop", "LoopPublisher", "encode_loop", "raw_pair"]

FPS = 30
TICKS = CLOCK_RATE // FPS


@dataclass(frozen=True, slots=True)
class EncodedLoop:
    frames: list[bytes]
    keyframes: list[int]  # loop indexes of the key frames, ascending; 0 is one
    width: int
    height: int
    encode_s: float
    codec: str = "VP8"  # or "H264": Annex B access units, SPS and PPS before every key frame

    @property
    def kbit_per_s(self) -> float:
        return sum(len(f) for f in self.frames) * 8 * FPS / len(self.frames) / 1000

    def next_keyframe(self, index: int) -> int:
        """The first key frame at or after ``index`` (wrapping to the loop's start)."""
        return next((k for k in self.keyframes if k >= index), self.keyframes[0])


def _encoder(codec: str, gop: int, kbit_per_s: int, width: int, height: int) -> av.VideoCodecContext:
    """A camera's real-time encoder: no look-ahead (one packet out per picture in), no B or alt-ref frames."""
    if codec not in ("VP8", "H264"):
        raise ValueError(f"the loop is VP8 or H264, not {codec}")
    ctx = av.CodecContext.create("libvpx" if codec == "VP8" else "libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base, ctx.framerate = fractions.Fraction(1, FPS), fractions.Fraction(FPS)
    ctx.bit_rate, ctx.gop_size = kbit_per_s * 1000, gop
    if codec == "VP8":
        ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "auto-alt-ref": "0",
                       "maxrate": f"{kbit_per_s * 3 // 2}k", "minrate": f"{kbit_per_s // 2}k"}
    else:
        # As sim.gb28181_stream's device encoder: constrained baseline in effect (ultrafast: no CABAC, no
        # B-frames), SPS and PPS repeated so a viewer can start at any key frame.
        ctx.max_b_frames = 0
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "repeat-headers": "1",
                       "maxrate": f"{kbit_per_s * 3 // 2}k", "bufsize": f"{kbit_per_s}k"}
    return ctx


def encode_loop(frames: int = 300, gop: int = 60, kbit_per_s: int = 2000, width: int = 1280,
                height: int = 720, codec: str = "VP8") -> EncodedLoop:
    """Render and encode the loop once (VP8 with libvpx or H264 with libx264; a few seconds of one core)."""
    scene = SceneTrack("BENCH-CAM", width=width, height=height, fps=FPS, render_in_thread=False)
    ctx = _encoder(codec, gop, kbit_per_s, width, height)
    t0 = time.perf_counter()
    out: list[bytes] = []
    keys: list[int] = []
    for n in range(frames):
        frame = av.VideoFrame.from_ndarray(scene.render(n, 0), format="yuv420p")
        frame.pts = n
        if n % gop == 0:  # key frames exactly where the loop can jump to, frame 0 included
            frame.pict_type = av.video.frame.PictureType.I
        for packet in ctx.encode(frame):
            if packet.is_keyframe:
                keys.append(len(out))
            out.append(bytes(packet))
    for packet in ctx.encode(None):
        if packet.is_keyframe:
            keys.append(len(out))
        out.append(bytes(packet))
    if len(out) != frames or not keys or keys[0] != 0:
        raise RuntimeError(f"the encoder gave {len(out)} packets for {frames} pictures, key frames {keys[:5]}")
    return EncodedLoop(out, keys, width, height, round(time.perf_counter() - t0, 2), codec)


class LoopPublisher:
    """Sends ``loop`` from index ``start`` at 30 fps, ``phase_s`` after its sender first asks; a PLI jumps
    to the loop's next key frame."""

    def __init__(self, loop: EncodedLoop, start: int, phase_s: float = 0.0) -> None:
        self.loop = loop
        self.index = loop.next_keyframe(start)
        self.phase_s = phase_s  # spreads the streams' frames over the 33 ms between two of them
        self.due: float | None = None
        self.sent = 0
        self.sends: array[float] = array("d")  # (monotonic s, loop index) pairs, flattened
        self.jumps = 0
        self.skipped = 0
        self.late_max_s = 0.0
        self.track = EncodedTrack(self.next_frame)
        self._key_wanted = False

    def request_keyframe(self) -> None:
        self._key_wanted = True

    async def next_frame(self) -> EncodedFrame:
        if self.due is None:  # the schedule starts when the connection is up, not when the track was made
            self.due = time.monotonic() + self.phase_s
        await asyncio.sleep(max(0.0, self.due - time.monotonic()))
        now = time.monotonic()
        self.late_max_s = max(self.late_max_s, now - self.due)
        self.due += 1 / FPS  # a fixed schedule: a late frame does not shift the ones after it
        if self._key_wanted:
            self._key_wanted = False
            target = self.loop.next_keyframe(self.index)
            if target != self.index:
                self.jumps += 1
                self.skipped += (target - self.index) % len(self.loop.frames)
                self.index = target
        i = self.index
        self.index = (i + 1) % len(self.loop.frames)
        self.sends.extend((now, float(i)))
        self.sent += 1
        return EncodedFrame(self.loop.codec, self.loop.frames[i], self.sent * TICKS, i in self.loop.keyframes, 0)

    def route_pli(self, sender: RTCRtpSender) -> None:
        route_keyframe_requests(sender, self.request_keyframe)

    async def publish(self, url: str, token: str, http: httpx.AsyncClient) -> WhipPublisher:
        """Start a WHIP session (the caller stops it); its stream id is ``.stream_id``."""
        pub = WhipPublisher(url, token, self.track, http=http, codecs=[self.loop.codec])
        await pub.start()
        self.route_pli(pub.pc.getSenders()[0])
        return pub


class CountingViewer:
    """A WHEP viewer that counts whole encoded frames (monotonic arrival times) without decoding them."""

    def __init__(self, url: str, token: str, http: httpx.AsyncClient) -> None:
        self.whep = WhepViewer(url, token, http=http, codecs=["VP8"])
        self.arrivals: array[float] = array("d")
        self.ended = False

    async def start(self) -> None:
        await self.whep.start()
        # No await between the answer and the tap: aiortc starts the receiver in a task of its own.
        ReceiverTap(self.whep.pc.getTransceivers()[0].receiver, self._frame, self._end)

    def _frame(self, codec: str, data: bytes, timestamp: int) -> None:
        self.arrivals.append(time.monotonic())

    def _end(self) -> None:
        self.ended = True

    async def stop(self) -> None:
        await self.whep.stop()


def frame_number(frame: av.VideoFrame) -> int | None:
    """The loop index burned into a decoded picture, read from its luma plane only (no conversion)."""
    plane = frame.planes[0]
    luma = np.frombuffer(memoryview(plane), np.uint8).reshape(frame.height, plane.line_size)[:, : frame.width]
    code = read_code(luma)
    return code[0] if code is not None else None


@dataclass(slots=True)
class Decoded:
    """What a decoding viewer saw: (monotonic s, loop index) per readable picture."""

    pictures: array[float] = field(default_factory=lambda: array("d"))
    arrivals: array[float] = field(default_factory=lambda: array("d"))  # every decoded picture
    unreadable: int = 0

    def add(self, frame: av.VideoFrame) -> None:
        now = time.monotonic()
        self.arrivals.append(now)
        k = frame_number(frame)
        if k is None:
            self.unreadable += 1
        else:
            self.pictures.extend((now, float(k)))


async def _decode_into(recv: Callable[[], Awaitable[object]], seen: Decoded) -> None:
    while True:
        frame = await recv()
        if isinstance(frame, av.VideoFrame):
            seen.add(frame)


class DecodingViewer:
    """A WHEP viewer that decodes every picture and reads its frame code."""

    def __init__(self, url: str, token: str, http: httpx.AsyncClient) -> None:
        self.whep = WhepViewer(url, token, http=http, codecs=["VP8"])
        self.seen = Decoded()
        self._task: asyncio.Task[None] | None = None

    @property
    def arrivals(self) -> array[float]:
        return self.seen.arrivals

    async def start(self) -> None:
        await self.whep.start()
        self._task = asyncio.create_task(_decode_into(self.whep.recv, self.seen))

    async def first_picture(self, timeout_s: float) -> av.VideoFrame:
        """The first decoded picture (for a viewer not started with a background decoder)."""
        return await asyncio.wait_for(self.whep.recv(), timeout_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.whep.stop()


async def raw_pair(loop: EncodedLoop, seconds: float) -> tuple[LoopPublisher, Decoded]:
    """The raw limit: one publisher straight into one decoding aiortc peer, no hub, same loop."""
    sender_pc, receiver_pc = RTCPeerConnection(), RTCPeerConnection()
    pub = LoopPublisher(loop, 0)
    seen = Decoded()
    task: asyncio.Task[None] | None = None
    try:
        transceiver = sender_pc.addTransceiver(pub.track, direction="sendonly")
        transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs if c.name == "VP8"])
        pub.route_pli(transceiver.sender)
        track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

        @receiver_pc.on("track")
        def on_track(t: MediaStreamTrack) -> None:
            if not track.done():
                track.set_result(t)

        await sender_pc.setLocalDescription(await sender_pc.createOffer())
        await receiver_pc.setRemoteDescription(sender_pc.localDescription)
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await sender_pc.setRemoteDescription(receiver_pc.localDescription)
        incoming = await asyncio.wait_for(track, 10)
        task = asyncio.create_task(_decode_into(incoming.recv, seen))
        await asyncio.sleep(seconds)
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await sender_pc.close()
        await receiver_pc.close()
    return pub, seen
