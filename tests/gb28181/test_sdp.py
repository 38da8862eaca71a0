"""GB/T 28181 SDP: the offer the hub sends, a device's answer, real devices' variants, and hostile text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gb28181.sdp import (
    SdpError,
    build_answer,
    build_offer,
    make_ssrc,
    parse_answer,
    parse_offer,
    ssrc_number,
)

SERVER = "34020000002000000001"
DEVICE = "34020000001320000001"


def test_ssrc_per_the_standard() -> None:
    # GB/T 28181-2016 9.2.1's own example: domain digits 4..8 of 13010000002000000001 are "10000".
    assert make_ssrc("13010000002000000001", 1) == "0100000001"
    assert make_ssrc(SERVER, 12, realtime=False) == "1200000012"
    assert make_ssrc(SERVER, 10_007) == "0200000007"
    assert ssrc_number("0100000001") == 100000001
    with pytest.raises(ValueError):
        make_ssrc("3402", 1)
    for bad in ("2100000001", "01000000", "01000000011", "01000a0001"):
        with pytest.raises(SdpError):
            ssrc_number(bad)


def test_udp_offer_as_cameras_expect_it() -> None:
    sdp = build_offer(server_id=SERVER, host="192.168.1.10", port=30000, transport="udp", ssrc="0200000001")
    assert sdp.splitlines() == [
        "v=0", f"o={SERVER} 0 0 IN IP4 192.168.1.10", "s=Play", "c=IN IP4 192.168.1.10", "t=0 0",
        "m=video 30000 RTP/AVP 96", "a=recvonly", "a=rtpmap:96 PS/90000", "y=0200000001"]
    assert sdp.endswith("\r\n")
    offer = parse_offer(sdp)
    assert (offer.origin_id, offer.host, offer.port, offer.transport, offer.ssrc, offer.payload_type,
            offer.direction, offer.setup) == (SERVER, "192.168.1.10", 30000, "udp", "0200000001", 96,
                                              "recvonly", None)


def test_tcp_passive_offer_and_active_answer() -> None:
    sdp = build_offer(server_id=SERVER, host="10.0.0.1", port=30002, transport="tcp", ssrc="0200000002")
    assert "m=video 30002 TCP/RTP/AVP 96" in sdp
    assert "a=setup:passive\r\na=connection:new" in sdp
    offer = parse_offer(sdp)
    assert (offer.transport, offer.setup) == ("tcp", "passive")
    answer = parse_answer(build_answer(device_id=DEVICE, host="10.0.0.2", port=9, transport="tcp",
                                       ssrc="0200000002"))
    assert (answer.host, answer.port, answer.transport, answer.ssrc, answer.payload_type, answer.setup) == (
        "10.0.0.2", 9, "tcp", "0200000002", 96, "active")


def test_a_real_cameras_answer_with_several_formats_and_lf_line_ends() -> None:
    sdp = ("v=0\no=34020000001320000001 2083 2083 IN IP4 192.168.1.64\ns=Play\nc=IN IP4 192.168.1.64\n"
           "t=0 0\nm=video 15060 RTP/AVP/TCP 98 96\na=sendonly\na=rtpmap:98 H264/90000\n"
           "a=rtpmap:96 PS/90000\na=setup:active\na=connection:new\ny=0200000003\nf=v/2/5/25/1/4000a///\n"
           "m=audio 15062 RTP/AVP 8\na=rtpmap:8 PCMA/8000\n")
    answer = parse_answer(sdp)
    assert (answer.port, answer.transport, answer.payload_type, answer.ssrc) == (15060, "tcp", 96, "0200000003")


@pytest.mark.parametrize(("sdp", "reason"), [
    ("", "syntax"),
    ("v=1\r\n", "syntax"),
    ("v=0\r\ns=Play\r\n", "no_video"),
    ("v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 PS/90000\r\n", "rejected"),
    ("v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 5000 RTP/SAVP 96\r\n", "proto"),
    ("v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 99999 RTP/AVP 96\r\n", "port"),
    ("v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 5000 RTP/AVP 98\r\na=rtpmap:98 H264/90000\r\n", "no_ps"),
    ("v=0\r\nm=video 5000 RTP/AVP 96\r\n", "no_connection"),
    ("v=0\r\nc=IN IP4 bad host!\r\nm=video 5000 RTP/AVP 96\r\n", "connection"),
    ("v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 5000 RTP/AVP 96\r\ny=12345\r\n", "ssrc"),
    ("v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 5000 RTP/AVP 300\r\n", "payload_type"),
    ("v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 5000 RTP/AVP 96\r\na=setup:sideways\r\n", "setup"),
    ("v=0\r\nnonsense\r\n", "syntax"),
    ("v=0\r\n" + "a=x\r\n" * 3000, "size"),
])
def test_broken_answers_are_refused_with_a_reason(sdp: str, reason: str) -> None:
    with pytest.raises(SdpError) as caught:
        parse_answer(sdp)
    assert caught.value.reason == reason


LINE = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["m=video 5000 RTP/AVP 96", "m=video ９ RTP/AVP 96", "c=IN IP4 1.2.3.4", "c=IN IP6 ::1",
                     "a=rtpmap:96 PS/90000", "a=rtpmap:x", "a=rtpmap:96", "y=0100000001", "y=", "a=setup:",
                     "m=video", "m=video 1 TCP/RTP/AVP", "c=IN IP4 ١٢٣", "o=", "s=", "m=audio 1 RTP/AVP 8"]),
)


@given(st.lists(LINE, max_size=12), st.sampled_from(["\r\n", "\n", "\r"]))
def test_hostile_sdp_raises_only_sdp_error(lines: list[str], sep: str) -> None:
    sdp = sep.join(["v=0", *lines])
    for parse in (parse_offer, parse_answer):
        try:
            parsed = parse(sdp)
        except SdpError:
            continue
        assert 0 <= parsed.port <= 65535
        assert parsed.transport in ("udp", "tcp")


@given(st.text(max_size=300))
def test_any_text_raises_only_sdp_error(sdp: str) -> None:
    with pytest.raises(SdpError):
        parse_offer(sdp)
