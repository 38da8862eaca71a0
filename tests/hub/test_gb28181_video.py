"""GB/T 28181 video in a running hub: the simulated camera (SIP digest, INVITE answered with PS/RTP H.264 made by
PyAV) opened on demand and watched over WHEP, its stream ended by BYE when the last viewer has gone; its alarm
raising an SOS whose video the hub starts by INVITE (the camera's 200 recorded as the command's ack) and stops by
BYE when the incident closes; and FFmpeg's own MPEG-PS carried over RTP through the gateway's receiver into the
relay, decoded by a WHEP viewer."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest

from devices.clock import now_ms
from gb28181.media import MediaReceiver
from gb28181.rtp import packetize
from hub.config import Settings
from sim.framecode import read_code
from sim.gb28181_camera import GbCamera, GbCameraConfig
from sim.gb28181_stream import StreamSettings
from tests.conftest import TOKEN, RunningHub, running_hub, wait_for
from video.client import WhepViewer

SERVER = "34020000002000000001"
CAM = "34020000001320000101"
UNIT = "GBV-1"
HERE = (34.2610, 117.1859)

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="FFmpeg (Debian) is not installed")


@pytest.fixture
async def gbhub(settings: Settings) -> AsyncIterator[RunningHub]:
    enabled = settings.model_copy(update={"gb28181": True, "gb28181_host": "127.0.0.1", "gb28181_port": 0,
                                          "gb28181_idle_s": 2.0, "gb28181_no_media_s": 5.0})
    async with running_hub(enabled) as rh:
        yield rh


async def provision(hub: RunningHub, device_id: str = CAM, unit_id: str = UNIT) -> str:
    await hub.put_unit(unit_id, [])
    admin = await hub.hub.create_token("admin", "installer")
    async with httpx.AsyncClient(base_url=hub.base_url, headers={"Authorization": f"Bearer {admin}"}) as api:
        r = await api.post("/api/v1/devices", json={"device_id": device_id, "unit_id": unit_id,
                                                    "protocol": "gb28181", "kind": "bodycam"})
        assert r.status_code == 201, r.text
        return str(r.json()["password"])


@contextlib.asynccontextmanager
async def camera(hub: RunningHub, password: str, **extra: Any) -> AsyncIterator[GbCamera]:
    assert hub.hub.gb28181 is not None
    config = GbCameraConfig(CAM, password, SERVER, "127.0.0.1", hub.hub.gb28181.udp_port,
                            stream=StreamSettings(width=640, height=360, fps=15.0, gop_s=1.0, bitrate=1_000_000),
                            **extra)
    async with GbCamera(config, position=lambda: (*HERE, 0.0, 0.0)) as cam:
        await asyncio.wait_for(cam.registered.wait(), 15)
        yield cam


async def watch(hub: RunningHub, stream_id: str, frames: int) -> list[tuple[int, int]]:
    """Decode ``frames`` pictures over WHEP; their burned-in frame codes."""
    codes = []
    viewer = WhepViewer(f"{hub.base_url}/whep/{stream_id}", TOKEN)
    async with viewer:
        await viewer.start()
        for _ in range(frames):
            frame = await asyncio.wait_for(viewer.recv(), 15)
            code = read_code(frame.to_ndarray(format="rgb24"))
            if code is not None:
                codes.append(code)
    return codes


async def test_a_camera_opened_on_demand_plays_over_whep_and_is_hung_up_when_nobody_watches(
        gbhub: RunningHub) -> None:
    password = await provision(gbhub)
    async with camera(gbhub, password) as cam:
        # The camera set its clock from the hub's Date, which is in the cameras' zone (UTC+8): it is right.
        assert abs(cam.clock_offset_s) < 5, cam.clock_offset_s
        r = await gbhub.api.post(f"/api/v1/cameras/{CAM}/live")
        assert r.status_code == 200, r.text
        stream_id = r.json()["stream_id"]
        # Asked twice: the same live stream, no second INVITE.
        again = await gbhub.api.post(f"/api/v1/cameras/{CAM}/live")
        assert again.json()["stream_id"] == stream_id and cam.counters.invites == 1
        listed = (await gbhub.api.get("/api/v1/streams")).json()["streams"]
        assert [(s["stream_id"], s["device_id"], s["unit_id"]) for s in listed] == [(stream_id, CAM, UNIT)]
        codes = await watch(gbhub, stream_id, 20)
        assert len(codes) >= 15, codes
        metrics = (await gbhub.api.get("/metrics")).text
        assert "fieldhub_gb28181_streams 1.0" in metrics
        assert 'fieldhub_gb28181_video_total{event="invites"} 1.0' in metrics
        assert 'fieldhub_gb28181_queries_total{event="catalogs"} 1.0' in metrics
        numbers = [n for n, _ in codes]
        assert numbers == sorted(numbers) and numbers[-1] > numbers[0]  # frame codes rising: live, in order
        # The viewer left: after the idle time the hub hangs up and the stream ends.
        await wait_for(lambda: not gbhub.hub.video.service.streams(), timeout=15)  # type: ignore[union-attr]
        video = gbhub.hub.camera_video
        assert video is not None and video.counters["ended_idle"] == 1
        await wait_for(lambda: not cam.media.calls, timeout=10)
    # Refusals: not a GB/T 28181 camera; a camera that is not registered.
    assert (await gbhub.api.post("/api/v1/cameras/some-mqtt-cam/live")).status_code == 404
    r = await gbhub.api.post(f"/api/v1/cameras/{CAM}/live")
    assert r.status_code in (409, 504) and r.json()["error"]["code"] in ("camera_offline", "camera_no_answer")


async def test_an_alarm_starts_the_sos_video_by_invite_and_closing_the_incident_hangs_up(gbhub: RunningHub) -> None:
    password = await provision(gbhub)
    async with camera(gbhub, password, position_interval_s=1.0) as cam:
        await wait_for(lambda: gbhub.hub.live.units[UNIT].fix is not None, timeout=15)
        fix = gbhub.hub.live.units[UNIT].fix
        assert fix is not None and abs(fix.ts - now_ms()) < 10_000  # the camera's local time read as its zone
        await cam.raise_alarm(description="officer down")
        # The SOS opens a priority-1 incident and starts the unit's cameras: the hub INVITEs this one.
        streams: list[dict[str, Any]] = []

        async def live() -> bool:
            streams[:] = (await gbhub.api.get("/api/v1/streams")).json()["streams"]
            return bool(streams)

        await wait_for(live, timeout=20)
        [stream] = streams
        incident_id = stream["incident_id"]
        assert incident_id is not None and stream["device_id"] == CAM
        assert len(await watch(gbhub, stream["stream_id"], 10)) >= 5
        log = (await gbhub.api.get(f"/api/v1/incidents/{incident_id}")).json()
        text = " ".join(str(e) for e in log.get("log", log.get("events", [])))
        assert "video_start sent to " + CAM in text and "video started from " + CAM in text
        # The camera's 200 was its signature: the command is acknowledged, not re-sent.
        assert cam.counters.invites == 1
        r = await gbhub.api.post(f"/api/v1/incidents/{incident_id}/close", json={"reason": "resolved"})
        assert r.status_code == 200, r.text
        await wait_for(lambda: not gbhub.hub.video.service.streams(), timeout=15)  # type: ignore[union-attr]
        await wait_for(lambda: not cam.media.calls, timeout=10)
        assert gbhub.hub.camera_video is not None and gbhub.hub.camera_video.counters["ended_video_stop"] == 1


def void(_: object) -> None:
    """A callback's result dropped (the receiver's frame callback returns nothing)."""


def ffmpeg_ps(seconds: int) -> bytes:
    """A real MPEG-PS with H.264 from FFmpeg (Debian), 640x360 at 25 fps, a key frame every second."""
    return subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-bf", "0", "-g", "25",
         "-f", "mpeg", "pipe:1"], check=True, capture_output=True, timeout=60).stdout


@needs_ffmpeg
async def test_ffmpeg_mpeg_ps_over_rtp_reaches_a_whep_viewer(gbhub: RunningHub) -> None:
    ps = ffmpeg_ps(4)
    # Split at pack headers: each pack goes out as one RTP "frame" (marker on its last packet), as cameras do.
    starts = [i for i in range(len(ps) - 3) if ps[i:i + 4] == b"\x00\x00\x01\xba"]
    packs = [ps[a:b] for a, b in zip(starts, [*starts[1:], len(ps)], strict=True)]
    assert len(packs) > 50
    service = gbhub.hub.video.service  # type: ignore[union-attr]
    await gbhub.put_unit("FF", ["ffmpeg-cam"])
    publisher = await service.publish_encoded("ffmpeg-cam", "H264")  # type: ignore[union-attr]
    receiver = MediaReceiver(host="127.0.0.1", transport="udp", ssrc=123456,
                             on_frame=lambda data, pts, key: void(publisher.push(data, pts, key)))
    port = await receiver.start()
    loop = asyncio.get_running_loop()
    sender, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=("127.0.0.1", port))

    async def send() -> None:
        seq = 0
        for n, pack in enumerate(packs):
            for packet in packetize(pack, ssrc=123456, sequence=seq, timestamp=n * 3600):
                sender.sendto(packet)
                seq += 1
            await asyncio.sleep(1 / 25)

    try:
        feeding = asyncio.create_task(send())
        viewer = WhepViewer(f"{gbhub.base_url}/whep/{publisher.stream_id}", TOKEN)
        async with viewer:
            await viewer.start()
            frames = [await asyncio.wait_for(viewer.recv(), 15) for _ in range(25)]
        assert {(f.width, f.height) for f in frames} == {(640, 360)}
        assert np.asarray(frames[-1].to_ndarray(format="gray")).std() > 10  # a picture, not a blank
        await feeding
        counters = receiver.counters
        assert counters["frames"] >= 90 and not any(k.startswith("drop") and v for k, v in counters.items())
    finally:
        sender.close()
        await receiver.stop()
        await publisher.end()


async def test_a_camera_that_restarts_is_subscribed_and_queried_anew_and_its_stream_ends(gbhub: RunningHub) -> None:
    """A camera that reboots registers again with a new Call-ID without having unregistered: its calls and its
    position subscription died with it, so the hub ends the stream and subscribes and queries again."""
    password = await provision(gbhub)
    async with camera(gbhub, password) as before:
        r = await gbhub.api.post(f"/api/v1/cameras/{CAM}/live")
        assert r.status_code == 200, r.text
        await wait_for(lambda: before.media.calls, timeout=10)
        gateway = gbhub.hub.gb28181
        assert gateway is not None
        async with camera(gbhub, password) as after:  # the same camera, rebooted: a new registration session
            assert gateway.registrar.counters["restarted"] == 1
            await wait_for(lambda: after.counters.queries_answered >= 2 and after.subscription.dialog is not None,
                           timeout=15)
            await wait_for(lambda: not gbhub.hub.video.service.streams(), timeout=10)  # type: ignore[union-attr]
            assert gbhub.hub.camera_video is not None and gbhub.hub.camera_video.counters["ended_offline"] == 1
            await after.stop()


async def test_video_over_tcp_the_camera_connects_to_the_hubs_passive_port(settings: Settings) -> None:
    """FIELDHUB_GB28181_MEDIA_TRANSPORT=tcp (cameras behind NAT): the offer is TCP/RTP/AVP passive, the camera
    connects and sends RFC 4571-framed RTP, the viewer decodes it."""
    tcp = settings.model_copy(update={"gb28181": True, "gb28181_host": "127.0.0.1", "gb28181_port": 0,
                                      "gb28181_media_transport": "tcp"})
    async with running_hub(tcp) as hub:
        password = await provision(hub)
        async with camera(hub, password) as cam:
            r = await hub.api.post(f"/api/v1/cameras/{CAM}/live")
            assert r.status_code == 200, r.text
            assert len(await watch(hub, r.json()["stream_id"], 15)) >= 10
            [call] = cam.media.calls.values()
            assert call.offer.transport == "tcp" and call.offer.setup == "passive"
