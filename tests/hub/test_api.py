"""The HTTP and WebSocket API: auth, roles, JSON errors, live feed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import pytest
import websockets

from devices.client import DeviceClient
from devices.clock import now_ms
from devices.payloads import Fix
from tests.conftest import TOKEN, RunningHub, wait_for


async def test_put_and_get_units(hub: RunningHub) -> None:
    body = await hub.put_unit("P10", ["p10-trk", "p10-cam"], home={"lat": 34.26, "lon": 117.18},
                              capabilities=["firearm", "medic"])
    assert body["devices"][0]["device_id"] == "p10-trk"
    assert body["home"] == {"lat": 34.26, "lon": 117.18}
    # Re-PUT moves a device away; the devices table follows.
    await hub.put_unit("P10", ["p10-trk"])
    assert await hub.count("SELECT count(*) FROM devices WHERE unit_id = 'P10'") == 1
    listed = (await hub.api.get("/api/v1/units")).json()["units"]
    assert [u["unit_id"] for u in listed] == ["P10"]
    assert listed[0]["capabilities"] == []


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/v1/units/bad id", {"name": "x"}, "unit_id"),
    ("/api/v1/units/U1", {"name": ""}, "name"),
    ("/api/v1/units/U1", {}, "name"),
    ("/api/v1/units/U1", {"name": "x", "home": {"lat": 91, "lon": 0}}, "lat"),
    ("/api/v1/units/U1", {"name": "x", "home": {"lat": "NaN", "lon": 0}}, "lat"),
    ("/api/v1/units/U1", {"name": "x", "devices": ["ok", "not ok"]}, "devices"),
    ("/api/v1/units/U1", {"name": "x", "devices": "d1"}, "devices"),
    ("/api/v1/units/U1", {"name": "x", "kind": "Tank!"}, "kind"),
    ("/api/v1/units/U1", {"name": "x", "devices": ["d1", "d1"]}, "devices"),
])
async def test_bad_unit_input_gets_a_json_4xx(hub: RunningHub, path: str, body: dict[str, Any], field: str) -> None:
    r = await hub.api.put(path, json=body)
    assert 400 <= r.status_code < 500
    error = r.json()["error"]
    assert (error["code"] in ("invalid", "not_found") and field in error["message"]) or field in json.dumps(error)


async def test_malformed_json_body_and_wrong_method(hub: RunningHub) -> None:
    r = await hub.api.put("/api/v1/units/U1", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid"
    r = await hub.api.delete("/api/v1/units")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = await hub.api.get("/api/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_auth_and_roles(hub: RunningHub) -> None:
    r = await hub.api.get("/api/v1/units", headers={"Authorization": ""})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = await hub.api.get("/api/v1/units", headers={"Authorization": "Bearer fh_wrong"})
    assert r.status_code == 401
    r = await hub.api.get("/api/v1/units", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert r.status_code == 401
    viewer = await hub.hub.create_token("viewer", "screen")
    device = await hub.hub.create_token("device", "cam")
    r = await hub.api.get("/api/v1/units", headers={"Authorization": f"Bearer {viewer}"})
    assert r.status_code == 200
    r = await hub.api.put("/api/v1/units/V1", json={"name": "v"}, headers={"Authorization": f"Bearer {viewer}"})
    assert r.status_code == 403
    r = await hub.api.get("/api/v1/units", headers={"Authorization": f"Bearer {device}"})
    assert r.status_code == 403  # devices speak MQTT, they do not read the command picture


async def test_track_range_and_errors(hub: RunningHub) -> None:
    await hub.put_unit("T1", ["t1-trk"])
    t0 = now_ms() - 100_000
    async with DeviceClient("t1-trk", await hub.device_url("t1-trk"), unit_id="T1") as dev:
        for i in range(20):
            dev.send_fix(Fix(t0 + i * 1000, 34.2, 117.2 + i * 1e-4))
        await wait_for(lambda: _count_is(hub, 20))
    r = await hub.api.get("/api/v1/units/T1/track", params={"from": t0 + 5000, "to": t0 + 9000})
    assert [f["ts"] for f in r.json()["fixes"]] == [t0 + i * 1000 for i in range(5, 10)]
    r = await hub.api.get("/api/v1/units/T1/track", params={"from": t0, "to": t0 + 60_000, "limit": 3})
    assert len(r.json()["fixes"]) == 3
    r = await hub.api.get("/api/v1/units/T1/track", params={"from": t0 + 9000, "to": t0})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = await hub.api.get("/api/v1/units/T1/track", params={"from": "yesterday"})
    assert r.status_code == 422
    r = await hub.api.get("/api/v1/units/T1/track", params={"to": 10**30})
    assert r.status_code == 422
    r = await hub.api.get("/api/v1/units/NOPE/track")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def _count_is(hub: RunningHub, n: int) -> bool:
    return await hub.count() == n


async def test_live_feed_snapshot_then_coalesced_deltas(hub: RunningHub) -> None:
    await hub.put_unit("L1", ["l1-trk"])
    await hub.put_unit("L2", ["l2-trk"])
    ws_url = hub.base_url.replace("http", "ws") + "/api/v1/live"
    async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        snapshot = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert snapshot["type"] == "snapshot"
        assert {u["unit_id"] for u in snapshot["units"]} == {"L1", "L2"}
        with contextlib.suppress(asyncio.TimeoutError):  # the registrations' own deltas
            while True:
                await asyncio.wait_for(ws.recv(), 0.6)
        t0 = now_ms()
        async with DeviceClient("l1-trk", await hub.device_url("l1-trk"), unit_id="L1") as dev:
            for i in range(10):  # ten fixes within one frame interval
                dev.send_fix(Fix(t0 + i, 34.2 + i * 1e-5, 117.2))
            frames = []
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if frame["type"] == "unit":
                    frames.append(frame)
                    if any(u["position"] and u["position"]["ts"] == t0 + 9 for u in frame["units"]):
                        break
        units_sent = [u for f in frames for u in f["units"] if u["unit_id"] == "L1" and u["position"]]
        assert units_sent[-1]["position"]["ts"] == t0 + 9
        assert len(units_sent) < 10  # coalesced, not one message per fix
        assert all(u["unit_id"] != "L2" for f in frames for u in f["units"])  # only what changed


async def test_live_feed_refuses_bad_tokens(hub: RunningHub) -> None:
    ws_url = hub.base_url.replace("http", "ws") + "/api/v1/live"
    with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
        async with websockets.connect(ws_url, additional_headers={"Authorization": "Bearer fh_bogus"}) as ws:
            await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4401


async def test_health_metrics_map_and_page(hub: RunningHub) -> None:
    health = (await hub.api.get("/healthz")).json()
    reason = health.pop("storage_mode_reason")
    assert health == {"status": "ok", "mqtt": True, "database": True, "storage_mode": "native"}
    assert isinstance(reason, str) and reason  # why native (here: TimescaleDB is not installed)
    text = (await hub.api.get("/metrics")).text
    for name in ("fieldhub_ingest_rate", "fieldhub_rejects_total", "fieldhub_write_lag_seconds",
                 'fieldhub_queue_depth{queue="inbox"}', "fieldhub_live_clients", "fieldhub_fixes_stored_total"):
        assert name in text
    geo = (await hub.api.get("/api/v1/map")).json()
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) > 50
    page = await hub.api.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
