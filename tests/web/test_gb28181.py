"""GB/T 28181 body cameras on the one-map, in real headless Chromium against a real hub with its SIP server on, and
simulated GB/T 28181 cameras (:class:`sim.gb28181_camera.GbCamera`: digest registration, MobilePosition by the
hub's subscription, PS-over-RTP H.264 on INVITE). No SIP agent, socket or codec is mocked.

What is checked:

- **On demand**: a unit whose only device is such a camera shows a "Live" button on its device row (the unit
  detail's ``video_on_demand``; a native MQTT device gets none); the click makes the hub INVITE the camera and
  opens the stream's floating tile, which decodes 320x240 frames, rising. The tile's x releases the viewer; the
  stream ends ``gb28181_idle_s`` later and the camera is hung up (BYE: its call is gone). A camera that is not
  registered is refused with the hub's reason, in a toast.
- **The issue's end to end**: such a unit walks toward an incident it is dispatched to (positions only from its
  camera, as MobilePosition); its arrival is detected, the hub INVITEs the camera by itself (``video_start``
  routed to the gateway), the incident's video wall plays the stream, the incident's recordings list it, and
  closing the incident hangs the camera up (BYE) and ends the stream on the page.

Time: the arrival detector wants a minute of standing still (``ArrivalParams.stop_ms``). The walking camera's clock
runs four times faster than the wall clock while it walks and stands (:class:`FastClock`): its positions carry the
camera's own times, as a real device's do, and the hub accepts them up to ``max_future_skew_s`` ahead of its own
clock, so the minute passes in fifteen seconds and the test stays well under 90 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio

from geo.geodesy import bearing_deg, haversine_m, offset
from hub.config import Settings
from sim.gb28181_camera import GbCamera, GbCameraConfig
from sim.gb28181_stream import StreamSettings
from tests.conftest import ADMIN_TOKEN, RunningHub, running_hub, wait_for
from tests.sim.gb28181_support import FastClock
from tests.web.conftest import OpenPage, WebPage
from tests.web.one_map import PLAY_WAIT_S, decoding, incident_view, road_nodes, tid

pytestmark = pytest.mark.asyncio(loop_scope="session")

WIDTH, HEIGHT = 320, 240
STREAM = StreamSettings(width=WIDTH, height=HEIGHT, fps=10.0, bitrate=300_000)
IDLE_S = 2.0            # an on-demand stream ends this long after its last viewer left
# Body cameras (type 132 in the 20-digit id, as a real one registers; its video channel is its own 131 id).
CAM_ON_DEMAND = "34020000001320000101"
CAM_OFFLINE = "34020000001320000102"
CAM_WALKING = "34020000001320000103"
PASSWORD = "Camera-Pass-01"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The hub's SIP server on a free loopback port; positions every second; short idle time for streams on demand;
    WHIP links the hub's own address (``video_start`` carries one, even when routed to the gateway)."""
    return settings.model_copy(update={
        "gb28181": True, "gb28181_host": "127.0.0.1", "gb28181_port": 0, "gb28181_position_interval_s": 1,
        "gb28181_idle_s": IDLE_S, "public_base_url": f"http://127.0.0.1:{settings.port}",
        # A GB/T 28181 camera cannot acknowledge a dispatch (the standard has no such message): a camera-only unit
        # is not escalated for it (the dispatcher is told to confirm by radio). Short, so the test would see it.
        "ack_timeout_s": 2.0})


@dataclass
class GbHub:
    settings: Settings
    hub: RunningHub
    admin: httpx.AsyncClient

    @property
    def base_url(self) -> str:
        return self.hub.base_url

    @property
    def sip_port(self) -> int:
        gateway = self.hub.hub.gb28181
        assert gateway is not None
        return gateway.udp_port

    async def token(self, role: str) -> str:
        return await self.hub.hub.create_token(role, f"web-{role}")

    async def camera_unit(self, unit_id: str, device_id: str) -> None:
        """A unit on foot whose only device is the GB/T 28181 camera ``device_id`` (password ``PASSWORD``)."""
        await self.hub.put_unit(unit_id, [], kind="foot")
        r = await self.admin.post("/api/v1/devices", json={"device_id": device_id, "unit_id": unit_id,
                                                           "protocol": "gb28181", "password": PASSWORD})
        assert r.status_code == 201, r.text

    def camera(self, device_id: str, position: Any, clock: Any = time.time) -> GbCamera:
        # The camera sets its clock from the REGISTER 200's Date (Beijing time, the hub's gb28181_utc_offset_min).
        config = GbCameraConfig(device_id=device_id, password=PASSWORD, server_id=self.settings.gb28181_server_id,
                                server_host="127.0.0.1", server_port=self.sip_port, keepalive_s=5.0,
                                request_timeout_s=5.0, register_retry_s=0.5, register_retry_max_s=1.0,
                                stream=STREAM)
        return GbCamera(config, position=position, wall=clock)


@pytest_asyncio.fixture(loop_scope="session")
async def gb_hub(settings: Settings) -> AsyncIterator[GbHub]:
    async with running_hub(settings) as rh, httpx.AsyncClient(
            base_url=rh.base_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=20) as admin:
        yield GbHub(settings, rh, admin)


# ------------------------------------------------------------------------ helpers
async def streams(gb: GbHub) -> list[dict[str, Any]]:
    r = await gb.hub.api.get("/api/v1/streams")
    assert r.status_code == 200, r.text
    listed: list[dict[str, Any]] = r.json()["streams"]
    return listed


async def stream_of(gb: GbHub, device_id: str) -> dict[str, Any] | None:
    return next((s for s in await streams(gb) if s["device_id"] == device_id), None)


async def located(gb: GbHub, unit_id: str, near: tuple[float, float]) -> dict[str, Any]:
    """The unit's view once its camera's positions reach it (MobilePosition by subscription), near ``near``."""
    async def there() -> dict[str, Any] | None:
        unit = (await gb.hub.api.get(f"/api/v1/units/{unit_id}")).json()
        pos = unit["position"]
        return unit if pos and haversine_m(pos["lat"], pos["lon"], *near) < 5 else None

    found: dict[str, Any] = await wait_for(there, timeout=15, interval=0.25)
    return found


async def select_unit(web: WebPage, unit_id: str) -> Any:
    await web.by_id("search").fill(unit_id)
    await web.page.locator(tid("search-result", kind="unit", id=unit_id)).click()
    return web.page.locator(tid("unit-panel", unit_id=unit_id))


async def viewers(gb: GbHub, stream_id: str) -> int:
    return next((s["viewers"] for s in await streams(gb) if s["stream_id"] == stream_id), -1)


async def has_viewers(gb: GbHub, stream_id: str, count: int, timeout_s: float = 10.0) -> None:
    async def counted() -> bool:
        return await viewers(gb, stream_id) == count

    try:
        await wait_for(counted, timeout=timeout_s, interval=0.2)
    except AssertionError:
        raise AssertionError(f"stream {stream_id} has {await viewers(gb, stream_id)} viewers, not {count}") from None


async def no_stream_of(gb: GbHub, device_id: str) -> bool:
    return await stream_of(gb, device_id) is None


def camera_state(camera: GbCamera) -> dict[str, Any]:
    c = camera.counters
    return {"invites": c.invites, "streams_started": c.streams_started, "frames_sent": c.frames_sent,
            "calls": len(camera.media.calls), "rejected": dict(c.rejected), "refused": dict(c.refused)}


async def hung_up(camera: GbCamera, timeout_s: float = 10.0) -> None:
    """The camera took the hub's BYE for its call: the call is gone (the camera drops it on a BYE of its dialog,
    answers 200 and stops the stream), and no BYE came for a dialog it did not know."""
    try:
        await wait_for(lambda: not camera.media.calls, timeout=timeout_s, interval=0.1)
    except AssertionError:
        raise AssertionError(f"the camera still has its call: {camera_state(camera)}") from None
    assert "unknown_dialog" not in camera.counters.rejected, camera_state(camera)


# ------------------------------------------------------------------ on demand
async def test_a_dispatcher_opens_a_gb28181_camera_live_and_it_hangs_up_when_nobody_watches(
        gb_hub: GbHub, open_page: OpenPage) -> None:
    gb = gb_hub
    spot = (await road_nodes(gb.hub.api))[0]
    await gb.camera_unit("GB-A", CAM_ON_DEMAND)
    await gb.camera_unit("GB-OFF", CAM_OFFLINE)  # provisioned, never registers
    await gb.hub.put_unit("MQ-1", ["mq1-body"])  # a native device: not opened on demand

    async with gb.camera(CAM_ON_DEMAND, lambda: (spot[0], spot[1], 0.0, 0.0)) as camera:
        await asyncio.wait_for(camera.registered.wait(), 10)
        await located(gb, "GB-A", spot)
        detail = {d["device_id"]: d for d in (await gb.hub.api.get("/api/v1/units/GB-A")).json()["devices"]}
        assert detail[CAM_ON_DEMAND]["video_on_demand"] is True, detail
        [native] = (await gb.hub.api.get("/api/v1/units/MQ-1")).json()["devices"]
        assert native["video_on_demand"] is False, native

        web = await open_page(gb.base_url, await gb.token("dispatcher"), locale="en")
        web.expect_console(r"status of 409")  # the offline camera's refusal, which the page shows as a toast
        unit_panel = await select_unit(web, "GB-A")
        live = unit_panel.locator(tid("camera-live-btn", device_id=CAM_ON_DEMAND))
        await live.click()
        tile = web.page.locator(tid("video-tile", place="dock"))
        await tile.wait_for(timeout=PLAY_WAIT_S * 1000)
        stream_id = await tile.get_attribute("data-stream-id")
        assert stream_id, "the tile names no stream"
        played = await decoding(web, stream_id, "dock")
        assert (played["frameWidth"], played["frameHeight"]) == (WIDTH, HEIGHT), played
        stream = await stream_of(gb, CAM_ON_DEMAND)
        assert stream is not None and stream["stream_id"] == stream_id and stream["unit_id"] == "GB-A", stream
        assert stream["codec"] == "H264", stream  # the camera's H.264, not re-encoded
        await has_viewers(gb, stream_id, 1)
        assert camera.counters.invites == 1 and camera.counters.streams_started == 1, camera_state(camera)
        # A second click on Live brings the same stream forward: no second INVITE, no second tile.
        await live.click()
        await web.until("(b) => document.querySelector(b).dataset.state === 'idle'",
                        tid("camera-live-btn", device_id=CAM_ON_DEMAND), timeout_s=10)
        assert await web.page.locator(tid("video-tile")).count() == 1
        assert camera.counters.invites == 1, camera_state(camera)

        # The viewer closes the tile: the hub drops the viewer, and once idle for IDLE_S it hangs the camera up.
        closed_at = time.monotonic()
        await tile.locator(tid("video-tile-close")).click()
        await wait_for(lambda: no_stream_of(gb, CAM_ON_DEMAND), timeout=IDLE_S + 10, interval=0.2)
        assert time.monotonic() - closed_at >= IDLE_S - 0.5, "the stream ended before the idle time"
        await hung_up(camera)
        video = gb.hub.hub.camera_video
        assert video is not None
        assert video.counters["ended_idle"] == 1, video.counters
        await web.until("(id) => !window.fieldhub.video.streams.has(id)", stream_id, timeout_s=5)

        # A camera that is not registered: the hub says so, the page shows it in a toast.
        other = await select_unit(web, "GB-OFF")
        await other.locator(tid("camera-live-btn", device_id=CAM_OFFLINE)).click()
        toast = web.page.locator(tid("toast", kind="error")).filter(has_text=CAM_OFFLINE)
        await toast.first.wait_for(timeout=10_000)
        assert "not registered" in await toast.first.inner_text()
        assert await web.page.locator(tid("video-tile")).count() == 0
        assert await other.locator(tid("camera-live-btn", device_id=CAM_OFFLINE)).is_enabled()


# ------------------------------------------------------------- the end to end
class Walk:
    """An officer standing at ``start`` until ``go``, then walking straight to ``end`` at ``speed_mps`` and standing
    there: the camera's position callable, in the camera's own time."""

    def __init__(self, clock: FastClock, start: tuple[float, float], end: tuple[float, float],
                 speed_mps: float) -> None:
        self.clock = clock
        self.start, self.end = start, end
        self.speed_mps = speed_mps
        self.length_m = haversine_m(*start, *end)
        self.heading = bearing(start, end)
        self.started: float | None = None

    def go(self) -> None:
        self.started = self.clock()

    def __call__(self) -> tuple[float, float, float, float]:
        if self.started is None:
            return self.start[0], self.start[1], 0.0, 0.0
        done = min(1.0, (self.clock() - self.started) * self.speed_mps / self.length_m)
        lat = self.start[0] + (self.end[0] - self.start[0]) * done
        lon = self.start[1] + (self.end[1] - self.start[1]) * done
        return lat, lon, 0.0 if done >= 1.0 else self.speed_mps * 3.6, self.heading


def bearing(a: tuple[float, float], b: tuple[float, float]) -> float:
    return bearing_deg(a[0], a[1], b[0], b[1])


async def milestone_reached(gb: GbHub, incident_id: str, name: str, timeout_s: float, unit_id: str) -> Any:
    """The incident's milestone ``name`` once reached; else a failure saying what the hub saw (log, last fixes)."""
    async def reached() -> Any:
        return (await incident_view(gb.hub.api, incident_id))["milestones"].get(name)

    try:
        return await wait_for(reached, timeout=timeout_s, interval=0.25)
    except AssertionError:
        view = await incident_view(gb.hub.api, incident_id)
        track = (await gb.hub.api.get(f"/api/v1/units/{unit_id}/track",
                                      params={"from": 0, "to": 4_000_000_000_000})).json()["fixes"]
        raise AssertionError(f"no {name} within {timeout_s} s (now {time.time() * 1000:.0f}): milestones "
                             f"{view['milestones']}, log {[(e['type'], e.get('text')) for e in view['log']]}, "
                             f"last fixes {[(f['ts'], f['lat'], f['lon'], f['speed']) for f in track[-3:]]}") from None


async def test_a_body_camera_units_arrival_starts_its_video_on_the_wall_recorded_and_hung_up_at_close(
        gb_hub: GbHub, open_page: OpenPage) -> None:
    gb = gb_hub
    nodes = await road_nodes(gb.hub.api)
    scene = nodes[len(nodes) // 2]
    start = offset(*scene, -250.0, 0.0)  # 250 m south: outside the arrival zone
    clock = FastClock()
    walk = Walk(clock, start, scene, speed_mps=10.0)
    await gb.camera_unit("GB-W", CAM_WALKING)
    async with gb.camera(CAM_WALKING, walk, clock) as camera:
        await asyncio.wait_for(camera.registered.wait(), 10)
        await located(gb, "GB-W", start)
        web = await open_page(gb.base_url, await gb.token("dispatcher"), locale="en")

        r = await gb.hub.api.post("/api/v1/incidents", json={"category": "assault", "priority": 2,
                                                               "lat": scene[0], "lon": scene[1],
                                                               "summary": "GB/T 28181 body camera"})
        assert r.status_code == 201, r.text
        incident_id: str = r.json()["id"]
        r = await gb.hub.api.post(f"/api/v1/incidents/{incident_id}/dispatch", json={"unit_ids": ["GB-W"]})
        assert r.status_code == 200, r.text
        # The officer walks there and stands; the camera's minute passes in a quarter of it (see the module).
        clock.set_speed(4.0)
        walk.go()
        await milestone_reached(gb, incident_id, "arrived", timeout_s=45, unit_id="GB-W")
        clock.set_speed(1.0)  # its clock stays ahead by what it gained, within the hub's allowance
        # Far past ack_timeout_s: the unit stayed on the incident, unacknowledged (never invented), and the
        # dispatcher was told at dispatch that it cannot sign.
        view = await incident_view(gb.hub.api, incident_id)
        [assignment] = [a for a in view["assignments"] if a["unit_id"] == "GB-W"]
        assert assignment["acknowledged"] is None and assignment["status"] in ("on_scene", "en_route"), assignment
        alerts = gb.hub.hub.incidents.alerts.recent  # type: ignore[union-attr]
        assert any(a.get("cannot_sign") and a.get("unit_id") == "GB-W" for a in alerts), list(alerts)

        # Arrival -> video_start routed to the gateway -> INVITE -> the stream, for the incident.
        stream = await wait_for(lambda: stream_of(gb, CAM_WALKING), timeout=20, interval=0.25)
        stream_id = stream["stream_id"]
        assert stream["unit_id"] == "GB-W" and stream["incident_id"] == incident_id, stream
        assert camera.counters.invites == 1, camera_state(camera)

        # On the one-map: the incident's wall plays it.
        await web.page.locator(tid("incident-item", incident_id=incident_id)).click()
        incident_panel = web.page.locator(tid("incident-panel", incident_id=incident_id))
        await incident_panel.locator(tid("video-wall-btn")).click()
        wall = web.page.locator(tid("video-wall", incident_id=incident_id))
        await wall.locator(tid("video-tile", stream_id=stream_id, place="wall")).wait_for(timeout=10_000)
        played = await decoding(web, stream_id, "wall")
        assert (played["frameWidth"], played["frameHeight"]) == (WIDTH, HEIGHT), played
        await has_viewers(gb, stream_id, 1)

        # Recorded for the incident while it runs.
        async def recorded() -> list[dict[str, Any]]:
            r = await gb.hub.api.get(f"/api/v1/incidents/{incident_id}/recordings")
            assert r.status_code == 200, r.text
            return [s for s in r.json()["recordings"] if s["stream_id"] == stream_id]

        await wait_for(recorded, timeout=10, interval=0.5)

        # Closing the incident: video_stop -> BYE; the stream ends on the page; the recording is complete.
        r = await gb.hub.api.post(f"/api/v1/incidents/{incident_id}/close", json={"reason": "resolved"})
        assert r.status_code == 200, r.text
        await hung_up(camera)
        await wait_for(lambda: no_stream_of(gb, CAM_WALKING), timeout=10, interval=0.2)
        tile = wall.locator(tid("video-tile", stream_id=stream_id))
        await tile.and_(web.page.locator('[data-state="ended"]')).wait_for(timeout=10_000)
        video = gb.hub.hub.camera_video
        assert video is not None
        assert video.counters["ended_video_stop"] == 1, video.counters
        segments = await wait_for(lambda: _complete(recorded), timeout=15, interval=0.5)
        assert sum(s["frames"] for s in segments) > 0, segments
        got = await gb.hub.api.get(f"/api/v1/recordings/{segments[0]['path']}")
        assert got.status_code == 200 and len(got.content) > 1000, (got.status_code, len(got.content))
        log = [e.get("text") or "" for e in (await incident_view(gb.hub.api, incident_id))["log"]]
        assert any("video_start" in text for text in log) and any("video_stop" in text for text in log), log


async def _complete(recorded: Any) -> list[dict[str, Any]] | None:
    segments: list[dict[str, Any]] = await recorded()
    return segments if segments and all(s["complete"] for s in segments) else None
