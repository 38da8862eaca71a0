"""Screenshots of the real page for the README: the one-map with incidents open, and the dashboard.

The test always takes them (and checks they show something); they are written to ``docs/one-map.png``
and ``docs/dashboard.png`` only with ``FIELDHUB_SCREENSHOTS=1``, so a test run does not touch the tree:

    FIELDHUB_SCREENSHOTS=1 .venv/bin/python -m pytest tests/web/test_screenshots.py
"""

from __future__ import annotations

import os
import random
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from devices.client import DeviceClient
from devices.payloads import Fix
from hub.config import Settings
from tests.conftest import TOKEN, running_hub, wait_for
from tests.web.conftest import ROOT, VIEWPORT, CityRun, OpenPage, all_located, city_sim
from tests.web.one_map import tid

pytestmark = pytest.mark.asyncio(loop_scope="session")

DEMO_UNITS = 40
OPEN_INCIDENTS = ({"category": "robbery", "priority": 1, "summary": "便利店抢劫，嫌疑人向北逃离"},
                  {"category": "traffic_accident", "priority": 2, "summary": "两车相撞，无人受伤"},
                  {"category": "dispute", "priority": 3, "summary": "邻里纠纷"})


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def target(tmp_path: Path, name: str) -> Path:
    return ROOT / "docs" / name if os.environ.get("FIELDHUB_SCREENSHOTS") == "1" else tmp_path / name


async def history(run: CityRun, count: int) -> None:
    """Closed incidents for the dashboard: received 40 s to 4 min ago (``received_at``), dispatched to a unit
    now (which the sim acknowledges), contacted by hand and closed. Every milestone is the hub's own."""
    api, now = run.hub.api, int(time.time() * 1000)
    rng = random.Random(5)
    units = [u for u in (await api.get("/api/v1/units")).json()["units"] if u["position"]]
    ids = []
    for k in range(count):
        p = units[k]["position"]
        r = await api.post("/api/v1/incidents", json={
            "category": ("robbery", "traffic_accident", "theft", "dispute")[k % 4], "priority": 1 + k % 3,
            "lat": p["lat"], "lon": p["lon"], "received_at": now - rng.randint(40_000, 240_000)})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
        r = await api.post(f"/api/v1/incidents/{ids[-1]}/dispatch", json={"unit_ids": [units[k]["unit_id"]]})
        assert r.status_code == 200, r.text
    for k, incident_id in enumerate(ids):
        async def acknowledged(incident_id: str = incident_id) -> bool:
            view = (await api.get(f"/api/v1/incidents/{incident_id}")).json()
            return view["milestones"]["acknowledged"] is not None

        await wait_for(acknowledged, timeout=20)
        if k % 3:
            r = await api.post(f"/api/v1/incidents/{incident_id}/events", json={"type": "contacted"})
            assert r.status_code == 200, r.text
        assert (await api.post(f"/api/v1/incidents/{incident_id}/close")).status_code == 200


async def open_incidents(run: CityRun) -> list[str]:
    """Three open incidents, each near a unit; the first one dispatched (its unit signs for it)."""
    api = run.hub.api
    units = [u for u in (await api.get("/api/v1/units")).json()["units"] if u["position"]]
    ids = []
    for k, body in enumerate(OPEN_INCIDENTS):
        p = units[10 + k * 7]["position"]
        r = await api.post("/api/v1/incidents", json={**body, "lat": p["lat"] + 0.003, "lon": p["lon"] - 0.002})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    r = await api.post(f"/api/v1/incidents/{ids[0]}/dispatch", json={"auto": True, "count": 1})
    assert r.status_code == 200, r.text
    return ids


async def sos(run: CityRun) -> None:
    """An officer on foot presses the emergency button: an alert, and an incident by policy."""
    p = (await run.hub.api.get("/api/v1/units")).json()["units"][3]["position"]
    lat, lon = p["lat"] - 0.004, p["lon"] + 0.003
    await run.hub.put_unit("F001", ["f001-cam"], kind="foot", name="Foot 001")
    async with DeviceClient("f001-cam", run.settings.mqtt_url or "", unit_id="F001", kind="bodycam") as cam:
        cam.send_fix(Fix(int(time.time() * 1000), lat, lon, acc=6.0, speed=0.0))
        cam.send_event("sos")
        await wait_for(lambda: _alerts(run), timeout=10)


async def _alerts(run: CityRun) -> bool:
    return bool((await run.hub.api.get("/api/v1/alerts")).json()["alerts"])


async def test_screenshots_of_the_one_map_and_the_dashboard(settings: Settings, open_page: OpenPage,
                                                            tmp_path: Path) -> None:
    async with running_hub(settings) as rh, city_sim(settings, rh.base_url, units=DEMO_UNITS) as sim:
        await wait_for(lambda: all_located(rh.api, DEMO_UNITS), timeout=40, interval=0.25)
        run = CityRun(settings, rh, sim)
        await history(run, 9)
        ids = await open_incidents(run)
        await sos(run)
        web = await open_page(rh.base_url, TOKEN)
        await web.until(f"() => window.fieldhub.stats.unitsDrawn >= {DEMO_UNITS}")
        await web.page.locator(tid("alert-item")).first.wait_for()
        item = web.page.locator(tid("incident-item", incident_id=ids[0]))
        await item.click()
        await web.page.locator(tid("incident-panel", incident_id=ids[0])).wait_for()
        await web.page.locator(tid("timeline-item", milestone="acknowledged")).wait_for(timeout=20_000)
        await web.page.wait_for_timeout(1000)  # the map's fly to the incident ends
        await web.js("""() => {  // the whole fleet in view
            const map = window.fieldhub.map;
            const points = [...window.fieldhub.units.values()].filter((u) => u.position)
                .map((u) => [u.position.lat, u.position.lon]);
            map.fitBounds(points, {animate: false, padding: [20, 20]});
        }""")
        await web.page.wait_for_timeout(1500)  # a few unit updates drawn
        shots: dict[str, Any] = {}
        one_map = target(tmp_path, "one-map.png")
        shots["one-map"] = await web.page.screenshot(path=str(one_map))

        await web.by_id("view-dashboard").click()
        await web.by_id("dashboard").wait_for()
        await web.until("() => performance.getEntriesByType('resource')"
                        ".some((e) => e.name.includes('/api/v1/reports/response-times'))")
        await web.page.wait_for_timeout(1000)  # the charts drawn
        dashboard = target(tmp_path, "dashboard.png")
        shots["dashboard"] = await web.page.screenshot(path=str(dashboard))
        await web.context.close()  # before the hub goes: a page left open would log its reconnections

    for name, data in shots.items():
        assert png_size(data) == (VIEWPORT["width"], VIEWPORT["height"]), name
        assert len(data) > 40_000, f"{name}: {len(data)} bytes, an empty page?"
    assert one_map.read_bytes() == shots["one-map"] and dashboard.read_bytes() == shots["dashboard"]
