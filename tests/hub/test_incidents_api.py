"""Incidents through the running hub: real Mosquitto, real PostgreSQL, a real device client."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from devices.client import DeviceClient
from devices.clock import now_ms
from devices.payloads import Fix
from geo.geodesy import haversine_m, offset
from hub.config import Settings
from hub.infra.embedded import free_port
from tests.conftest import RunningHub, running_hub, wait_for

LAT, LON = 34.26, 117.18
INCIDENT = {"category": "robbery", "priority": 1, "lat": LAT, "lon": LON, "address": "1 Main St",
            "summary": "shop robbed"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """These tests dispatch explicitly: no auto-dispatch on creation (tests/hub/test_incident_escalation.py has it)."""
    return settings.model_copy(update={"auto_dispatch_priority": 0})


def parked(lat: float, lon: float, t: int, seconds: int) -> list[Fix]:
    return [Fix(ts=t + i * 1000, lat=lat, lon=lon, acc=5.0, speed=0.0) for i in range(seconds)]


def drive_in(t: int) -> list[Fix]:
    """From 1505 m south of the incident north at 10 m/s, stopping 35 m short of it (1 Hz, device time)."""
    fixes, north = [], -1505.0
    while north < -35.0:
        north += 10.0
        lat, lon = offset(LAT, LON, north, 0)
        fixes.append(Fix(ts=t + len(fixes) * 1000, lat=lat, lon=lon, acc=5.0, speed=10.0))
    return fixes


def first_inside(fixes: list[Fix], radius_m: float = 100.0) -> int:
    return next(f.ts for f in fixes if haversine_m(LAT, LON, f.lat, f.lon) < radius_m)


async def incident(rh: RunningHub, incident_id: str) -> dict[str, Any]:
    r = await rh.api.get(f"/api/v1/incidents/{incident_id}")
    assert r.status_code == 200, r.text
    return r.json()


async def milestone(rh: RunningHub, incident_id: str, name: str) -> dict[str, Any]:
    async def reached() -> Any:
        return (await incident(rh, incident_id))["milestones"][name]
    found: dict[str, Any] = await wait_for(reached, timeout=15)
    return found


async def unit_status(rh: RunningHub, unit_id: str) -> str:
    status: str = (await rh.api.get(f"/api/v1/units/{unit_id}")).json()["status"]
    return status


def send(dev: DeviceClient, fixes: list[Fix]) -> None:
    for fix in fixes:
        dev.send_fix(fix)


async def test_incident_from_creation_to_close(hub: RunningHub) -> None:
    origin = offset(LAT, LON, -1505.0, 0)
    await hub.put_unit("P1", ["p1-trk"], home={"lat": origin[0], "lon": origin[1]})
    r = await hub.api.post("/api/v1/incidents", json=INCIDENT)
    assert r.status_code == 201, r.text
    created = r.json()
    iid = created["id"]
    assert created["status"] == "open" and created["policy"] == "rapid_12358"
    assert created["milestones"]["received"]["ts"] == created["received_at"]
    assert all(created["milestones"][m] is None for m in ("dispatched", "acknowledged", "departed", "arrived"))
    listed = (await hub.api.get("/api/v1/incidents", params={"status": "open"})).json()["incidents"]
    assert [i["id"] for i in listed] == [iid]

    async with DeviceClient("p1-trk", await hub.device_url("p1-trk"), unit_id="P1") as dev:
        t_parked = now_ms() - 2000
        send(dev, parked(*origin, t_parked, 2))
        await wait_for(lambda: hub.hub.live.units["P1"].fix is not None)

        r = await hub.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": ["P1"]})
        assert r.status_code == 200, r.text
        [assignment] = r.json()["assignments"]
        assert assignment["unit_id"] == "P1" and assignment["status"] == "dispatched"
        dispatched_ts = assignment["dispatched"]

        # The device receives the SPEC dispatch command and signs for it by itself.
        await wait_for(lambda: dev.commands)
        command = dev.commands[0]
        assert command.type == "dispatch" and command.cmd_id == assignment["cmd_id"]
        assert command.body["incident"] == {"id": iid, "category": "robbery", "priority": 1, "lat": LAT, "lon": LON,
                                            "address": "1 Main St", "summary": "shop robbed"}
        ack = await milestone(hub, iid, "acknowledged")
        ack_ts = await wait_for(lambda: hub.count("SELECT coalesce(max(ts), 0) FROM device_events WHERE type = 'ack'"))
        assert ack == {"ts": ack_ts, "source": "device", "unit_id": "P1"}
        assert ack_ts >= dispatched_ts
        assert await unit_status(hub, "P1") == "acknowledged"

        # A second ack of the same command changes nothing.
        dev.send_event("ack", cmd_id=command.cmd_id)
        # Device time: parked 20 s after dispatch, then drives in and stays on scene for 3 minutes.
        still = parked(*origin, dispatched_ts + 1000, 20)
        moving = drive_in(still[-1].ts + 1000)
        stay = parked(moving[-1].lat, moving[-1].lon, moving[-1].ts + 1000, 180)
        send(dev, still + moving + stay)
        departed = await milestone(hub, iid, "departed")
        assert departed == {"ts": moving[0].ts, "source": "motion", "unit_id": "P1"}
        arrived = await milestone(hub, iid, "arrived")
        assert arrived == {"ts": first_inside(moving), "source": "geofence", "unit_id": "P1"}
        await wait_for(lambda: hub.hub.live.units["P1"].status == "on_scene")
        view = await incident(hub, iid)
        assert view["milestones"]["acknowledged"]["ts"] == ack_ts
        assert view["assignments"][0]["status"] == "on_scene"

    r = await hub.api.post(f"/api/v1/incidents/{iid}/events", json={"type": "contacted"})
    assert r.status_code == 200, r.text
    assert r.json()["milestones"]["contacted"]["source"] == "manual"
    r = await hub.api.post(f"/api/v1/incidents/{iid}/close")
    assert r.status_code == 200, r.text
    closed = r.json()
    assert closed["status"] == "closed" and closed["milestones"]["cleared"]["source"] == "api"
    assert closed["assignments"][0]["cleared"] == closed["closed_at"]
    sla = {t["milestone"]: t for t in closed["sla"]}
    assert set(sla) == {"dispatched", "departed", "contacted", "supported", "arrived"}
    assert sla["dispatched"]["met"] is True and sla["supported"]["met"] is False
    assert sla["arrived"]["actual"] == arrived["ts"]
    assert hub.hub.live.units["P1"].status == "available"
    assert (await hub.api.get("/api/v1/incidents", params={"status": "open"})).json()["incidents"] == []

    r = await hub.api.get("/api/v1/reports/response-times", params={"group_by": "category"})
    assert r.status_code == 200, r.text
    report = r.json()
    robbery = report["groups"]["robbery"]
    assert robbery["incidents"] == 1 and report["overall"]["incidents"] == 1
    assert robbery["milestones"]["arrived"]["count"] == 1
    assert robbery["milestones"]["dispatched"]["compliance"] == 1.0
    assert robbery["milestones"]["supported"]["count"] == 0
    by_unit = (await hub.api.get("/api/v1/reports/response-times", params={"group_by": "unit"})).json()
    assert list(by_unit["groups"]) == ["P1"]
    empty = (await hub.api.get("/api/v1/reports/response-times", params={"from": 0, "to": 1000})).json()
    assert empty["overall"]["incidents"] == 0


async def test_auto_dispatch_picks_the_nearest_available_unit(hub: RunningHub) -> None:
    await hub.put_unit("NEAR", ["near-trk"])
    await hub.put_unit("FAR", ["far-trk"])
    async with DeviceClient("near-trk", await hub.device_url("near-trk"), unit_id="NEAR") as near, \
            DeviceClient("far-trk", await hub.device_url("far-trk"), unit_id="FAR") as far:
        t = now_ms() - 1000
        send(near, parked(*offset(LAT, LON, 300, 0), t, 1))
        send(far, parked(*offset(LAT, LON, 3000, 0), t, 1))
        await wait_for(lambda: all(hub.hub.live.units[u].fix for u in ("NEAR", "FAR")))
        iid = (await hub.api.post("/api/v1/incidents", json=INCIDENT)).json()["id"]
        r = await hub.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"auto": True, "count": 1})
        assert r.status_code == 200, r.text
        assert [a["unit_id"] for a in r.json()["assignments"]] == ["NEAR"]
        await wait_for(lambda: near.commands)
        assert far.commands == []
        # NEAR is busy now: the next incident gets FAR; then nobody is left.
        other = (await hub.api.post("/api/v1/incidents", json=INCIDENT)).json()["id"]
        r = await hub.api.post(f"/api/v1/incidents/{other}/dispatch", json={"auto": True})
        assert [a["unit_id"] for a in r.json()["assignments"]] == ["FAR"]
        third = (await hub.api.post("/api/v1/incidents", json=INCIDENT)).json()["id"]
        r = await hub.api.post(f"/api/v1/incidents/{third}/dispatch", json={"auto": True})
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"


@pytest.mark.parametrize(("body", "field"), [
    ({**INCIDENT, "priority": 9}, "priority"),
    ({**INCIDENT, "priority": "1"}, "priority"),
    ({**INCIDENT, "lat": 91}, "lat"),
    ({**INCIDENT, "lon": "NaN"}, "lon"),
    ({**INCIDENT, "category": ""}, "category"),
    ({**INCIDENT, "category": "x" * 65}, "category"),
    ({k: v for k, v in INCIDENT.items() if k != "lat"}, "lat"),
    ({**INCIDENT, "policy": "nope"}, "policy"),
    ({**INCIDENT, "received_at": 4_000_000_000_000}, "received_at"),
])
async def test_bad_incident_input_gets_a_json_422(hub: RunningHub, body: dict[str, Any], field: str) -> None:
    r = await hub.api.post("/api/v1/incidents", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid" and field in r.text


async def test_bad_requests_and_illegal_transitions_get_json_4xx(hub: RunningHub) -> None:
    def error(r: Any, status: int, code: str) -> str:
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code
        message: str = r.json()["error"]["message"]
        return message

    api = hub.api
    error(await api.get("/api/v1/incidents/I20990101-000001"), 404, "not_found")
    error(await api.get("/api/v1/incidents/bad id"), 422, "invalid")
    error(await api.post("/api/v1/incidents/I20990101-000001/dispatch", json={"unit_ids": ["P1"]}), 404, "not_found")
    error(await api.post("/api/v1/incidents/I20990101-000001/close"), 404, "not_found")
    await hub.put_unit("P2", ["p2-trk"])
    watcher = hub.hub.feed.subscribe()
    iid = (await api.post("/api/v1/incidents", json=INCIDENT)).json()["id"]
    frames: list[dict[str, Any]] = []

    async def incident_frame() -> bool:
        frames.append(msgspec.json.decode(await watcher.queue.get()))
        return any(f["type"] == "incident" and f["incident"]["id"] == iid for f in frames)

    await wait_for(incident_frame)
    hub.hub.feed.unsubscribe(watcher)
    assert "does not exist" in error(await api.post(f"/api/v1/incidents/{iid}/dispatch",
                                                    json={"unit_ids": ["GHOST"]}), 404, "not_found")
    for body in ({}, {"unit_ids": []}, {"unit_ids": ["P2"], "auto": True}, {"unit_ids": ["P2", "P2"]},
                 {"auto": True, "count": 0}, {"unit_ids": "P2"}):
        error(await api.post(f"/api/v1/incidents/{iid}/dispatch", json=body), 422, "invalid")
    error(await api.post(f"/api/v1/incidents/{iid}/dispatch", json={"auto": True}), 409, "conflict")  # nobody located
    assert (await api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": ["P2"]})).status_code == 200
    assert "already assigned" in error(
        await api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": ["P2"]}), 409, "conflict")
    other = (await api.post("/api/v1/incidents", json=INCIDENT)).json()["id"]
    error(await api.post(f"/api/v1/incidents/{other}/dispatch", json={"unit_ids": ["P2"]}), 409, "conflict")

    for body in ({"type": "acknowledged"}, {"type": "note"}, {"type": "contacted", "ts": "soon"},
                 {"type": "contacted", "unit_id": "bad id"}, {"type": "contacted", "ts": now_ms() + 3_600_000}):
        error(await api.post(f"/api/v1/incidents/{iid}/events", json=body), 422, "invalid")
    assert "before the call" in error(
        await api.post(f"/api/v1/incidents/{iid}/events", json={"type": "contacted", "ts": 1000}), 409, "conflict")
    assert "never dispatched" in error(
        await api.post(f"/api/v1/incidents/{iid}/events", json={"type": "arrived", "unit_id": "P9"}), 409, "conflict")
    r = await api.post(f"/api/v1/incidents/{iid}/events", json={"type": "note", "text": "caller calm"})
    assert r.status_code == 200 and r.json()["log"][-1]["text"] == "caller calm"
    assert (await api.post(f"/api/v1/incidents/{iid}/events", json={"type": "supported"})).status_code == 200
    assert "already" in error(await api.post(f"/api/v1/incidents/{iid}/events", json={"type": "supported"}),
                              409, "conflict")

    assert (await api.post(f"/api/v1/incidents/{iid}/close")).status_code == 200
    assert "closed" in error(await api.post(f"/api/v1/incidents/{iid}/close"), 409, "conflict")
    error(await api.post(f"/api/v1/incidents/{iid}/events", json={"type": "contacted"}), 409, "conflict")
    error(await api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": ["P2"]}), 409, "conflict")
    # Released by the close: P2 can take the other incident now.
    assert (await api.post(f"/api/v1/incidents/{other}/dispatch", json={"unit_ids": ["P2"]})).status_code == 200

    error(await api.get("/api/v1/incidents", params={"status": "bogus"}), 422, "invalid")
    error(await api.get("/api/v1/reports/response-times", params={"group_by": "bogus"}), 422, "invalid")
    error(await api.get("/api/v1/reports/response-times", params={"from": 10, "to": 5}), 400, "bad_request")
    error(await api.get("/api/v1/reports/response-times", params={"from": "yesterday"}), 422, "invalid")

    viewer = await hub.hub.create_token("viewer", "wall")
    headers = {"Authorization": f"Bearer {viewer}"}
    assert (await api.get(f"/api/v1/incidents/{iid}", headers=headers)).status_code == 200
    error(await api.post("/api/v1/incidents", json=INCIDENT, headers=headers), 403, "forbidden")


async def test_restart_keeps_milestones_and_still_detects_arrival(settings: Settings) -> None:
    origin = offset(LAT, LON, -1505.0, 0)
    async with running_hub(settings) as rh:
        await rh.put_unit("R1", ["r1-trk"])
        iid = (await rh.api.post("/api/v1/incidents", json=INCIDENT)).json()["id"]
        dev = DeviceClient("r1-trk", await rh.device_url("r1-trk"), unit_id="R1")
        await dev.start()
        send(dev, parked(*origin, now_ms() - 2000, 2))
        await wait_for(lambda: rh.hub.live.units["R1"].fix is not None)
        r = await rh.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": ["R1"]})
        dispatched_ts = r.json()["assignments"][0]["dispatched"]
        ack = await milestone(rh, iid, "acknowledged")
        still = parked(*origin, dispatched_ts + 1000, 20)
        moving = drive_in(still[-1].ts + 1000)
        half = len(moving) // 2
        send(dev, still + moving[:half])
        departed = await milestone(rh, iid, "departed")
        assert departed["ts"] == moving[0].ts
        await wait_for(lambda: rh.count("SELECT count(*) FROM fixes WHERE device_id = 'r1-trk'"))
    try:
        # The same database and MQTT session, a fresh HTTP port (the old socket may linger).
        async with running_hub(settings.model_copy(update={"port": free_port()})) as rh:
            view = await incident(rh, iid)
            assert view["status"] == "open"
            assert view["milestones"]["acknowledged"] == ack
            assert view["milestones"]["departed"] == departed
            assert view["milestones"]["arrived"] is None
            assert rh.hub.live.units["R1"].status == "en_route"
            stay = parked(moving[-1].lat, moving[-1].lon, moving[-1].ts + 1000, 180)
            send(dev, moving[half:] + stay)
            arrived = await milestone(rh, iid, "arrived")
            assert arrived == {"ts": first_inside(moving), "source": "geofence", "unit_id": "R1"}
            assert (await incident(rh, iid))["milestones"]["departed"] == departed
    finally:
        await dev.stop()
