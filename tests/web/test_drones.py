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
import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Locator
from playwright.async_api import TimeoutError as PlaywrightTimeout

from geo.geodesy import haversine_m
from hub.config import Settings
from tests.conftest import TOKEN, wait_for
from tests.web.conftest import CityRun, DroneCityRun, OpenPage, WebPage, drone_city_run
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
READY_GREEN = "rgb(47, 191, 113)"       # DRONE_STATE_COLOURS.ready
ATTENTION = "rgb(200, 147, 106)"        # ATTENTION_COLOUR: standing, but not fit to be sent
ERROR_RED = "rgb(255, 77, 79)"          # --bad: a STATUSTEXT of severity error or worse
FAULT = "Gyros inconsistent"            # an injected sensor fault, ArduPilot's words


@pytest_asyncio.fixture(loop_scope="session")
async def stock_drone_city(settings: Settings) -> AsyncIterator[DroneCityRun]:
    """``drone_city`` with stock copters: ArduCopter's default parameters, so no link failsafe
    (``FS_GCS_ENABLE`` 0); yielded once every drone is linked, located and its failsafe read."""
    async with drone_city_run(settings, params={}) as run:
        yield run


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


async def colour_of(locator: Locator) -> str:
    colour: str = await locator.evaluate("(n) => getComputedStyle(n).color")
    return colour


async def hub_view_until(drone_city: DroneCityRun, drone_id: str, state: str, timeout: float = 20) -> dict:
    """The hub's view of ``drone_id`` once its state is ``state``."""
    async def reached() -> dict | None:
        view = (await drone_views(drone_city.hub.api))[drone_id]
        return view if view["state"] == state else None

    try:
        view: dict = await wait_for(reached, timeout=timeout, interval=0.25)
    except AssertionError:
        raise AssertionError(f"{drone_id} not {state} within {timeout} s: "
                             f"{(await drone_views(drone_city.hub.api))[drone_id]}") from None
    return view


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


# ------------------------------------------------------------ not ready: pre-arm
async def test_a_drone_failing_its_prearm_checks_says_why_and_shows_the_autopilots_messages(
        drone_city: DroneCityRun, open_page: OpenPage) -> None:
    operator = await drone_city.token("drone_operator")
    web = await open_page(drone_city.base_url, operator)
    drone_id, other_id = drone_city.drone_ids[:2]
    marker = web.page.locator(tid("drone-marker", drone_id=drone_id))
    await marker.and_(web.page.locator('[data-state="ready"]')).wait_for(timeout=10_000)
    assert await colour_of(marker) == READY_GREEN

    # The autopilot's gyros disagree: it fails its pre-arm checks and says so in STATUSTEXT.
    drone_city.drones.drone(drone_id).copter.set_fault(FAULT)
    view = await hub_view_until(drone_city, drone_id, "not_ready")
    reason = view["reason"]
    assert reason and FAULT in reason, view
    assert view["prearm"]["ok"] is False and view["actions"] == [], view

    # On the map: the attention colour (not ready green), the hub's reason as the tooltip.
    await marker.and_(web.page.locator('[data-state="not_ready"]')).wait_for(timeout=10_000)
    assert await colour_of(marker) == ATTENTION
    assert await marker.get_attribute("data-reason") == reason
    assert reason in (await marker.get_attribute("title") or "")
    assert await colour_of(web.page.locator(tid("drone-marker", drone_id=other_id))) == READY_GREEN

    # In its panel: the reason verbatim, pre-arm failing, the status texts newest first with errors in red.
    await marker.click()
    drone_panel = web.page.locator(tid("drone-panel", drone_id=drone_id))
    await drone_panel.and_(web.page.locator('[data-state="not_ready"]')).wait_for()
    shown = drone_panel.locator(tid("drone-reason"))
    assert await shown.is_visible() and (await shown.inner_text()).strip() == reason
    assert await drone_panel.locator(tid("drone-prearm")).get_attribute("data-ok") == "false"
    assert await drone_panel.locator(tid("drone-action")).count() == 0, "nothing the hub can fix from here"
    texts = drone_panel.locator(tid("drone-text"))
    await texts.filter(has_text=f"PreArm: {FAULT}").first.wait_for(timeout=10_000)
    shown_texts = await web.js("""(id) => ({
        page: [...document.querySelectorAll('[data-testid=drone-panel] [data-testid=drone-text]')]
          .map((n) => n.lastElementChild.textContent),
        view: window.fieldhub.drones.get(id).texts.map((x) => x.text)})""", drone_id)
    assert shown_texts["page"] == shown_texts["view"][::-1], f"newest first: {shown_texts}"
    prearm = texts.filter(has_text=f"PreArm: {FAULT}").first
    assert int(await prearm.get_attribute("data-severity") or 9) <= 3
    assert await colour_of(prearm) == ERROR_RED
    for item in await texts.all():  # only errors and worse are red
        if int(await item.get_attribute("data-severity") or 9) > 3:
            assert await colour_of(item) != ERROR_RED

    # The fault clears: ready again, the reason gone.
    drone_city.drones.drone(drone_id).copter.set_fault(None)
    await drone_panel.and_(web.page.locator('[data-state="ready"]')).wait_for(timeout=20_000)
    assert await shown.is_hidden()
    # The marker is redrawn by the map's frame loop, the panel at once: wait for the marker's own state.
    await marker.and_(web.page.locator('[data-state="ready"]')).wait_for(timeout=5_000)
    assert await colour_of(marker) == READY_GREEN
    assert await drone_panel.locator(tid("drone-prearm")).get_attribute("data-ok") == "true"

    # A mission it flies shows its progress ("item 1/4") in the panel.
    dock = view["dock"]
    r = await drone_city.hub.api.post(f"/api/v1/drones/{drone_id}/mission", headers={
        "Authorization": f"Bearer {operator}"}, json={"waypoints": [
            {"lat": dock["lat"] + 0.001, "lon": dock["lon"], "alt": 30},
            {"lat": dock["lat"] + 0.001, "lon": dock["lon"] + 0.001, "alt": 30}]})
    assert r.status_code == 202, r.text
    progress = drone_panel.locator(tid("drone-progress"))
    await progress.wait_for(timeout=20_000)
    assert re.search(r"\d+/\d+", await progress.inner_text()), await progress.inner_text()
    assert await drone_panel.locator(tid("drone-mission")).get_attribute("data-kind") == "mission"


# ------------------------------------------------------------ not ready: no failsafe
async def test_a_stock_drone_has_no_link_failsafe_until_an_operator_enables_it(
        stock_drone_city: DroneCityRun, open_page: OpenPage) -> None:
    run = stock_drone_city
    views = await drone_views(run.hub.api)
    for drone_id in run.drone_ids:
        v = views[drone_id]
        assert v["state"] == "no_failsafe" and v["actions"] == ["enable_failsafe"], v
        assert v["reason"].startswith("NO link failsafe") and v["failsafe"]["ok"] is False, v
    drone_id, other_id = run.drone_ids[:2]
    reason = views[drone_id]["reason"]

    operator = await run.token("drone_operator")
    web = await open_page(run.base_url, operator)
    marker = web.page.locator(tid("drone-marker", drone_id=drone_id))
    await marker.and_(web.page.locator('[data-state="no_failsafe"]')).wait_for(timeout=10_000)
    assert await colour_of(marker) == ATTENTION
    assert await marker.get_attribute("data-reason") == reason
    assert reason in (await marker.get_attribute("title") or "")

    await marker.click()
    drone_panel = web.page.locator(tid("drone-panel", drone_id=drone_id))
    await drone_panel.wait_for()
    assert (await drone_panel.locator(tid("drone-reason")).inner_text()).strip() == reason
    failsafe = drone_panel.locator(tid("drone-failsafe"))
    assert await failsafe.get_attribute("data-ok") == "false"
    assert (await failsafe.inner_text()).strip() == views[drone_id]["failsafe"]["text"]
    button = drone_panel.locator(tid("drone-action", action="enable_failsafe"))
    assert await button.is_visible()
    assert await drone_panel.locator(tid("drone-action", action="return_to_dock")).count() == 0

    # One click: the hub sets the autopilot's failsafe parameters; the drone turns ready, its button goes.
    await button.click()
    await web.page.locator(tid("toast", kind="info")).filter(has_text=drone_id).first.wait_for(timeout=10_000)
    await web.page.locator(tid("drone-panel", drone_id=drone_id, state="ready")).wait_for(timeout=20_000)
    await marker.and_(web.page.locator('[data-state="ready"]')).wait_for(timeout=5_000)
    assert await colour_of(marker) == READY_GREEN
    assert await drone_panel.locator(tid("drone-action")).count() == 0
    assert await drone_panel.locator(tid("drone-reason")).is_hidden()
    assert await failsafe.get_attribute("data-ok") == "true"
    after = await drone_views(run.hub.api)
    assert after[drone_id]["state"] == "ready" and after[drone_id]["failsafe"]["ok"] is True, after[drone_id]
    assert after[other_id]["state"] == "no_failsafe", "only the drone the operator fixed"


async def test_a_dispatch_refused_for_want_of_a_failsafe_lists_why_and_offers_a_confirmed_override(
        stock_drone_city: DroneCityRun, open_page: OpenPage) -> None:
    run, api = stock_drone_city, stock_drone_city.hub.api
    views = await drone_views(api)
    drone_id = run.drone_ids[0]
    dock = views[drone_id]["dock"]
    r = await api.post("/api/v1/incidents", json={
        "category": "traffic_accident", "priority": 1, "lat": dock["lat"] + INCIDENT_OFFSET[0],
        "lon": dock["lon"] + INCIDENT_OFFSET[1], "summary": "drone test: no failsafe"})
    assert r.status_code == 201, r.text
    incident_id = r.json()["id"]
    web = await open_page(run.base_url, TOKEN)
    web.expect_console(r"status of 409")  # the refused dispatch
    await web.until(f"() => window.fieldhub.drones.size >= {len(run.drone_ids)}")
    await open_incident(web, incident_id)

    # Refused: every drone's reason under the button, an override offered for each that lacks only its failsafe.
    await web.page.locator(panel(tid("dispatch-drone"))).click()
    toast = web.page.locator(tid("toast", kind="error")).filter(has_text="NO link failsafe")
    await toast.first.wait_for(timeout=10_000)
    refusal = web.page.locator(panel(tid("drone-dispatch-refusal")))
    await refusal.wait_for()
    for d in run.drone_ids:
        row = refusal.locator(tid("drone-refusal", drone_id=d))
        assert (await row.inner_text()).startswith(f"{d}: {views[d]['reason']}"), await row.inner_text()
        assert await row.locator(tid("drone-override", drone_id=d)).is_visible()
    assert not (await incident_view(api, incident_id))["assignments"], "nothing sent yet"

    # The override asks first; cancelling sends nothing.
    await refusal.locator(tid("drone-override", drone_id=drone_id)).click()
    box = refusal.locator(tid("drone-override-box", drone_id=drone_id))
    await box.wait_for()
    await box.locator(tid("drone-override-cancel")).click()
    await box.wait_for(state="detached")
    assert not (await incident_view(api, incident_id))["assignments"], "a cancelled override sends nothing"

    # Confirmed: the drone goes, said to be without a failsafe; the incident's log records the override.
    await refusal.locator(tid("drone-override", drone_id=drone_id)).click()
    await box.locator(tid("drone-override-confirm")).click()
    result = web.page.locator(panel(tid("drone-dispatch-result", drone_id=drone_id)))
    await result.wait_for(timeout=10_000)
    assert await web.page.locator(panel(tid("drone-dispatch-refusal"))).count() == 0
    assert await result.locator(".bad").count() == 1, "the answer says: without link failsafe"
    await web.page.locator(panel(tid("assignment", unit_id=drone_id))).wait_for(timeout=10_000)
    view = await incident_view(api, incident_id)
    assert drone_id in [a["unit_id"] for a in view["assignments"]], view["assignments"]
    assert any("WITHOUT a working link failsafe" in (e.get("text") or "") for e in view["log"]), view["log"]

    # A dispatcher sees why the other drone is not ready, and gets no button to fix it.
    other_id = run.drone_ids[1]
    await web.page.locator(tid("drone-marker", drone_id=other_id)).click()
    other_panel = web.page.locator(tid("drone-panel", drone_id=other_id))
    await other_panel.wait_for()
    assert (await other_panel.locator(tid("drone-reason")).inner_text()).strip() == views[other_id]["reason"]
    assert await other_panel.locator(tid("drone-action")).count() == 0


# ------------------------------------------------------------------ no drones
async def test_a_hub_without_drones_gives_a_page_without_drone_marks(city: CityRun, open_page: OpenPage) -> None:
    web = await open_page(city.base_url, TOKEN)
    await asyncio.sleep(1.0)
    assert await web.js("() => window.fieldhub.drones.size") == 0
    assert await web.page.locator(tid("drone-marker")).count() == 0
    assert await web.page.locator(tid("drone-dock")).count() == 0
    assert await web.page.locator(tid("layer-toggle", layer="drones")).is_checked()
