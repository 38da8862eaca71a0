"""WHIP/WHEP over real HTTP: the router in a FastAPI app served by uvicorn, aiortc clients on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from aiortc import RTCPeerConnection, RTCRtpSender
from fastapi import FastAPI

from hub.api import errors
from hub.api.errors import ApiError
from hub.infra.embedded import free_port
from tests.video.test_forward import Bars
from video.client import WhepViewer, WhipPublisher
from video.errors import TooManyViewers, UnknownStream, Unsupported, VideoError
from video.http import SDP, SDPFRAG, video_router
from video.service import VideoService

PUBLISH_TOKENS = {"cam-token": "cam-1", "other-token": "cam-2"}
VIEW_TOKENS = {"viewer-token"}


async def authorize_publish(device_id: str, token: str | None) -> None:
    if token is None:
        raise ApiError(401, "unauthorized", "missing bearer token")
    if PUBLISH_TOKENS.get(token) != device_id:
        raise ApiError(403, "forbidden", "this token may not publish for this device")


async def authorize_view(token: str | None) -> None:
    if token not in VIEW_TOKENS:
        raise ApiError(401, "unauthorized", "missing or unknown bearer token")


@dataclass
class Server:
    base: str
    service: VideoService
    http: httpx.AsyncClient


@contextlib.asynccontextmanager
async def serve(**options: Any) -> AsyncIterator[Server]:
    async with VideoService(max_viewers_per_stream=2, **options) as service:
        app = FastAPI()
        errors.install(app)
        app.include_router(video_router(service, authorize_publish, authorize_view))
        port = free_port()
        uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
        task = asyncio.create_task(uv.serve())
        async with asyncio.timeout(10):
            while not uv.started:
                await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            yield Server(f"http://127.0.0.1:{port}", service, http)
        uv.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with serve() as running:
        yield running


@pytest.fixture
async def pcs() -> AsyncIterator[list[RTCPeerConnection]]:
    made: list[RTCPeerConnection] = []
    yield made
    await asyncio.gather(*(pc.close() for pc in made))


async def offer(pcs: list[RTCPeerConnection], direction: str, codec: str | None = None) -> str:
    pc = RTCPeerConnection()
    pcs.append(pc)
    transceiver = pc.addTransceiver(Bars() if direction == "sendonly" else "video", direction=direction)
    if codec:
        transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs if c.name == codec])
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


def auth(token: str, content_type: str = SDP, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": content_type, **extra}


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


async def test_whip_publish_then_whep_view_end_to_end(server: Server) -> None:
    async with WhipPublisher(f"{server.base}/whip/cam-1", "cam-token", Bars()) as publisher:
        stream_id = await publisher.start()
        assert publisher.session_url == f"{server.base}/whip/cam-1/{stream_id}"
        assert [s.stream_id for s in server.service.streams()] == [stream_id]
        async with WhepViewer(f"{server.base}/whep/{stream_id}", "viewer-token") as viewer:
            await viewer.start()
            assert viewer.stream_id == stream_id and viewer.session_id
            for _ in range(10):
                picture = await asyncio.wait_for(viewer.recv(), 5)
                assert (picture.width, picture.height) == (320, 240)
            assert server.service.streams()[0].viewers == 1
        assert server.service.streams()[0].viewers == 0  # the viewer's exit sent DELETE
    assert server.service.streams() == []  # and so did the publisher's


async def test_whip_refusals(server: Server, pcs: list[RTCPeerConnection]) -> None:
    good = await offer(pcs, "sendonly")
    http = server.http
    r = await http.post("/whip/cam-1", content=good, headers={"Content-Type": SDP})
    assert (r.status_code, error_code(r)) == (401, "unauthorized")
    r = await http.post("/whip/cam-1", content=good, headers=auth("other-token"))
    assert (r.status_code, error_code(r)) == (403, "forbidden")
    r = await http.post("/whip/cam-1", content=good, headers=auth("cam-token", "application/json"))
    assert (r.status_code, error_code(r)) == (415, "unsupported_media_type")
    r = await http.post("/whip/cam-1", content="v=0\r\nthis is not sdp", headers=auth("cam-token"))
    assert (r.status_code, error_code(r)) == (400, "bad_offer")
    r = await http.post("/whip/cam-1", content=b"\xff\xfe", headers=auth("cam-token"))
    assert (r.status_code, error_code(r)) == (400, "bad_offer")
    r = await http.post("/whip/cam-1", content=await offer(pcs, "recvonly"), headers=auth("cam-token"))
    assert (r.status_code, error_code(r)) == (400, "bad_offer") and "recvonly" in r.json()["error"]["message"]
    r = await http.post("/whip/cam-1", content="v=0\r\n" + "a=x\r\n" * 20000, headers=auth("cam-token"))
    assert (r.status_code, error_code(r)) == (413, "too_large")
    r = await http.options("/whip/cam-1")
    assert r.status_code == 204 and r.headers["accept-post"] == SDP
    assert server.service.streams() == []
    with pytest.raises(VideoError) as refused:
        async with WhipPublisher(f"{server.base}/whip/cam-1", "wrong", Bars()) as publisher:
            await publisher.start()
    assert (refused.value.status, refused.value.code) == (403, "forbidden")


async def test_whip_session_patch_and_delete(server: Server, pcs: list[RTCPeerConnection]) -> None:
    http = server.http
    r = await http.post("/whip/cam-1", content=await offer(pcs, "sendonly"), headers=auth("cam-token"))
    assert r.status_code == 201 and r.headers["content-type"] == SDP and "a=candidate:" in r.text
    session, etag = r.headers["location"], r.headers["etag"]
    session_id = session.rsplit("/", 1)[1]
    assert session == f"/whip/cam-1/{session_id}" and etag == f'"{session_id}"'
    candidate = "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
    frag = auth("cam-token", SDPFRAG, **{"If-Match": etag})

    r = await http.patch(session, content=candidate, headers=frag)
    assert r.status_code == 204 and not r.content and "etag" not in r.headers
    r = await http.patch(session, content=candidate + "a=end-of-candidates\r\n", headers=frag)
    assert r.status_code == 204
    r = await http.patch(session, content=candidate, headers=auth("cam-token", SDPFRAG))
    assert (r.status_code, error_code(r)) == (428, "precondition_required")
    r = await http.patch(session, content=candidate, headers=auth("cam-token", SDPFRAG, **{"If-Match": '"old"'}))
    assert (r.status_code, error_code(r)) == (412, "precondition_failed")
    restart = "a=ice-ufrag:newU\r\na=ice-pwd:newpasswordnewpassword12\r\n"
    r = await http.patch(session, content=restart, headers=auth("cam-token", SDPFRAG, **{"If-Match": "*"}))
    assert (r.status_code, error_code(r)) == (422, "ice_restart_unsupported")
    r = await http.patch(session, content=restart, headers=frag)
    assert (r.status_code, error_code(r)) == (422, "ice_restart_unsupported")
    r = await http.patch(session, content="a=candidate:garbage\r\n", headers=frag)
    assert (r.status_code, error_code(r)) == (400, "bad_sdpfrag")
    r = await http.patch(session, content=candidate, headers=auth("cam-token", SDP, **{"If-Match": etag}))
    assert r.status_code == 415
    r = await http.patch("/whip/cam-1/nope", content=candidate, headers=frag)
    assert (r.status_code, error_code(r)) == (404, "unknown_session")
    r = await http.get(session, headers=auth("cam-token"))
    assert r.status_code == 405
    r = await http.delete(session.replace("cam-1", "cam-2"), headers=auth("other-token"))
    assert r.status_code == 404  # another device's URL does not reach this session
    r = await http.delete(session, headers=auth("other-token"))
    assert r.status_code == 403
    assert len(server.service.streams()) == 1
    r = await http.delete(session, headers=auth("cam-token"))
    assert r.status_code == 200 and server.service.streams() == []
    r = await http.delete(session, headers=auth("cam-token"))
    assert (r.status_code, error_code(r)) == (404, "unknown_session")


async def test_whep_refusals(server: Server, pcs: list[RTCPeerConnection]) -> None:
    url = f"{server.base}/whep"
    with pytest.raises(UnknownStream) as unknown:
        async with WhepViewer(f"{url}/nope", "viewer-token") as viewer:
            await viewer.start()
    assert unknown.value.status == 404
    async with WhipPublisher(f"{server.base}/whip/cam-1", "cam-token", Bars()) as publisher:
        stream_id = await publisher.start()
        r = await server.http.post(
            f"/whep/{stream_id}", content=await offer(pcs, "recvonly"), headers=auth("cam-token")
        )
        assert (r.status_code, error_code(r)) == (401, "unauthorized")
        r = await server.http.post(f"/whep/{stream_id}", content="nonsense", headers=auth("viewer-token"))
        assert (r.status_code, error_code(r)) == (400, "bad_offer")
        no_codec = (await offer(pcs, "recvonly")).replace("VP8/", "VP9/").replace("H264/", "AV1/")
        r = await server.http.post(f"/whep/{stream_id}", content=no_codec, headers=auth("viewer-token"))
        assert (r.status_code, error_code(r)) == (400, "bad_offer") and "codec" in r.json()["error"]["message"]
        async with WhepViewer(f"{url}/{stream_id}", "viewer-token", codecs=["H264"]) as h264_viewer:
            await h264_viewer.start()  # takes no VP8: the hub transcodes for it
            picture = await asyncio.wait_for(h264_viewer.recv(), 8)
            assert (picture.width, picture.height) == (320, 240)
        first, second = (WhepViewer(f"{url}/{stream_id}", "viewer-token") for _ in range(2))
        async with first, second:
            await first.start()
            await second.start()
            with pytest.raises(TooManyViewers) as full:
                async with WhepViewer(f"{url}/{stream_id}", "viewer-token") as third:
                    await third.start()
            assert full.value.status == 503
            assert first.session_url is not None
            r = await server.http.delete(first.session_url.replace(stream_id, "other"), headers=auth("viewer-token"))
            assert r.status_code == 404
            r = await server.http.delete(first.session_url, headers=auth("viewer-token"))
            assert r.status_code == 200 and server.service.streams()[0].viewers == 1
            r = await server.http.delete(f"{server.base}/whep/{stream_id}/{stream_id}", headers=auth("viewer-token"))
            assert r.status_code == 404  # a publisher's session is not a viewer's to end
        assert server.service.streams()[0].viewers == 0


async def test_a_codec_the_hub_will_not_transcode_is_406() -> None:
    async with (
        serve(transcode=False) as server,
        WhipPublisher(f"{server.base}/whip/cam-1", "cam-token", Bars(), http=server.http) as publisher,
    ):
        stream_id = await publisher.start()
        with pytest.raises(Unsupported) as mismatch:
            async with WhepViewer(f"{server.base}/whep/{stream_id}", "viewer-token", codecs=["H264"]) as viewer:
                await viewer.start()
        assert (mismatch.value.status, mismatch.value.code) == (406, "codec_unsupported")
