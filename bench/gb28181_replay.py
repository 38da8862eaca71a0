"""A GB/T 28181 camera stream that replays a pre-encoded, pre-muxed H.264 loop: the benchmark's fair load.

Eight simulated cameras drawing, x264-encoding and PS-muxing 720p25 live eat most of a 2-core machine and then
starve the hub they are meant to measure; the WHIP side of the benchmark replays a loop encoded once. So does
this: :func:`mux_loop` wraps each picture of :func:`bench.video_load.encode_loop`'s H.264 loop (frame code =
loop index) ONCE into the PS chunk a camera sends (:class:`gb28181.ps.PsMuxer`), and :class:`PsReplayStream`
sends those chunks as RTP (:func:`gb28181.rtp.packetize`) at 25 fps to the INVITE's UDP target, noting the
monotonic time each loop index left (one clock for every process on the machine, as the WHIP side does).

A loop restarts every few seconds but the stream's time must not: each chunk's SCR, PTS and DTS are shifted on
the way out (:func:`retime`, a few bytes rewritten at offsets found once by :func:`timestamp_fields`), so the
hub sees one continuous 90 kHz timeline. The chunks cross to the camera processes in a file (:func:`save_loop`,
:func:`load_loop`); :func:`replay_factory` is the camera's ``stream_factory`` (:mod:`sim.gb28181_stream`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from array import array
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Final

import av

from bench.video_load import EncodedLoop
from gb28181.ps import PsMuxer
from gb28181.rtp import packetize
from sim.gb28181_stream import StreamError, StreamFactory, StreamSettings, StreamTarget

__all__ = ["PsLoop", "PsReplayStream", "load_loop", "mux_loop", "replay_factory", "retime", "save_loop",
           "timestamp_fields"]

log = logging.getLogger(__name__)

CLOCK: Final = 90_000
WRAP_33: Final = 1 << 33
SCR: Final = 0  # field kinds: an MPEG-2 pack header's SCR base (6 bytes), or a PES PTS/DTS (5 bytes)
PTS: Final = 1


@dataclass(frozen=True, slots=True)
class PsLoop:
    """One PS chunk per loop picture, with the offsets and kinds of its timestamp fields."""

    chunks: list[bytes]
    fields: list[list[tuple[int, int]]]
    keyframes: list[int]
    fps: int
    width: int
    height: int

    @property
    def kbit_per_s(self) -> float:
        return sum(len(c) for c in self.chunks) * 8 * self.fps / len(self.chunks) / 1000

    def next_keyframe(self, index: int) -> int:
        return next((k for k in self.keyframes if k >= index), self.keyframes[0])


def timestamp_fields(chunk: bytes) -> list[tuple[int, int]]:
    """``(offset, kind)`` of every SCR and video PTS/DTS in one camera chunk, walking its packs by their lengths.

    Raises ValueError on bytes that are not the packs :class:`PsMuxer` writes."""
    out: list[tuple[int, int]] = []
    i = 0
    while i + 6 <= len(chunk):
        if chunk[i:i + 3] != b"\x00\x00\x01":
            raise ValueError(f"no start code at {i}")
        sid = chunk[i + 3]
        if sid == 0xBA:  # pack header: SCR in the 6 bytes after the start code, then stuffing
            if i + 14 > len(chunk):
                raise ValueError(f"a pack header cut short at {i}")
            out.append((i + 4, SCR))
            i += 14 + (chunk[i + 13] & 0x07)
            continue
        size = 6 + int.from_bytes(chunk[i + 4:i + 6], "big")
        if i + size > len(chunk):
            break  # reported below
        if 0xE0 <= sid <= 0xEF and size >= 9:
            flags = chunk[i + 7] >> 6
            if flags & 2 and size >= 14:
                out.append((i + 9, PTS))
            if flags == 3 and size >= 19:
                out.append((i + 14, PTS))
        i += size
    if i != len(chunk):
        raise ValueError(f"a pack runs past the chunk's end ({i} of {len(chunk)})")
    return out


def _read_pts(b: bytes | bytearray, at: int) -> int:
    return ((b[at] >> 1) & 7) << 30 | b[at + 1] << 22 | (b[at + 2] >> 1) << 15 | b[at + 3] << 7 | b[at + 4] >> 1


def _write_pts(b: bytearray, at: int, ts: int) -> None:
    b[at] = (b[at] & 0xF0) | ((ts >> 30) & 7) << 1 | 1
    b[at + 1] = (ts >> 22) & 0xFF
    b[at + 2] = ((ts >> 15) & 0x7F) << 1 | 1
    b[at + 3] = (ts >> 7) & 0xFF
    b[at + 4] = (ts & 0x7F) << 1 | 1


def _read_scr(b: bytes | bytearray, at: int) -> int:
    return (((b[at] >> 3) & 7) << 30 | (b[at] & 3) << 28 | b[at + 1] << 20 | ((b[at + 2] >> 3) & 0x1F) << 15
            | (b[at + 2] & 3) << 13 | b[at + 3] << 5 | (b[at + 4] >> 3) & 0x1F)


def _write_scr(b: bytearray, at: int, scr: int) -> None:
    # The 9-bit extension (low 2 bits of byte 4, byte 5) is kept as it was.
    b[at] = 0x44 | ((scr >> 30) & 7) << 3 | (scr >> 28) & 3
    b[at + 1] = (scr >> 20) & 0xFF
    b[at + 2] = ((scr >> 15) & 0x1F) << 3 | 0x04 | (scr >> 13) & 3
    b[at + 3] = (scr >> 5) & 0xFF
    b[at + 4] = (scr & 0x1F) << 3 | 0x04 | (b[at + 4] & 3)


def retime(chunk: bytes, fields: list[tuple[int, int]], delta: int) -> bytes:
    """``chunk`` with every SCR, PTS and DTS moved by ``delta`` ticks of 90 kHz (modulo 2**33)."""
    out = bytearray(chunk)
    for at, kind in fields:
        if kind == SCR:
            _write_scr(out, at, (_read_scr(out, at) + delta) % WRAP_33)
        else:
            _write_pts(out, at, (_read_pts(out, at) + delta) % WRAP_33)
    return bytes(out)


def mux_loop(loop: EncodedLoop, fps: int) -> PsLoop:
    """Mux ``loop`` (H.264) once: picture ``i`` gets PTS ``i * 90000 / fps``, in a chunk as cameras send it."""
    if loop.codec != "H264":
        raise ValueError(f"a GB/T 28181 camera sends H.264, not {loop.codec}")
    muxer = PsMuxer(loop.width, loop.height, fps)
    chunks: list[bytes] = []
    for i, data in enumerate(loop.frames):
        packet = av.Packet(data)
        packet.pts = packet.dts = i * CLOCK // fps
        packet.time_base = Fraction(1, CLOCK)
        packet.is_keyframe = i in loop.keyframes
        chunks.append(muxer.mux(packet))
    return PsLoop(chunks, [timestamp_fields(c) for c in chunks], list(loop.keyframes), fps, loop.width, loop.height)


def save_loop(ps: PsLoop, path: Path) -> None:
    """One JSON header line (sizes, key frames, geometry), then the chunks back to back."""
    head = {"sizes": [len(c) for c in ps.chunks], "keyframes": ps.keyframes, "fps": ps.fps, "width": ps.width,
            "height": ps.height}
    with path.open("wb") as f:
        f.write(json.dumps(head).encode() + b"\n")
        for c in ps.chunks:
            f.write(c)


def load_loop(path: Path) -> PsLoop:
    raw = path.read_bytes()
    end = raw.index(b"\n")
    head = json.loads(raw[:end])
    chunks: list[bytes] = []
    at = end + 1
    for size in head["sizes"]:
        chunks.append(raw[at:at + size])
        at += size
    return PsLoop(chunks, [timestamp_fields(c) for c in chunks], head["keyframes"], head["fps"], head["width"],
                  head["height"])


class _UdpSink(asyncio.DatagramProtocol):
    def error_received(self, exc: Exception) -> None:
        log.debug("replay udp: %s", exc)  # nobody listening (yet): RTP is fire and forget


class PsReplayStream:
    """A :class:`sim.gb28181_stream.MediaStream` sending ``loop`` from its key frame at or after ``start``, at
    ``loop.fps`` on a fixed schedule ``phase_s`` after :meth:`run` starts; UDP only. ``sends`` holds flattened
    ``(monotonic s, loop index)`` pairs."""

    def __init__(self, loop: PsLoop, target: StreamTarget, *, start: int = 0, phase_s: float = 0.0,
                 local_host: str = "127.0.0.1", mtu: int = 1400) -> None:
        self.loop = loop
        self.target = target
        self.index = loop.next_keyframe(start)
        self.phase_s = phase_s
        self.local_host = local_host
        self.mtu = mtu
        self.local_port = 0
        self.frames_sent = 0
        self.packets_sent = 0
        self.late_max_s = 0.0
        self.sends: array[float] = array("d")
        self._sequence = 0
        self._udp: asyncio.DatagramTransport | None = None

    async def open(self) -> None:
        if self._udp is not None:
            return
        if self.target.transport != "udp":  # the call then ends with a BYE (sim.gb28181_media)
            raise StreamError("the replay sends over UDP only")
        try:
            self._udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                _UdpSink, local_addr=(self.local_host, 0), remote_addr=(self.target.host, self.target.port))
        except OSError as exc:
            raise StreamError(f"cannot reach {self.target.host}:{self.target.port}: {exc}") from exc
        self.local_port = int(self._udp.get_extra_info("sockname")[1])

    async def run(self) -> None:
        await self.open()
        tick = CLOCK // self.loop.fps
        due = time.monotonic() + self.phase_s
        try:
            while True:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                now = time.monotonic()
                self.late_max_s = max(self.late_max_s, now - due)
                due += 1 / self.loop.fps  # a late frame is sent at once and does not shift the ones after it
                self._send(now, tick)
        finally:
            self.close()

    def _send(self, now: float, tick: int) -> None:
        i = self.index
        self.index = (i + 1) % len(self.loop.chunks)
        pts = (self.frames_sent + len(self.loop.chunks)) * tick  # one timeline across the loop's restarts
        chunk = retime(self.loop.chunks[i], self.loop.fields[i], pts - i * tick)
        packets = packetize(chunk, ssrc=self.target.ssrc, sequence=self._sequence, timestamp=pts & 0xFFFFFFFF,
                            payload_type=self.target.payload_type, mtu=self.mtu)
        self._sequence = (self._sequence + len(packets)) & 0xFFFF
        udp = self._udp
        if udp is None:
            raise StreamError("the stream was closed")
        for p in packets:
            udp.sendto(p)
        self.sends.extend((now, float(i)))
        self.packets_sent += len(packets)
        self.frames_sent += 1

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None


def replay_factory(loop: PsLoop, start: int, phase_s: float, made: list[PsReplayStream]) -> StreamFactory:
    """A camera's ``stream_factory``: each call replays ``loop``; every stream made is appended to ``made``."""

    def factory(target: StreamTarget, settings: StreamSettings, *, label: str, local_host: str) -> PsReplayStream:
        stream = PsReplayStream(loop, target, start=start, phase_s=phase_s, local_host=local_host, mtu=settings.mtu)
        made.append(stream)
        return stream

    return factory
