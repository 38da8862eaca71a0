"""Dispatcher actions and device alerts through the running hub: cancel, reassign, divert to 12345, SOS.

Real Mosquitto, real PostgreSQL, real device clients, and a real HTTP server standing in for the
12345 hotline's webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

from devices.client import DeviceClient
from devices.clock import now_ms
from geo.geodesy import offset
from hub.config import Settings
from hub.infra.embedded import free_port
from tests.conftest import RunningHub, running_hub, wait_for
from tests.hub.test_incidents_api import INCIDENT, LAT, LON, incident, parked, send, unit_status


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"auto_dispatch_priority": 0})


def log_of(view: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [e for e in view["log"] if e["type"] == type_]


async def located(rh: RunningHub, unit_id: str, device: DeviceClient, north_m: float) -> None:
    send(device, parked(*offset(LAT, LON, north_m, 0), now_ms() - 1000, 1))
    await wait_for(lambda: rh.hub.live.units[unit_id].fix is not None)


async def test_cancel_withdraws_one_unit_and_tells_its_devices(hub: RunningHub) -> None:
    await hub.put_unit("C1", ["c1-trk"])
    await hub.put_unit("C2", ["c2-trk"])
    url = hub.hub.mqtt_url or ""
    async with DeviceClient("c1-trk", url, unit_id="C1") as c1, DeviceClient("c2-trk", url, unit_id="C2") as c2:
        await located(hub, "C1", c1, 200)
        await located(hub, "C2", c2, 400)
        iid = (await hub.api.post("/api/v1/incidents", json={**INCIDENT, "priority": 2})).json()["id"]
        r = await hub.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": ["C1", "C2"]})
        assert r.status_code == 200, r.text
        await wait_for(lambda: c1.commands and c2.commands)

        r = await hub.api.post(f"/api/v1/incidents/{iid}/cancel", json={"unit_id": "C2", "reason": "not needed"})
        assert r.status_code == 200, r.text
        view = r.json()
        by_unit = {a["unit_id"]: a for a in view["assignments"]}
        assert by_unit["C2"]["status"] == "cancelled" and by_unit["C2"]["cancelled"] is not None
        assert by_unit["C1"]["status"] != "cancelled" and view["status"] == "open"
        assert log_of(view, "cancelled")[0]["reason"] == "not needed"
        await wait_for(lambda: len(c2.commands) == 2)
        cancel = c2.commands[1]
        assert cancel.type == "cancel" and cancel.body["incident_id"] == iid
        assert cancel.body["dispatch_cmd_id"] == by_unit["C2"]["cmd_id"]
        assert await unit_status(hub, "C2") == "available"
        assert await unit_status(hub, "C1") in ("dispatched", "acknowledged")
        assert (await hub.api.get("/api/v1/units/C1")).json()["incident_id"] == iid
        assert (await hub.api.get("/api/v1/units/C2")).json()["incident_id"] is None
        assert [c.type for c in c1.commands] == ["dispatch"]

        # C2 is free again: another incident may have it. Cancelling it twice, or an unknown unit, is refused.
        again = await hub.api.post(f"/api/v1/incidents/{iid}/cancel", json={"unit_id": "C2"})
        assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
        unknown = await hub.api.post(f"/api/v1/incidents/{iid}/cancel", json={"unit_id": "NOPE"})
        assert unknown.status_code == 409
        bad = await hub.api.post(f"/api/v1/incidents/{iid}/cancel", json={"unit_id": "bad id!"})
        assert bad.status_code == 422
        other = (await hub.api.post("/api/v1/incidents", json={**INCIDENT, "priority": 2})).json()["id"]
        r = await hub.api.post(f"/api/v1/incidents/{other}/dispatch", json={"unit_ids": ["C2"]})
        assert r.status_code == 200, r.text


async def test_reassign_to_a_named_unit_and_to_the_best_one(hub: RunningHub) -> None:
    for unit_id in ("R1", "R2", "R3"):
        await hub.put_unit(unit_id, [f"{unit_id.lower()}-trk"])
    url = hub.hub.mqtt_url or ""
    async with contextlib.AsyncExitStack() as stack:
        devices = {}
        for unit_id, north in (("R1", 300), ("R2", 600), ("R3", 2500)):
            devices[unit_id] = await stack.enter_async_context(
                DeviceClient(f"{unit_id.lower()}-trk", url, unit_id=unit_id))
            await located(hub, unit_id, devices[unit_id], north)
        iid = (await hub.api.post("/api/v1/incidents", json={**INCIDENT, "priority": 2})).json()["id"]
        recs = (await hub.api.get(f"/api/v1/incidents/{iid}/recommendations", params={"count": 3})).json()
        assert [r["unit_id"] for r in recs["recommendations"]] == ["R1", "R2", "R3"]
        assert recs["recommendations"][0]["eta_method"] == "road"  # the hub knows the city's road graph
        await hub.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": ["R1"]})

        r = await hub.api.post(f"/api/v1/incidents/{iid}/reassign",
                               json={"from_unit_id": "R1", "to_unit_id": "R3", "reason": "R1 has a flat tyre"})
        assert r.status_code == 200, r.text
        view = r.json()
        assert [(a["unit_id"], a["status"] == "cancelled") for a in view["assignments"]] == [("R1", True),
                                                                                             ("R3", False)]
        [moved] = log_of(view, "reassigned")
        assert moved["unit_id"] == "R1" and moved["to_unit_id"] == "R3" and moved["escalated"] is False
        await wait_for(lambda: [c.type for c in devices["R1"].commands] == ["dispatch", "cancel"])
        await wait_for(lambda: [c.type for c in devices["R3"].commands] == ["dispatch"])

        # null: the best available one (R1 is free again and nearest).
        r = await hub.api.post(f"/api/v1/incidents/{iid}/reassign", json={"from_unit_id": "R3"})
        assert r.status_code == 200, r.text
        assert r.json()["assignments"][-1]["unit_id"] == "R1"
        # Busy, the same unit, or not assigned: refused, and nothing changed.
        bad = await hub.api.post(f"/api/v1/incidents/{iid}/reassign", json={"from_unit_id": "R2"})
        assert bad.status_code == 409
        bad = await hub.api.post(f"/api/v1/incidents/{iid}/reassign",
                                 json={"from_unit_id": "R1", "to_unit_id": "R1"})
        assert bad.status_code == 409
        bad = await hub.api.post(f"/api/v1/incidents/{iid}/reassign",
                                 json={"from_unit_id": "R1", "to_unit_id": "GHOST"})
        assert bad.status_code == 404
        assert (await incident(hub, iid))["assignments"][-1]["unit_id"] == "R1"


@contextlib.asynccontextmanager
async def hotline_server(fail_first: int = 0) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP server playing the 12345 hotline: 503 for the first `fail_first` requests, then 201."""
    received: list[dict[str, Any]] = []
    app = FastAPI()

    @app.post("/handover")
    async def handover(request: Request) -> Response:
        body = await request.json()
        received.append({"body": body, "key": request.headers.get("idempotency-key"),
                         "auth": request.headers.get("authorization")})
        if len(received) <= fail_first:
            return Response(status_code=503)
        return Response(json.dumps({"ticket": f"12345-{len(received)}"}), status_code=201,
                        media_type="application/json")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: server.started)
    try:
        yield f"http://127.0.0.1:{port}/handover", received
    finally:
        server.should_exit = True
        await task


async def test_diversion_by_rule_and_by_dispatcher_is_handed_to_12345(settings: Settings) -> None:
    async with hotline_server(fail_first=1) as (url, received):
        fast = settings.model_copy(update={"hotline_url": url, "hotline_token": "s3cret", "port": free_port()})
        async with running_hub(fast) as hub:
            assert hub.hub.incidents is not None and hub.hub.incidents.hotline is not None
            await hub.put_unit("D1", ["d1-trk"])
            async with DeviceClient("d1-trk", await hub.device_url("d1-trk"), unit_id="D1") as d1:
                await located(hub, "D1", d1, 300)
                # By rule: a utility failure is not a police matter; nobody is dispatched, even at priority 1.
                r = await hub.api.post("/api/v1/incidents", json={**INCIDENT, "category": "utility_water",
                                                                 "priority": 1, "summary": "no water"})
                assert r.status_code == 201, r.text
                ruled = r.json()
                assert ruled["status"] == "diverted" and ruled["assignments"] == [] and ruled["sla"] == []
                assert "rule" in ruled["diversion"]["reason"]

                async def handed(iid: str) -> Any:
                    return (await incident(hub, iid))["diversion"]["handed_over_at"]

                await wait_for(lambda: handed(ruled["id"]), timeout=10)
                view = await incident(hub, ruled["id"])
                assert view["diversion"]["ref"] == "12345-2"  # accepted on the second try
                assert view["diversion"]["handed_over_at"] >= view["diversion"]["diverted_at"]
                first = received[0]
                assert first["key"] == ruled["id"] and first["auth"] == "Bearer s3cret"
                assert first["body"]["incident"]["summary"] == "no water"

                # By the dispatcher, after a unit was sent: the unit is withdrawn and told so.
                iid = (await hub.api.post("/api/v1/incidents", json={**INCIDENT, "priority": 3})).json()["id"]
                await hub.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": ["D1"]})
                r = await hub.api.post(f"/api/v1/incidents/{iid}/divert", json={"reason": "a billing dispute"})
                assert r.status_code == 200, r.text
                assert r.json()["status"] == "diverted"
                assert r.json()["assignments"][0]["status"] == "cancelled"
                await wait_for(lambda: [c.type for c in d1.commands] == ["dispatch", "cancel"])
                assert await unit_status(hub, "D1") == "available"
                await wait_for(lambda: handed(iid), timeout=10)
                # A diverted incident takes no more dispatches; an explicit divert=false overrides the rule.
                r = await hub.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": ["D1"]})
                assert r.status_code == 409
                r = await hub.api.post("/api/v1/incidents", json={**INCIDENT, "category": "utility_gas",
                                                                 "priority": 2, "divert": False})
                assert r.json()["status"] == "open"
                report = (await hub.api.get("/api/v1/reports/response-times")).json()
                assert report["diverted"]["total"] == {"count": 2, "handed_over": 2}, report
                assert "utility_water" not in report["groups"]  # diverted incidents are counted apart


async def test_diversion_without_a_hotline_waits_and_is_handed_over_after_restart(settings: Settings) -> None:
    async with running_hub(settings) as hub:
        r = await hub.api.post("/api/v1/incidents", json={**INCIDENT, "category": "consultation", "priority": 4})
        iid = r.json()["id"]
        assert r.json()["status"] == "diverted"
        assert hub.hub.incidents is not None and hub.hub.incidents.hotline is not None
        pending = hub.hub.incidents.hotline.pending
        assert iid in pending and pending[iid].state == "not_configured"
    async with hotline_server() as (url, received), \
            running_hub(settings.model_copy(update={"hotline_url": url, "port": free_port()})) as hub:
        async def handed() -> Any:
            return (await incident(hub, iid))["diversion"]["handed_over_at"]

        await wait_for(handed, timeout=10)
        assert [r["key"] for r in received] == [iid]


async def test_sos_raises_an_alert_and_an_incident_with_backup_dispatched(settings: Settings) -> None:
    async with running_hub(settings.model_copy(update={"auto_dispatch_priority": 1})) as hub:
        await hub.put_unit("S1", ["s1-radio"])
        await hub.put_unit("S2", ["s2-trk"])
        url = hub.hub.mqtt_url or ""
        async with DeviceClient("s1-radio", url, unit_id="S1", kind="radio") as s1, \
                DeviceClient("s2-trk", url, unit_id="S2") as s2:
            await located(hub, "S1", s1, 0)
            await located(hub, "S2", s2, 800)
            s1.send_event("sos")
            alert = await wait_for(lambda: _first_alert(hub))
            assert alert["kind"] == "sos" and alert["unit_id"] == "S1"
            assert alert["device_id"] == "s1-radio" and abs(alert["lat"] - LAT) < 1e-4

            async def sos_incident() -> Any:
                found = (await hub.api.get("/api/v1/incidents", params={"status": "open"})).json()["incidents"]
                return [i for i in found if i["category"] == "sos"]

            [summary] = await wait_for(sos_incident)

            async def dispatched() -> Any:  # listed once created; the auto-dispatch follows
                found = await incident(hub, summary["id"])
                return found if found["assignments"] else None

            view = await wait_for(dispatched)
            assert view["priority"] == 1 and view["policy"] == "rapid_12358"
            assert abs(view["lat"] - LAT) < 1e-4 and abs(view["lon"] - LON) < 1e-4
            # Backup: the nearest *other* unit; the officer in trouble is not sent to himself.
            assert [a["unit_id"] for a in view["assignments"]] == ["S2"]
            await wait_for(lambda: s2.commands)
            # Pressed again: a note on the same incident, another alert, no second incident.
            s1.send_event("sos")

            async def noted() -> Any:
                return log_of(await incident(hub, summary["id"]), "note")

            [note] = await wait_for(noted)
            assert "SOS pressed again" in note["text"]
            assert len(await sos_incident()) == 1
            kinds = [a["kind"] for a in (await hub.api.get("/api/v1/alerts")).json()["alerts"]]
            assert kinds == ["sos", "sos"]


async def _first_alert(hub: RunningHub) -> dict[str, Any] | None:
    alerts = (await hub.api.get("/api/v1/alerts")).json()["alerts"]
    return alerts[-1] if alerts else None


async def test_category_sets_the_arrival_zone_and_the_snapshot_carries_incidents(hub: RunningHub) -> None:
    r = await hub.api.post("/api/v1/incidents", json={**INCIDENT, "category": "traffic_accident", "priority": 3})
    assert r.json()["arrival_radius_m"] == 150.0
    r = await hub.api.post("/api/v1/incidents", json={**INCIDENT, "priority": 3})
    assert r.json()["arrival_radius_m"] == 100.0
    r = await hub.api.post("/api/v1/incidents", json={**INCIDENT, "priority": 3, "arrival_radius_m": 40})
    assert r.json()["arrival_radius_m"] == 40.0
    r = await hub.api.post("/api/v1/incidents", json={**INCIDENT, "priority": 3, "arrival_radius_m": 5})
    assert r.status_code == 422 and "arrival_radius_m" in r.text
    snapshot = msgspec.json.decode(hub.hub.feed.snapshot_frame())
    assert sorted(i["arrival_radius_m"] for i in snapshot["incidents"]) == [40.0, 100.0, 150.0]
    assert snapshot["alerts"] == []


async def test_handovers_and_metrics_show_what_waits(hub: RunningHub) -> None:
    iid = (await hub.api.post("/api/v1/incidents", json={**INCIDENT, "category": "municipal_lighting",
                                                         "priority": 4})).json()["id"]
    state = (await hub.api.get("/api/v1/handovers")).json()
    assert state["configured"] is False
    assert any(p["incident_id"] == iid and p["state"] == "not_configured" for p in state["pending"]), state
    metrics = (await hub.api.get("/metrics")).text
    assert "fieldhub_hotline_pending 1.0" in metrics
    assert 'fieldhub_hotline_failures_total{reason="not_configured"} 1.0' in metrics
    assert "fieldhub_incidents_open 1.0" in metrics


async def test_a_missed_target_raises_one_sla_breach_alert(settings: Settings, tmp_path: Any) -> None:
    config = tmp_path / "incidents.json"
    config.write_text(json.dumps({"policies": {"drill": {"dispatched": 1, "arrived": 3600}},
                                  "rules": [{"policy": "drill", "categories": ["drill"]}]}), encoding="utf-8")
    async with running_hub(settings.model_copy(update={"incident_config": config, "ack_timeout_s": 1.0})) as hub:
        iid = (await hub.api.post("/api/v1/incidents", json={**INCIDENT, "category": "drill",
                                                             "priority": 3})).json()["id"]

        async def breaches() -> Any:
            alerts = (await hub.api.get("/api/v1/alerts")).json()["alerts"]
            return [a for a in alerts if a["kind"] == "sla_breach"]

        [alert] = await wait_for(breaches, timeout=10)
        assert alert["incident_id"] == iid and alert["milestone"] == "dispatched"
        assert "not reached" in alert["text"] and abs(alert["lat"] - LAT) < 1e-9
        await asyncio.sleep(1.5)  # the check keeps running: still one alert for this target
        assert len(await breaches()) == 1
        metrics = (await hub.api.get("/metrics")).text
        assert 'fieldhub_alerts_total{kind="sla_breach"} 1.0' in metrics
