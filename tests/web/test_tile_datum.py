"""GCJ-02 tile sets on the one-map (FIELDHUB_MAP_TILE_DATUM): positions stay WGS-84, the page draws them where the
tiles draw the streets, and a click goes back to WGS-84.

The tiles come from a tiny tile server started here (no internet): a light grey ground with crosses ("streets
crossing") painted at known places, in the tile pixels of Web Mercator as any tile set is drawn. A magenta cross
at the GCJ-02 image of a WGS-84 point P (where an AMap-style tile set has P's street), a blue one at P itself
(where a WGS-84 tile set has it), a red one at the GCJ-02 image of a second point Q. A unit reports a fix at P:
with ``tile_datum`` "gcj02" its marker must be drawn on the magenta cross, with "wgs84" on the blue one, both
found in a screenshot, so the check does not trust the page's own projection. A dispatcher's click on the red
cross must create an incident at Q. The port of the formula, gcj02.js, is held to geo/gcj02.py on a grid.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import random
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from devices.client import DeviceClient
from devices.payloads import Fix
from geo.gcj02 import gcj02_to_wgs84, wgs84_to_gcj02
from geo.geodesy import haversine_m, offset
from hub.config import Settings
from tests.conftest import TOKEN, RunningHub, running_hub, wait_for
from tests.web.conftest import OpenPage, WebPage
from tests.web.one_map import incident_view

pytestmark = pytest.mark.asyncio(loop_scope="session")

P = (34.26, 117.18)                      # the unit's fix (WGS-84), in the simulated city
Q = offset(P[0], P[1], 250.0, -60.0)     # where the dispatcher clicks (WGS-84)
GROUND = (225, 225, 225)
MAGENTA, BLUE, RED = (255, 0, 255), (0, 0, 255), (255, 0, 0)
CROSSES = [(wgs84_to_gcj02(*P), MAGENTA), (P, BLUE), (wgs84_to_gcj02(*Q), RED)]
ARM_PX, BAR_PX = 24, 3
TILE_RE = re.compile(rb"GET /(\d{1,2})/(\d{1,7})/(\d{1,7})\.png ")


def world_px(lat: float, lon: float, zoom: int) -> tuple[float, float]:
    """Web Mercator pixel of a point at ``zoom`` (256 px tiles), as every tile set and Leaflet's EPSG:3857 count."""
    size = 256.0 * 2**zoom
    s = math.sin(math.radians(lat))
    return size * (lon + 180.0) / 360.0, size * (0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi))


def tile_png(z: int, x: int, y: int) -> bytes:
    """One 256 px tile: the ground and the parts of the crosses that fall on it."""
    image = Image.new("RGB", (256, 256), GROUND)
    draw = ImageDraw.Draw(image)
    half = BAR_PX // 2
    for (lat, lon), colour in CROSSES:
        px, py = world_px(lat, lon, z)
        u, v = math.floor(px) - 256 * x, math.floor(py) - 256 * y
        draw.rectangle([u - ARM_PX, v - half, u + ARM_PX, v + half], fill=colour)
        draw.rectangle([u - half, v - ARM_PX, u + half, v + ARM_PX], fill=colour)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@contextlib.asynccontextmanager
async def tile_server() -> AsyncIterator[str]:
    """A local tile server; yields its Leaflet URL template."""
    cache: dict[tuple[int, int, int], bytes] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            match = TILE_RE.match(head)
            if match is None:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            else:
                key = (int(match[1]), int(match[2]), int(match[3]))
                body = cache.get(key) or cache.setdefault(key, tile_png(*key))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nCache-Control: no-store\r\n"
                             b"Access-Control-Allow-Origin: *\r\n"
                             + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/{{z}}/{{x}}/{{y}}.png"
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def tiled_hub(settings: Settings, datum: str) -> AsyncIterator[RunningHub]:
    """A hub on the local tiles of ``datum`` with one unit, U1, whose device reported a fix at P just now."""
    async with tile_server() as tiles, running_hub(settings.model_copy(update={
            "map_tile_url": tiles, "map_tile_datum": datum, "map_center": P, "map_zoom": 16})) as rh:
        await rh.put_unit("U1", ["u1-gps"], name="U1")
        async with DeviceClient("u1-gps", settings.mqtt_url or "", unit_id="U1", kind="vehicle") as device:
            device.send_fix(Fix(int(time.time() * 1000), P[0], P[1], acc=5.0, speed=0.0))

            async def located() -> bool:
                unit = (await rh.api.get("/api/v1/units/U1")).json()
                return unit.get("position") is not None and bool(unit.get("online"))

            await wait_for(located, timeout=15)
            yield rh


async def look_at(web: WebPage, lat: float, lon: float, zoom: int) -> np.ndarray:
    """The map's pixels (container coordinates) once centred on (lat, lon) with every tile drawn."""
    await web.js("""([lat, lon, zoom]) => window.fieldhub.map.setView([lat, lon], zoom, {animate: false})""",
                 [lat, lon, zoom])
    await web.until("""() => { const tiles = [...document.querySelectorAll('.leaflet-tile')];
        return tiles.length > 0 && tiles.every((t) => t.classList.contains('leaflet-tile-loaded')); }""")
    await web.page.wait_for_timeout(800)  # tiles fade in; the unit canvas redraws on the next frame
    shot = await web.page.get_by_test_id("map").screenshot()
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), dtype=np.int32)


def centroid(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int = 12) -> tuple[float, float]:
    """Mean (x, y) of the pixels of ``colour``; fails when there are too few to be a cross or a marker."""
    near = np.abs(pixels - np.array(colour)).max(axis=2) <= tolerance
    ys, xs = np.nonzero(near)
    assert len(xs) >= 20, f"{colour} is not on the map ({len(xs)} pixels)"
    return float(xs.mean()), float(ys.mean())


async def marker_colour(web: WebPage) -> tuple[int, int, int]:
    hex_colour: str = await web.js("""async () => (await import('/static/app/unit-style.js'))
        .statusColour(window.fieldhub.units.get('U1').status)""")
    n = int(hex_colour.lstrip("#"), 16)
    return (n >> 16) & 255, (n >> 8) & 255, n & 255


async def open_on_unit(rh: RunningHub, open_page: OpenPage) -> WebPage:
    web = await open_page(rh.base_url, TOKEN)
    await web.until("() => { const u = window.fieldhub.units.get('U1'); return u && u.position && u.online; }")
    return web


async def test_gcj02_tiles_draw_a_wgs84_unit_on_its_street_and_a_click_comes_back_wgs84(
        settings: Settings, open_page: OpenPage) -> None:
    async with tiled_hub(settings, "gcj02") as rh:
        assert (await rh.api.get("/api/v1/map/config")).json()["tile_datum"] == "gcj02"
        web = await open_on_unit(rh, open_page)
        assert await web.js("() => window.fieldhub.map.options.crs.datum") == "gcj02"
        pixels = await look_at(web, *P, 16)
        marker = centroid(pixels, await marker_colour(web), tolerance=3)
        gcj_street, wgs_street = centroid(pixels, MAGENTA), centroid(pixels, BLUE)
        assert math.dist(marker, gcj_street) <= 3, (marker, gcj_street)
        assert math.dist(marker, wgs_street) > 100, (marker, wgs_street)  # ~550 m at 2 m a pixel: it did move
        # The page's own API stays WGS-84: the map puts P (given as WGS-84) where the marker is.
        drawn = await web.js(f"() => window.fieldhub.map.latLngToContainerPoint([{P[0]}, {P[1]}])")
        assert math.dist((drawn["x"] - 0.5, drawn["y"] - 0.5), marker) <= 2, (drawn, marker)

        # A dispatcher clicks Q's street: the incident is created at Q in WGS-84 (half a metre a pixel).
        pixels = await look_at(web, *Q, 18)
        x, y = centroid(pixels, RED)
        box = await web.page.get_by_test_id("map").bounding_box()
        assert box is not None
        await web.page.mouse.click(box["x"] + x + 0.5, box["y"] + y + 0.5)
        await web.by_id("new-incident").wait_for()
        await web.by_id("new-submit").click()
        await web.until("() => window.fieldhub.incidents.size > 0")
        incident_id = await web.js("() => [...window.fieldhub.incidents.keys()][0]")
        view = await incident_view(rh.api, incident_id)
        assert haversine_m(view["lat"], view["lon"], *Q) < 1.5, (view["lat"], view["lon"], Q)
        await web.context.close()  # before the hub goes: a page left open would log its reconnections


async def test_wgs84_tiles_draw_the_unit_where_it_is(settings: Settings, open_page: OpenPage) -> None:
    async with tiled_hub(settings, "wgs84") as rh:
        assert (await rh.api.get("/api/v1/map/config")).json()["tile_datum"] == "wgs84"
        web = await open_on_unit(rh, open_page)
        assert await web.js("() => window.fieldhub.map.options.crs.datum") == "wgs84"
        pixels = await look_at(web, *P, 16)
        marker = centroid(pixels, await marker_colour(web), tolerance=3)
        assert math.dist(marker, centroid(pixels, BLUE)) <= 3
        assert math.dist(marker, centroid(pixels, MAGENTA)) > 100
        await web.context.close()


# Points across the rectangle around China (a grid, and a fixed random sample a degree inside its edges, where
# every point round-trips), and around the simulated city.
_RANDOM = random.Random(17)
GRID = [(lat, lon) for lat in (18.3, 22.5, 26.1, 30.7, 34.26, 39.9, 45.8, 52.9)
        for lon in (76.0, 87.6, 98.5, 104.1, 108.9, 113.3, 117.18, 121.5, 126.6, 134.2)] + [
    (_RANDOM.uniform(1.9, 54.8), _RANDOM.uniform(73.1, 136.8)) for _ in range(400)]
OUTSIDE = [(48.8566, 2.3522), (35.68, 139.77), (-33.86, 151.2), (0.5, 110.0), (60.0, 100.0)]


async def test_gcj02_js_matches_geo_gcj02_and_the_map_inverts_clicks(settings: Settings,
                                                                      open_page: OpenPage) -> None:
    async with tiled_hub(settings, "gcj02") as rh:
        web = await open_on_unit(rh, open_page)
        gcj = [wgs84_to_gcj02(lat, lon) for lat, lon in GRID]
        result: dict[str, Any] = await web.js("""async ([wgs, gcj, outside]) => {
            const m = await import('/static/app/gcj02.js');
            const crs = window.fieldhub.map.options.crs, plain = L.CRS.EPSG3857;
            // A click: the pixel of the GCJ-02 position on the tiles, back through the map's projection.
            const click = ([lat, lon]) => {
                const ll = crs.pointToLatLng(plain.latLngToPoint(L.latLng(lat, lon), 18), 18);
                return [ll.lat, ll.lng];
            };
            return {forward: wgs.map(([lat, lon]) => m.wgs84ToGcj02(lat, lon)),
                    inverse: gcj.map(([lat, lon]) => m.gcj02ToWgs84(lat, lon)),
                    clicks: gcj.map(click),
                    outside: outside.map(([lat, lon]) => [m.wgs84ToGcj02(lat, lon), m.gcj02ToWgs84(lat, lon),
                                                          click([lat, lon])]),
                    inChina: [m.inChina(34.26, 117.18), m.inChina(35.68, 139.77), m.inChina(NaN, 110)]};
        }""", [GRID, gcj, OUTSIDE])
        for (lat, lon), (glat, glon), fwd, inv, click in zip(GRID, gcj, result["forward"], result["inverse"],
                                                             result["clicks"], strict=True):
            assert abs(fwd[0] - glat) < 1e-9 and abs(fwd[1] - glon) < 1e-9, ((lat, lon), fwd, (glat, glon))
            assert haversine_m(inv[0], inv[1], lat, lon) < 0.5, ((lat, lon), inv)
            assert haversine_m(inv[0], inv[1], *gcj02_to_wgs84(glat, glon)) < 0.5
            assert haversine_m(click[0], click[1], lat, lon) < 0.5, ((lat, lon), click)
            assert haversine_m(lat, lon, glat, glon) > 50  # the grid is where the datums differ
        for (lat, lon), (fwd, inv, click) in zip(OUTSIDE, result["outside"], strict=True):
            assert fwd == [lat, lon] and inv == [lat, lon], (lat, lon, fwd, inv)
            assert haversine_m(click[0], click[1], lat, lon) < 0.5
        assert result["inChina"] == [True, False, False]
        await web.context.close()
