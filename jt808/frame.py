"""JT/T 808 framing: 0x7E flags, the 0x7D escape, the XOR check code, and a TCP stream cut into packets.

On the wire a message is ``7E escape(packet + check) 7E`` where ``packet`` is header + body and ``check`` the XOR
of all its bytes. Escaping turns 0x7E into 0x7D 0x02 and 0x7D into 0x7D 0x01, so 0x7E only ever marks a frame's
edge: a receiver that lost its place resynchronises at the next 0x7E. Here a "packet" is always unescaped and
without its check code; a "frame" is what the wire carries.
"""

from __future__ import annotations

from typing import Final

from jt808.errors import Jt808Error

__all__ = [
    "ESCAPE", "FLAG", "MAX_PACKET", "Deframer", "checksum", "decode_frame", "encode_frame", "escape", "unescape",
]

FLAG: Final = 0x7E
ESCAPE: Final = 0x7D
# The largest packet the standard allows: a 21-byte 2019 header with sub-package fields and a 1023-byte body.
MAX_PACKET: Final = 21 + 1023
_MIN_PACKET: Final = 12  # a 2013 header with an empty body
_ESCAPES: Final = {0x01: ESCAPE, 0x02: FLAG}


def checksum(data: bytes) -> int:
    """The check code: every byte XORed together."""
    check = 0
    for byte in data:
        check ^= byte
    return check


def escape(data: bytes) -> bytes:
    """0x7D -> 0x7D 0x01 first (so the escapes of 0x7E are not escaped again), then 0x7E -> 0x7D 0x02."""
    return data.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02")


def unescape(data: bytes) -> bytes:
    """The inverse of :func:`escape`; a lone or unknown escape, or a flag inside, is "bad_escape"."""
    if FLAG in data:
        raise Jt808Error("bad_escape", "0x7E inside a frame")
    if ESCAPE not in data:
        return data
    out = bytearray()
    i = 0
    while i < len(data):
        byte = data[i]
        if byte == ESCAPE:
            following = data[i + 1] if i + 1 < len(data) else None
            if following not in _ESCAPES:
                raise Jt808Error("bad_escape", f"0x7D followed by {following!r} at {i}")
            out.append(_ESCAPES[following])
            i += 2
        else:
            out.append(byte)
            i += 1
    return bytes(out)


def encode_frame(packet: bytes) -> bytes:
    """A packet (header + body) as the wire carries it: check code appended, escaped, between flags."""
    return b"\x7e" + escape(packet + bytes([checksum(packet)])) + b"\x7e"


def decode_frame(inner: bytes) -> bytes:
    """The bytes between two flags -> the packet, its escapes removed and its check code verified and cut off."""
    data = unescape(inner)
    if len(data) < _MIN_PACKET + 1:
        raise Jt808Error("truncated", f"{len(data)} bytes, a header and check code need {_MIN_PACKET + 1}")
    if len(data) > MAX_PACKET + 1:
        raise Jt808Error("oversized", f"{len(data)} bytes, at most {MAX_PACKET + 1}")
    packet, check = data[:-1], data[-1]
    if checksum(packet) != check:
        raise Jt808Error("bad_check", f"computed {checksum(packet):#04x}, frame says {check:#04x}")
    return packet


class Deframer:
    """Bytes of one TCP connection in, packets (checked, unescaped) and refusals out, in stream order.

    Bytes before the first flag are one "garbage" refusal. Two flags in a row are the end of one frame and the
    start of the next, so they yield nothing. A frame growing past ``max_frame`` escaped bytes is "oversized":
    its bytes are thrown away up to the next flag, where reading starts again; so at most ``max_frame`` bytes are
    ever held. A bad frame costs only itself: the next frame is read as if nothing happened.
    """

    def __init__(self, max_frame: int = 2 * (MAX_PACKET + 1)) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._inside = False  # a flag has been seen, so the buffer holds a frame's bytes
        self._skipping = False  # an oversized frame is being thrown away up to the next flag
        self._garbage = False  # bytes before the first flag have been reported

    @property
    def pending(self) -> int:
        """Bytes held of a frame not yet complete."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | Jt808Error]:
        out: list[bytes | Jt808Error] = []
        start = 0
        while start < len(data):
            flag = data.find(FLAG, start)
            end = len(data) if flag < 0 else flag
            self._take(data[start:end], out)
            if flag < 0:
                break
            self._at_flag(out)
            start = flag + 1
        return out

    def _take(self, chunk: bytes, out: list[bytes | Jt808Error]) -> None:
        """Bytes with no flag among them."""
        if not chunk or self._skipping:
            return
        if not self._inside:
            if not self._garbage:
                out.append(Jt808Error("garbage", "bytes before the first 0x7E"))
                self._garbage = True  # one refusal per run, however many reads it spans
            return
        if len(self._buffer) + len(chunk) > self.max_frame:
            out.append(Jt808Error("oversized", f"more than {self.max_frame} bytes without a closing 0x7E"))
            self._buffer.clear()
            self._skipping = True
            return
        self._buffer += chunk

    def _at_flag(self, out: list[bytes | Jt808Error]) -> None:
        if self._inside and self._buffer and not self._skipping:
            try:
                out.append(decode_frame(bytes(self._buffer)))
            except Jt808Error as exc:
                out.append(exc)
        self._buffer.clear()
        self._inside = True
        self._skipping = False
