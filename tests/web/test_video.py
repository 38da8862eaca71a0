"""Live video on the one-map (web/CONTRACT.md, Video), in real headless Chromium against a real hub whose simulated
body cameras publish over WHIP, watched over WHEP by the page's own RTCPeerConnections.

The fixture ``video_city`` (tests/web/conftest.py): a hub (auto-dispatch off) and a simulated city of a few
units whose body cameras publish 320x240 pictures when the hub sends them ``video_start``.

What is checked: a unit dispatched to an incident arrives, its camera publishes by itself (automatic backhaul),
the stream shows up on the page (badge on the map, buttons in the incident and unit panels); a floating tile and
the incident's video wall decode frames of the right size (``getStats``), the hub counting one viewer per
tile; closing a tile releases its WHEP session; closing the incident stops the camera (``video_stop``) and the
tiles close with a note. A viewer-role page watches a stream (published straight from the test with an admin's
token) from the badge on the map; a role the hub refuses sees the hub's message in the tile; a drone's camera is
offered in its drone panel (``drone_city``) and its button goes when the stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import pytest_asyncio
from aiortc import VideoStreamTrack

from geo.geodesy import haversine_m
from tests.conftest import wait_for
from tests.web.conftest import VIDEO_SIZE, CityRun, DroneCityRun, OpenPage, WebPage
from tests.web.one_map import decoding, incident_view, spot_near_a_unit, tid
from tests.web.test_screenshots import target
from video.client import WhipPublisher

pytestmark = pytest.mark.asyncio(loop_scope="session")

WIDTH, HEIGHT = VIDEO_SIZE
STREAM_WAIT_S = 180.0  # dispatch -> acknowledged -> departed -> arrived -> video_start -> WHIP publish


# ------------------------------------------------------------------------ helpers
async def streams(city: CityRun) -> list[dict[str, Any]]:
    r = await city.hub.api.get("/api/v1/streams")
    assert r.status_code == 200, r.text
    listed: list[dict[str, Any]] = r.json()["streams"]
    return listed


async def incident_near_a_unit(city: CityRun) -> tuple[str, str]:
    """An incident a short drive from its nearest unit, dispatched to that unit: (incident id, unit id)."""
    api = city.hub.api
    lat, lon = await spot_near_a_unit(api)
    units = [u for u in (await api.get("/api/v1/units")).json()["units"] if u["position"]]
    nearest = min(units, key=lambda u: haversine_m(lat, lon, u["position"]["lat"], u["position"]["lon"]))
    unit_id: str = nearest["unit_id"]
    r = await api.post("/api/v1/incidents", json={
        "category": "assault", "priority": 2, "lat": lat, "lon": lon, "summary": "video test"})
    assert r.status_code == 201, r.text
    incident_id: str = r.json()["id"]
    r = await api.post(f"/api/v1/incidents/{incident_id}/dispatch", json={"unit_ids": [unit_id]})
    assert r.status_code == 200, r.text
    return incident_id, unit_id


async def stream_of_unit(city: CityRun, unit_id: str, incident_id: str,
                         timeout_s: float = STREAM_WAIT_S) -> dict[str, Any]:
    async def listed() -> dict[str, Any] | None:
        return next((s for s in await streams(city) if s["unit_id"] == unit_id), None)

    try:
        found: dict[str, Any] = await wait_for(listed, timeout=timeout_s, interval=0.5)
    except AssertionError:
        view = await incident_view(city.hub.api, incident_id)
        raise AssertionError(f"no stream from {unit_id} within {timeout_s} s; camera counters:"
                             f" {city.sim.cameras.counters}; incident milestones {view['milestones']},"
                             f" log {[(e['type'], e.get('text')) for e in view['log']]}") from None
    return found


def whep_deletes(web: WebPage) -> list[tuple[str, int]]:
    """Every WHEP session the page DELETEs from now on, as (path, status), filled as the answers come."""
    seen: list[tuple[str, int]] = []
    web.page.on("response", lambda r: seen.append((r.url.split("//", 1)[-1].partition("/")[2], r.status))
                if r.request.method == "DELETE" and "/whep/" in r.url else None)
    return seen


async def viewers(city: CityRun, stream_id: str) -> int:
    return next((s["viewers"] for s in await streams(city) if s["stream_id"] == stream_id), -1)


async def has_viewers(city: CityRun, stream_id: str, count: int, timeout_s: float = 10.0) -> None:
    async def counted() -> bool:
        return await viewers(city, stream_id) == count

    try:
        await wait_for(counted, timeout=timeout_s, interval=0.25)
    except AssertionError:
        raise AssertionError(f"stream {stream_id} has {await viewers(city, stream_id)} viewers, not {count}") from None


# ------------------------------------------------------------ automatic backhaul
async def test_an_arriving_units_camera_plays_in_a_tile_and_on_the_incidents_wall(
        video_city: CityRun, open_page: OpenPage, tmp_path: Path) -> None:
    city = video_city
    web = await open_page(city.base_url, await city.token("dispatcher"))
    deletes = whep_deletes(web)
    incident_id, unit_id = await incident_near_a_unit(city)

    stream = await stream_of_unit(city, unit_id, incident_id)
    stream_id = stream["stream_id"]
    assert stream["incident_id"] == incident_id, stream
    assert (await incident_view(city.hub.api, incident_id))["milestones"]["arrived"] is not None
    # The page learns of it from the live feed: in its streams, a badge on the map next to the unit.
    await web.until("(id) => window.fieldhub.video.streams.has(id)", stream_id, timeout_s=10)
    await web.page.locator(tid("video-badge", stream_id=stream_id, unit_id=unit_id)).wait_for(timeout=10_000)

    # From the incident panel: a floating tile.
    await web.page.locator(tid("incident-item", incident_id=incident_id)).click()
    incident_panel = web.page.locator(tid("incident-panel", incident_id=incident_id))
    await incident_panel.locator(tid("video-open-btn", stream_id=stream_id)).click()
    played = await decoding(web, stream_id, "dock")
    assert (played["frameWidth"], played["frameHeight"]) == (WIDTH, HEIGHT), played
    await has_viewers(city, stream_id, 1)
    await web.page.screenshot(path=str(target(tmp_path, "one-map-video.png")))  # docs/ with FIELDHUB_SCREENSHOTS=1

    # The incident's wall: the same stream in its grid, a second viewer on the hub.
    await incident_panel.locator(tid("video-wall-btn")).click()
    wall = web.page.locator(tid("video-wall", incident_id=incident_id))
    await wall.locator(tid("video-tile", stream_id=stream_id, place="wall")).wait_for()
    walled = await decoding(web, stream_id, "wall")
    assert (walled["frameWidth"], walled["frameHeight"]) == (WIDTH, HEIGHT), walled
    await has_viewers(city, stream_id, 2)

    # The unit panel offers it as well; its button brings the open tile forward rather than opening another.
    await incident_panel.locator(tid("assignment", unit_id=unit_id)).locator("button.link").first.click()
    unit_panel = web.page.locator(tid("unit-panel", unit_id=unit_id))
    await unit_panel.locator(tid("video-open-btn", stream_id=stream_id)).click()
    assert await web.page.locator(tid("video-tile", stream_id=stream_id)).count() == 2
    await has_viewers(city, stream_id, 2)
    # The tile's × releases its WHEP session: the hub drops that viewer.
    await web.page.locator(tid("video-tile", stream_id=stream_id, place="dock")).locator(
        tid("video-tile-close")).click()
    await has_viewers(city, stream_id, 1)
    assert await web.page.locator(tid("video-tile", place="dock")).count() == 0

    # Closing the incident: video_stop, the camera stops publishing, the wall's tile closes with a note.
    r = await city.hub.api.post(f"/api/v1/incidents/{incident_id}/close")
    assert r.status_code == 200, r.text
    wall_tile = wall.locator(tid("video-tile", stream_id=stream_id))
    await wall_tile.and_(web.page.locator('[data-state="ended"]')).wait_for(timeout=15_000)
    assert await wall_tile.locator(tid("video-tile-note")).inner_text()
    await wall_tile.wait_for(state="detached", timeout=10_000)
    # One DELETE, for the tile the user closed: the hub ended the wall's viewer with the stream.
    assert [(path.rsplit("/", 2)[-2], status) for path, status in deletes] == [(stream_id, 200)], deletes
    await web.page.locator(tid("video-badge", stream_id=stream_id)).wait_for(state="detached", timeout=5_000)
    assert await web.js("(id) => window.fieldhub.video.streams.has(id)", stream_id) is False
    log = [e.get("text") or "" for e in (await incident_view(city.hub.api, incident_id))["log"]]
    assert any("video_stop" in text for text in log), log


# ------------------------------------------------------------- a viewer watches
class MovingBar(VideoStreamTrack):
    """A cheap camera for a stream published straight from the test: a bright bar crossing a grey picture."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        picture = np.full((HEIGHT, WIDTH, 3), 80, np.uint8)
        x = (self.count * 6) % WIDTH
        picture[:, x:x + 20] = (30, 210, 250)
        self.count += 1
        frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        return frame


@contextlib.asynccontextmanager
async def publishing(city: CityRun, device_id: str) -> AsyncIterator[tuple[WhipPublisher, dict[str, Any]]]:
    """``device_id`` publishes over WHIP with an admin's API token (no video_start, no incident):
    (the publisher, the stream as the hub lists it)."""
    publisher = WhipPublisher(f"{city.base_url}/whip/{device_id}", await city.token("admin"), MovingBar())
    try:
        stream_id = await asyncio.wait_for(publisher.start(), 15)
        stream = await wait_for(lambda: _listed(city, stream_id), timeout=10, interval=0.25)
        yield publisher, stream
    finally:
        await publisher.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def published(video_city: CityRun) -> AsyncIterator[tuple[WhipPublisher, dict[str, Any]]]:
    """A stream from a unit's body camera, published straight from the test."""
    city = video_city
    unit = next(u for u in (await city.hub.api.get("/api/v1/units")).json()["units"] if u["position"])
    devices = (await city.hub.api.get(f"/api/v1/units/{unit['unit_id']}")).json()["devices"]
    camera = next(d["device_id"] for d in devices if d["kind"] == "bodycam")
    async with publishing(city, camera) as found:
        yield found


async def _listed(city: CityRun, stream_id: str) -> dict[str, Any] | None:
    return next((s for s in await streams(city) if s["stream_id"] == stream_id), None)


async def test_a_viewer_watches_from_the_map_badge_and_a_refused_role_is_told_why(
        video_city: CityRun, published: tuple[WhipPublisher, dict[str, Any]], open_page: OpenPage) -> None:
    city = video_city
    publisher, stream = published
    stream_id, unit_id = stream["stream_id"], stream["unit_id"]
    assert unit_id, stream
    web = await open_page(city.base_url, await city.token("viewer"))
    deletes = whep_deletes(web)
    assert await web.js("() => window.fieldhub.role") == "viewer"
    # A stream live before the page opened comes with the snapshot.
    assert await web.js("(id) => window.fieldhub.video.streams.has(id)", stream_id)

    # The badge next to the unit opens a floating tile.
    await web.js("""(id) => { const u = window.fieldhub.units.get(id);
        window.fieldhub.map.setView([u.position.lat, u.position.lon], 16, {animate: false}); }""", unit_id)
    await web.page.locator(tid("video-badge", stream_id=stream_id, unit_id=unit_id)).click()
    played = await decoding(web, stream_id, "dock")
    assert (played["frameWidth"], played["frameHeight"]) == (WIDTH, HEIGHT), played
    await has_viewers(city, stream_id, 1)
    title = await web.page.locator(tid("video-tile", stream_id=stream_id)).locator(tid("video-tile-title")).inner_text()
    assert stream["device_id"] in title, title

    # Room for one tile only: the wall of an incident the unit is sent to waits until the floating tile closes.
    await web.js("() => window.fieldhub.video.setMaxTiles(1)")
    u = (await city.hub.api.get(f"/api/v1/units/{unit_id}")).json()
    r = await city.hub.api.post("/api/v1/incidents", json={
        "category": "theft", "priority": 3, "lat": u["position"]["lat"] + 0.003, "lon": u["position"]["lon"]})
    assert r.status_code == 201, r.text
    incident_id = r.json()["id"]
    r = await city.hub.api.post(f"/api/v1/incidents/{incident_id}/dispatch", json={"unit_ids": [unit_id]})
    assert r.status_code == 200, r.text
    await web.page.locator(tid("incident-item", incident_id=incident_id)).click()
    await web.page.locator(tid("incident-panel", incident_id=incident_id)).locator(tid("video-wall-btn")).click()
    wall = web.page.locator(tid("video-wall", incident_id=incident_id))
    await wall.locator(tid("video-wall-more", left="1")).wait_for(timeout=5_000)
    assert await wall.locator(tid("video-wall-empty")).is_visible()
    await web.page.locator(tid("video-tile", place="dock")).locator(tid("video-tile-close")).click()
    await decoding(web, stream_id, "wall")
    assert await wall.locator(tid("video-wall-more", left="0")).count() == 1
    await has_viewers(city, stream_id, 1)
    # Now the wall's tile takes the only room: a floating one is refused, with a word why.
    assert await web.js("(id) => window.fieldhub.video.open(id)", stream_id) is False
    await web.page.locator(tid("toast", kind="error")).filter(has_text="1").first.wait_for(timeout=5_000)
    assert await web.page.locator(tid("video-tile")).count() == 1
    # With room again, a floating tile beside the wall; the wall's × releases its tile's session on the hub.
    await web.js("() => window.fieldhub.video.setMaxTiles(9)")
    assert await web.js("(id) => window.fieldhub.video.open(id)", stream_id) is True
    await decoding(web, stream_id, "dock")
    await has_viewers(city, stream_id, 2)
    await wall.locator(tid("video-wall-close")).click()
    await wall.wait_for(state="detached", timeout=5_000)
    await has_viewers(city, stream_id, 1)

    # A drone operator's token may not watch video: the tile says what the hub said.
    operator = await open_page(city.base_url, await city.token("drone_operator"))
    operator.expect_console(r"status of 403")
    assert await operator.js("(id) => window.fieldhub.video.open(id)", stream_id) is True
    refused = operator.page.locator(tid("video-tile", stream_id=stream_id, state="error"))
    await refused.wait_for(timeout=10_000)
    assert "may not watch video" in await refused.locator(tid("video-tile-note")).inner_text()
    await has_viewers(city, stream_id, 1)

    # The camera stops publishing: the viewer's tile closes with a note.
    await publisher.stop()
    tile = web.page.locator(tid("video-tile", stream_id=stream_id))
    await tile.and_(web.page.locator('[data-state="ended"]')).wait_for(timeout=10_000)
    await tile.wait_for(state="detached", timeout=10_000)
    # Two sessions released by the user (the floating tile's ×, the wall's ×); none for the ended stream.
    await asyncio.sleep(0.5)
    assert [status for _, status in deletes] == [200, 200], deletes
    assert all(path.startswith(f"whep/{stream_id}/") for path, _ in deletes), deletes
    assert await web.page.locator(tid("video-badge")).count() == 0


# ------------------------------------------------------------------ a drone's camera
async def test_a_drones_camera_is_offered_in_its_drone_panel(drone_city: DroneCityRun, open_page: OpenPage) -> None:
    drone_id = drone_city.drone_ids[0]
    async with publishing(drone_city, drone_id) as (_, stream):
        assert stream["unit_id"] == drone_id, stream
        web = await open_page(drone_city.base_url, await drone_city.token("dispatcher"))
        await web.by_id("search").fill(drone_id)
        await web.page.locator(tid("search-result", kind="drone", id=drone_id)).click()
        button = web.page.locator(tid("drone-panel", drone_id=drone_id)).locator(
            tid("video-open-btn", stream_id=stream["stream_id"]))
        await button.click()
        played = await decoding(web, stream["stream_id"], "dock")
        assert (played["frameWidth"], played["frameHeight"]) == (WIDTH, HEIGHT), played
    # The stream is over: the panel's button goes with it.
    await button.wait_for(state="detached", timeout=10_000)
