"""Whole messages: a checked packet into header and body, and a body into the frames that carry it."""

from __future__ import annotations

from dataclasses import dataclass

from jt808.frame import encode_frame
from jt808.header import MAX_BODY, VERSION_2013, Header, Packet, build_packet, parse_packet
from jt808.messages import Body, decode_body, encode_body, message_id

__all__ = ["Message", "decode_message", "encode_message", "encode_subpackaged"]


@dataclass(frozen=True, slots=True)
class Message:
    header: Header
    body: Body


def decode_message(packet: bytes | Packet) -> Message:
    """A packet from :class:`~jt808.frame.Deframer` (or a reassembled one) -> header and typed body.

    A sub-package is not decoded here: pass it through :class:`~jt808.subpackage.Reassembler` first."""
    parsed = packet if isinstance(packet, Packet) else parse_packet(packet)
    return Message(parsed.header, decode_body(parsed.header, parsed.body))


def encode_message(body: Body, *, phone: str, serial: int, version: int = VERSION_2013) -> bytes:
    """One frame as the wire carries it. A body longer than 1023 bytes needs :func:`encode_subpackaged`."""
    header = Header(message_id(body), phone, serial, version)
    return encode_frame(build_packet(header, encode_body(body, header.is_2019)))


def encode_subpackaged(body: Body, *, phone: str, serial: int, version: int = VERSION_2013,
                       part_size: int = MAX_BODY) -> list[bytes]:
    """The frames of one message cut into parts of ``part_size`` body bytes, serials from ``serial`` on."""
    if not 1 <= part_size <= MAX_BODY:
        raise ValueError(f"a part holds 1..{MAX_BODY} bytes, not {part_size}")
    data = encode_body(body, version != VERSION_2013)
    parts = [data[i : i + part_size] for i in range(0, len(data), part_size)] or [b""]
    msg_id = message_id(body)
    return [encode_frame(build_packet(Header(msg_id, phone, (serial + i) & 0xFFFF, version, packet_count=len(parts),
                                             packet_index=i + 1), part))
            for i, part in enumerate(parts)]
