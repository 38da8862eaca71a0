"""What the one-map tests do on the page and ask the hub: selectors, map clicks, incident views.

The page is driven only through web/CONTRACT.md's test ids and ``window.fieldhub``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import httpx

from geo.geodesy import haversine_m
from tests.conftest import RunningHub, wait_for
from tests.web.conftest import CityRun, WebPage


def tid(test_id: str, **data: str) -> str:
    """CSS selector of a test id with ``data-*`` attributes (``incident_id`` -> ``data-incident-id``)."""
    attrs = "".join(f'[data-{k.replace("_", "-")}="{v}"]' for k, v in data.items())
    return f'[data-testid="{test_id}"]{attrs}'


def panel(selector: str) -> str:
    return f'{tid("incident-panel")} {selector}'


async def positions(web: WebPage) -> dict[str, list[float]]:
    result: dict[str, list[float]] = await web.js("""() => Object.fromEntries([...window.fieldhub.units.entries()]
        .filter(([, u]) => u.position).map(([id, u]) => [id, [u.position.lat, u.position.lon, u.position.ts]]))""")
    return result


async def road_nodes(api: httpx.AsyncClient) -> list[tuple[float, float]]:
    """The junctions of the base map (the vertices of its road lines), as (lat, lon)."""
    features = (await api.get("/api/v1/map")).json()["features"]
    nodes = {(round(lat, 7), round(lon, 7)) for f in features if f["geometry"]["type"] == "LineString"
             for lon, lat in f["geometry"]["coordinates"]}
    return sorted(nodes)


async def spot_near_a_unit(api: httpx.AsyncClient, near_m: tuple[float, float] = (150.0, 300.0),
                           clear_m: float = 100.0) -> tuple[float, float]:
    """A junction ``near_m`` from its nearest unit (a short drive), every other unit at least twice as far
    (so that one is the unit to recommend), and all at least ``clear_m`` away (a click there lands on the
    map, not on a unit's marker). Near a parked unit if one suits: it will still be there at dispatch."""
    units = [u for u in (await api.get("/api/v1/units")).json()["units"] if u["position"]]
    points = [(u["position"]["lat"], u["position"]["lon"], not u["position"]["speed"]) for u in units]
    nodes = await road_nodes(api)
    for parked_only in (True, False):
        for lat, lon in nodes:
            ranked = sorted((haversine_m(lat, lon, ulat, ulon), parked) for ulat, ulon, parked in points)
            (nearest, parked), (second, _) = ranked[:2]
            if (max(clear_m, near_m[0]) <= nearest <= near_m[1] and second >= 2 * nearest
                    and (parked or not parked_only)):
                return lat, lon
    raise AssertionError("no junction of the city suits the test")


async def click_map_at(web: WebPage, lat: float, lon: float, zoom: int = 17) -> None:
    """Centre the map on (lat, lon) and click exactly there, as a user would.

    The page may be flying the map somewhere (selecting an incident centres it): the flight is stopped,
    and the point is taken again until it holds still.
    """
    point: dict[str, Any] = {}
    for _ in range(10):
        point = await web.js("""([lat, lon, zoom]) => {
            const map = window.fieldhub.map;
            map.stop();
            const p0 = map.latLngToContainerPoint([lat, lon]);
            const size = map.getSize();
            if (map.getZoom() !== zoom || Math.abs(p0.x - size.x / 2) > 2 || Math.abs(p0.y - size.y / 2) > 2) {
                map.setView([lat, lon], zoom, {animate: false});
                return {moved: true};
            }
            const box = map.getContainer().getBoundingClientRect();
            const x = box.left + p0.x, y = box.top + p0.y;
            const hit = document.elementFromPoint(x, y);
            const mapEl = document.querySelector('[data-testid="map"]');
            return {x, y, onMap: !!(hit && mapEl && mapEl.contains(hit)),
                    hit: hit ? hit.outerHTML.slice(0, 200) : null};
        }""", [lat, lon, zoom])
        if not point.get("moved"):
            break
        await asyncio.sleep(0.3)
    assert "x" in point, "the map did not stay on the point"
    assert point["onMap"], f"the point to click is covered by {point['hit']}"
    await web.js("""() => { window.__clicked = null;
        window.fieldhub.map.once('click', (e) => { window.__clicked = [e.latlng.lat, e.latlng.lng]; }); }""")
    await web.page.mouse.click(point["x"], point["y"])
    clicked = await web.until("() => window.__clicked", timeout_s=5)
    assert haversine_m(lat, lon, *clicked) < 5, f"the map took the click at {clicked}, not at {(lat, lon)}"


async def incident_view(api: httpx.AsyncClient, incident_id: str) -> dict[str, Any]:
    r = await api.get(f"/api/v1/incidents/{incident_id}")
    assert r.status_code == 200, r.text
    view: dict[str, Any] = r.json()
    return view


async def chip_states(web: WebPage) -> dict[str, str]:
    states: dict[str, str] = await web.js("""(sel) => Object.fromEntries([...document.querySelectorAll(sel)]
        .map((e) => [e.dataset.milestone, e.dataset.state]))""", panel(tid("sla-chip")))
    return states


async def closed_incidents(city: CityRun, count: int) -> list[str]:
    """Incidents dispatched to the nearest unit (which the sim acknowledges), contacted and closed, via the API."""
    api, ids = city.hub.api, []
    units = [u for u in (await api.get("/api/v1/units")).json()["units"] if u["position"]][:count]
    for k, unit in enumerate(units):
        r = await api.post("/api/v1/incidents", json={
            "category": ("robbery", "traffic_accident")[k % 2], "priority": 2, "lat": unit["position"]["lat"],
            "lon": unit["position"]["lon"], "summary": f"dashboard {k}"})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
        r = await api.post(f"/api/v1/incidents/{ids[-1]}/dispatch", json={"unit_ids": [unit["unit_id"]]})
        assert r.status_code == 200, r.text
    for incident_id in ids:
        async def acknowledged(incident_id: str = incident_id) -> bool:
            return (await incident_view(api, incident_id))["milestones"]["acknowledged"] is not None

        await wait_for(acknowledged, timeout=20)
        r = await api.post(f"/api/v1/incidents/{incident_id}/events", json={"type": "contacted"})
        assert r.status_code == 200, r.text
        assert (await api.post(f"/api/v1/incidents/{incident_id}/close")).status_code == 200
    return ids


# ------------------------------------------------------------------------------ drones
class DroneCity(Protocol):
    """What the drone tests need of their fixture (``drone_city``, see tests/web/test_drones.py): a hub with a
    fleet of simulated drones on docks in the simulated city (and its ground units), every drone ready."""

    base_url: str
    hub: RunningHub
    drone_ids: list[str]

    async def token(self, role: str, name: str | None = None) -> str: ...

    async def cut_link(self, drone_id: str) -> None:
        """The simulated drone stops talking to the hub (no heartbeat, no telemetry) until the test ends."""
        ...


async def drone_views(api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    r = await api.get("/api/v1/drones")
    assert r.status_code == 200, r.text
    return {d["drone_id"]: d for d in r.json()["drones"]}


async def drone_marks(web: WebPage) -> dict[str, dict[str, Any]]:
    """Each drone's mark as drawn: its data, label, whether the link-lost badge shows, and on screen (container
    pixels) the mark's centre, where its drone view says it is, and where its dock is."""
    result: dict[str, dict[str, Any]] = await web.js("""() => {
        const map = window.fieldhub.map, box = map.getContainer().getBoundingClientRect();
        const px = (ll) => { const p = map.latLngToContainerPoint(ll); return [p.x, p.y]; };
        const out = {};
        for (const node of document.querySelectorAll('[data-testid="drone-marker"]')) {
            const id = node.dataset.droneId, view = window.fieldhub.drones.get(id);
            const r = node.getBoundingClientRect(), badge = node.querySelector('[data-testid="drone-link-lost"]');
            out[id] = {state: node.dataset.state, link: node.dataset.link, mode: node.dataset.mode,
                text: node.innerText, lostBadge: !!badge && badge.offsetParent !== null,
                centre: [r.left + r.width / 2 - box.left, r.top + r.height / 2 - box.top],
                at: view && view.position ? px([view.position.lat, view.position.lon]) : null,
                dock: view && view.dock ? px([view.dock.lat, view.dock.lon]) : null};
        }
        return out;
    }""")
    return result


async def route_ends(web: WebPage, drone_id: str, kind: str = "mission") -> dict[str, Any] | None:
    """The drawn route of a drone (its SVG path) as container pixels of its first and last points, or None."""
    ends: dict[str, Any] | None = await web.js("""([id, kind]) => {
        const path = document.querySelector(`[data-testid="drone-route"][data-drone-id="${id}"][data-kind="${kind}"]`);
        if (!path) return null;
        const nums = (path.getAttribute('d') || '').match(/-?\\d+(\\.\\d+)?/g) || [];
        if (nums.length < 4) return null;
        const map = window.fieldhub.map;
        const cp = (x, y) => { const p = map.layerPointToContainerPoint([x, y]); return [p.x, p.y]; };
        return {first: cp(+nums[0], +nums[1]), last: cp(+nums[nums.length - 2], +nums[nums.length - 1]),
                dashed: !!path.getAttribute('stroke-dasharray')};
    }""", [drone_id, kind])
    return ends


def px_apart(a: list[float] | None, b: list[float] | None) -> float:
    assert a is not None and b is not None, (a, b)
    return float(((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5)


PLAY_WAIT_S = 20.0  # WHEP offer/answer, ICE, DTLS, the first key frame (and for a GB/T 28181 camera its INVITE)


async def tile_stats(web: WebPage) -> dict[tuple[str, str], dict[str, Any]]:
    """`window.fieldhub.video.stats()` by (stream id, place)."""
    listed = await web.js("() => window.fieldhub.video.stats()")
    return {(s["stream_id"], s["place"]): s for s in listed}


async def decoding(web: WebPage, stream_id: str, place: str, timeout_s: float = PLAY_WAIT_S) -> dict[str, Any]:
    """Wait until the tile plays and its decoded-frame count rises by 5; its last statistics."""
    await web.page.locator(tid("video-tile", stream_id=stream_id, place=place, state="playing")).wait_for(
        timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    first = (await tile_stats(web))[(stream_id, place)]
    while True:
        await asyncio.sleep(0.5)
        now = (await tile_stats(web))[(stream_id, place)]
        if now["framesDecoded"] >= first["framesDecoded"] + 5 and now["frameWidth"]:
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"{place} tile of {stream_id} is not decoding: {first} -> {now}")
