"""RTP (RFC 3550) packets as GB/T 28181 media uses them, and RFC 4571 framing for RTP over TCP.

Everything here takes bytes from an untrusted camera: a packet that is not what RFC 3550 allows raises
:class:`RtpError` whose ``reason`` is the name the receiver counts the drop under, never anything else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "MAX_TCP_PACKET",
    "RtpError",
    "RtpPacket",
    "TcpDeframer",
    "build_rtp",
    "frame_tcp",
    "packetize",
    "parse_rtp",
]

_HEADER = struct.Struct("!BBHII")
_VERSION = 2
MAX_TCP_PACKET = 65535  # RFC 4571 length is 16 bits; a receiver may refuse less (see TcpDeframer)


class RtpError(ValueError):
    """A packet refused; ``reason`` names the drop counter ("short", "version", "padding", ...)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket:
    """One RTP packet. CSRCs and a header extension are skipped; padding is removed; anything
    inconsistent (lengths that run past the packet, padding of zero) is refused."""
    if len(data) < _HEADER.size:
        raise RtpError("short", f"{len(data)} bytes")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != _VERSION:
        raise RtpError("version", str(first >> 6))
    offset = _HEADER.size + 4 * (first & 0x0F)
    if offset > len(data):
        raise RtpError("csrc", "CSRC list runs past the packet")
    if first & 0x10:
        if offset + 4 > len(data):
            raise RtpError("extension", "extension header runs past the packet")
        words = int.from_bytes(data[offset + 2 : offset + 4], "big")
        offset += 4 + 4 * words
        if offset > len(data):
            raise RtpError("extension", "extension runs past the packet")
    end = len(data)
    if first & 0x20:
        pad = data[-1]
        if pad == 0 or end - pad < offset:
            raise RtpError("padding", f"padding of {pad} bytes")
        end -= pad
    return RtpPacket(payload_type=second & 0x7F, sequence=sequence, timestamp=timestamp, ssrc=ssrc,
                     marker=bool(second & 0x80), payload=bytes(data[offset:end]))


def build_rtp(p: RtpPacket) -> bytes:
    """The packet on the wire: version 2, no padding, extension or CSRC (what a camera sends)."""
    second = (0x80 if p.marker else 0) | (p.payload_type & 0x7F)
    return _HEADER.pack(_VERSION << 6, second, p.sequence & 0xFFFF, p.timestamp & 0xFFFFFFFF,
                        p.ssrc & 0xFFFFFFFF) + p.payload


def packetize(payload: bytes, *, ssrc: int, sequence: int, timestamp: int, payload_type: int = 96,
              mtu: int = 1400) -> list[bytes]:
    """One picture's PS bytes as RTP packets of at most ``mtu`` bytes each, the marker on the last.

    Sequence numbers start at ``sequence`` and wrap at 2**16; the caller continues from
    ``sequence + len(result)``.
    """
    room = mtu - _HEADER.size
    if room <= 0:
        raise ValueError(f"mtu {mtu} leaves no room for a payload")
    pieces = [payload[i : i + room] for i in range(0, len(payload), room)] or [b""]
    last = len(pieces) - 1
    return [build_rtp(RtpPacket(payload_type, (sequence + i) & 0xFFFF, timestamp, ssrc, i == last, piece))
            for i, piece in enumerate(pieces)]


def frame_tcp(packet: bytes) -> bytes:
    """RFC 4571: the packet behind its 16-bit big-endian length."""
    if not 0 < len(packet) <= MAX_TCP_PACKET:
        raise ValueError(f"cannot frame a packet of {len(packet)} bytes")
    return len(packet).to_bytes(2, "big") + packet


class TcpDeframer:
    """Bytes of an RFC 4571 stream in, whole packets out.

    A zero length or one above ``max_packet`` cannot be resynchronised (there is no marker to look for),
    so :meth:`feed` raises :class:`RtpError` ("tcp_zero_length"/"oversize") and the caller closes the
    connection. At most one partial packet is ever held, so memory stays below ``max_packet + 2``.
    """

    def __init__(self, max_packet: int = MAX_TCP_PACKET) -> None:
        self.max_packet = max_packet
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held of a packet not yet complete."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        packets: list[bytes] = []
        while len(self._buffer) >= 2:
            size = int.from_bytes(self._buffer[:2], "big")
            if size == 0:
                raise RtpError("tcp_zero_length")
            if size > self.max_packet:
                raise RtpError("oversize", f"{size} bytes framed, {self.max_packet} allowed")
            if len(self._buffer) < 2 + size:
                break
            packets.append(bytes(self._buffer[2 : 2 + size]))
            del self._buffer[: 2 + size]
        return packets
