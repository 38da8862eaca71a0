"""The one-map's API: who am I, base map, overlays, map settings, incident heatmap."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from geo.geodesy import offset
from hub.config import Settings
from hub.web.overlays import OverlayError, load_overlays
from tests.conftest import RunningHub, running_hub

LAT, LON = 34.26, 117.18


async def test_me_tells_the_role_and_whether_it_may_dispatch(hub: RunningHub) -> None:
    assert (await hub.api.get("/api/v1/me")).json() == {"name": "bootstrap", "role": "dispatcher",
                                                         "can_dispatch": True}
    viewer = await hub.hub.create_token("viewer", "wall screen")
    r = await hub.api.get("/api/v1/me", headers={"Authorization": f"Bearer {viewer}"})
    assert r.json() == {"name": "wall screen", "role": "viewer", "can_dispatch": False}
    async with httpx.AsyncClient(base_url=hub.base_url) as anonymous:
        assert (await anonymous.get("/api/v1/me")).status_code == 401


async def test_base_map_overlays_and_config(hub: RunningHub) -> None:
    base = (await hub.api.get("/api/v1/map")).json()
    assert base["type"] == "FeatureCollection" and len(base["features"]) > 100
    overlays = (await hub.api.get("/api/v1/map/overlays")).json()
    kinds = [f["properties"]["kind"] for f in overlays["features"]]
    assert kinds.count("duty_post") == 6 and kinds.count("patrol_line") >= 5
    lines = [f for f in overlays["features"] if f["properties"]["kind"] == "patrol_line"]
    assert all(len(f["geometry"]["coordinates"]) >= 2 for f in lines)
    config = (await hub.api.get("/api/v1/map/config")).json()
    min_lon, min_lat, max_lon, max_lat = base["bbox"]
    assert config["tile_url"] is None and config["zoom"] == 14
    assert config["tile_datum"] == "wgs84"  # positions are drawn as they are stored unless the tiles say otherwise
    assert min_lat < config["center"][0] < max_lat and min_lon < config["center"][1] < max_lon


async def test_configured_overlays_and_tiles(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "overlays.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [LON, LAT]},
         "properties": {"kind": "duty_post", "name": "东站"}}]}), encoding="utf-8")
    tiles = "https://tiles.example/{z}/{x}/{y}.png"
    async with running_hub(settings.model_copy(update={"map_overlays": path, "map_tile_url": tiles,
                                                       "map_center": (LAT, LON), "map_tile_datum": "gcj02"})) as hub:
        overlays = (await hub.api.get("/api/v1/map/overlays")).json()
        assert [f["properties"]["name"] for f in overlays["features"]] == ["东站"]
        config = (await hub.api.get("/api/v1/map/config")).json()
        assert config["tile_url"] == tiles and config["center"] == [LAT, LON]
        # The tiles' datum reaches the page; the centre (like every position in the API) stays WGS-84.
        assert config["tile_datum"] == "gcj02"


@pytest.mark.parametrize(("content", "words"), [
    ("nope", "not valid JSON"),
    ({"type": "Feature"}, "FeatureCollection"),
    ({"type": "FeatureCollection", "features": [{"geometry": {"type": "Point", "coordinates": [1, 2]},
                                                 "properties": {"kind": "hospital"}}]}, "duty_post"),
    ({"type": "FeatureCollection", "features": [{"geometry": {"type": "Point", "coordinates": [500, 2]},
                                                 "properties": {"kind": "duty_post"}}]}, "coordinates"),
    ({"type": "FeatureCollection", "features": [{"geometry": {"type": "LineString", "coordinates": []},
                                                 "properties": {"kind": "patrol_line"}}]}, "coordinates"),
])
def test_bad_overlays_are_refused(tmp_path: Path, content: object, words: str) -> None:
    path = tmp_path / "o.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    with pytest.raises(OverlayError, match=words):
        load_overlays(path)


async def test_heatmap_counts_incidents_per_cell_in_the_period(hub: RunningHub) -> None:
    spots = [(0, 0), (20, 10), (-30, 15), (2000, 0), (2010, 5), (-3000, 0)]  # metres north, east
    for north, east in spots:
        lat, lon = offset(LAT, LON, north, east)
        r = await hub.api.post("/api/v1/incidents", json={"category": "theft", "priority": 3, "lat": lat,
                                                         "lon": lon})
        assert r.status_code == 201
    heat = (await hub.api.get("/api/v1/reports/heatmap", params={"cell_m": 250})).json()
    assert heat["max"] == 3 and heat["cell_m"] == 250
    assert sum(c["count"] for c in heat["cells"]) == 6
    assert sorted(c["count"] for c in heat["cells"])[-1] == 3 and len(heat["cells"]) in (3, 4)
    top = heat["cells"][0]
    assert abs(top["lat"] - LAT) < 0.001 and abs(top["lon"] - LON) < 0.001
    empty = (await hub.api.get("/api/v1/reports/heatmap", params={"from": 0, "to": 1000})).json()
    assert empty["cells"] == [] and empty["max"] == 0
    assert (await hub.api.get("/api/v1/reports/heatmap", params={"cell_m": 1})).status_code == 422
    assert (await hub.api.get("/api/v1/reports/heatmap", params={"from": 5, "to": 1})).status_code == 400
