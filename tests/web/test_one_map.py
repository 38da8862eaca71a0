"""The one-map in real headless Chromium against a real hub, broker, database and the simulated city.

What a dispatcher and a viewer see and do (issue 4): units appear and move; an incident created by
clicking the map; the recommended unit dispatched; the timeline following the simulated unit as it
acknowledges, departs and arrives; SLA chips changing state; a viewer that can see but not act.
What the page shows is checked against the hub's API.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from playwright.async_api import TimeoutError as PlaywrightTimeout

from geo.geodesy import haversine_m
from tests.conftest import TOKEN, wait_for
from tests.web.conftest import UNITS, CityRun, OpenPage
from tests.web.one_map import chip_states, click_map_at, incident_view, panel, positions, spot_near_a_unit, tid

pytestmark = pytest.mark.asyncio(loop_scope="session")


# ------------------------------------------------------------------------------ units
async def test_units_appear_and_move(city: CityRun, open_page: OpenPage) -> None:
    web = await open_page(city.base_url, TOKEN)
    await web.page.locator(tid("conn", state="connected")).wait_for()
    assert await web.by_id("map").is_visible()
    await web.until(f"() => window.fieldhub.units.size >= {UNITS} && window.fieldhub.stats.unitsDrawn >= {UNITS}")
    hub_units = {u["unit_id"] for u in (await city.hub.api.get("/api/v1/units")).json()["units"]}
    first = await positions(web)
    assert set(first) == hub_units and len(hub_units) == UNITS
    assert await web.js("() => window.fieldhub.connected") is True
    assert await web.js("() => window.fieldhub.role") == "dispatcher"

    # The page keeps up: the positions it holds are the ones the hub has, a few seconds old at most.
    async def some_moved() -> bool:
        now = await positions(web)
        return sum(1 for u, p in now.items() if p[:2] != first[u][:2]) >= 5

    await wait_for(some_moved, timeout=30, interval=0.5)
    page_now, wall = await positions(web), time.time() * 1000
    stale = {u: round(wall - p[2]) for u, p in page_now.items() if wall - p[2] > 10_000}
    assert not stale, f"positions older than 10 s on the page: {stale}"
    api_units = {u["unit_id"]: u for u in (await city.hub.api.get("/api/v1/units")).json()["units"]}
    far = {u: round(haversine_m(p[0], p[1], api_units[u]["position"]["lat"], api_units[u]["position"]["lon"]))
           for u, p in page_now.items()}
    assert max(far.values()) < 150, f"page vs hub position (m), a unit drives at most ~17 m/s: {far}"
    # Deltas keep coming over the WebSocket (the 5 moves above may all have come in the first few frames).
    await web.until("() => window.fieldhub.stats.wsMessages > 5", timeout_s=10)
    assert await web.js("() => window.fieldhub.stats.snapshotMs") > 0


# ----------------------------------------------------------------- incident lifecycle
async def test_dispatcher_creates_an_incident_on_the_map_and_follows_the_response(
        city: CityRun, open_page: OpenPage) -> None:
    api = city.hub.api
    web = await open_page(city.base_url, TOKEN)
    web.page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    lat, lon = await spot_near_a_unit(api)

    # Create: a click on the map opens the form at that point.
    await click_map_at(web, lat, lon)
    form = web.by_id("new-incident")
    await form.wait_for(state="visible", timeout=5000)
    categories = await web.page.locator(tid("new-category") + " option").evaluate_all(
        "(options) => options.map((o) => o.value)")
    assert "robbery" in categories, categories
    await web.by_id("new-category").select_option("robbery")
    await web.by_id("new-priority").select_option("1")
    await web.by_id("new-summary").fill("web test: shop robbed")
    await web.by_id("new-submit").click()
    await form.wait_for(state="hidden", timeout=10_000)

    item = web.page.locator(f'{tid("incident-list")} {tid("incident-item", priority="1")}')
    await item.first.wait_for(timeout=10_000)
    incident_id = await item.first.get_attribute("data-incident-id")
    assert incident_id
    created = await incident_view(api, incident_id)
    assert created["category"] == "robbery" and created["priority"] == 1 and created["status"] == "open"
    assert created["summary"] == "web test: shop robbed"
    assert haversine_m(lat, lon, created["lat"], created["lon"]) < 5, "the incident is where the map was clicked"
    assert created["milestones"]["dispatched"] is None

    # The panel: SLA chips all pending, recommendations with ETAs.
    incident_panel = web.page.locator(tid("incident-panel", incident_id=incident_id))
    if not await incident_panel.is_visible():
        await item.first.click()
    await incident_panel.wait_for()
    await web.page.locator(panel(tid("sla-chip"))).first.wait_for()
    pending = await chip_states(web)
    assert set(pending) == {t["milestone"] for t in created["sla"]}, pending
    assert set(pending.values()) == {"pending"}, pending
    recommendation = web.page.locator(panel(tid("recommendation")))
    await recommendation.first.wait_for(timeout=10_000)
    shown = await recommendation.evaluate_all("(rs) => rs.map((r) => [r.dataset.unitId, r.innerText])")
    assert shown and all(re.search(r"\d", text) for _, text in shown), f"each recommendation shows its ETA: {shown}"
    r = await api.get(f"/api/v1/incidents/{incident_id}/recommendations", params={"count": 3})
    expected = [x["unit_id"] for x in r.json()["recommendations"]]
    assert shown[0][0] in expected, f"page recommends {shown}, the hub {r.json()}"

    # Dispatch the recommended unit with its button.
    unit = shown[0][0]
    await recommendation.first.locator(tid("dispatch-btn")).click()
    await web.page.locator(panel(tid("assignment", unit_id=unit))).wait_for(timeout=10_000)
    timeline = {m: web.page.locator(panel(tid("timeline-item", milestone=m)))
                for m in ("dispatched", "acknowledged", "departed", "arrived", "contacted", "supported", "cleared")}
    await timeline["dispatched"].wait_for(timeout=10_000)
    view = await incident_view(api, incident_id)
    assert [a["unit_id"] for a in view["assignments"]] == [unit]

    # The simulated unit signs for the command, leaves after its turnout and drives there.
    async def explain() -> str:
        view = await incident_view(api, incident_id)
        u = (await api.get(f"/api/v1/units/{unit}")).json()
        p = u["position"]
        return (f"incident {view['milestones']} {view['assignments']}; unit {unit} {u['status']} at {p},"
                f" {haversine_m(lat, lon, p['lat'], p['lon']):.0f} m from the incident")

    # Arrival needs a stop of 60 s in the zone (hub.domain.arrival.ArrivalParams.stop_ms) before it is confirmed.
    for name, timeout_ms in (("acknowledged", 20_000), ("departed", 45_000), ("arrived", 180_000)):
        try:
            await timeline[name].wait_for(timeout=timeout_ms)
        except PlaywrightTimeout:
            raise AssertionError(f"no {name} on the page within {timeout_ms / 1000:.0f} s: {await explain()}") from None
    await web.page.locator(panel(tid("sla-chip", milestone="dispatched", state="met"))).wait_for(timeout=10_000)
    await web.page.locator(panel(tid("sla-chip", milestone="arrived", state="met"))).wait_for(timeout=10_000)
    view = await incident_view(api, incident_id)
    ms = view["milestones"]
    assert ms["dispatched"]["ts"] <= ms["acknowledged"]["ts"] <= ms["departed"]["ts"] < ms["arrived"]["ts"]
    for name in ("acknowledged", "departed", "arrived"):
        source = await timeline[name].first.get_attribute("data-source")
        assert source == ms[name]["source"], f"{name}: page says {source}, hub {ms[name]}"
    assert (ms["acknowledged"]["source"], ms["departed"]["source"], ms["arrived"]["source"]) == (
        "device", "motion", "geofence")
    await web.page.locator(panel(tid("assignment", unit_id=unit, status="on_scene"))).wait_for(timeout=15_000)

    # The officer's contact event (from the sim), then the analyst's support by hand: chips follow.
    await web.page.locator(panel(tid("sla-chip", milestone="contacted", state="met"))).wait_for(timeout=30_000)
    assert (await chip_states(web))["supported"] == "pending"
    await web.page.locator(panel(tid("manual-supported"))).click()
    await timeline["supported"].wait_for(timeout=10_000)
    await web.page.locator(panel(tid("sla-chip", milestone="supported"))).and_(
        web.page.locator('[data-state="met"], [data-state="missed"]')).wait_for(timeout=10_000)
    view = await incident_view(api, incident_id)
    expected_chips = {t["milestone"]: {True: "met", False: "missed", None: "pending"}[t["met"]] for t in view["sla"]}
    assert await chip_states(web) == expected_chips
    assert expected_chips["dispatched"] == expected_chips["departed"] == expected_chips["arrived"] == "met"

    await web.page.locator(panel(tid("close-btn"))).click()
    await timeline["cleared"].wait_for(timeout=10_000)
    assert (await incident_view(api, incident_id))["status"] == "closed"


# ------------------------------------------------------------------------------ viewer
async def test_a_viewer_sees_but_cannot_act(city: CityRun, open_page: OpenPage) -> None:
    api = city.hub.api
    r = await api.post("/api/v1/incidents", json={"category": "robbery", "priority": 2, "lat": 34.2610,
                                                   "lon": 117.1859, "summary": "seen by a viewer"})
    assert r.status_code == 201, r.text
    incident_id = r.json()["id"]
    viewer = await city.token("viewer")
    web = await open_page(city.base_url, viewer)
    assert await web.js("() => window.fieldhub.role") == "viewer"

    item = web.page.locator(tid("incident-item", incident_id=incident_id))
    await item.wait_for(timeout=10_000)
    await item.click()
    await web.page.locator(tid("incident-panel", incident_id=incident_id)).wait_for()
    await web.page.locator(panel(tid("sla-chip"))).first.wait_for()
    for action in ("dispatch-btn", "close-btn", "manual-contacted", "manual-supported"):
        assert await web.page.locator(panel(tid(action))).count() == 0, f"a viewer is offered {action}"

    lat, lon = await spot_near_a_unit(api)
    await click_map_at(web, lat, lon)
    await asyncio.sleep(2.0)  # what a dispatcher's click opens within a moment (see the test above)
    assert await web.by_id("new-incident").count() == 0 or not await web.by_id("new-incident").is_visible()

    headers = {"Authorization": f"Bearer {viewer}"}
    r = await api.post("/api/v1/incidents", headers=headers, json={"category": "robbery", "priority": 1,
                                                                    "lat": lat, "lon": lon})
    assert r.status_code == 403, r.text
    r = await api.post(f"/api/v1/incidents/{incident_id}/dispatch", headers=headers, json={"unit_ids": ["P001"]})
    assert r.status_code == 403, r.text
    assert (await incident_view(api, incident_id))["assignments"] == []
