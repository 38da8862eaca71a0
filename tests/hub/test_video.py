"""Live video in the hub: tokens from a real `video_start`, WHIP publish and WHEP view through the hub's own
HTTP server, the streams list and live feed, the incident log, `video_stop`, recordings. Real Mosquitto,
PostgreSQL, aiortc peer connections over loopback and libvpx, at 320x240."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import av
import httpx
import numpy as np
import psycopg
import pytest
import websockets
from aiortc import VideoStreamTrack

from devices.client import DeviceClient
from devices.clock import now_ms
from devices.payloads import Command
from geo.geodesy import offset
from hub.config import Settings
from hub.domain.commands import video_start_command
from hub.infra.embedded import free_port
from hub.storage.video import VideoStore
from sim.video_devices import SimCameras
from tests.conftest import TOKEN, RunningHub, running_hub, wait_for
from tests.hub.test_incidents_api import INCIDENT, LAT, LON, drive_in, incident, milestone, parked, send
from video.client import WhepViewer, WhipPublisher
from video.errors import VideoError
from video.recording import list_segments

WIDTH, HEIGHT = 320, 240


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"auto_dispatch_priority": 0, "ack_timeout_s": 5.0, "video_segment_s": 60.0,
                                       "public_base_url": f"http://127.0.0.1:{settings.port}"})


class Pattern(VideoStreamTrack):
    """A cheap synthetic camera: a bar moving over a grey picture."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        picture = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
        x = (self.count * 8) % WIDTH
        picture[:, x:x + 16] = (20, 200, 240)
        self.count += 1
        frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        return frame


def notes(view: dict[str, Any]) -> list[str]:
    return [e["text"] for e in view["log"] if e["type"] == "note"]


async def noted(hub: RunningHub, incident_id: str, text: str) -> list[str]:
    async def found() -> Any:
        texts = notes(await incident(hub, incident_id))
        return texts if any(text in t for t in texts) else None

    result: list[str] = await wait_for(found, timeout=10)
    return result


async def commands_of(dev: DeviceClient, kind: str, count: int = 1) -> list[Command]:
    await wait_for(lambda: len([c for c in dev.commands if c.type == kind]) >= count, timeout=10)
    return [c for c in dev.commands if c.type == kind]


class Feed:
    """The live feed as a browser sees it, collected in the background."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            async for raw in self.ws:
                self.messages.append(json.loads(raw))

    def video(self, state: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == "video" and m["state"] == state]


@contextlib.asynccontextmanager
async def live_feed(hub: RunningHub) -> AsyncIterator[Feed]:
    url = hub.base_url.replace("http", "ws") + "/api/v1/live"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        feed = Feed(ws)
        yield feed
        feed._task.cancel()


async def first_frames(viewer: WhepViewer, count: int) -> list[av.VideoFrame]:
    return [await asyncio.wait_for(viewer.recv(), 10) for _ in range(count)]


async def located_camera_unit(hub: RunningHub, unit_id: str, trk: DeviceClient, body: DeviceClient,
                              origin: tuple[float, float]) -> None:
    send(trk, parked(*origin, now_ms() - 2000, 2))
    await wait_for(lambda: hub.hub.live.units[unit_id].fix is not None)
    await wait_for(lambda: hub.hub.live.devices[body.device_id].kind == "bodycam")


async def dispatch_and_arrive(hub: RunningHub, unit_id: str, trk: DeviceClient,
                              origin: tuple[float, float]) -> tuple[str, tuple[float, float]]:
    """A new incident, the unit dispatched to it, driven in and parked: arrived. Returns (incident, where it parked)."""
    iid: str = (await hub.api.post("/api/v1/incidents", json={**INCIDENT, "priority": 3})).json()["id"]
    r = await hub.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": [unit_id]})
    dispatched_ts = r.json()["assignments"][0]["dispatched"]
    await milestone(hub, iid, "acknowledged")
    still = parked(*origin, dispatched_ts + 1000, 20)
    moving = drive_in(still[-1].ts + 1000)
    send(trk, still + moving + parked(moving[-1].lat, moving[-1].lon, moving[-1].ts + 1000, 180))
    await milestone(hub, iid, "arrived")
    return iid, (moving[-1].lat, moving[-1].lon)


async def test_arrival_backhaul_publish_view_stream_log_stop_and_recording(hub: RunningHub) -> None:
    """Arrival -> video_start -> WHIP publish with its token -> WHEP viewer decodes 320x240 -> streams list and live
    feed -> camera's `video` event noted -> stream ends (feed, database, log) -> recording plays back -> close sends
    video_stop and says so."""
    origin = offset(LAT, LON, -1505.0, 0)
    await hub.put_unit("V1", ["v1-trk", "v1-body"])
    viewer_token = await hub.hub.create_token("viewer", "wall")
    url = hub.hub.mqtt_url or ""
    async with DeviceClient("v1-trk", url, unit_id="V1") as trk, \
            DeviceClient("v1-body", url, unit_id="V1", kind="bodycam") as body, live_feed(hub) as feed:
        await located_camera_unit(hub, "V1", trk, body, origin)
        iid, scene = await dispatch_and_arrive(hub, "V1", trk, origin)
        [start] = await commands_of(body, "video_start")
        assert start.body["whip_url"] == f"{hub.base_url}/whip/v1-body"

        publisher = WhipPublisher(start.body["whip_url"], start.body["token"], Pattern())
        stream_id = await publisher.start()
        try:
            assert publisher.session_url is not None and publisher.session_url.endswith(f"/{stream_id}")
            viewer = WhepViewer(f"{hub.base_url}/whep/{stream_id}", viewer_token)
            await viewer.start()
            try:
                frames = await first_frames(viewer, 5)
                assert {(f.width, f.height) for f in frames} == {(WIDTH, HEIGHT)}
                [listed] = (await hub.api.get("/api/v1/streams")).json()["streams"]
                assert listed["stream_id"] == stream_id and listed["device_id"] == "v1-body"
                assert listed["unit_id"] == "V1" and listed["incident_id"] == iid
                assert listed["codec"] == "VP8" and listed["viewers"] == 1
                assert abs(listed["position"]["lat"] - scene[0]) < 1e-6
                assert listed["started_at"] <= now_ms()
                metrics = (await hub.api.get("/metrics")).text
                assert "fieldhub_video_streams 1.0" in metrics and "fieldhub_video_viewers 1.0" in metrics
                frames_in = next(line for line in metrics.splitlines()
                                 if line.startswith('fieldhub_video_relay_total{counter="frames_in"}'))
                assert float(frames_in.split()[-1]) >= 5
            finally:
                await viewer.stop()
            async with live_feed(hub) as late:  # a client that connects now gets the stream in its snapshot
                snapshot = await wait_for(lambda: late.messages and late.messages[0])
                assert [s["stream_id"] for s in snapshot["streams"]] == [stream_id]
            [started] = await wait_for(lambda: feed.video("started"))
            assert started["stream_id"] == stream_id and started["unit_id"] == "V1"
            assert started["incident_id"] == iid and started["position"] is not None
            body.send_event("video", state="started", stream_id=stream_id)
            await noted(hub, iid, f"camera v1-body reports video started (stream {stream_id})")
        finally:
            await publisher.stop()

        [ended] = await wait_for(lambda: feed.video("ended"))
        assert ended["stream_id"] == stream_id and ended["ended_at"] >= started["started_at"]
        assert (await hub.api.get("/api/v1/streams")).json() == {"streams": []}
        body.send_event("video", state="stopped", stream_id=stream_id)  # after its end: still its incident's
        await noted(hub, iid, f"camera v1-body reports video stopped (stream {stream_id})")
        texts = await noted(hub, iid, f"video ended from v1-body (stream {stream_id})")
        sources = {e["text"]: e["source"] for e in (await incident(hub, iid))["log"] if e["type"] == "note"}
        assert sources[f"camera v1-body reports video stopped (stream {stream_id})"] == "device"
        assert sources[f"video ended from v1-body (stream {stream_id})"] == "system"
        assert f"video_start sent to v1-body (cmd {start.cmd_id})" in texts
        assert f"video started from v1-body (stream {stream_id})" in texts
        row = await hub.hub.video.store.stream(stream_id)  # type: ignore[union-attr]
        assert row is not None and row["ended_at"] is not None and row["incident_id"] == iid

        # The recording: a real file that plays back, as many pictures as its sidecar says.
        root = hub.hub.video.recordings_dir  # type: ignore[union-attr]
        segments = await wait_for(lambda: [s for s in list_segments(root, stream_id) if s.complete], timeout=10)
        decoded = 0
        with av.open(str(segments[0].path)) as container:
            for frame in container.decode(video=0):
                assert (frame.width, frame.height) == (WIDTH, HEIGHT)
                decoded += 1
        assert decoded == segments[0].frames > 0
        # Every frame the relay took in went to the recorder; all but those before the first key frame were written.
        desk = hub.hub.video
        assert desk is not None and len(segments) == 1
        relayed = desk.service.stats()["frames_in"]
        assert desk.recorded["frames_in"] == relayed
        assert decoded == desk.recorded["frames_written"] == relayed - desk.recorded["waiting_for_keyframe"]
        listing = (await hub.api.get(f"/api/v1/incidents/{iid}/recordings")).json()["recordings"]
        assert [(s["stream_id"], s["frames"]) for s in listing] == [(stream_id, segments[0].frames)]
        got = await hub.api.get(f"/api/v1/recordings/{listing[0]['path']}")
        assert got.status_code == 200 and got.content == segments[0].path.read_bytes()

        # Retention: kept for video_retention_days (30), gone after.
        assert await desk.prune() == 0 and segments[0].path.exists()
        assert await desk.prune(now_ms() + 31 * 86_400_000) == 1 and not segments[0].path.exists()

        # Close: video_stop to the camera, noted while the log still takes entries; the token is dead.
        r = await hub.api.post(f"/api/v1/incidents/{iid}/close", json={"reason": "done"})
        assert r.status_code == 200, r.text
        [stop] = await commands_of(body, "video_stop")
        assert stop.body["incident_id"] == iid
        assert f"video_stop sent to v1-body (cmd {stop.cmd_id})" in notes(r.json())
        with pytest.raises(VideoError) as refused:
            await WhipPublisher(start.body["whip_url"], start.body["token"], Pattern()).start()
        assert refused.value.code == "token_stopped"


async def whip(hub: RunningHub, device_id: str, token: str | None, body: str = "v=0\r\n",
               content_type: str = "application/sdp") -> httpx.Response:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as client:
        return await client.post(f"/whip/{device_id}", content=body, headers=headers)


async def issue(hub: RunningHub, device_id: str, incident_id: str | None, ttl_ms: int = 60_000) -> str:
    """A token exactly as a `video_start` issues it (the desk stores it before the command would go out)."""
    command = video_start_command(device_id, incident_id, hub.base_url, now_ms(), ttl_ms)
    await hub.hub.video.register_token(command, device_id, None)  # type: ignore[union-attr]
    token: str = command.body["token"]
    return token


async def test_publish_and_view_refusals(hub: RunningHub) -> None:
    await hub.put_unit("R1", ["r1-body"])
    await hub.put_unit("R2", ["r2-body"])
    own, other = await issue(hub, "r1-body", None), await issue(hub, "r2-body", None)
    expired = await issue(hub, "r1-body", None, ttl_ms=-1)
    cases = [(None, "r1-body", 401, "unauthorized"), ("fh_not_a_token", "r1-body", 401, "unauthorized"),
             (TOKEN, "r1-body", 401, "unauthorized"),  # a dispatcher's API token does not publish
             (expired, "r1-body", 401, "token_expired"), (other, "r1-body", 403, "forbidden"),
             (own, "ghost-cam", 404, "unknown_device"), (own, "r1-body", 400, "bad_offer")]
    for token, device_id, status, code in cases:
        r = await whip(hub, device_id, token)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (token, device_id, r.text)
    assert "expired" in (await whip(hub, "r1-body", expired)).json()["error"]["message"]

    # Viewing: API tokens of viewer/dispatcher/admin only; a device's token or a video_start token cannot watch.
    device_token = await hub.hub.create_token("device", "r1-body")
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as client:
        for token, status in [(device_token, 403), (own, 401), (None, 401)]:
            headers = {"Content-Type": "application/sdp", **({"Authorization": f"Bearer {token}"} if token else {})}
            r = await client.post("/whep/no-such-stream", content="v=0\r\n", headers=headers)
            assert r.status_code == status, r.text
        r = await client.post("/whep/no-such-stream", content="v=0\r\n",
                              headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {TOKEN}"})
        assert r.status_code in (400, 404), r.text  # authorized: now the offer and the stream are checked
    assert hub.hub.video is not None and hub.hub.video.service.streams() == []


async def test_admin_token_publishes_and_recordings_follow_the_dispatch_window(hub: RunningHub) -> None:
    """Decision: an admin's API token may publish for any device the hub knows (a fixed camera, a test feed);
    the stream belongs to the unit's current incident, if any. An incident lists the recordings of its units
    from their dispatch on, not what they recorded before."""
    await hub.put_unit("A1", ["a1-cam"])
    admin = await hub.hub.create_token("admin", "ops")
    desk = hub.hub.video
    assert desk is not None

    async def publish_a_while() -> str:
        frames = desk.service.stats()["frames_in"]
        async with WhipPublisher(f"{hub.base_url}/whip/a1-cam", admin, Pattern()) as publisher:
            stream_id = await publisher.start()
            await wait_for(lambda: desk.service.stats()["frames_in"] > frames + 3)
            [listed] = (await hub.api.get("/api/v1/streams")).json()["streams"]
        assert (listed["stream_id"], listed["device_id"], listed["unit_id"]) == (stream_id, "a1-cam", "A1")
        await wait_for(lambda: list_segments(desk.recordings_dir, stream_id))
        return stream_id

    await publish_a_while()  # before any incident
    iid = (await hub.api.post("/api/v1/incidents", json={**INCIDENT, "priority": 3})).json()["id"]
    r = await hub.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": ["A1"]})
    assert r.status_code == 200, r.text
    during = await publish_a_while()
    row = await desk.store.stream(during)
    assert row is not None and row["incident_id"] == iid
    listing = (await hub.api.get(f"/api/v1/incidents/{iid}/recordings")).json()["recordings"]
    assert {s["stream_id"] for s in listing} == {during}
    assert all(s["unit_id"] == "A1" and s["device_id"] == "a1-cam" and s["frames"] > 0 for s in listing)
    r = await hub.api.get("/api/v1/incidents/I-none/recordings")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    with pytest.raises(VideoError) as refused:
        await WhipPublisher(f"{hub.base_url}/whip/ghost", admin, Pattern()).start()
    assert refused.value.code == "unknown_device"


async def test_shutdown_ends_live_streams_and_tokens_survive_a_restart(settings: Settings) -> None:
    """The stream ends with the hub; its token, used, stays used after the restart; an unused token of the same
    device stays valid, and is refused once its incident stops its video."""
    async with running_hub(settings) as hub:
        await hub.put_unit("K1", ["k1-body"])
        token = await issue(hub, "k1-body", "I-test")
        unused = await issue(hub, "k1-body", "I-test")
        publisher = WhipPublisher(f"{hub.base_url}/whip/k1-body", token, Pattern())
        stream_id = await publisher.start()
    try:  # the hub stopped with the stream live: its end was still written on the way down
        async with await psycopg.AsyncConnection.connect(settings.database_url or "") as conn:
            cur = await conn.execute("SELECT ended_at FROM video_streams WHERE stream_id = %s", (stream_id,))
            assert (await cur.fetchone()) is not None and cur.rowcount == 1
            cur = await conn.execute("SELECT count(*) FROM video_streams WHERE ended_at IS NULL")
            assert await cur.fetchone() == (0,)
    finally:
        await publisher.stop()
    async with running_hub(settings.model_copy(update={"port": free_port()})) as hub:
        desk = hub.hub.video
        assert desk is not None
        r = await whip(hub, "k1-body", token)
        assert (r.status_code, r.json()["error"]["code"]) == (409, "token_used"), r.text
        grant = await desk.authorize_publish("k1-body", unused)  # accepted: no exception
        await grant.failed()  # no offer followed: the token is not spent
        assert await VideoStore(hub.hub.db).stop_tokens("I-test", now_ms()) == [("k1-body", None)]
        for stopped in (token, unused):
            r = await whip(hub, "k1-body", stopped)
            assert (r.status_code, r.json()["error"]["code"]) == (401, "token_stopped"), r.text
            assert "stopped" in r.json()["error"]["message"]


async def test_sos_starts_the_units_cameras_and_cancel_or_close_stops_them(settings: Settings) -> None:
    async with running_hub(settings.model_copy(update={"auto_dispatch_priority": 1})) as hub:
        await hub.put_unit("S1", ["s1-trk", "s1-body"])
        await hub.put_unit("S2", ["s2-trk", "s2-body"])
        url = hub.hub.mqtt_url or ""
        async with DeviceClient("s1-trk", url, unit_id="S1") as s1, \
                DeviceClient("s1-body", url, unit_id="S1", kind="bodycam") as s1_body, \
                DeviceClient("s2-trk", url, unit_id="S2") as s2, \
                DeviceClient("s2-body", url, unit_id="S2", kind="bodycam") as s2_body:
            await located_camera_unit(hub, "S1", s1, s1_body, (LAT, LON))
            await located_camera_unit(hub, "S2", s2, s2_body, offset(LAT, LON, 800, 0))
            s1.send_event("sos")
            # The officer in trouble's own camera starts, under the SOS incident.
            [start] = await commands_of(s1_body, "video_start")
            sos_id = start.body["incident_id"]
            assert sos_id is not None
            texts = await noted(hub, sos_id, "acknowledged by s1-body")
            assert f"video_start sent to s1-body (cmd {start.cmd_id}, SOS)" in texts
            # Its recording belongs to the SOS incident, though S1 is not assigned to it (backup is).
            desk = hub.hub.video
            assert desk is not None
            async with WhipPublisher(start.body["whip_url"], start.body["token"], Pattern()) as publisher:
                stream_id = await publisher.start()
                await wait_for(lambda: desk.service.stats()["frames_in"] > 3)
            await wait_for(lambda: list_segments(desk.recordings_dir, stream_id))
            listing = (await hub.api.get(f"/api/v1/incidents/{sos_id}/recordings")).json()["recordings"]
            assert {(s["stream_id"], s["unit_id"]) for s in listing} == {(stream_id, "S1")}

            # Backup S2 was dispatched; it gets a camera start too, then is withdrawn: its camera stops.
            await hub.hub.incidents.follow_up.video_start(sos_id, "S2")  # type: ignore[union-attr]
            await commands_of(s2_body, "video_start")
            r = await hub.api.post(f"/api/v1/incidents/{sos_id}/cancel", json={"unit_id": "S2"})
            assert r.status_code == 200, r.text
            [stop2] = await commands_of(s2_body, "video_stop")
            await noted(hub, sos_id, f"video_stop sent to s2-body (cmd {stop2.cmd_id})")
            assert [c.type for c in s1_body.commands] == ["video_start"]

            r = await hub.api.post(f"/api/v1/incidents/{sos_id}/close", json={})
            [stop1] = await commands_of(s1_body, "video_stop")
            assert f"video_stop sent to s1-body (cmd {stop1.cmd_id})" in notes(r.json())
            assert len([c for c in s2_body.commands if c.type == "video_stop"]) == 1  # not twice


async def test_simulated_body_camera_end_to_end(hub: RunningHub) -> None:
    """The simulator's camera (sim/video_devices.py) does the device side: arrival -> video_start -> it publishes
    over WHIP -> the stream is listed and watchable -> close -> video_stop -> it ends its own stream (DELETE with
    the now stopped token of its live stream) -> the stream is gone."""
    origin = offset(LAT, LON, -1505.0, 0)
    await hub.put_unit("E1", ["e1-trk", "e1-body"])
    url = hub.hub.mqtt_url or ""
    answers: list[tuple[str, int]] = []

    async def seen(response: httpx.Response) -> None:
        answers.append((response.request.method, response.status_code))

    async with httpx.AsyncClient(timeout=10, event_hooks={"response": [seen]}) as http, \
            SimCameras(width=WIDTH, height=HEIGHT, fps=15, http=http) as cameras, \
            DeviceClient("e1-trk", url, unit_id="E1") as trk, \
            DeviceClient("e1-body", url, unit_id="E1", kind="bodycam") as body:

        def on_command(command: Command) -> None:
            cameras.handle(body, command)

        body.on_command = on_command
        await located_camera_unit(hub, "E1", trk, body, origin)
        iid, _ = await dispatch_and_arrive(hub, "E1", trk, origin)

        async def listed() -> Any:
            return (await hub.api.get("/api/v1/streams")).json()["streams"]

        [stream] = await wait_for(listed, timeout=20)
        assert (stream["device_id"], stream["unit_id"], stream["incident_id"]) == ("e1-body", "E1", iid)
        await noted(hub, iid, f"camera e1-body reports video started (stream {stream['stream_id']})")
        viewer = WhepViewer(f"{hub.base_url}/whep/{stream['stream_id']}", TOKEN)
        await viewer.start()
        try:
            assert {(f.width, f.height) for f in await first_frames(viewer, 3)} == {(WIDTH, HEIGHT)}
        finally:
            await viewer.stop()

        r = await hub.api.post(f"/api/v1/incidents/{iid}/close", json={})
        assert any(t.startswith("video_stop sent to e1-body") for t in notes(r.json()))
        await wait_for(lambda: cameras.counters.stopped == 1, timeout=15)

        async def gone() -> Any:
            return await listed() == []

        await wait_for(gone, timeout=10)
        row = await hub.hub.video.store.stream(stream["stream_id"])  # type: ignore[union-attr]
        assert row is not None and row["ended_at"] is not None
        assert cameras.counters.refused == 0 and not cameras.refusals
        assert answers == [("POST", 201), ("DELETE", 200)]  # its token was stopped, yet it ends its own stream
