"""Drones on the one-map (web/CONTRACT.md, Drones), in real headless Chromium against a real hub flying
simulated drones.

The fixture ``drone_city`` (see :class:`tests.web.one_map.DroneCity`): the hub of ``city`` (auto-dispatch off,
the simulated ground units) configured with a fleet of at least two simulated drones (``settings.drones``, the
MAVLink link to a drone simulator), docked at stations inside the simulated city, each with a full battery;
yielded once ``GET /api/v1/drones`` lists every one with ``link`` "ok", ``state`` "ready" and a position.
``drone_ids`` lists them; ``cut_link(id)`` silences one simulated drone (no heartbeat, no telemetry).

What is checked: a dispatcher sends a drone to an incident and watches it leave its dock with its route drawn
to the incident, the incident's timeline taking the drone's milestones; a viewer sees drones (marks, docks,
panel, search, layer toggle) and no drone command; a drone operator flies one (go to a point picked on the map,
return); a drone whose link is lost looks lost, and its commands are refused with the hub's reason; a drone let
in without MAVLink 2 signing (``"unsigned": true``, the fixture's second drone) is labelled unsigned on the map and
in its panel, a signed one is not; a hub without drones gives a page without drone marks.
"""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import TimeoutError as PlaywrightTimeout

from devices.geo import haversine_m
from tests.conftest import TOKEN, wait_for
from tests.web.conftest import CityRun, OpenPage, WebPage
from tests.web.one_map import (
    DroneCity,
    click_map_at,
    drone_marks,
    drone_views,
    incident_view,
    panel,
    px_apart,
    route_ends,
    tid,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

# About 500 m north-east of a dock: a short flight, well within a full battery's round trip.
INCIDENT_OFFSET = (0.0035, 0.0035)
ZOOM = 15            # ~4.8 m per pixel at the city's latitude
LEFT_DOCK_PX = 10    # the mark this far from its pad: the drone left the dock (~50 m)
ON_SPOT_PX = 8       # the mark is drawn where the drone's view says it is
COMMANDS = ("drone-goto", "drone-goto-alt", "drone-rtl", "drone-land")
MARKS = tid("drone-marker")


async def incident_near_a_dock(drone_city: DroneCity) -> tuple[str, dict[str, float]]:
    drones = await drone_views(drone_city.hub.api)
    ready = [d for d in drones.values() if d["state"] == "ready" and d["link"] == "ok"]
    assert ready, f"no ready drone: {drones}"
    dock = ready[0]["dock"]
    lat, lon = dock["lat"] + INCIDENT_OFFSET[0], dock["lon"] + INCIDENT_OFFSET[1]
    r = await drone_city.hub.api.post("/api/v1/incidents", json={
        "category": "traffic_accident", "priority": 1, "lat": lat, "lon": lon, "summary": "drone test: crash"})
    assert r.status_code == 201, r.text
    return r.json()["id"], {"lat": lat, "lon": lon}


async def open_incident(web: WebPage, incident_id: str) -> None:
    item = web.page.locator(tid("incident-item", incident_id=incident_id))
    await item.wait_for(timeout=10_000)
    await item.click()
    await web.page.locator(tid("incident-panel", incident_id=incident_id)).wait_for()


async def mark_of(web: WebPage, drone_id: str) -> dict:
    marks = await drone_marks(web)
    assert drone_id in marks, f"no mark for {drone_id}: {sorted(marks)}"
    return marks[drone_id]


# ------------------------------------------------------------------ send a drone
async def test_a_dispatcher_sends_a_drone_and_follows_it_to_the_incident(
        drone_city: DroneCity, open_page: OpenPage) -> None:
    api = drone_city.hub.api
    incident_id, spot = await incident_near_a_dock(drone_city)
    web = await open_page(drone_city.base_url, TOKEN)
    assert await web.js("() => window.fieldhub.role") == "dispatcher"
    await web.until(f"() => window.fieldhub.drones.size >= {len(drone_city.drone_ids)}")
    marks = await drone_marks(web)
    assert set(marks) == set(drone_city.drone_ids), marks
    assert all(m["link"] == "ok" and m["state"] == "ready" and not m["lostBadge"] for m in marks.values()), marks
    assert await web.page.locator(tid("drone-dock")).count() >= 1
    # Drawn once: not on the unit canvas as well.
    ground = await web.js(
        "() => [...window.fieldhub.units.values()].filter((u) => u.kind !== 'drone' && u.position).length")
    await web.until(f"() => window.fieldhub.stats.unitsDrawn === {ground}")

    await open_incident(web, incident_id)
    await web.js("([lat, lon, zoom]) => { window.fieldhub.map.setView([lat, lon], zoom, {animate: false}); }",
                 [spot["lat"], spot["lon"], ZOOM])
    send = web.page.locator(panel(tid("dispatch-drone")))
    await send.click()
    result = web.page.locator(panel(tid("drone-dispatch-result")))
    await result.wait_for(timeout=10_000)
    drone_id = await result.get_attribute("data-drone-id")
    assert drone_id in drone_city.drone_ids, drone_id
    assert drone_id in await result.inner_text()
    await web.page.locator(tid("toast", kind="info")).filter(has_text=drone_id).first.wait_for(timeout=5000)
    # The hub's answer is the drone now assigned to the incident, like a unit.
    await web.page.locator(panel(tid("assignment", unit_id=drone_id))).wait_for(timeout=10_000)
    view = await incident_view(api, incident_id)
    assert drone_id in [a["unit_id"] for a in view["assignments"]], view["assignments"]

    # The drone takes off and leaves its dock: its mark goes with it, its route is drawn (dashed) to the incident.
    async def explain() -> str:
        return f"page {await mark_of(web, drone_id)}; hub {(await drone_views(api))[drone_id]}"

    async def left_the_dock() -> bool:
        m = await mark_of(web, drone_id)
        return (m["state"] in ("flying", "on_scene") and m["at"] is not None
                and px_apart(m["at"], m["dock"]) > LEFT_DOCK_PX and px_apart(m["centre"], m["dock"]) > LEFT_DOCK_PX
                and px_apart(m["centre"], m["at"]) < ON_SPOT_PX)

    try:
        await wait_for(left_the_dock, timeout=60, interval=0.25)
    except AssertionError:
        raise AssertionError(f"{drone_id} did not leave its dock on the page in 60 s: {await explain()}") from None
    mark = await mark_of(web, drone_id)
    assert drone_id in mark["text"] and " m" in mark["text"], f"the label shows id and altitude: {mark['text']!r}"
    route = await route_ends(web, drone_id)
    assert route is not None, f"no route drawn for {drone_id} in flight: {await explain()}"
    assert route["dashed"], "the planned route is dashed"
    target = await web.js("([lat, lon]) => { const p = window.fieldhub.map.latLngToContainerPoint([lat, lon]);"
                          " return [p.x, p.y]; }", [spot["lat"], spot["lon"]])
    assert px_apart(route["last"], target) < 6, f"the route ends at the incident: {route} vs {target}"
    assert px_apart(route["first"], mark["at"]) < ON_SPOT_PX, f"the route starts at the drone: {route} vs {mark}"
    assert await web.page.locator(tid("drone-trail", drone_id=drone_id)).count() == 1

    # Its panel: state, its incident; a dispatcher gets no flight commands.
    await web.page.locator(tid("drone-marker", drone_id=drone_id)).click()
    drone_panel = web.page.locator(tid("drone-panel", drone_id=drone_id))
    await drone_panel.wait_for()
    assert incident_id in await drone_panel.locator(tid("drone-incident")).inner_text()
    for command in COMMANDS:
        assert await drone_panel.locator(tid(command)).count() == 0, f"a dispatcher is offered {command}"

    # The drone's assignment takes its milestones (telemetry: take-off, arrival over the scene). They are the
    # assignment's only: the incident's timeline (the officers' response targets) does not take them.
    row = web.page.locator(panel(tid("assignment", unit_id=drone_id)))
    steps = {m: row.locator(tid("assignment-step", milestone=m)) for m in ("acknowledged", "departed", "arrived")}
    for name, timeout_ms in (("acknowledged", 30_000), ("departed", 60_000), ("arrived", 180_000)):
        try:
            await steps[name].wait_for(timeout=timeout_ms)
        except PlaywrightTimeout:
            a = next(a for a in (await incident_view(api, incident_id))["assignments"] if a["unit_id"] == drone_id)
            raise AssertionError(f"no {name} on the page within {timeout_ms / 1000:.0f} s: {a};"
                                 f" {await explain()}") from None
    view = await incident_view(api, incident_id)
    a = next(a for a in view["assignments"] if a["unit_id"] == drone_id)
    assert a["aerial"] and a["dispatched"] <= a["acknowledged"] <= a["departed"] < a["arrived"], a
    for name in ("acknowledged", "departed", "arrived"):
        assert await steps[name].get_attribute("data-source") == a["sources"][name], (name, a)
    assert view["milestones"]["arrived"] is None
    assert await web.page.locator(panel(tid("timeline-item", milestone="arrived"))).count() == 0
    hub_drone = (await drone_views(api))[drone_id]
    assert haversine_m(spot["lat"], spot["lon"], hub_drone["position"]["lat"], hub_drone["position"]["lon"]) < 100
    await web.page.locator(tid("drone-marker", drone_id=drone_id)).and_(
        web.page.locator('[data-state="on_scene"]')).wait_for(timeout=15_000)


# ------------------------------------------------------------------------ viewer
async def test_a_viewer_sees_drones_but_no_drone_commands(drone_city: DroneCity, open_page: OpenPage) -> None:
    api = drone_city.hub.api
    incident_id, _ = await incident_near_a_dock(drone_city)
    viewer = await drone_city.token("viewer")
    web = await open_page(drone_city.base_url, viewer)
    assert await web.js("() => window.fieldhub.role") == "viewer"
    all_marks = f"() => document.querySelectorAll('{MARKS}').length === {len(drone_city.drone_ids)}"
    await web.until(all_marks)
    hub = await drone_views(api)
    docks = {d["dock"]["name"] for d in hub.values()}
    shown = set(await web.page.locator(tid("drone-dock")).evaluate_all("(ns) => ns.map((n) => n.dataset.name)"))
    assert shown == docks, f"docks: page {shown}, hub {docks}"

    # Search finds a drone by its id; picking it opens its panel, without commands.
    drone_id = drone_city.drone_ids[0]
    await web.by_id("search").fill(drone_id.lower())
    hit = web.page.locator(tid("search-result", kind="drone", id=drone_id))
    await hit.wait_for(timeout=5000)
    await hit.click()
    drone_panel = web.page.locator(tid("drone-panel", drone_id=drone_id))
    await drone_panel.wait_for()
    assert await drone_panel.get_attribute("data-link") == "ok"
    assert await drone_panel.locator(tid("drone-battery")).count() == 1
    for command in COMMANDS:
        assert await drone_panel.locator(tid(command)).count() == 0, f"a viewer is offered {command}"

    await open_incident(web, incident_id)
    await web.page.locator(panel(tid("sla-chip"))).first.wait_for()
    assert await web.page.locator(panel(tid("dispatch-drone"))).count() == 0, "a viewer may not send a drone"

    # The layer toggle hides and shows the drones.
    toggle = web.page.locator(tid("layer-toggle", layer="drones"))
    assert await toggle.is_checked()
    await toggle.uncheck()
    await web.until(f"() => !document.querySelector('{MARKS}')", timeout_s=5)
    await toggle.check()
    await web.until(all_marks, timeout_s=5)

    headers = {"Authorization": f"Bearer {viewer}"}
    r = await api.post(f"/api/v1/drones/{drone_id}/rtl", headers=headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
    r = await api.post(f"/api/v1/incidents/{incident_id}/drone", headers=headers, json={})
    assert r.status_code == 403, r.text


# --------------------------------------------------------------- drone operator
async def test_a_drone_operator_sends_a_drone_to_a_point_and_brings_it_back(
        drone_city: DroneCity, open_page: OpenPage) -> None:
    api = drone_city.hub.api
    operator = await drone_city.token("drone_operator")
    web = await open_page(drone_city.base_url, operator)
    assert await web.js("() => window.fieldhub.role") == "drone_operator"
    drone_id = drone_city.drone_ids[-1]
    dock = (await drone_views(api))[drone_id]["dock"]
    goal = (dock["lat"] - 0.002, dock["lon"] + 0.002)  # ~290 m south-east of its dock

    await web.js("([lat, lon]) => { window.fieldhub.map.setView([lat, lon], 16, {animate: false}); }",
                 [dock["lat"], dock["lon"]])
    await web.page.locator(tid("drone-marker", drone_id=drone_id)).click()
    drone_panel = web.page.locator(tid("drone-panel", drone_id=drone_id))
    await drone_panel.wait_for()
    assert await drone_panel.locator(tid("drone-goto-alt")).input_value() == "60"
    await drone_panel.locator(tid("drone-goto-alt")).fill("80")
    await drone_panel.locator(tid("drone-goto")).click()
    await drone_panel.locator(tid("drone-goto-hint")).wait_for(state="visible")
    await click_map_at(web, *goal, zoom=16)
    await web.page.locator(tid("toast", kind="info")).filter(has_text=drone_id).first.wait_for(timeout=10_000)
    assert await web.by_id("new-incident").count() == 0, "the go-to click opened nothing else"
    assert await drone_panel.locator(tid("drone-goto-hint")).is_hidden()

    async def flying_to_goal() -> bool:
        d = (await drone_views(api))[drone_id]
        t = (d.get("mission") or {}).get("target") or {}
        return (d["state"] in ("flying", "on_scene") and t.get("lat") is not None
                and haversine_m(goal[0], goal[1], t["lat"], t["lon"]) < 5 and abs(t.get("alt_m", 0) - 80) < 1)

    await wait_for(flying_to_goal, timeout=30, interval=0.5)
    await web.page.locator(tid("drone-route", drone_id=drone_id, kind="mission")).wait_for(
        state="attached", timeout=10_000)
    await web.until("(id) => { const m = document.querySelector(`[data-testid=drone-marker][data-drone-id=\"${id}\"]`);"
                    " return m && /[1-9]\\d* m/.test(m.innerText); }", drone_id, timeout_s=30)

    await web.js("() => document.querySelectorAll('[data-testid=toast]').forEach((n) => n.remove())")
    await drone_panel.locator(tid("drone-rtl")).click()
    await web.page.locator(tid("toast", kind="info")).filter(has_text=drone_id).first.wait_for(timeout=10_000)
    await web.page.locator(tid("drone-marker", drone_id=drone_id)).and_(
        web.page.locator('[data-state="returning"]')).wait_for(timeout=30_000)
    await web.page.locator(tid("drone-route", drone_id=drone_id, kind="return")).wait_for(
        state="attached", timeout=10_000)


# ---------------------------------------------------------------------- link lost
async def test_a_drone_whose_link_is_lost_looks_lost_and_refuses_commands(
        drone_city: DroneCity, open_page: OpenPage) -> None:
    operator = await drone_city.token("drone_operator")
    web = await open_page(drone_city.base_url, operator)
    web.expect_console(r"status of 409")  # the refused command
    drone_id = drone_city.drone_ids[0]
    await web.page.locator(tid("drone-marker", drone_id=drone_id, link="ok")).wait_for(timeout=15_000)
    assert not (await mark_of(web, drone_id))["lostBadge"]

    await drone_city.cut_link(drone_id)
    # Lost after 3 s without a heartbeat: grey, dashed, badged.
    await web.page.locator(tid("drone-marker", drone_id=drone_id, link="lost")).wait_for(timeout=15_000)
    marker = web.page.locator(tid("drone-marker", drone_id=drone_id))
    await marker.locator(tid("drone-link-lost")).wait_for(state="visible")
    mark = await mark_of(web, drone_id)
    assert mark["lostBadge"] and "link-lost" in (await marker.get_attribute("class") or "")
    colour = await marker.evaluate("(n) => getComputedStyle(n).color")
    rgb = [int(c) for c in colour[colour.index("(") + 1:colour.index(")")].split(",")[:3]]
    assert max(rgb) - min(rgb) <= 40, f"a lost drone is grey, not {colour}"
    others = [m for i, m in (await drone_marks(web)).items() if i != drone_id]
    assert others and not any(m["lostBadge"] for m in others), "only the silent drone looks lost"

    await marker.click()
    drone_panel = web.page.locator(tid("drone-panel", drone_id=drone_id, link="lost"))
    await drone_panel.wait_for()
    await drone_panel.locator(tid("drone-land")).click()
    await web.page.locator(tid("toast", kind="error")).filter(has_text=drone_id).first.wait_for(timeout=10_000)


# ---------------------------------------------------------------------- unsigned
async def test_a_drone_let_in_unsigned_is_labelled_so_on_the_map_and_in_its_panel(
        drone_city: DroneCity, open_page: OpenPage) -> None:
    signed_id, unsigned_id = drone_city.drone_ids[:2]
    views = await drone_views(drone_city.hub.api)
    assert (views[signed_id]["signing"], views[unsigned_id]["signing"]) == ("signed", "unsigned")
    web = await open_page(drone_city.base_url, TOKEN)
    await web.until(f"() => window.fieldhub.drones.size >= {len(drone_city.drone_ids)}")
    for drone_id, unsigned in ((signed_id, False), (unsigned_id, True)):
        marker = web.page.locator(tid("drone-marker", drone_id=drone_id))
        await marker.wait_for()
        assert await marker.get_attribute("data-signing") == ("unsigned" if unsigned else "signed")
        mark_badge = marker.locator(tid("drone-unsigned-mark"))
        assert await mark_badge.is_visible() is unsigned, drone_id
        await web.by_id("search").fill(drone_id.lower())
        hit = web.page.locator(tid("search-result", kind="drone", id=drone_id))
        await hit.wait_for(timeout=5000)
        await hit.click()
        drone_panel = web.page.locator(tid("drone-panel", drone_id=drone_id))
        await drone_panel.wait_for()
        badge = drone_panel.locator(tid("drone-unsigned"))
        assert await badge.is_visible() is unsigned, drone_id
        fact = drone_panel.locator(tid("drone-signing"))
        assert await fact.get_attribute("data-signing") == ("unsigned" if unsigned else "signed")
        if unsigned:
            assert (await badge.inner_text()).strip() in ("UNSIGNED", "未签名")
            assert "UNSIGNED" in (await mark_badge.inner_text()) or "未签名" in (await mark_badge.inner_text())


# ------------------------------------------------------------------ no drones
async def test_a_hub_without_drones_gives_a_page_without_drone_marks(city: CityRun, open_page: OpenPage) -> None:
    web = await open_page(city.base_url, TOKEN)
    await asyncio.sleep(1.0)
    assert await web.js("() => window.fieldhub.drones.size") == 0
    assert await web.page.locator(tid("drone-marker")).count() == 0
    assert await web.page.locator(tid("drone-dock")).count() == 0
    assert await web.page.locator(tid("layer-toggle", layer="drones")).is_checked()
