"""Offers and trickle-ICE fragments, good and broken, including a Chromium-style offer with mDNS candidates."""

from __future__ import annotations

import pytest

from video.errors import BadOffer, BadSdpFragment
from video.sdp import codec_preferences, parse_offer, parse_sdpfrag
from video.service import VideoService

FINGERPRINT = ("a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:"
               "58:D0:A1:2C:19:08")
# Shaped like Chromium's WHIP offer: audio first, BUNDLE, VP8/VP9/H264 variants, an mDNS host candidate.
CHROMIUM_OFFER = "\r\n".join([
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS stream",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:1467250027 1 udp 2122260223 4c3e8a4b-1b2c-4d5e-9f60-1a2b3c4d5e6f.local 54400 typ host generation 0",
    "a=ice-ufrag:Vh3q",
    "a=ice-pwd:J5pZbH2cdM1yV3rZ6gU8sT4k",
    "a=ice-options:trickle",
    FINGERPRINT,
    "a=setup:actpass",
    "a=mid:0",
    "a=sendonly",
    "a=msid:stream audio",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=ssrc:1001 cname:abc",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 102 103",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:Vh3q",
    "a=ice-pwd:J5pZbH2cdM1yV3rZ6gU8sT4k",
    "a=ice-options:trickle",
    FINGERPRINT,
    "a=setup:actpass",
    "a=mid:1",
    "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=sendonly",
    "a=msid:stream video",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "a=rtpmap:96 VP8/90000",
    "a=rtcp-fb:96 goog-remb",
    "a=rtcp-fb:96 nack",
    "a=rtcp-fb:96 nack pli",
    "a=rtpmap:97 rtx/90000",
    "a=fmtp:97 apt=96",
    "a=rtpmap:98 VP9/90000",
    "a=rtpmap:99 rtx/90000",
    "a=fmtp:99 apt=98",
    "a=rtpmap:102 H264/90000",
    "a=rtcp-fb:102 nack pli",
    "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    "a=rtpmap:103 rtx/90000",
    "a=fmtp:103 apt=102",
    "a=ssrc-group:FID 2001 2002",
    "a=ssrc:2001 cname:abc",
    "a=ssrc:2002 cname:abc",
    "",
])


def test_a_chromium_offer_is_accepted() -> None:
    offer = parse_offer(CHROMIUM_OFFER, "publish")
    assert offer.video_codecs == ("VP8", "H264") and offer.has_audio
    assert (offer.ice_ufrag, offer.primary_mid) == ("Vh3q", "0")
    with pytest.raises(BadOffer, match="sendonly; to view"):
        parse_offer(CHROMIUM_OFFER, "view")


async def test_the_service_answers_a_chromium_offer_with_mdns_candidates_and_declines_audio() -> None:
    async with VideoService() as service:
        answer = await service.publish("browser-cam", CHROMIUM_OFFER)
        assert "a=candidate:" in answer.sdp and "m=audio" in answer.sdp
        audio, video = answer.sdp.split("m=video")
        assert "a=inactive" in audio and "a=recvonly" in video and "VP8/90000" in video and "H264" not in video
        await service.patch(answer.session_id, "a=mid:0\r\na=candidate:2 1 udp 2122194687 "
                                               "0b5f2c1e-aaaa-bbbb-cccc-ddddeeeeffff.local 54401 typ host\r\n")
        await service.end(answer.session_id)


@pytest.mark.parametrize(("text", "reason"), [
    ("", "not an SDP offer"),
    ("{\"sdp\": \"v=0\"}", "not an SDP offer"),
    ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=video\r\n", "cannot be parsed"),
    (CHROMIUM_OFFER.split("m=video")[0], "no video m-line"),
    (CHROMIUM_OFFER.replace("m=video 9", "m=video 0"), "no video m-line"),
    (CHROMIUM_OFFER + CHROMIUM_OFFER[CHROMIUM_OFFER.index("m=video"):].replace("a=mid:1", "a=mid:2"), "more than one"),
    (CHROMIUM_OFFER.replace("a=sendonly", "a=recvonly"), "recvonly"),
    (CHROMIUM_OFFER.replace("VP8/90000", "AV1/90000").replace("packetization-mode=1", "packetization-mode=0"),
     "no forwardable video codec"),
    (CHROMIUM_OFFER.replace("a=fingerprint:", "a=x-fingerprint:"), "fingerprint"),
    ("v=0\r\n" + "a=x\r\n" * 20000, "larger than"),
])
def test_broken_offers_say_why(text: str, reason: str) -> None:
    with pytest.raises(BadOffer, match=reason) as refused:
        parse_offer(text, "publish")
    assert refused.value.code == "bad_offer"


def test_sdpfrag_with_candidates_credentials_and_end() -> None:
    fragment = parse_sdpfrag(
        "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n"
        "a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n"
        "a=candidate:3471623853 1 udp 2122194687 198.51.100.1 61765 typ srflx raddr 10.0.0.1 rport 5000\r\n"
        "a=candidate:473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active generation 0\r\n"
        "a=end-of-candidates\r\n")
    assert (fragment.ice_ufrag, fragment.ice_pwd, fragment.end_of_candidates) == (
        "EsAw", "P2uYro0UCOQ4zxjKXaWCBui1", True)
    first, srflx, tcp = fragment.candidates
    assert (first.ip, first.port, first.type, first.sdpMid, first.sdpMLineIndex) == ("192.0.2.1", 61764, "host", "0", 0)
    assert (srflx.type, srflx.relatedAddress, srflx.relatedPort) == ("srflx", "10.0.0.1", 5000)
    assert (tcp.protocol, tcp.tcpType) == ("tcp", "active")
    empty = parse_sdpfrag("")
    assert empty.candidates == () and empty.ice_ufrag is None and not empty.end_of_candidates


@pytest.mark.parametrize("text", [
    "a=candidate:1 1 udp\r\n",
    "a=candidate:1 1 udp notanumber 192.0.2.1 9 typ host\r\n",
    "this is not sdp\r\n",
    "a=ice-ufrag:x\r\n" * 10000,
])
def test_broken_sdpfrags_are_refused(text: str) -> None:
    with pytest.raises(BadSdpFragment):
        parse_sdpfrag(text)


def test_codec_preferences_name_one_codec_and_rtx() -> None:
    assert {c.name for c in codec_preferences("H264")} == {"H264", "rtx"}
    assert [c.name for c in codec_preferences("vp8")] == ["VP8", "rtx"]
