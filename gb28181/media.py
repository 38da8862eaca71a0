"""One GB/T 28181 media session's receiving end: RTP (UDP, or TCP passive with RFC 4571 framing) carrying
MPEG-PS, out as H.264 access units on the event loop.

The stages, in order: socket -> source check -> RTP parse -> SSRC and payload type check -> reorder and
reassemble per RTP timestamp (:mod:`gb28181.reassembly`) -> PS demux in a thread (:mod:`gb28181.ps`) ->
``on_frame``. Every packet that goes no further is counted by reason in :attr:`MediaReceiver.counters`;
nothing a camera sends raises out of a callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

from devices.tasks import cancel_and_wait

from .h264 import AccessUnit
from .ps import PsDemuxer
from .reassembly import FrameAssembler, PsChunk
from .rtp import RtpError, TcpDeframer, parse_rtp

__all__ = ["FrameCallback", "MediaReceiver"]

log = logging.getLogger(__name__)

FrameCallback = Callable[[bytes, int, bool], None]  # (Annex B access unit, 90 kHz pts, keyframe)
_READ_SIZE = 65536
_UDP_RECEIVE_BUFFER = 4 << 20


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: MediaReceiver) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner.datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("rtp udp: %s", exc)


class MediaReceiver:
    """The receive port one INVITE offered. ``ssrc=None`` locks onto the first valid packet's SSRC; UDP
    locks onto the first sender's address (``peer_host``, when given, must match it), TCP serves one
    connection at a time."""

    def __init__(self, *, host: str, transport: Literal["udp", "tcp"], ssrc: int | None,
                 on_frame: FrameCallback, port: int = 0, max_packet: int = 8192,
                 payload_type: int | None = 96, peer_host: str | None = None,
                 reorder_packets: int = 64, reorder_delay: float = 0.08) -> None:
        self.host = host
        self.transport = transport
        self.ssrc = ssrc
        self.on_frame = on_frame
        self.port = port
        self.max_packet = max_packet
        self.payload_type = payload_type
        self.peer_host = peer_host
        self.last_packet_at: float | None = None  # time.monotonic() of the last accepted packet
        self.own: Counter[str] = Counter()
        self.assembler = FrameAssembler(reorder_packets=reorder_packets, reorder_delay=reorder_delay)
        self.demuxer = PsDemuxer(self._access_unit)
        self._source: tuple[str, int] | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._connection: asyncio.Task[None] | None = None
        self._expiry: asyncio.Task[None] | None = None
        self._last_timestamp = 0

    @property
    def counters(self) -> Counter[str]:
        """Everything counted so far: packets, bytes, frames, keyframes and drops by reason."""
        return self.own + self.assembler.drops + self.demuxer.counters

    async def start(self) -> int:
        """Bind (and for TCP listen); the bound port."""
        loop = asyncio.get_running_loop()
        if self.transport == "udp":
            udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(self.host, self.port))
            self._udp = udp
            self.port = int(udp.get_extra_info("sockname")[1])
            sock = udp.get_extra_info("socket")
            with contextlib.suppress(OSError):  # a key frame is a burst of ~100 packets; the kernel caps this
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RECEIVE_BUFFER)
        else:
            self._server = await asyncio.start_server(self._accept, self.host, self.port)
            self.port = int(self._server.sockets[0].getsockname()[1])
        # Started only once the port is bound, so a failed bind leaves no thread behind; nothing can have
        # arrived yet, as no packet is read before the next await.
        self.demuxer.start()
        self._expiry = asyncio.create_task(self._expire_loop(), name=f"rtp-expire-{self.port}")
        return self.port

    async def stop(self) -> None:
        # Stop taking packets first, then end the readers, then the demuxer thread.
        if self._server is not None:
            self._server.close()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        await cancel_and_wait(self._connection, self._expiry)
        self._connection = self._expiry = None
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        await self.demuxer.stop()

    # --- UDP -----------------------------------------------------------------------------------------------

    def datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.peer_host is not None and addr[0] != self.peer_host:
            self.own["wrong_source"] += 1
            return
        if self._source is not None and addr != self._source:
            self.own["wrong_source"] += 1
            return
        if len(data) > self.max_packet:
            self.own["oversize"] += 1
            return
        if self.packet(data) and self._source is None:
            self._source = addr

    # --- TCP -----------------------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        busy = self._connection is not None and not self._connection.done()
        if busy or (self.peer_host is not None and (not peer or peer[0] != self.peer_host)):
            self.own["tcp_refused"] += 1
            writer.close()
            return
        self._connection = asyncio.current_task()
        try:
            await self._read_stream(reader)
        finally:
            writer.close()
            self._connection = None

    async def _read_stream(self, reader: asyncio.StreamReader) -> None:
        deframer = TcpDeframer(self.max_packet)
        while True:
            data = await reader.read(_READ_SIZE)
            if not data:
                return
            try:
                packets = deframer.feed(data)
            except RtpError as exc:
                # No marker to resynchronise a length-prefixed stream on: this connection is done.
                self.own[f"tcp_{exc.reason}"] += 1
                self.own["tcp_closed_bad_framing"] += 1
                return
            for packet in packets:
                self.packet(packet)

    # --- both ----------------------------------------------------------------------------------------------

    def packet(self, data: bytes) -> bool:
        """One RTP packet from the session's peer; True when it was accepted into reassembly."""
        try:
            rtp = parse_rtp(data)
        except RtpError as exc:
            self.own["bad_rtp"] += 1
            self.own[f"bad_rtp_{exc.reason}"] += 1
            return False
        if self.payload_type is not None and rtp.payload_type != self.payload_type:
            self.own["wrong_pt"] += 1
            return False
        if self.ssrc is None:
            self.ssrc = rtp.ssrc
        elif rtp.ssrc != self.ssrc:
            self.own["wrong_ssrc"] += 1
            return False
        now = time.monotonic()
        self.last_packet_at = now
        self.own["packets"] += 1
        self.own["bytes"] += len(data)
        self._feed(self.assembler.push(rtp, now))
        return True

    def _feed(self, chunks: list[PsChunk]) -> None:
        for chunk in chunks:
            self._last_timestamp = chunk.timestamp
            self.own["chunks"] += 1
            self.demuxer.feed(chunk.data)

    async def _expire_loop(self) -> None:
        interval = max(0.01, self.assembler.reorder_delay / 2)
        while True:
            await asyncio.sleep(interval)
            self._feed(self.assembler.expire(time.monotonic()))

    def _access_unit(self, unit: AccessUnit) -> None:
        self.own["frames"] += 1
        if unit.keyframe:
            self.own["keyframes"] += 1
        pts = unit.pts if unit.pts is not None else self._last_timestamp
        try:
            self.on_frame(unit.data, pts, unit.keyframe)
        except Exception:
            self.own["callback_errors"] += 1
            log.exception("on_frame failed")
