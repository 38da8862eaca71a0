"""The camera's live stream as a GB/T 28181 device sends it: H.264 in MPEG-PS over RTP (PT 96, 90 kHz).

Frames are :class:`~sim.camera.SceneTrack` street scenes with the frame code burned in (so a viewer can measure
latency), encoded with PyAV's libx264 (ultrafast, zerolatency, no B-frames, a key frame every ``gop_s``),
muxed into PS (:class:`gb28181.ps.PsMuxer`) and cut into RTP packets (:func:`gb28181.rtp.packetize`) with the
SSRC of the INVITE's ``y=`` line. Sent by UDP to the offer's address, or over TCP (RFC 4571 framing) on a
connection the camera opens to the platform's passive port. Drawing, encoding and muxing of one frame run in
a worker thread (``asyncio.to_thread``), so the event loop stays free for signalling and other cameras.

A call's stream need not be this one: :class:`StreamFactory` is the hook (``GbCameraConfig.stream_factory``) by
which a caller supplies any :class:`MediaStream`, e.g. a benchmark replaying pre-encoded pictures so that many
cameras cost little CPU. The default is :class:`PsRtpStream`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final, Protocol

import av
import numpy as np
import numpy.typing as npt

from gb28181.ps import PsMuxer
from gb28181.rtp import frame_tcp, packetize
from gb28181.sdp import Transport
from sim.camera import SceneTrack

__all__ = ["H264Encoder", "MediaStream", "PsRtpStream", "StreamError", "StreamFactory", "StreamSettings",
           "StreamTarget"]

log = logging.getLogger(__name__)

RTP_CLOCK: Final = 90_000


class StreamError(Exception):
    """The stream could not be started (the platform's port unreachable)."""


@dataclass(frozen=True, slots=True)
class StreamSettings:
    width: int = 1280
    height: int = 720
    fps: float = 25.0
    gop_s: float = 1.0
    bitrate: int = 2_000_000
    mtu: int = 1400


@dataclass(frozen=True, slots=True)
class StreamTarget:
    """Where the INVITE asked the stream to go."""

    host: str
    port: int
    transport: Transport
    ssrc: int
    payload_type: int = 96


class MediaStream(Protocol):
    """What a call needs of its stream: :meth:`open` before the 200 (UDP: ``local_port`` goes in the answer),
    :meth:`run` after the ACK until cancelled (raising :class:`StreamError` if the path fails), ``frames_sent``
    read as it runs, :meth:`close` idempotent."""

    local_port: int
    frames_sent: int

    async def open(self) -> None: ...

    async def run(self) -> None: ...

    def close(self) -> None: ...


class StreamFactory(Protocol):
    """Builds the stream of one call (:class:`PsRtpStream` itself is one)."""

    def __call__(self, target: StreamTarget, settings: StreamSettings, *, label: str,
                 local_host: str) -> MediaStream: ...


class H264Encoder:
    """libx264 as a device encoder: constant frame rate, no B-frames, a key frame every ``gop_s``."""

    def __init__(self, settings: StreamSettings) -> None:
        context = av.CodecContext.create("libx264", "w")
        context.width, context.height, context.pix_fmt = settings.width, settings.height, "yuv420p"
        context.time_base = Fraction(1, RTP_CLOCK)
        context.framerate = Fraction(settings.fps).limit_denominator(1001)
        context.gop_size = max(round(settings.fps * settings.gop_s), 1)
        context.max_b_frames = 0
        context.bit_rate = settings.bitrate
        context.options = {"preset": "ultrafast", "tune": "zerolatency", "repeat-headers": "1"}
        self.context = context

    def encode(self, yuv: npt.NDArray[np.uint8], pts: int) -> list[av.Packet[Any]]:
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = pts
        frame.time_base = Fraction(1, RTP_CLOCK)
        return list(self.context.encode(frame))


class _UdpSink(asyncio.DatagramProtocol):
    def error_received(self, exc: Exception) -> None:
        log.debug("gb28181 stream udp: %s", exc)  # nobody listening (yet): RTP is fire and forget


class PsRtpStream:
    """One stream to one target; :meth:`run` sends until cancelled. Counters say what went out."""

    def __init__(self, target: StreamTarget, settings: StreamSettings | None = None, *, label: str = "",
                 seed: int = 1, local_host: str = "0.0.0.0") -> None:
        self.target = target
        self.settings = settings or StreamSettings()
        self.label = label
        self.local_host = local_host
        self.scene = SceneTrack(label or "GB28181", width=self.settings.width, height=self.settings.height,
                                fps=self.settings.fps, render_in_thread=False, seed=seed)
        self.frames_sent = 0
        self.packets_sent = 0
        self.bytes_sent = 0
        self.local_port = 0
        self.started = asyncio.Event()
        self._sequence = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def run(self) -> None:
        """Open the path (UDP socket or TCP connection), then send frames paced at ``fps`` until cancelled."""
        await self.open()
        encoder = await asyncio.to_thread(H264Encoder, self.settings)
        muxer = PsMuxer(self.settings.width, self.settings.height, max(round(self.settings.fps), 1))
        self.started.set()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        frame_no = 0
        try:
            while True:
                packets = await asyncio.to_thread(self._produce, encoder, muxer, frame_no)
                await self._send(packets)
                self.frames_sent += 1
                frame_no += 1
                delay = t0 + frame_no / self.settings.fps - loop.time()
                await asyncio.sleep(max(delay, 0.0))  # late frames are sent at once, never skipped
        finally:
            self.close()

    def _produce(self, encoder: H264Encoder, muxer: PsMuxer, frame_no: int) -> list[bytes]:
        """One frame drawn, encoded, muxed and packetized (in a worker thread)."""
        sent_ms = time.time_ns() // 1_000_000
        yuv = self.scene.render(frame_no, sent_ms)
        timestamp = int(frame_no * RTP_CLOCK / self.settings.fps)
        packets: list[bytes] = []
        for packet in encoder.encode(yuv, timestamp):
            payload = muxer.mux(packet)
            if not payload:
                continue
            rtp = packetize(payload, ssrc=self.target.ssrc, sequence=self._sequence, timestamp=timestamp,
                            payload_type=self.target.payload_type, mtu=self.settings.mtu)
            self._sequence = (self._sequence + len(rtp)) & 0xFFFF
            packets += rtp
        return packets

    async def open(self) -> None:
        """Open the UDP socket or the TCP connection; idempotent (a UDP socket is opened before the 200, so the
        answer can name its port)."""
        if self._udp is not None or self._writer is not None:
            return
        target = self.target
        loop = asyncio.get_running_loop()
        try:
            if target.transport == "udp":
                self._udp, _ = await loop.create_datagram_endpoint(
                    _UdpSink, local_addr=(self.local_host, 0), remote_addr=(target.host, target.port))
                self.local_port = int(self._udp.get_extra_info("sockname")[1])
            else:
                # GB/T 28181 TCP active: the device connects to the platform's passive port.
                _, writer = await asyncio.wait_for(asyncio.open_connection(target.host, target.port), 5.0)
                self.local_port = int(writer.get_extra_info("sockname")[1])
                self._writer = writer
        except (OSError, TimeoutError) as exc:
            raise StreamError(f"cannot reach {target.host}:{target.port} over {target.transport}: {exc}") from exc

    async def _send(self, packets: list[bytes]) -> None:
        if self._udp is not None:
            for packet in packets:
                self._udp.sendto(packet)
        elif self._writer is not None:
            if self._writer.is_closing():
                raise StreamError("the platform closed the TCP media connection")
            self._writer.write(b"".join(frame_tcp(p) for p in packets))
            await self._writer.drain()
        self.packets_sent += len(packets)
        self.bytes_sent += sum(len(p) for p in packets)

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
