"""The message header of JT/T 808-2013 and -2019, and a packet (header + body) parsed and built.

Header: message id WORD; body properties WORD (bits 0-9 body length, 10-12 encryption, 13 sub-packaged,
14 the 2019 version flag, 15 reserved); 2019 only: protocol version BYTE; terminal phone number BCD[6] (2013)
or BCD[10] (2019); serial number WORD; when sub-packaged: packet count WORD and packet index WORD (from 1).

The phone number is kept without leading zeros, so the same terminal has the same number in both versions
("013912344323" in a 2013 header and "00000000013912344323" in a 2019 header are both "13912344323").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from jt808.errors import Jt808Error
from jt808.fields import Reader, bcd_encode

__all__ = [
    "ENCRYPTION_NONE", "ENCRYPTION_RSA", "MAX_BODY", "VERSION_2013", "VERSION_2019", "Header", "Packet",
    "build_packet", "parse_packet",
]

MAX_BODY: Final = 0x3FF  # ten bits of body length
ENCRYPTION_NONE: Final = 0
ENCRYPTION_RSA: Final = 1
VERSION_2013: Final = 0  # no version byte: the 2013 header (and 2011, which shares it)
VERSION_2019: Final = 1  # the first protocol version of JT/T 808-2019
_SUBPACKAGED: Final = 1 << 13
_VERSIONED: Final = 1 << 14
_RESERVED: Final = 1 << 15


@dataclass(frozen=True, slots=True)
class Header:
    msg_id: int
    phone: str  # decimal digits, no leading zeros ("0" for an all-zero number)
    serial: int
    version: int = VERSION_2013  # 0: 2013 header; >= 1: 2019 header with this protocol version
    encryption: int = ENCRYPTION_NONE
    packet_count: int | None = None  # both set for a sub-package, else both None
    packet_index: int | None = None

    @property
    def is_2019(self) -> bool:
        return self.version != VERSION_2013

    @property
    def subpackaged(self) -> bool:
        return self.packet_count is not None


@dataclass(frozen=True, slots=True)
class Packet:
    header: Header
    body: bytes


def parse_packet(packet: bytes) -> Packet:
    """A packet as :func:`jt808.frame.decode_frame` returns it -> header and body, the length checked."""
    reader = Reader(packet)
    msg_id = reader.u16()
    properties = reader.u16()
    if properties & _RESERVED:
        raise Jt808Error("unknown_version", "reserved bit 15 of the body properties is set")
    version = VERSION_2013
    if properties & _VERSIONED:
        version = reader.u8()
        if version == VERSION_2013:
            raise Jt808Error("unknown_version", "2019 flag with protocol version 0")
    phone = reader.bcd(10 if version else 6).lstrip("0") or "0"
    serial = reader.u16()
    encryption = (properties >> 10) & 0x7
    if encryption not in (ENCRYPTION_NONE, ENCRYPTION_RSA):
        raise Jt808Error("bad_encryption", f"encryption bits {encryption:03b}")
    count = index = None
    if properties & _SUBPACKAGED:
        count, index = reader.u16(), reader.u16()
        if count == 0 or not 1 <= index <= count:
            raise Jt808Error("bad_subpackage", f"packet {index} of {count}")
    length = properties & MAX_BODY
    if reader.left != length:
        raise Jt808Error("body_length", f"header says {length} bytes, {reader.left} follow")
    header = Header(msg_id, phone, serial, version, encryption, count, index)
    return Packet(header, reader.rest())


def build_packet(header: Header, body: bytes) -> bytes:
    """Header + body, unescaped and without check code. A body too long or a bad field is a ValueError."""
    if len(body) > MAX_BODY:
        raise ValueError(f"a body of {len(body)} bytes needs sub-packaging (at most {MAX_BODY})")
    if not 0 <= header.version <= 0xFF or header.encryption not in (ENCRYPTION_NONE, ENCRYPTION_RSA):
        raise ValueError(f"version {header.version} or encryption {header.encryption} cannot be sent")
    properties = len(body) | header.encryption << 10
    out = bytearray()
    if header.version:
        properties |= _VERSIONED
    if header.packet_count is not None:
        if header.packet_index is None or not 1 <= header.packet_index <= header.packet_count <= 0xFFFF:
            raise ValueError(f"packet {header.packet_index} of {header.packet_count}")
        properties |= _SUBPACKAGED
    out += header.msg_id.to_bytes(2, "big") + properties.to_bytes(2, "big")
    if header.version:
        out.append(header.version)
    out += bcd_encode(header.phone, 10 if header.version else 6)
    out += (header.serial & 0xFFFF).to_bytes(2, "big")
    if header.packet_count is not None and header.packet_index is not None:
        out += header.packet_count.to_bytes(2, "big") + header.packet_index.to_bytes(2, "big")
    return bytes(out + body)
