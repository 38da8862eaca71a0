"""Crossed answers: a WHEP viewer's offer meets a Janus 1.1 VideoRoom subscriber's offer.

Janus 1.1 (the version Debian 12 ships) cannot take an SDP offer from a VideoRoom subscriber: it always
makes the offer itself, while a WHEP viewer sends one. :func:`cross_answers` closes the gap without
touching media: it answers the viewer's offer with Janus's transport and stream (its ICE credentials,
candidates, fingerprint, SSRCs, payload types) and answers Janus's offer with the viewer's. Both sides
then believe they made the offer, so both start as ICE controlling, which ICE's role-conflict repair (RFC
8445 7.3.1.1) settles; the DTLS roles are fixed here (the viewer is the DTLS client, Janus the server).
"""

from __future__ import annotations

import copy
import uuid

from aiortc import RTCDtlsParameters, RTCRtpCodecParameters
from aiortc.rtcpeerconnection import is_codec_compatible
from aiortc.sdp import GroupDescription, MediaDescription, SessionDescription

from video.errors import BadOffer, MediaServerError, Unsupported

__all__ = ["cross_answers"]


def _codecs_for(sender: MediaDescription, receiver: MediaDescription) -> list[RTCRtpCodecParameters]:
    """The sender's first codec the receiver also offered, then its RTX, with the feedback both support.

    The payload types are the sender's: they are the numbers on the packets Janus actually sends.
    """
    for codec in sender.rtp.codecs:
        if codec.name.lower() == "rtx":
            continue
        theirs = next((c for c in receiver.rtp.codecs if is_codec_compatible(codec, c)), None)
        if theirs is None:
            continue
        chosen = copy.deepcopy(codec)
        chosen.rtcpFeedback = [f for f in codec.rtcpFeedback if f in theirs.rtcpFeedback]
        result = [chosen]
        if any(c.name.lower() == "rtx" for c in receiver.rtp.codecs):
            result += [copy.deepcopy(c) for c in sender.rtp.codecs
                       if c.name.lower() == "rtx" and c.parameters.get("apt") == codec.payloadType]
        return result
    return []


def _answer_media(offered: MediaDescription, transport: MediaDescription, direction: str, dtls_role: str,
                  codecs: list[RTCRtpCodecParameters]) -> MediaDescription:
    """An answer to the ``offered`` m-line whose ICE/DTLS identity and candidates are ``transport``'s."""
    fmt = [c.payloadType for c in codecs] or offered.fmt[:1]
    media = MediaDescription(offered.kind, 9, offered.profile, fmt)
    media.host = "0.0.0.0"
    media.direction = direction if codecs else "inactive"
    media.rtp.muxId = offered.rtp.muxId
    media.rtp.codecs = codecs or copy.deepcopy(offered.rtp.codecs[:1])
    media.rtcp_port, media.rtcp_mux = 9, True
    media.ice = copy.deepcopy(transport.ice)
    media.ice_candidates = copy.deepcopy(transport.ice_candidates)
    media.ice_candidates_complete = transport.ice_candidates_complete
    assert transport.dtls is not None
    media.dtls = RTCDtlsParameters(fingerprints=copy.deepcopy(transport.dtls.fingerprints), role=dtls_role)
    return media


def _session(media: list[MediaDescription]) -> str:
    session = SessionDescription()
    session.origin = f"- {uuid.uuid4().int % 10**15} 1 IN IP4 0.0.0.0"
    session.group = [GroupDescription("BUNDLE", [m.rtp.muxId for m in media if m.rtp.muxId])]
    session.msid_semantic = [GroupDescription("WMS", ["*"])]
    session.media = media
    return str(session)


def _transport(description: SessionDescription, who: str) -> MediaDescription:
    """The m-line that carries the bundle's transport: the first with ICE credentials and a fingerprint."""
    for media in description.media:
        if media.port != 0 and media.ice and media.ice.usernameFragment and media.dtls and media.dtls.fingerprints:
            return media
    raise MediaServerError(f"the {who} SDP has no m-line with ICE credentials and a DTLS fingerprint")


def cross_answers(viewer_offer: str, janus_offer: str) -> tuple[str, str]:
    """(answer for the viewer, answer for Janus) from the viewer's recvonly offer and Janus's sendonly one.

    Raises :class:`Unsupported` when the viewer takes none of the codecs the stream is sent in,
    :class:`BadOffer` for an unparsable viewer offer, :class:`MediaServerError` for an unusable Janus one.
    """
    try:
        viewer = SessionDescription.parse(viewer_offer)
    except Exception as exc:  # aiortc's parser raises whatever the bad line provokes
        raise BadOffer(f"the SDP offer cannot be parsed: {exc!r}") from exc
    try:
        janus = SessionDescription.parse(janus_offer)
    except Exception as exc:
        raise MediaServerError(f"Janus sent an SDP offer that cannot be parsed: {exc!r}") from exc
    viewer_transport, janus_transport = _transport(viewer, "viewer's"), _transport(janus, "Janus")
    # Pair m-lines by kind, in order: Janus offers exactly the publisher's tracks.
    pairs: dict[int, MediaDescription] = {}
    unused = [m for m in janus.media if m.port != 0]
    for index, media in enumerate(viewer.media):
        match = next((m for m in unused if m.kind == media.kind), None) if media.port != 0 else None
        if match is not None:
            unused.remove(match)
            pairs[index] = match
    to_viewer: list[MediaDescription] = []
    to_janus: dict[str, MediaDescription] = {}
    for index, media in enumerate(viewer.media):
        theirs = pairs.get(index)
        codecs = _codecs_for(theirs, media) if theirs is not None else []
        if theirs is not None and media.kind == "video" and not codecs:
            offered = sorted({c.name for c in media.rtp.codecs if c.name.lower() != "rtx"})
            sent = sorted({c.name for c in theirs.rtp.codecs if c.name.lower() != "rtx"})
            raise Unsupported(f"the stream is sent as {', '.join(sent)} and the viewer offers only "
                              f"{', '.join(offered)}; proxied streams are not transcoded", code="codec_unsupported")
        # The viewer's offer is actpass: "passive" makes it the DTLS client, and Janus, told "active"
        # below, the DTLS server.
        to_viewer.append(_answer_media(media, janus_transport, "sendonly", "server", codecs))
        if theirs is not None and theirs.rtp.muxId is not None:
            back = _answer_media(theirs, viewer_transport, "recvonly", "client", codecs)
            to_janus[theirs.rtp.muxId] = back
        if theirs is not None and codecs:
            to_viewer[-1].ssrc, to_viewer[-1].ssrc_group = theirs.ssrc, theirs.ssrc_group
            to_viewer[-1].msid = theirs.msid
    for media in janus.media:  # tracks the viewer did not ask for: declined, Janus sends nothing on them
        if media.rtp.muxId is not None and media.rtp.muxId not in to_janus:
            to_janus[media.rtp.muxId] = _answer_media(media, viewer_transport, "recvonly", "client", [])
    janus_order = [to_janus[m.rtp.muxId] for m in janus.media if m.rtp.muxId in to_janus]
    return _session(to_viewer), _session(janus_order)
