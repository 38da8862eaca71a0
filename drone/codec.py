"""MAVLink 2 framing, encoding and decoding on top of pymavlink's generated dialect.

This is the only module that imports pymavlink's dialect (after forcing MAVLink 2),
so the wire version is decided in one place. pymavlink is used only as a codec: the
transport, the framing of byte streams and the dispatch are ours.

The :class:`Framer` cuts a byte stream (TCP) or a datagram (UDP) into complete
frames and checks their CRC itself, so a corrupted frame costs one byte of resync
instead of the rest of the stream, and so the link can read the sender's system id
from the header before choosing which (possibly signed) codec decodes the frame.
"""

from __future__ import annotations

import os

os.environ.setdefault("MAVLINK20", "1")

from dataclasses import dataclass, field
from typing import Any

from pymavlink.dialects.v20 import ardupilotmega as mavlink

from drone.errors import DroneError

__all__ = [
    "MAGIC_V1",
    "MAGIC_V2",
    "DecodeError",
    "Framer",
    "crc_ok",
    "decode",
    "encode",
    "frame_system_id",
    "is_signed",
    "mavlink",
    "message_id",
    "new_codec",
]

MAGIC_V1 = 0xFE
MAGIC_V2 = 0xFD
_HEADER_V1 = 6
_HEADER_V2 = 10
_SIGNATURE_LEN = 13
_IFLAG_SIGNED = 0x01
# Bound on what a stream connection may buffer while waiting for the rest of a frame.
_MAX_BUFFER = 64 * 1024


class DecodeError(DroneError):
    """A frame that pymavlink could not turn into a message."""


def new_codec(system_id: int, component_id: int) -> Any:
    """A pymavlink MAVLink object used only for its seq counter, signing state and decode()."""
    return mavlink.MAVLink(None, srcSystem=system_id, srcComponent=component_id)


def encode(codec: Any, message: Any) -> bytes:
    """Pack one message with the codec's seq (and signature, when it signs) and advance seq."""
    data: bytes = message.pack(codec)
    codec.seq = (codec.seq + 1) % 256
    return data


def decode(codec: Any, frame: bytes) -> Any:
    """Decode one complete frame; pymavlink's MAVError becomes :class:`DecodeError`."""
    try:
        return codec.decode(bytearray(frame))
    except mavlink.MAVError as exc:
        raise DecodeError(str(exc)) from exc
    except Exception as exc:  # struct.error, ValueError... from a hostile payload
        raise DecodeError(f"{type(exc).__name__}: {exc}") from exc


def frame_system_id(frame: bytes) -> int:
    """Sender system id from the header, before any decoding."""
    return frame[5] if frame[0] == MAGIC_V2 else frame[3]


def message_id(frame: bytes) -> int:
    if frame[0] == MAGIC_V2:
        return frame[7] | (frame[8] << 8) | (frame[9] << 16)
    return frame[5]


def is_signed(frame: bytes) -> bool:
    return frame[0] == MAGIC_V2 and bool(frame[2] & _IFLAG_SIGNED)


def _frame_length(buf: bytes | bytearray, start: int) -> int | None:
    """Total length of the frame starting at ``start``, or None while the header is incomplete."""
    if len(buf) - start < 3:
        return None
    payload = buf[start + 1]
    if buf[start] == MAGIC_V2:
        extra = _SIGNATURE_LEN if buf[start + 2] & _IFLAG_SIGNED else 0
        return _HEADER_V2 + payload + 2 + extra
    return _HEADER_V1 + payload + 2


def crc_ok(frame: bytes) -> bool | None:
    """CRC check with the message's CRC_EXTRA; None when the message id is not in the dialect."""
    header = _HEADER_V2 if frame[0] == MAGIC_V2 else _HEADER_V1
    msg_type = mavlink.mavlink_map.get(message_id(frame))
    if msg_type is None:
        return None
    end = header + frame[1]
    crc: int = mavlink.x25crc(bytes(frame[1:end]) + bytes([msg_type.crc_extra])).crc
    return crc == (frame[end] | (frame[end + 1] << 8))


@dataclass
class Framer:
    """Cuts bytes into CRC-checked frames; counts what it throws away.

    One instance per byte stream (TCP connection); for UDP use a fresh one per
    datagram so garbage never outlives the datagram that carried it.
    """

    bad_crc: int = 0
    unknown_message: int = 0
    skipped_bytes: int = 0
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        buf = self._buf
        i = 0
        while i < len(buf):
            if buf[i] not in (MAGIC_V1, MAGIC_V2):
                i += 1
                self.skipped_bytes += 1
                continue
            length = _frame_length(buf, i)
            if length is None or len(buf) - i < length:
                break  # wait for the rest
            frame = bytes(buf[i : i + length])
            ok = crc_ok(frame)
            if ok is None:
                # Unknown id: the CRC cannot be checked, so this may be a false magic byte
                # inside garbage; skip one byte and rescan rather than trusting its length.
                self.unknown_message += 1
                i += 1
                continue
            if not ok:
                self.bad_crc += 1
                i += 1
                continue
            frames.append(frame)
            i += length
        del buf[:i]
        if len(buf) > _MAX_BUFFER:
            self.skipped_bytes += len(buf)
            buf.clear()
        return frames
