"""Proxy mode against a real Janus (Debian's ``janus`` package): WHIP/WHEP through the hub's router, media via Janus.

One Janus runs for the module with a minimal configuration written into a temporary directory: only the
HTTP transport (on a free loopback port) and the VideoRoom plugin, and a 3-second session timeout so the
keep-alive is exercised within a short test. aiortc clients talk WHIP/WHEP to a FastAPI app (uvicorn on a
free port) serving :func:`video.http.video_router` over a :class:`video.proxy.ProxyService`.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import uvicorn
from aiortc import RTCPeerConnection, RTCSessionDescription
from fastapi import FastAPI

from hub.api import errors
from hub.infra.embedded import free_port
from tests.video.test_forward import Bars
from tests.video.test_http import auth, authorize_publish, authorize_view, error_code, offer
from video.client import WhepViewer, WhipPublisher
from video.crossing import cross_answers
from video.errors import BadOffer, MediaServerError, UnknownSession, Unsupported
from video.http import SDPFRAG, video_router
from video.janus import JanusHandle, JanusSession
from video.proxy import ProxyService
from video.service import StreamInfo, VideoService

SESSION_TIMEOUT_S = 3  # Janus's; the proxy keeps its session alive with a keepalive every second


@dataclass
class Janus:
    url: str
    fingerprint: str  # of Janus's DTLS certificate: an answer carrying it sends the client's media to Janus
    process: subprocess.Popen[bytes]


def _janus_libraries() -> Path:
    for folder in [*sorted(glob.glob("/usr/lib/*/janus")), "/usr/lib/janus", "/usr/local/lib/janus"]:
        if Path(folder, "plugins", "libjanus_videoroom.so").exists():
            return Path(folder)
    pytest.fail("Janus is installed but its VideoRoom plugin was not found under /usr/lib/*/janus/plugins")


def _write_config(folder: Path, port: int) -> Path:
    libraries = _janus_libraries()

    def others(kind: str, keep: str) -> str:
        return ",".join(p.name for p in sorted((libraries / kind).glob("libjanus_*.so")) if p.name != keep)

    (folder / "janus.jcfg").write_text(f"""general: {{
  configs_folder = "{folder}"
  plugins_folder = "{libraries}/plugins"
  transports_folder = "{libraries}/transports"
  events_folder = "{libraries}/events"
  loggers_folder = "{libraries}/loggers"
  debug_level = 4
  session_timeout = {SESSION_TIMEOUT_S}
}}
plugins: {{ disable = "{others('plugins', 'libjanus_videoroom.so')}" }}
transports: {{ disable = "{others('transports', 'libjanus_http.so')}" }}
loggers: {{ disable = "{others('loggers', '')}" }}
events: {{ broadcast = false }}
""")
    (folder / "janus.transport.http.jcfg").write_text(f"""general: {{
  json = "plain"
  base_path = "/janus"
  http = true
  port = {port}
  ip = "127.0.0.1"
  https = false
}}
admin: {{ admin_http = false }}
""")
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
    return folder / "janus.jcfg"


@pytest.fixture(scope="module")
def janus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Janus]:
    binary = shutil.which("janus")
    if binary is None:
        pytest.fail("Janus is not installed: `apt-get install -y janus` (Debian 12 ships 1.1.2; scripts/setup.sh "
                    "installs it)")
    folder = tmp_path_factory.mktemp("janus")
    port = free_port()
    config = _write_config(folder, port)
    log = (folder / "janus.log").open("wb")
    process = subprocess.Popen([binary, "-C", str(config), "-F", str(folder), "-o"], stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/janus"
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                pytest.fail(f"janus exited at start-up:\n{(folder / 'janus.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.post(url, json={"janus": "info", "transaction": "t"}, timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"janus did not answer on {url}:\n{(folder / 'janus.log').read_text()[-2000:]}")
            time.sleep(0.1)
        found = re.search(r"Fingerprint of our certificate: ([0-9A-F:]+)", (folder / "janus.log").read_text())
        assert found, "janus did not log its DTLS fingerprint"
        yield Janus(url, found.group(1), process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


@dataclass
class Hub:
    base: str
    proxy: ProxyService
    http: httpx.AsyncClient
    events: list[tuple[str, str]] = field(default_factory=list)  # (started|ended, stream id)


@contextlib.asynccontextmanager
async def serve(janus_url: str, **options: Any) -> AsyncIterator[Hub]:
    events: list[tuple[str, str]] = []

    def on_stream(event: str, info: StreamInfo) -> None:
        events.append((event, info.stream_id))

    async with ProxyService(janus_url, on_stream=on_stream, keepalive_s=1.0, **options) as proxy:
        app = FastAPI()
        errors.install(app)
        # The router is typed for VideoService; ProxyService has the same surface (see video/proxy.py).
        app.include_router(video_router(cast(VideoService, proxy), authorize_publish, authorize_view))
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               lifespan="off"))
        task = asyncio.create_task(server.serve())
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            yield Hub(f"http://127.0.0.1:{port}", proxy, http, events)
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def hub(janus: Janus) -> AsyncIterator[Hub]:
    async with serve(janus.url, max_viewers_per_stream=2) as running:
        yield running


@pytest.fixture
async def inspector(janus: Janus) -> AsyncIterator[JanusHandle]:
    """A VideoRoom handle of the test's own, to ask Janus what exists."""
    async with JanusSession(janus.url, keepalive_s=1.0) as session:
        yield await session.attach()


async def room_exists(inspector: JanusHandle, room: int) -> bool:
    return bool((await inspector.request({"request": "exists", "room": room})).data["exists"])


async def handle_gone(hub: Hub, janus: Janus, handle_id: int) -> bool:
    """Whether the proxy's Janus session no longer has the handle (asked over raw HTTP, not counted by it)."""
    assert hub.proxy.janus is not None
    message = {"janus": "message", "body": {"request": "exists", "room": 1}, "transaction": "probe"}
    reply = (await hub.http.post(f"{janus.url}/{hub.proxy.janus.session_id}/{handle_id}", json=message)).json()
    return bool(reply["janus"] == "error" and reply["error"]["code"] == 459)  # Janus: "No such handle"


async def ended(hub: Hub, stream_id: str, within_s: float = 10) -> None:
    """Wait for the proxy to report the stream ended (its on_stream callback comes last)."""
    async with asyncio.timeout(within_s):
        while ("ended", stream_id) not in hub.events:
            await asyncio.sleep(0.05)


async def frames(viewer: WhepViewer, count: int) -> list[tuple[int, int]]:
    return [((p := await asyncio.wait_for(viewer.recv(), 10)).width, p.height) for _ in range(count)]


async def test_whip_and_whep_through_janus(janus: Janus, hub: Hub, inspector: JanusHandle) -> None:
    async with WhipPublisher(f"{hub.base}/whip/cam-1", "cam-token", Bars()) as publisher:
        stream_id = await publisher.start()
        assert publisher.session_url == f"{hub.base}/whip/cam-1/{stream_id}"
        [info] = hub.proxy.streams()
        assert (info.stream_id, info.device_id, info.codec) == (stream_id, "cam-1", "VP8")
        published = hub.proxy.placement(stream_id)
        assert await room_exists(inspector, published.room)
        async with WhepViewer(f"{hub.base}/whep/{stream_id}", "viewer-token") as viewer:
            await viewer.start()
            assert viewer.pc.remoteDescription is not None
            assert janus.fingerprint in viewer.pc.remoteDescription.sdp  # the viewer's DTLS peer is Janus
            assert await frames(viewer, 10) == [(320, 240)] * 10
            assert hub.proxy.stream_of_device("cam-1") == replace(info, viewers=1)
            assert viewer.session_id is not None
            watched = hub.proxy.placement(viewer.session_id)
            assert watched.room == published.room and watched.handle_id != published.handle_id
        assert hub.proxy.streams()[0].viewers == 0  # the viewer's exit sent DELETE
        assert await handle_gone(hub, janus, watched.handle_id)  # ... which detached its Janus handle
    assert hub.proxy.streams() == []  # and so did the publisher's
    assert not await room_exists(inspector, published.room)
    assert await handle_gone(hub, janus, published.handle_id)
    assert hub.events == [("started", stream_id), ("ended", stream_id)]
    stats = hub.proxy.stats()
    assert (stats["streams_total"], stats["viewers_total"], stats["janus_errors"]) == (1, 1, 0)


async def test_the_session_outlives_janus_session_timeout_and_survives_its_loss(
        janus: Janus, hub: Hub, inspector: JanusHandle) -> None:
    async with WhipPublisher(f"{hub.base}/whip/cam-1", "cam-token", Bars()) as publisher:
        stream_id = await publisher.start()
        await asyncio.sleep(SESSION_TIMEOUT_S + 2)  # keepalives hold the Janus session, so the stream lives
        async with WhepViewer(f"{hub.base}/whep/{stream_id}", "viewer-token") as viewer:
            await viewer.start()
            assert await frames(viewer, 3) == [(320, 240)] * 3
        # Janus forgets the session (as after a restart): the proxy ends its streams and starts afresh.
        assert hub.proxy.janus is not None and hub.proxy.janus.session_id is not None
        room = hub.proxy.placement(stream_id).room
        await hub.http.post(f"{janus.url}/{hub.proxy.janus.session_id}", json={"janus": "destroy",
                                                                              "transaction": "x"})
        await ended(hub, stream_id)
        assert hub.proxy.streams() == [] and hub.proxy.stats()["janus_sessions_lost"] == 1
        assert not await room_exists(inspector, room)
    async with WhipPublisher(f"{hub.base}/whip/cam-1", "cam-token", Bars()) as again:
        await again.start()  # a new Janus session is opened on demand
        assert len(hub.proxy.streams()) == 1


async def test_refusals_and_trickle_through_the_proxy(hub: Hub, pcs: list[RTCPeerConnection]) -> None:
    http = hub.http
    r = await http.post("/whip/cam-1", content="v=0\r\nnot sdp", headers=auth("cam-token"))
    assert (r.status_code, error_code(r)) == (400, "bad_offer")
    r = await http.post("/whep/nope", content=await offer(pcs, "recvonly"), headers=auth("viewer-token"))
    assert (r.status_code, error_code(r)) == (404, "unknown_stream")
    async with WhipPublisher(f"{hub.base}/whip/cam-1", "cam-token", Bars(), http=http) as publisher:
        stream_id = await publisher.start()
        with pytest.raises(Unsupported) as mismatch:  # VP8 stream, H.264-only viewer: Janus does not transcode
            async with WhepViewer(f"{hub.base}/whep/{stream_id}", "viewer-token", codecs=["H264"]) as h264:
                await h264.start()
        assert (mismatch.value.status, mismatch.value.code) == (406, "codec_unsupported")
        assert hub.proxy.streams()[0].viewers == 0  # the refused viewer's handle was dropped

        first, second = (WhepViewer(f"{hub.base}/whep/{stream_id}", "viewer-token") for _ in range(2))
        async with first, second:
            await first.start()
            await second.start()
            r = await http.post(f"/whep/{stream_id}", content=await offer(pcs, "recvonly"),
                                headers=auth("viewer-token"))
            assert (r.status_code, error_code(r)) == (503, "too_many_viewers")
            assert await frames(second, 3) == [(320, 240)] * 3

        session = f"/whip/cam-1/{stream_id}"
        frag = auth("cam-token", SDPFRAG, **{"If-Match": f'"{stream_id}"'})
        candidate = "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n"
        r = await http.patch(session, content=candidate, headers=frag)  # handed on to Janus as a trickle
        assert r.status_code == 204
        restart = "a=ice-ufrag:newU\r\na=ice-pwd:newpasswordnewpassword12\r\n"
        r = await http.patch(session, content=restart, headers=frag)
        assert (r.status_code, error_code(r)) == (422, "ice_restart_unsupported")
        assert hub.proxy.stats()["janus_errors"] == 0  # Janus took the trickled candidate

        # A second publish from the same device replaces the first stream (and its room).
        room = hub.proxy.placement(stream_id).room
        async with WhipPublisher(f"{hub.base}/whip/cam-1", "cam-token", Bars(), http=http) as replacement:
            new_id = await replacement.start()
            assert [s.stream_id for s in hub.proxy.streams()] == [new_id]
            assert hub.events[-2:] == [("ended", stream_id), ("started", new_id)]
            assert hub.proxy.placement(new_id).room != room
    with pytest.raises(UnknownSession):
        hub.proxy.placement(stream_id)


async def test_an_unreachable_media_server_is_a_clear_error(pcs: list[RTCPeerConnection]) -> None:
    async with serve(f"http://127.0.0.1:{free_port()}/janus") as down:
        r = await down.http.post("/whip/cam-1", content=await offer(pcs, "sendonly"), headers=auth("cam-token"))
        assert error_code(r) == "media_server" and r.status_code == 502
        assert "did not answer" in r.json()["error"]["message"] and down.proxy.streams() == []


@pytest.fixture
async def pcs() -> AsyncIterator[list[RTCPeerConnection]]:
    made: list[RTCPeerConnection] = []
    yield made
    await asyncio.gather(*(pc.close() for pc in made))



async def test_a_publisher_that_vanishes_or_never_connects_is_ended(janus: Janus, pcs: list[RTCPeerConnection],
                                                                     inspector: JanusHandle) -> None:
    async with serve(janus.url, connect_timeout_s=1.5) as hub:
        publisher = WhipPublisher(f"{hub.base}/whip/cam-1", "cam-token", Bars(), http=hub.http)
        stream_id = await publisher.start()
        room = hub.proxy.placement(stream_id).room
        await asyncio.sleep(2.0)  # past the connect deadline: it connected, so it stays
        assert [s.stream_id for s in hub.proxy.streams()] == [stream_id]
        await publisher.pc.close()  # gone without a DELETE: Janus hangs up, the proxy ends the stream
        await ended(hub, stream_id)
        assert hub.events == [("started", stream_id), ("ended", stream_id)] and hub.proxy.stats()["hangups"] == 1
        assert not await room_exists(inspector, room)

        # An offer whose answer is never applied: no PeerConnection comes up, the deadline ends the stream.
        r = await hub.http.post("/whip/cam-2", content=await offer(pcs, "sendonly"), headers=auth("other-token"))
        assert r.status_code == 201 and len(hub.proxy.streams()) == 1
        await ended(hub, r.headers["location"].rsplit("/", 1)[1], within_s=5)
        assert hub.proxy.streams() == []


# -- the offer crossing, on a real Janus 1.1.2 subscriber offer ------------------------------------------------

JANUS_OFFER = """v=0
o=- 1796210486995653 1 IN IP4 192.0.2.2
s=VideoRoom 1107453001094211
t=0 0
a=group:BUNDLE 0
a=ice-options:trickle
a=fingerprint:sha-256 36:7A:DB:15:95:AE:15:0B:4E:B9:79:F4:E6:67:49:EB:6B:8C:8C:65:E7:DE:6C:1F:DD:E2:0A:5C:B9:3A:FF:FB
a=extmap-allow-mixed
a=msid-semantic: WMS *
m=video 9 UDP/TLS/RTP/SAVPF 96 97
c=IN IP4 192.0.2.2
a=sendonly
a=mid:0
a=rtcp-mux
a=ice-ufrag:utDS
a=ice-pwd:uOidZti8RazyP3sBHZv15T
a=ice-options:trickle
a=setup:actpass
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 transport-cc
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=ssrc-group:FID 1280967467 644522972
a=msid:janus janus0
a=ssrc:1280967467 cname:janus
a=ssrc:644522972 cname:janus
a=candidate:1 1 udp 2015363327 192.0.2.2 48791 typ host
a=end-of-candidates
""".replace("\n", "\r\n")


def lines_of(sdp: str, media: int) -> list[str]:
    """The lines of the m-section number ``media`` (0-based)."""
    return sdp.split("m=")[media + 1].splitlines()


async def test_cross_answers_swap_the_transports_and_keep_janus_payload_types(
        pcs: list[RTCPeerConnection]) -> None:
    viewer = RTCPeerConnection()
    pcs.append(viewer)
    viewer.addTransceiver("audio", direction="recvonly")  # a browser-like offer: audio first, then video
    viewer.addTransceiver("video", direction="recvonly")
    await viewer.setLocalDescription(await viewer.createOffer())
    viewer_offer = viewer.localDescription.sdp
    viewer_ufrag = re.search(r"a=ice-ufrag:(\S+)", viewer_offer)
    assert viewer_ufrag is not None

    for_viewer, for_janus = cross_answers(viewer_offer, JANUS_OFFER)

    audio, video = lines_of(for_viewer, 0), lines_of(for_viewer, 1)
    assert "a=inactive" in audio and "a=mid:0" in audio  # the stream has no audio: declined, mid kept
    assert video[0].startswith("video 9 UDP/TLS/RTP/SAVPF 96 97") and "a=sendonly" in video and "a=mid:1" in video
    assert {"a=rtpmap:96 VP8/90000", "a=fmtp:97 apt=96", "a=ssrc:1280967467 cname:janus", "a=setup:passive",
            "a=ice-ufrag:utDS", "a=candidate:1 1 udp 2015363327 192.0.2.2 48791 typ host"} <= set(video)
    assert not any(line.startswith("a=extmap") for line in video)  # no header extensions either way
    assert "a=group:BUNDLE 0 1" in for_viewer
    await viewer.setRemoteDescription(RTCSessionDescription(for_viewer, "answer"))  # aiortc takes it

    [back] = [lines_of(for_janus, 0)]
    assert back[0].startswith("video 9 UDP/TLS/RTP/SAVPF 96 97")
    assert {"a=recvonly", "a=mid:0", "a=setup:active", f"a=ice-ufrag:{viewer_ufrag.group(1)}",
            "a=rtcp-fb:96 nack pli"} <= set(back)
    assert "36:7A:DB" not in for_janus and "a=group:BUNDLE 0" in for_janus
    assert any(line.startswith("a=candidate:") for line in back)  # the viewer's gathered candidates


async def test_cross_answers_refuse_what_cannot_be_crossed(pcs: list[RTCPeerConnection]) -> None:
    h264_only = await offer(pcs, "recvonly", "H264")
    with pytest.raises(Unsupported) as mismatch:
        cross_answers(h264_only, JANUS_OFFER)
    assert mismatch.value.code == "codec_unsupported" and "VP8" in mismatch.value.message
    good = await offer(pcs, "recvonly")
    with pytest.raises(MediaServerError):
        cross_answers(good, JANUS_OFFER.replace("a=fingerprint:", "a=x-fingerprint:"))
    with pytest.raises(MediaServerError):
        cross_answers(good, "v=0\r\nm=video nonsense\r\n")
    with pytest.raises(BadOffer):
        cross_answers("v=0\r\nm=video nonsense\r\n", JANUS_OFFER)
