"""Message bodies of JT/T 808-2013 and -2019 that a platform exchanges with a vehicle terminal.

:func:`decode_body` picks the class by message id and reads the body with the field sizes of the header's
version; a message id it does not handle is an :class:`Unsupported` value, not an error. :func:`encode_body`
writes any of them back. Locations are in :mod:`jt808.location`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from jt808.errors import Jt808Error
from jt808.fields import Reader, text_decode, text_encode
from jt808.header import ENCRYPTION_NONE, Header
from jt808.location import BatchLocation, Location, decode_batch, decode_location, encode_batch, encode_location

__all__ = [
    "MSG_AUTHENTICATION", "MSG_BATCH_LOCATION", "MSG_HEARTBEAT", "MSG_LOCATION", "MSG_PLATFORM_RESPONSE",
    "MSG_REGISTRATION", "MSG_REGISTRATION_RESPONSE", "MSG_TERMINAL_RESPONSE", "MSG_TEXT", "RESULT_FAILURE",
    "RESULT_OK", "TEXT_DISPLAY", "TEXT_EMERGENCY", "TEXT_TTS", "Authentication", "Body", "Heartbeat",
    "PlatformResponse", "Registration", "RegistrationResponse", "TerminalResponse", "TextMessage", "Unsupported",
    "decode_body", "encode_body", "message_id",
]

MSG_TERMINAL_RESPONSE: Final = 0x0001
MSG_PLATFORM_RESPONSE: Final = 0x8001
MSG_HEARTBEAT: Final = 0x0002
MSG_REGISTRATION: Final = 0x0100
MSG_REGISTRATION_RESPONSE: Final = 0x8100
MSG_AUTHENTICATION: Final = 0x0102
MSG_LOCATION: Final = 0x0200
MSG_BATCH_LOCATION: Final = 0x0704
MSG_TEXT: Final = 0x8300

RESULT_OK: Final = 0  # general responses: 0 success, 1 failure, 2 bad message, 3 unsupported, 4 alarm confirmed
RESULT_FAILURE: Final = 1
TEXT_EMERGENCY: Final = 0x01  # 0x8300 flag bits
TEXT_DISPLAY: Final = 0x04
TEXT_TTS: Final = 0x08

# 0x0100 fixed-size fields: (manufacturer, model, terminal id) in 2013 and in 2019.
_REGISTRATION_SIZES: Final = {False: (5, 20, 7), True: (11, 30, 30)}
_IMEI_SIZE: Final = 15
_SOFTWARE_SIZE: Final = 20


@dataclass(frozen=True, slots=True)
class TerminalResponse:
    """0x0001: the terminal's answer to a platform message (to 0x8300 it is the acknowledgment)."""

    reply_serial: int
    reply_id: int
    result: int


@dataclass(frozen=True, slots=True)
class PlatformResponse:
    """0x8001: the platform's answer to a terminal message without an answer of its own."""

    reply_serial: int
    reply_id: int
    result: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """0x0002, an empty body."""


@dataclass(frozen=True, slots=True)
class Registration:
    """0x0100. ``plate`` is empty (and ``plate_color`` 0) for a terminal not tied to a vehicle."""

    province: int
    city: int
    manufacturer: str
    model: str
    terminal_id: str
    plate_color: int
    plate: str


@dataclass(frozen=True, slots=True)
class RegistrationResponse:
    """0x8100. Result 0 success (with the authentication code), 1 vehicle taken, 2 no such vehicle,
    3 terminal taken, 4 no such terminal."""

    reply_serial: int
    result: int
    auth_code: str = ""


@dataclass(frozen=True, slots=True)
class Authentication:
    """0x0102. 2013: the code only; 2019 adds the IMEI and the software version."""

    code: str
    imei: str = ""
    software_version: str = ""


@dataclass(frozen=True, slots=True)
class TextMessage:
    """0x8300, the platform's text to the terminal's display or voice. ``text_type`` (2019 only): 1 notice,
    2 service."""

    flags: int
    text: str
    text_type: int = 1


@dataclass(frozen=True, slots=True)
class Unsupported:
    msg_id: int
    body: bytes


Body = (TerminalResponse | PlatformResponse | Heartbeat | Registration | RegistrationResponse | Authentication
        | Location | BatchLocation | TextMessage | Unsupported)

_IDS: Final[dict[type, int]] = {
    TerminalResponse: MSG_TERMINAL_RESPONSE, PlatformResponse: MSG_PLATFORM_RESPONSE, Heartbeat: MSG_HEARTBEAT,
    Registration: MSG_REGISTRATION, RegistrationResponse: MSG_REGISTRATION_RESPONSE,
    Authentication: MSG_AUTHENTICATION, Location: MSG_LOCATION, BatchLocation: MSG_BATCH_LOCATION,
    TextMessage: MSG_TEXT,
}


def message_id(body: Body) -> int:
    return body.msg_id if isinstance(body, Unsupported) else _IDS[type(body)]


def _end(reader: Reader) -> None:
    """A fixed-size body with bytes left over is not the message its id says."""
    if reader.left:
        raise Jt808Error("body_length", f"{reader.left} bytes after the last field")


def _response(body: bytes) -> tuple[int, int, int]:
    reader = Reader(body)
    fields = reader.u16(), reader.u16(), reader.u8()
    _end(reader)
    return fields


def _registration(body: bytes, is_2019: bool) -> Registration:
    reader = Reader(body)
    sizes = _REGISTRATION_SIZES[is_2019]
    province, city = reader.u16(), reader.u16()
    manufacturer, model, terminal_id = (reader.text(size) for size in sizes)
    plate_color = reader.u8()
    return Registration(province, city, manufacturer, model, terminal_id, plate_color, text_decode(reader.rest()))


def _registration_response(body: bytes) -> RegistrationResponse:
    reader = Reader(body)
    serial, result = reader.u16(), reader.u8()
    # A failure carries no code; whatever follows it is ignored rather than read as text.
    code = text_decode(reader.rest()) if result == RESULT_OK else ""
    return RegistrationResponse(serial, result, code)


def _authentication(body: bytes, is_2019: bool) -> Authentication:
    if not is_2019:
        return Authentication(text_decode(body))
    reader = Reader(body)
    code = reader.text(reader.u8())
    imei, software = reader.text(_IMEI_SIZE), reader.text(_SOFTWARE_SIZE)
    _end(reader)
    return Authentication(code, imei, software)


def _text(body: bytes, is_2019: bool) -> TextMessage:
    reader = Reader(body)
    flags = reader.u8()
    text_type = reader.u8() if is_2019 else 1
    return TextMessage(flags, text_decode(reader.rest()), text_type)


def decode_body(header: Header, body: bytes) -> Body:
    """The body of a whole (reassembled) message, read as the header's version says."""
    if header.encryption != ENCRYPTION_NONE:
        raise Jt808Error("encrypted", "an RSA-encrypted body")
    msg_id, is_2019 = header.msg_id, header.is_2019
    if msg_id == MSG_TERMINAL_RESPONSE:
        return TerminalResponse(*_response(body))
    if msg_id == MSG_PLATFORM_RESPONSE:
        return PlatformResponse(*_response(body))
    if msg_id == MSG_HEARTBEAT:
        _end(Reader(body))
        return Heartbeat()
    if msg_id == MSG_REGISTRATION:
        return _registration(body, is_2019)
    if msg_id == MSG_REGISTRATION_RESPONSE:
        return _registration_response(body)
    if msg_id == MSG_AUTHENTICATION:
        return _authentication(body, is_2019)
    if msg_id == MSG_LOCATION:
        return decode_location(body)
    if msg_id == MSG_BATCH_LOCATION:
        return decode_batch(body)
    if msg_id == MSG_TEXT:
        return _text(body, is_2019)
    return Unsupported(msg_id, body)


def encode_body(body: Body, is_2019: bool) -> bytes:
    """The body's bytes for a 2013 or a 2019 header. A value the field cannot hold is a ValueError."""
    if isinstance(body, TerminalResponse | PlatformResponse):
        return body.reply_serial.to_bytes(2, "big") + body.reply_id.to_bytes(2, "big") + bytes([body.result])
    if isinstance(body, Heartbeat):
        return b""
    if isinstance(body, Registration):
        sizes = _REGISTRATION_SIZES[is_2019]
        fixed = b"".join(text_encode(value, size) for value, size in
                         zip((body.manufacturer, body.model, body.terminal_id), sizes, strict=True))
        return (body.province.to_bytes(2, "big") + body.city.to_bytes(2, "big") + fixed + bytes([body.plate_color])
                + text_encode(body.plate))
    if isinstance(body, RegistrationResponse):
        code = text_encode(body.auth_code) if body.result == RESULT_OK else b""
        return body.reply_serial.to_bytes(2, "big") + bytes([body.result]) + code
    if isinstance(body, Authentication):
        if not is_2019:
            return text_encode(body.code)
        code = text_encode(body.code)
        return (bytes([len(code)]) + code + text_encode(body.imei, _IMEI_SIZE)
                + text_encode(body.software_version, _SOFTWARE_SIZE))
    if isinstance(body, Location):
        return encode_location(body)
    if isinstance(body, BatchLocation):
        return encode_batch(body)
    if isinstance(body, TextMessage):
        return bytes([body.flags]) + (bytes([body.text_type]) if is_2019 else b"") + text_encode(body.text)
    return body.body
