"""What the media tests share: real MPEG-PS from Debian's ffmpeg, RTP over real sockets, a PyAV decoder."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
from av.video.frame import PictureType

from gb28181.ps_pipe import PACK_START
from gb28181.rtp import frame_tcp, packetize

SSRC = 200000001  # y=0200000001


def ffmpeg_ps(*, size: str = "1280x720", seconds: float = 3, fmt: str = "mpeg") -> bytes:
    """An H.264 PS stream as Debian's ffmpeg writes it (the brief's command line)."""
    cmd = ["/usr/bin/ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
           "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-bf", "0",
           "-g", "25", "-f", fmt, "pipe:1"]
    return subprocess.run(cmd, check=True, capture_output=True, timeout=120).stdout


def split_packs(data: bytes) -> list[bytes]:
    """Chunks that each begin at a pack header (the test's stand-in for one RTP timestamp each)."""
    starts = []
    at = data.find(PACK_START)
    while at >= 0:
        starts.append(at)
        at = data.find(PACK_START, at + 4)
    return [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)]


def rtp_packets(chunks: list[bytes], *, ssrc: int = SSRC, mtu: int = 1400, first_seq: int = 65000) -> list[bytes]:
    """Every chunk under its own timestamp (40 ms apart), sequence numbers running on (and wrapping)."""
    packets: list[bytes] = []
    for i, chunk in enumerate(chunks):
        packets += packetize(chunk, ssrc=ssrc, sequence=(first_seq + len(packets)) & 0xFFFF, timestamp=i * 3600,
                             mtu=mtu)
    return packets


async def send_udp(packets: list[bytes], port: int, *, sock: socket.socket | None = None, burst: int = 20) -> None:
    """Send over a real UDP socket, pausing every ``burst`` packets so the receiver's buffer never overflows."""
    own = sock is None
    sock = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i, packet in enumerate(packets):
            sock.sendto(packet, ("127.0.0.1", port))
            if i % burst == burst - 1:
                await asyncio.sleep(0.002)
    finally:
        if own:
            sock.close()


async def send_tcp(packets: list[bytes], port: int) -> None:
    """The camera's side of TCP passive: connect and send RFC 4571 framed packets."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    for i, packet in enumerate(packets):
        writer.write(frame_tcp(packet))
        if i % 50 == 49:
            await writer.drain()
    await writer.drain()
    writer.close()
    await writer.wait_closed()


@dataclass
class Frames:
    """on_frame's calls, collected."""

    units: list[tuple[bytes, int, bool]] = field(default_factory=list)

    def __call__(self, data: bytes, pts: int, keyframe: bool) -> None:
        self.units.append((data, pts, keyframe))

    async def settle(self, *, expect: int, timeout: float = 10.0) -> None:
        """Wait until ``expect`` frames came, or nothing new came for 0.5 s."""
        seen, quiet = -1, 0.0
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(self.units) < expect and loop.time() < end and quiet < 0.5:
            await asyncio.sleep(0.05)
            quiet = quiet + 0.05 if len(self.units) == seen else 0.0
            seen = len(self.units)


@dataclass
class Decoded:
    pictures: int
    size: tuple[int, int] | None
    errors: int


def decode(units: list[bytes]) -> Decoded:
    """Decode access units with PyAV's h264 decoder, counting the ones it refuses."""
    decoder = av.CodecContext.create("h264", "r")
    pictures, errors, size = 0, 0, None
    for unit in [*units, None]:
        try:
            frames = decoder.decode(av.Packet(unit) if unit is not None else None)
        except av.error.FFmpegError:
            errors += 1
            continue
        for frame in frames:
            pictures += 1
            size = (frame.width, frame.height)
    return Decoded(pictures, size, errors)


def encode(count: int, width: int, height: int) -> list[av.Packet[Any]]:
    """``count`` pictures of testsrc2 encoded by libx264 as a camera would: no B-frames, a key frame a second."""
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = Fraction(1, 25)
    encoder.framerate = Fraction(25, 1)
    encoder.gop_size = 25
    encoder.options = {"preset": "ultrafast", "tune": "zerolatency", "bf": "0"}
    packets: list[av.Packet[Any]] = []
    with av.open(f"testsrc2=size={width}x{height}:rate=25", format="lavfi") as source:
        for i, frame in enumerate(source.decode(video=0)):
            if i == count:
                break
            frame.pts = i
            frame.time_base = encoder.time_base
            frame.pict_type = PictureType.NONE  # lavfi marks every picture I, which would make each an IDR
            packets += encoder.encode(frame)
    packets += encoder.encode(None)
    return packets
