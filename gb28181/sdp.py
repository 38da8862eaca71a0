"""The SDP of GB/T 28181 media sessions (INVITE offers and their answers) and the standard's SSRC.

GB/T 28181 uses a narrow dialect of SDP: one ``m=video`` line carrying MPEG-PS (``PS/90000``) over RTP/UDP
or RTP/TCP (RFC 4571, with ``a=setup``/``a=connection`` of RFC 4145), and a ``y=`` line with the 10-digit
SSRC. The parser takes text from untrusted devices: anything it cannot use raises :class:`SdpError` with a
short ``reason``, never another exception.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MediaAnswer",
    "MediaOffer",
    "SdpError",
    "Transport",
    "build_answer",
    "build_offer",
    "make_ssrc",
    "parse_answer",
    "parse_offer",
    "ssrc_number",
]

Transport = Literal["udp", "tcp"]
MAX_SDP_CHARS = 8192
_PROTOS: dict[str, Transport] = {"RTP/AVP": "udp", "TCP/RTP/AVP": "tcp", "RTP/AVP/TCP": "tcp"}
_SSRC = re.compile(r"[01][0-9]{9}")
_ID20 = re.compile(r"[0-9]{20}")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_SETUPS = frozenset({"active", "passive", "actpass"})


class SdpError(ValueError):
    """SDP refused; ``reason`` names why ("syntax", "no_video", "no_ps", "ssrc", ...)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def make_ssrc(server_id: str, sequence: int, *, realtime: bool = True) -> str:
    """The SSRC GB/T 28181-2016 section 9.2.1 asks for: ``0`` realtime / ``1`` playback, then digits 4 to 8
    of the 20-digit SIP domain id, then a 4-digit number unique within the domain (``sequence`` mod 10000)."""
    if not _ID20.fullmatch(server_id):
        raise ValueError(f"server id {server_id!r} is not 20 digits")
    return f"{0 if realtime else 1}{server_id[3:8]}{sequence % 10_000:04d}"


def ssrc_number(ssrc: str) -> int:
    """The RTP SSRC field for a ``y=`` value: the 10 digits read as a decimal number."""
    if not _SSRC.fullmatch(ssrc):
        raise SdpError("ssrc", repr(ssrc[:20]))
    return int(ssrc)


@dataclass(frozen=True, slots=True)
class MediaOffer:
    """What an INVITE asks of a device: where to send the PS stream."""

    origin_id: str  # o= user name: the requesting server's id
    session: str  # s=: Play, Playback, Download
    host: str
    port: int
    transport: Transport
    ssrc: str | None
    payload_type: int  # the one mapped to PS/90000
    setup: str | None  # TCP: the offerer's role ("passive": the device connects)
    direction: str  # recvonly for a live view


@dataclass(frozen=True, slots=True)
class MediaAnswer:
    """What a device answered: where its stream comes from and with which SSRC."""

    host: str
    port: int
    transport: Transport
    ssrc: str | None
    payload_type: int
    setup: str | None


def build_offer(*, server_id: str, host: str, port: int, transport: Transport, ssrc: str,
                session: str = "Play") -> str:
    """The SDP of an INVITE for a live stream received at ``host:port`` (TCP: we listen, the device connects)."""
    return _build(user=server_id, session=session, host=host, port=port, transport=transport, ssrc=ssrc,
                  payload_type=96, direction="recvonly", setup="passive" if transport == "tcp" else None)


def build_answer(*, device_id: str, host: str, port: int, transport: Transport, ssrc: str,
                 payload_type: int = 96, session: str = "Play") -> str:
    """A device's answer to :func:`build_offer`: it sends from ``host:port`` (TCP: it connects, active)."""
    return _build(user=device_id, session=session, host=host, port=port, transport=transport, ssrc=ssrc,
                  payload_type=payload_type, direction="sendonly",
                  setup="active" if transport == "tcp" else None)


def _build(*, user: str, session: str, host: str, port: int, transport: Transport, ssrc: str,
           payload_type: int, direction: str, setup: str | None) -> str:
    ssrc_number(ssrc)
    family = "IP6" if ":" in host else "IP4"
    proto = "TCP/RTP/AVP" if transport == "tcp" else "RTP/AVP"
    lines = ["v=0", f"o={user} 0 0 IN {family} {host}", f"s={session}", f"c=IN {family} {host}", "t=0 0",
             f"m=video {port} {proto} {payload_type}", f"a={direction}", f"a=rtpmap:{payload_type} PS/90000"]
    if setup is not None:
        lines += [f"a=setup:{setup}", "a=connection:new"]
    lines.append(f"y={ssrc}")
    return "\r\n".join(lines) + "\r\n"


@dataclass(slots=True)
class _Media:
    session: str = ""
    origin_id: str = ""
    host: str | None = None
    port: int = -1
    transport: Transport = "udp"
    formats: tuple[int, ...] = ()
    rtpmap: dict[int, str] | None = None
    setup: str | None = None
    direction: str = "sendrecv"
    ssrc: str | None = None


def parse_offer(sdp: str) -> MediaOffer:
    """An INVITE's SDP as a device sees it."""
    m = _parse(sdp)
    if m.port <= 0:
        raise SdpError("port", "an offer needs a port to send to")
    return MediaOffer(origin_id=m.origin_id, session=m.session, host=_host(m), port=m.port,
                      transport=m.transport, ssrc=m.ssrc, payload_type=_ps_type(m), setup=m.setup,
                      direction=m.direction)


def parse_answer(sdp: str) -> MediaAnswer:
    """A device's 200 OK SDP. Port 0 means the device refused the stream."""
    m = _parse(sdp)
    if m.port == 0:
        raise SdpError("rejected", "m= port 0")
    return MediaAnswer(host=_host(m), port=m.port, transport=m.transport, ssrc=m.ssrc,
                       payload_type=_ps_type(m), setup=m.setup)


def _host(m: _Media) -> str:
    if m.host is None:
        raise SdpError("no_connection", "no c= line")
    return m.host


def _ps_type(m: _Media) -> int:
    rtpmap = m.rtpmap or {}
    for pt in m.formats:
        if rtpmap.get(pt, "").upper() == "PS/90000":
            return pt
    if 96 in m.formats and 96 not in rtpmap:
        return 96  # devices that leave out the rtpmap of the standard's payload type
    raise SdpError("no_ps", "no payload type mapped to PS/90000")


def _parse(sdp: str) -> _Media:
    if not isinstance(sdp, str) or len(sdp) > MAX_SDP_CHARS:
        raise SdpError("size", "not text or longer than 8192 characters")
    lines = [line for line in re.split(r"\r?\n", sdp) if line.strip()]
    if not lines or lines[0].strip() != "v=0":
        raise SdpError("syntax", "does not start with v=0")
    m = _Media()
    seen_video = False
    in_other_media = False
    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=":
            raise SdpError("syntax", repr(line[:40]))
        kind, value = line[0], line[2:].strip()
        if kind == "m":
            in_other_media = not value.startswith("video ") or seen_video
            if not in_other_media:
                seen_video = True
                _media_line(m, value)
        elif in_other_media:
            continue
        elif kind == "o":
            m.origin_id = value.split(" ", 1)[0]
        elif kind == "s":
            m.session = value
        elif kind == "c":
            m.host = _connection(value)
        elif kind == "a":
            _attribute(m, value)
        elif kind == "y":
            if not _SSRC.fullmatch(value):
                raise SdpError("ssrc", repr(value[:20]))
            m.ssrc = value
    if not seen_video:
        raise SdpError("no_video", "no m=video line")
    return m


def _media_line(m: _Media, value: str) -> None:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError("syntax", "m= needs port, proto and formats")
    if not parts[1].isdigit() or int(parts[1]) > 65535 or not parts[1].isascii():
        raise SdpError("port", repr(parts[1][:10]))
    m.port = int(parts[1])
    if parts[2].upper() not in _PROTOS:
        raise SdpError("proto", repr(parts[2][:20]))
    m.transport = _PROTOS[parts[2].upper()]
    m.formats = tuple(_payload_type(p) for p in parts[3:])


def _payload_type(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > 127:
        raise SdpError("payload_type", repr(text[:10]))
    return int(text)


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError("connection", repr(value[:60]))
    host = parts[2].split("/", 1)[0]  # a multicast TTL suffix is not ours to use
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        if host.isascii() and _HOSTNAME.fullmatch(host):
            return host
        raise SdpError("connection", repr(host[:60])) from None


def _attribute(m: _Media, value: str) -> None:
    name, _, rest = value.partition(":")
    if name in ("sendonly", "recvonly", "sendrecv", "inactive"):
        m.direction = name
    elif name == "rtpmap":
        pt_text, _, encoding = rest.partition(" ")
        if m.rtpmap is None:
            m.rtpmap = {}
        m.rtpmap[_payload_type(pt_text.strip())] = encoding.strip()
    elif name == "setup":
        if rest.strip() not in _SETUPS:
            raise SdpError("setup", repr(rest[:20]))
        m.setup = rest.strip()
