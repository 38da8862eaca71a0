"""Reading what publishers and viewers send: SDP offers (RFC 8866) and trickle-ICE fragments (RFC 8840).

Pure functions over text. Anything malformed raises :class:`~video.errors.BadOffer` or
:class:`~video.errors.BadSdpFragment` with a reason a client can act on; nothing here touches a
peer connection. Parsing itself is aiortc's (``aiortc.sdp``), so what passes here is what aiortc accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiortc import RTCIceCandidate, RTCRtpCodecCapability, RTCRtpSender
from aiortc.codecs import CODECS
from aiortc.rtcpeerconnection import is_codec_compatible
from aiortc.sdp import MediaDescription, SessionDescription, candidate_from_sdp

from video.errors import BadOffer, BadSdpFragment

__all__ = [
    "FORWARDABLE",
    "MAX_SDP_BYTES",
    "Offer",
    "SdpFragment",
    "codec_preferences",
    "parse_offer",
    "parse_sdpfrag",
]

MAX_SDP_BYTES = 64 * 1024  # a browser offer is ~5 KB; anything near this is not a real offer
FORWARDABLE = ("VP8", "H264")  # in order of preference
Role = Literal["publish", "view"]
_DIRECTIONS: dict[Role, tuple[str, ...]] = {"publish": ("sendonly", "sendrecv"), "view": ("recvonly", "sendrecv")}


@dataclass(frozen=True, slots=True)
class Offer:
    sdp: str
    video_codecs: tuple[str, ...]  # forwardable codecs the peer offers for its video, in FORWARDABLE order
    ice_ufrag: str
    has_audio: bool
    primary_mid: str | None  # the m-line whose transport carries everything (first of the BUNDLE group)


@dataclass(frozen=True, slots=True)
class SdpFragment:
    ice_ufrag: str | None
    ice_pwd: str | None
    candidates: tuple[RTCIceCandidate, ...]
    end_of_candidates: bool


def _video_codecs(media: MediaDescription) -> tuple[str, ...]:
    local = [c for c in CODECS["video"] if c.name.upper() in FORWARDABLE]
    offered = {c.name.upper() for c in media.rtp.codecs if any(is_codec_compatible(mine, c) for mine in local)}
    return tuple(name for name in FORWARDABLE if name in offered)


def parse_offer(text: str, role: Role) -> Offer:
    """Check an offer from a publisher (``role="publish"``) or a viewer (``"view"``)."""
    if len(text.encode("utf-8", "replace")) > MAX_SDP_BYTES:
        raise BadOffer(f"the offer is larger than {MAX_SDP_BYTES} bytes")
    if not text.lstrip().startswith("v=0"):
        raise BadOffer("the body is not an SDP offer (it must start with v=0)")
    try:
        description = SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises whatever the bad line provokes
        raise BadOffer(f"the SDP offer cannot be parsed: {exc!r}") from exc
    videos = [m for m in description.media if m.kind == "video" and m.port != 0]
    if not videos:
        raise BadOffer("the offer has no video m-line")
    if len(videos) > 1:
        raise BadOffer("the offer has more than one video m-line; one video track per session")
    video = videos[0]
    direction = video.direction or "sendrecv"
    if direction not in _DIRECTIONS[role]:
        wanted = " or ".join(_DIRECTIONS[role])
        raise BadOffer(f"the video m-line is {direction}; to {role} it must be {wanted}")
    if video.ice is None or not video.ice.usernameFragment or not video.ice.password:
        raise BadOffer("the video m-line has no ICE credentials (a=ice-ufrag / a=ice-pwd)")
    if video.dtls is None or not video.dtls.fingerprints:
        raise BadOffer("the video m-line has no DTLS fingerprint (a=fingerprint)")
    codecs = _video_codecs(video)
    if not codecs:
        offered = sorted({c.name for c in video.rtp.codecs}) or ["none"]
        raise BadOffer(f"no forwardable video codec offered (need VP8 or H264 packetization-mode=1; got "
                       f"{', '.join(offered)})")
    has_audio = any(m.kind == "audio" and m.port != 0 for m in description.media)
    bundle = next((g for g in description.group if g.semantic == "BUNDLE" and g.items), None)
    primary_mid = str(bundle.items[0]) if bundle else video.rtp.muxId
    return Offer(sdp=text, video_codecs=codecs, ice_ufrag=video.ice.usernameFragment, has_audio=has_audio,
                 primary_mid=primary_mid)


def codec_preferences(codec: str) -> list[RTCRtpCodecCapability]:
    """aiortc's capabilities for one codec (every H.264 profile it has) plus RTX, for setCodecPreferences."""
    capabilities = RTCRtpSender.getCapabilities("video").codecs
    chosen = [c for c in capabilities if c.name.upper() == codec.upper()]
    rtx = [c for c in capabilities if c.name.lower() == "rtx"]
    return chosen + rtx


def parse_sdpfrag(text: str) -> SdpFragment:
    """Parse an ``application/trickle-ice-sdpfrag`` body: ICE credentials, candidates, end-of-candidates."""
    if len(text.encode("utf-8", "replace")) > MAX_SDP_BYTES:
        raise BadSdpFragment(f"the fragment is larger than {MAX_SDP_BYTES} bytes")
    ufrag: str | None = None
    pwd: str | None = None
    mid: str | None = None
    mline = -1
    candidates: list[RTCIceCandidate] = []
    end = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise BadSdpFragment(f"line {number} is not an SDP line: {line[:60]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            mline += 1
            mid = None
        elif kind == "a" and value.startswith("ice-ufrag:"):
            ufrag = value.partition(":")[2]
        elif kind == "a" and value.startswith("ice-pwd:"):
            pwd = value.partition(":")[2]
        elif kind == "a" and value.startswith("mid:"):
            mid = value.partition(":")[2]
        elif kind == "a" and value.startswith("candidate:"):
            try:
                candidate = candidate_from_sdp(value.partition(":")[2])
            except (AssertionError, ValueError, IndexError) as exc:
                raise BadSdpFragment(f"line {number}: malformed ICE candidate") from exc
            candidate.sdpMid = mid
            candidate.sdpMLineIndex = max(mline, 0)
            candidates.append(candidate)
        elif kind == "a" and value == "end-of-candidates":
            end = True
    return SdpFragment(ice_ufrag=ufrag, ice_pwd=pwd, candidates=tuple(candidates), end_of_candidates=end)
