"""SIP messages as the GB/T 28181 registrar reads and writes them, on top of aiosipua's message model.

aiosipua parses and serialises; this module adds what a server facing untrusted devices needs before a message
reaches the registrar: a size cap, the mandatory headers present, a readable Content-Length and CSeq, and every
refusal turned into a ``MalformedMessage`` with a short reason the transports count by.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from aiosipua import SipMessage, SipRequest, SipResponse
from aiosipua.headers import parse_address, parse_cseq, parse_via
from aiosipua.utils import generate_tag

__all__ = [
    "DEVICE_ID",
    "MAX_MESSAGE_BYTES",
    "MalformedMessage",
    "Peer",
    "SipError",
    "SipRequest",
    "SipResponse",
    "Transport",
    "finish_request",
    "parse",
    "response_to",
    "uri_user",
]

# GB/T 28181 section 4.3 / appendix D: a device or server id is 20 decimal digits.
DEVICE_ID = re.compile(r"[0-9]{20}")

# Larger than any GB/T 28181 signalling message (a big Catalog answer is split into several MESSAGEs), small
# enough that one hostile peer cannot make the registrar buffer much.
MAX_MESSAGE_BYTES = 64 * 1024

Transport = Literal["udp", "tcp"]

_REQUIRED = ("via", "from", "to", "call-id", "cseq")


class SipError(Exception):
    """Base of this package's SIP errors."""


class MalformedMessage(SipError):
    """A datagram or TCP frame that is not a usable SIP message; ``reason`` is the counter's name."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a message came from and how to answer it: the source address, not the Via or Contact.

    Devices sit behind NAT; the address a datagram or connection came from is the one that reaches them.
    """

    transport: Transport
    host: str
    port: int


def parse(data: bytes) -> SipRequest | SipResponse:
    """Parse one whole message; raise MalformedMessage with the reason it is refused."""
    if not data.strip():
        raise MalformedMessage("empty")
    if len(data) > MAX_MESSAGE_BYTES:
        raise MalformedMessage("too_large", f"{len(data)} bytes")
    try:
        message = SipMessage.parse(data)
    except Exception as exc:  # aiosipua raises ValueError, but garbage can reach int() and friends
        raise MalformedMessage("unparsable", str(exc)[:80]) from exc
    if isinstance(message, SipResponse):
        if not 100 <= message.status_code <= 699:
            raise MalformedMessage("bad_status", str(message.status_code))
        if not message.headers.get_first("via") or not message.headers.get_first("cseq"):
            raise MalformedMessage("missing_headers", "via/cseq")
        return message
    missing = [name for name in _REQUIRED if not message.headers.get_first(name)]
    if missing:
        raise MalformedMessage("missing_headers", ",".join(missing))
    if not message.uri.lower().startswith(("sip:", "sips:")):
        raise MalformedMessage("bad_request_uri", message.uri[:40])
    length = message.headers.get_first("content-length")
    if length is not None and not length.strip().isdigit():
        raise MalformedMessage("bad_content_length", length[:20])
    try:
        cseq = parse_cseq(message.headers.get_first("cseq") or "")
        parse_via(message.headers.get_first("via") or "")
        parse_address(message.headers.get_first("from") or "")
        parse_address(message.headers.get_first("to") or "")
    except Exception as exc:
        raise MalformedMessage("unparsable", str(exc)[:80]) from exc
    if cseq.method.upper() != message.method.upper():
        raise MalformedMessage("bad_cseq", "method differs from the request line")
    return message


def uri_user(header_value: str | None) -> str | None:
    """The user part of a From/To address (the device id in GB/T 28181), or None."""
    if not header_value:
        return None
    try:
        return parse_address(header_value).uri.user
    except Exception:
        return None


def response_to(request: SipRequest, status: int, reason: str, *, to_tag: str | None = None) -> SipResponse:
    """A response carrying the request's Via, From, To (with a tag), Call-ID and CSeq (RFC 3261 section 8.2.6)."""
    response = SipResponse(status_code=status, reason_phrase=reason)
    for via in request.headers.get("via"):
        response.headers.append("Via", via)
    response.headers.set_single("From", request.headers.get_first("from") or "")
    to = request.headers.get_first("to") or ""
    if ";tag=" not in to.replace(" ", ""):
        to = f"{to};tag={to_tag or generate_tag()}"
    response.headers.set_single("To", to)
    response.headers.set_single("Call-ID", request.headers.get_first("call-id") or "")
    response.headers.set_single("CSeq", request.headers.get_first("cseq") or "")
    response.headers.set_single("User-Agent", "fieldhub")
    return response


def finish_request(request: SipRequest, method: str, cseq: int, *, body: bytes, content_type: str,
                   headers: dict[str, str] | None = None) -> SipRequest:
    """The headers every request ends with (CSeq, Max-Forwards, the caller's own, Content-Type) and its body."""
    request.headers.append("CSeq", f"{cseq} {method}")
    request.headers.append("Max-Forwards", "70")
    for name, value in (headers or {}).items():
        request.headers.set_single(name, value)
    if body:
        request.headers.append("Content-Type", content_type)
    request.body = body
    return request
