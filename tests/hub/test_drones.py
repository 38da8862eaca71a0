"""Drones end to end: the hub's MAVLink link against the drone simulator over real UDP, real broker and database.

Incident -> drone chosen and dispatched -> airborne -> arrival over the scene recorded -> incident closed ->
RTL -> landed on its dock; a drone with too little battery is passed over; a lost link mid-flight and a
low battery in flight send the drone home with the reason in the incident log; operator commands are
role-checked and audited; MAVLink 2 signing keeps out a drone with the wrong key, a fleet drone without a key
(unless its fleet entry opts in to fly unsigned) and anything from a system id outside the fleet.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from geo.geodesy import haversine_m, offset
from hub.config import Settings
from sim.copter import CopterConfig
from sim.drone_runner import FLEET_PARAMS
from sim.drones import DroneFleetSim, new_keys
from sim.stations import DroneDock, fleet_entries
from tests.conftest import RunningHub, running_hub, wait_for
from tests.drone.peer import FakeAutopilot

BASE = (34.2610, 117.1859)
DOCKS = [DroneDock("UAV-01", 1, *BASE, "Central Police Station"),
         DroneDock("UAV-02", 2, *offset(*BASE, 600.0, 0.0), "North Police Station")]
SCENE = offset(*BASE, 0.0, 250.0)  # 250 m east of UAV-01's dock, ~650 m from UAV-02's


@asynccontextmanager
async def drone_stack(settings: Settings, tmp_path: Path, *, sim_keys: dict[str, bytes] | None = None,
                      hub_keys: dict[int, str] | None = None, unsigned: tuple[str, ...] = (),
                      config: CopterConfig | None = None, speed: float = 1.0, params: dict[str, float] | None = None,
                      **changes: Any) -> AsyncIterator[tuple[RunningHub, DroneFleetSim]]:
    """The hub and the simulated drones; by default every drone signs with a key both sides share. ``unsigned``:
    the drones whose fleet entries opt in to fly without a key. ``params``: the autopilots' parameters that differ
    from a stock ArduCopter's, by default a police fleet's (link failsafe on); ``{}`` for stock copters."""
    shared = new_keys(DOCKS)
    sim_keys = shared if sim_keys is None else sim_keys
    if hub_keys is None:
        hub_keys = {d.system_id: shared[d.drone_id].hex() for d in DOCKS}
    async with hub_stack(settings, tmp_path, hub_keys, unsigned, **changes) as rh:
        assert rh.hub.drones is not None
        gcs = rh.hub.drones.link.local_address
        async with DroneFleetSim(DOCKS, ("127.0.0.1", gcs[1]), keys=sim_keys, config=config, speed=speed,
                                 params=dict(FLEET_PARAMS) if params is None else params) as sim:
            yield rh, sim


@asynccontextmanager
async def hub_stack(settings: Settings, tmp_path: Path, hub_keys: dict[int, str], unsigned: tuple[str, ...] = (),
                    **changes: Any) -> AsyncIterator[RunningHub]:
    """The hub with the fleet of DOCKS on a MAVLink link, the key file holding ``hub_keys``."""
    fleet = tmp_path / "drones.json"
    fleet.write_text(json.dumps([{**e, "unsigned": True} if e["drone_id"] in unsigned else e
                                 for e in fleet_entries(DOCKS)]))
    keys = tmp_path / "drone-keys.json"
    keys.write_text(json.dumps({str(k): v for k, v in hub_keys.items()}))
    os.chmod(keys, 0o600)
    update: dict[str, Any] = {"mavlink_url": "udpin:127.0.0.1:0", "drones": fleet, "drone_keys": keys,
                              "drone_cruise_alt_m": 30.0, "auto_dispatch_priority": 0, **changes}
    async with running_hub(settings.model_copy(update=update)) as rh:
        yield rh


async def drones(rh: RunningHub) -> dict[str, dict[str, Any]]:
    r = await rh.api.get("/api/v1/drones")
    assert r.status_code == 200, r.text
    return {d["drone_id"]: d for d in r.json()["drones"]}


async def ready(rh: RunningHub, *ids: str) -> None:
    async def check() -> bool:
        views = await drones(rh)
        return all(views[i]["link"] == "ok" and views[i]["state"] == "ready" and views[i]["position"] for i in ids)
    await wait_for(check, timeout=15)


async def incident(rh: RunningHub, lat: float = SCENE[0], lon: float = SCENE[1]) -> str:
    r = await rh.api.post("/api/v1/incidents", json={"category": "theft", "priority": 2, "lat": lat, "lon": lon})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def assignment(rh: RunningHub, incident_id: str, unit_id: str) -> dict[str, Any]:
    view = (await rh.api.get(f"/api/v1/incidents/{incident_id}")).json()
    return next((a for a in view["assignments"] if a["unit_id"] == unit_id), {})


async def log_texts(rh: RunningHub, incident_id: str) -> list[str]:
    view = (await rh.api.get(f"/api/v1/incidents/{incident_id}")).json()
    return [e.get("text", "") for e in view["log"] if e["type"] == "note"]


async def token(rh: RunningHub, role: str) -> httpx.AsyncClient:
    secret = await rh.hub.create_token(role, f"{role}-1")
    return httpx.AsyncClient(base_url=rh.base_url, headers={"Authorization": f"Bearer {secret}"}, timeout=10)


async def test_incident_drone_flies_there_arrives_and_lands_back_on_its_dock(settings: Settings,
                                                                           tmp_path: Path) -> None:
    async with drone_stack(settings, tmp_path) as (rh, sim):
        await ready(rh, "UAV-01", "UAV-02")
        incident_id = await incident(rh)
        r = await rh.api.post(f"/api/v1/incidents/{incident_id}/drone", json={})
        assert r.status_code == 201, r.text
        sent = r.json()
        assert sent["drone_id"] == "UAV-01" and 240 <= sent["distance_m"] <= 260 and sent["eta_s"] > 0
        # Airborne, then over the scene: its assignment's milestones, from its own telemetry.
        a = await wait_for(lambda: _with(assignment(rh, incident_id, "UAV-01"), "arrived"), timeout=180)
        assert a["aerial"] is True and a["sources"]["acknowledged"] == "device"
        assert a["sources"]["departed"] == "motion" and a["sources"]["arrived"] == "geofence"
        assert a["dispatched"] <= a["acknowledged"] <= a["departed"] < a["arrived"]
        copter = sim.drone("UAV-01").copter
        lat, lon, _ = copter.position()
        assert haversine_m(lat, lon, *SCENE) < 25
        view = (await drones(rh))["UAV-01"]
        assert view["state"] == "on_scene" and view["armed"] and view["mission"]["incident_id"] == incident_id
        assert view["position"]["alt_m"] > 20
        # A drone overhead does not meet the officers' targets.
        incident_view = (await rh.api.get(f"/api/v1/incidents/{incident_id}")).json()
        assert incident_view["milestones"]["arrived"] is None
        # Closing the incident sends it home; it lands on its dock and is ready again.
        assert (await rh.api.post(f"/api/v1/incidents/{incident_id}/close", json={})).status_code == 200
        await wait_for(lambda: _state(rh, "UAV-01", "returning"), timeout=10)
        await wait_for(lambda: _state(rh, "UAV-01", "ready"), timeout=120)
        lat, lon, _ = copter.position()
        assert haversine_m(lat, lon, DOCKS[0].lat, DOCKS[0].lon) < 5 and not copter.armed
        audit = (await rh.api.get("/api/v1/drones/UAV-01/commands")).json()["commands"]
        assert [(c["command"], c["result"]) for c in reversed(audit)] == [
            ("dispatch", "accepted"), ("goto", "accepted"), ("rtl", "accepted")]
        texts = await log_texts(rh, incident_id)
        assert any(t.startswith("drone UAV-01 sent by") for t in texts)


async def _with(pending: Any, milestone: str) -> dict[str, Any] | None:
    a: dict[str, Any] = await pending
    return a if a.get(milestone) else None


async def _state(rh: RunningHub, drone_id: str, state: str) -> bool:
    return bool((await drones(rh))[drone_id]["state"] == state)


async def test_a_drone_with_too_little_battery_is_not_chosen(settings: Settings, tmp_path: Path) -> None:
    async with drone_stack(settings, tmp_path) as (rh, sim):
        await ready(rh, "UAV-01", "UAV-02")
        sim.set_battery("UAV-01", 30.0)
        await wait_for(lambda: _battery_below(rh, "UAV-01", 31), timeout=5)
        incident_id = await incident(rh)
        r = await rh.api.post(f"/api/v1/incidents/{incident_id}/drone", json={})
        assert r.status_code == 201, r.text
        assert r.json()["drone_id"] == "UAV-02"
        assert r.json()["refused"]["UAV-01"].startswith("battery 30 %, the round trip needs")
        # Asking for it by name is refused with the reason; with both out, nobody goes.
        other = await incident(rh)
        r = await rh.api.post(f"/api/v1/incidents/{other}/drone", json={"drone_id": "UAV-01"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "no_drone_available"
        assert "battery 30 %" in r.json()["error"]["message"]
        r = await rh.api.post(f"/api/v1/incidents/{other}/drone", json={})
        assert r.status_code == 409 and "UAV-02: on incident" in r.json()["error"]["message"]


async def _battery_below(rh: RunningHub, drone_id: str, pct: float) -> bool:
    battery = (await drones(rh))[drone_id]["battery_pct"]
    return battery is not None and battery < pct


async def test_link_lost_mid_flight_is_detected_noted_and_the_drone_returns(settings: Settings,
                                                                          tmp_path: Path) -> None:
    # The drone's own GCS failsafe (ArduCopter FS_GCS_ENABLE) flies it home when the hub goes silent.
    async with drone_stack(settings, tmp_path, params={"FS_GCS_ENABLE": 1, "FS_GCS_TIMEOUT": 3}) as (rh, sim):
        await ready(rh, "UAV-01")
        incident_id = await incident(rh)
        assert (await rh.api.post(f"/api/v1/incidents/{incident_id}/drone", json={})).status_code == 201
        await wait_for(lambda: _with(assignment(rh, incident_id, "UAV-01"), "departed"), timeout=60)
        cut = time.monotonic()
        sim.cut_link("UAV-01", 8.0)
        await wait_for(lambda: _link(rh, "UAV-01", "lost"), timeout=6, interval=0.1)
        assert time.monotonic() - cut < 5.0
        texts = await wait_for(lambda: _noted(rh, incident_id, "link lost"), timeout=3)
        assert any("on link loss the autopilot returns to launch after 3 s (FS_GCS_ENABLE=1)" in t for t in texts)
        a = await assignment(rh, incident_id, "UAV-01")
        assert a["status"] == "cancelled"
        # The link returns: the drone is on its way home (its failsafe, and the hub's RTL sent once it could).
        await wait_for(lambda: _link(rh, "UAV-01", "ok"), timeout=15)
        await wait_for(lambda: _mode(rh, "UAV-01", "RTL"), timeout=10)
        assert (await drones(rh))["UAV-01"]["state"] == "returning"


async def _link(rh: RunningHub, drone_id: str, link: str) -> bool:
    return bool((await drones(rh))[drone_id]["link"] == link)


async def _mode(rh: RunningHub, drone_id: str, mode: str) -> bool:
    return bool((await drones(rh))[drone_id]["mode"] == mode)


async def _noted(rh: RunningHub, incident_id: str, part: str) -> list[str] | None:
    texts = await log_texts(rh, incident_id)
    return texts if any(part in t for t in texts) else None


async def test_low_battery_in_flight_sends_the_drone_home_and_the_log_says_so(settings: Settings,
                                                                             tmp_path: Path) -> None:
    async with drone_stack(settings, tmp_path, drone_reserve_pct=30.0) as (rh, sim):
        await ready(rh, "UAV-01")
        incident_id = await incident(rh)
        assert (await rh.api.post(f"/api/v1/incidents/{incident_id}/drone", json={})).status_code == 201
        await wait_for(lambda: _with(assignment(rh, incident_id, "UAV-01"), "departed"), timeout=60)
        sim.set_battery("UAV-01", 29.0)  # the simulated copter's own low-battery failsafe is at 20 %
        texts = await wait_for(lambda: _noted(rh, incident_id, "returning to launch"), timeout=8)
        assert any(t.startswith("drone UAV-01: battery 29 %") for t in texts)
        await wait_for(lambda: _mode(rh, "UAV-01", "RTL"), timeout=5)
        assert (await assignment(rh, incident_id, "UAV-01"))["status"] == "cancelled"


async def test_operator_commands_are_role_checked_validated_and_audited(settings: Settings, tmp_path: Path) -> None:
    async with drone_stack(settings, tmp_path) as (rh, sim):
        await ready(rh, "UAV-01", "UAV-02")
        operator = await token(rh, "drone_operator")
        viewer = await token(rh, "viewer")
        try:
            target = offset(*BASE, 100.0, 100.0)
            body = {"lat": target[0], "lon": target[1], "alt": 25}
            for client in (rh.api, viewer):  # the dispatcher and the viewer may not fly drones
                r = await client.post("/api/v1/drones/UAV-01/goto", json=body)
                assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
            assert (await viewer.post(f"/api/v1/incidents/{await incident(rh)}/drone", json={})).status_code == 403
            bad = await operator.post("/api/v1/drones/UAV-01/goto", json={**body, "alt": 500})
            assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid"
            assert (await operator.post("/api/v1/drones/UAV-09/rtl")).status_code == 404
            r = await operator.post("/api/v1/drones/UAV-01/goto", json=body)
            assert r.status_code == 202, r.text
            assert r.json() == {"drone_id": "UAV-01", "command": "goto", "result": "accepted"}
            # Armed and taking off when the answer came; the goto itself once it is up.
            await wait_for(lambda: _commands(operator, "UAV-01", 2), timeout=30)
            assert _airborne(sim, "UAV-01", 20.0)
            assert (await operator.post("/api/v1/drones/UAV-01/rtl")).status_code == 202
            await wait_for(lambda: _mode(rh, "UAV-01", "RTL"), timeout=5)
            # No link: refused at once, not hung; audited as such.
            sim.cut_link("UAV-02", 10.0)
            await wait_for(lambda: _link(rh, "UAV-02", "lost"), timeout=6)
            r = await operator.post("/api/v1/drones/UAV-02/land")
            assert r.status_code == 409 and r.json()["error"]["code"] == "link_lost"
            audit = (await operator.get("/api/v1/drones/UAV-01/commands")).json()["commands"]
            assert [(c["command"], c["result"], c["principal"], c["role"]) for c in reversed(audit)] == [
                ("goto", "accepted", "drone_operator-1", "drone_operator"),
                ("goto", "accepted", "drone_operator-1", "drone_operator"),
                ("rtl", "accepted", "drone_operator-1", "drone_operator")]
            assert audit[-1]["params"] == body
            lost = (await operator.get("/api/v1/drones/UAV-02/commands")).json()["commands"]
            assert [(c["command"], c["result"]) for c in lost] == [("land", "link_lost")]
        finally:
            await operator.aclose()
            await viewer.aclose()


async def _commands(client: httpx.AsyncClient, drone_id: str, n: int) -> bool:
    return len((await client.get(f"/api/v1/drones/{drone_id}/commands")).json()["commands"]) >= n


def _airborne(sim: DroneFleetSim, drone_id: str, alt_m: float) -> bool:
    return sim.drone(drone_id).copter.position()[2] >= alt_m


async def test_signing_admits_the_drone_with_the_right_key_and_refuses_a_wrong_one(settings: Settings,
                                                                                  tmp_path: Path) -> None:
    key1, key2, wrong = bytes(range(32)), bytes(range(1, 33)), bytes(32)
    async with drone_stack(settings, tmp_path, sim_keys={"UAV-01": key1, "UAV-02": wrong},
                           hub_keys={1: key1.hex(), 2: key2.hex()}) as (rh, sim):
        await ready(rh, "UAV-01")
        assert rh.hub.drones is not None
        link = rh.hub.drones.link
        await wait_for(lambda: link.stats["bad_signature"] >= 3, timeout=5)
        views = await drones(rh)
        assert views["UAV-02"]["link"] == "refused_bad_signature" and views["UAV-02"]["position"] is None
        assert views["UAV-02"]["refused"]["bad_signature"] >= 3 and 2 not in link.vehicles
        assert views["UAV-01"]["signing"] == "signed" and views["UAV-01"]["refused"] == {}
        assert sim.drone("UAV-02").counters.received == 0  # not even our heartbeat: it never got through
        # A command to the signed drone is signed with its key, so the simulated drone accepts it.
        operator = await token(rh, "drone_operator")
        try:
            r = await operator.post("/api/v1/drones/UAV-01/land")
            assert r.status_code == 202, r.text
        finally:
            await operator.aclose()
        assert sim.drone("UAV-01").counters.refused == 0


async def test_mavlink_from_a_system_outside_the_fleet_is_ignored_at_the_link(settings: Settings,
                                                                              tmp_path: Path) -> None:
    keys = new_keys(DOCKS)
    async with hub_stack(settings, tmp_path, {d.system_id: keys[d.drone_id].hex() for d in DOCKS}) as rh:
        assert rh.hub.drones is not None
        link = rh.hub.drones.link
        # A real MAVLink 2 autopilot (pymavlink, UDP), unsigned, heartbeating at 5 Hz from system id 77.
        async with FakeAutopilot(77, link.local_address) as stranger:
            await wait_for(lambda: link.stats["outside_fleet"] >= 5, timeout=5)
            await asyncio.sleep(3.0)  # the hub's heartbeat goes out at 1 Hz: three would have reached it by now
            assert stranger.of_type("HEARTBEAT") == [] and stranger.received == []
            assert link.stats["received"] == 0 and 77 not in link.vehicles
            views = await drones(rh)
            assert sorted(views) == ["UAV-01", "UAV-02"] and all(v["link"] == "unknown" for v in views.values())
            units = (await rh.api.get("/api/v1/units")).json()["units"]
            assert all(u["position"] is None for u in units)
            r = await rh.api.get("/metrics")
            assert r.status_code == 200, r.text
            counted = re.search(r'^fieldhub_mavlink_ignored_total\{reason="outside_fleet"\} (\S+)$', r.text, re.M)
            assert counted is not None and float(counted.group(1)) >= 5
            assert re.search(r'^fieldhub_mavlink_ignored_total\{reason="refused_unsigned"\} 0\.0$', r.text, re.M)


async def test_a_fleet_drone_without_a_key_is_refused_unless_its_entry_opts_in(
        settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hub.drones.fleet")
    # Neither drone has a key and neither signs; only UAV-02's fleet entry says "unsigned": true.
    async with drone_stack(settings, tmp_path, sim_keys={}, hub_keys={}, unsigned=("UAV-02",)) as (rh, sim):
        await ready(rh, "UAV-02")
        assert rh.hub.drones is not None
        link = rh.hub.drones.link
        # A refused drone hears nothing from the hub, so it sends what a stock ArduCopter sends unasked: heartbeats.
        await wait_for(lambda: link.stats["refused_unsigned"] >= 3, timeout=5)
        views = await drones(rh)
        assert (views["UAV-02"]["signing"], views["UAV-02"]["link"]) == ("unsigned", "ok")
        assert views["UAV-02"]["refused"] == {} and sim.drone("UAV-02").counters.received > 0  # our heartbeats
        refused = views["UAV-01"]
        assert (refused["signing"], refused["link"], refused["state"]) == (
            "refused", "refused_unsigned", "refused_unsigned")
        assert refused["position"] is None and refused["refused"]["refused_unsigned"] >= 3
        assert 1 not in link.vehicles and sim.drone("UAV-01").counters.received == 0
        # Not flown, not sent: refused with the reason.
        operator = await token(rh, "drone_operator")
        try:
            r = await operator.post("/api/v1/drones/UAV-01/land")
            assert r.status_code == 409 and r.json()["error"]["code"] == "refused_unsigned", r.text
            r = await rh.api.post(f"/api/v1/incidents/{await incident(rh)}/drone", json={})
            assert r.status_code == 201 and r.json()["drone_id"] == "UAV-02", r.text
        finally:
            await operator.aclose()
        # Said loudly once at start (not once per frame), and the opt-in said too.
        messages = [(rec.levelno, rec.getMessage()) for rec in caplog.records if rec.name == "hub.drones.fleet"]
        assert [level for level, m in messages if "UAV-01" in m] == [logging.ERROR]
        assert any("UAV-01" in m and "REFUSED" in m and "unsigned" in m for _, m in messages)
        assert any(level == logging.WARNING and "UAV-02" in m and "UNSIGNED" in m for level, m in messages)


@pytest.fixture(autouse=True)
def _no_ambient_drone_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FIELDHUB_MAVLINK_URL", "FIELDHUB_DRONES", "FIELDHUB_DRONE_KEYS"):
        monkeypatch.delenv(name, raising=False)
