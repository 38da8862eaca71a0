"""The hub against a *stock* ArduCopter (issue 14): the simulated copter with ArduCopter's default parameters,
no MAVProxy in between, real UDP, real broker and database.

A stock copter streams nothing until asked, applies its link failsafe only per FS_GCS_ENABLE and MAV_GCS_SYSID,
resets home where it arms, explains refusals only in STATUSTEXT, can reboot mid-session and runs its own clock
2.65 s behind. Each case: the hub sets the link up like a ground station, shows the truth and acts on it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec
from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from geo.geodesy import haversine_m, offset
from hub.config import Settings
from tests.conftest import RunningHub, wait_for
from tests.hub.test_drones import (
    BASE,
    DOCKS,
    SCENE,
    _no_ambient_drone_settings,  # noqa: F401  (autouse: no ambient drone settings)
    _with,
    assignment,
    drone_stack,
    drones,
    incident,
    log_texts,
    token,
)

STOCK: dict[str, float] = {}  # ArduCopter's default parameters, nothing changed
AWAY = offset(*BASE, 90.0, -90.0)  # 127 m from UAV-01's dock


async def view(rh: RunningHub, drone_id: str = "UAV-01") -> dict[str, Any]:
    return (await drones(rh))[drone_id]


async def state_is(rh: RunningHub, state: str, drone_id: str = "UAV-01") -> dict[str, Any] | None:
    v = await view(rh, drone_id)
    return v if v["state"] == state else None


async def test_a_stock_copter_streams_only_after_the_hubs_requests_and_shows_it_has_no_failsafe(
        settings: Settings, tmp_path: Path) -> None:
    async with drone_stack(settings, tmp_path, params=STOCK) as (rh, sim):
        drone = sim.drone("UAV-01")
        # Position, landed state, home and the failsafe parameters: all there, because the hub asked.
        v = await wait_for(lambda: state_is(rh, "no_failsafe"), timeout=15)
        assert v["position"] is not None and not v["position"]["stale"] and v["landed"] == "on_ground"
        assert v["home"] is not None and v["home"]["at_dock"]
        assert v["telemetry"]["problem"] is None and v["telemetry"]["messages"]["GLOBAL_POSITION_INT"] == "ok"
        # The simulated autopilot streams what the hub asked for with SET_MESSAGE_INTERVAL; nobody else asked.
        assert drone.streams[mavlink2.MAVLINK_MSG_ID_GLOBAL_POSITION_INT] > 0
        assert v["failsafe"]["ok"] is False and v["failsafe"]["params"]["FS_GCS_ENABLE"] == 0
        assert "FS_GCS_ENABLE=0" in v["reason"] and v["actions"] == ["enable_failsafe"]
        # Not sent: the reason is the failsafe, word for word.
        incident_id = await incident(rh)
        r = await rh.api.post(f"/api/v1/incidents/{incident_id}/drone", json={})
        assert r.status_code == 409 and "NO link failsafe" in r.json()["error"]["message"], r.text
        # The operator turns it on; the hub sets the parameter and reads it back.
        operator = await token(rh, "drone_operator")
        try:
            r = await operator.post("/api/v1/drones/UAV-01/failsafe")
            assert r.status_code == 202, r.text
            assert r.json()["set"] == {"FS_GCS_ENABLE": 1.0}
        finally:
            await operator.aclose()
        v = await wait_for(lambda: state_is(rh, "ready"), timeout=10)
        assert v["failsafe"] == {"ok": True, "known": True, "action": "rtl", "params": v["failsafe"]["params"],
                                 "text": "on link loss the autopilot returns to launch after 5 s (FS_GCS_ENABLE=1)"}
        assert sim.get_param("UAV-01", "FS_GCS_ENABLE") == 1


async def test_a_drone_without_a_failsafe_flies_only_on_an_explicit_override_and_the_log_says_what_happens(
        settings: Settings, tmp_path: Path) -> None:
    async with drone_stack(settings, tmp_path, params=STOCK) as (rh, sim):
        await wait_for(lambda: state_is(rh, "no_failsafe"), timeout=15)
        incident_id = await incident(rh)
        r = await rh.api.post(f"/api/v1/incidents/{incident_id}/drone",
                              json={"drone_id": "UAV-01", "without_failsafe": True})
        assert r.status_code == 201 and r.json()["without_failsafe"] is True, r.text
        texts = await log_texts(rh, incident_id)
        assert any("WITHOUT a working link failsafe" in t and "flies on to its last target" in t for t in texts)
        await wait_for(lambda: _with(assignment(rh, incident_id, "UAV-01"), "departed"), timeout=60)
        sim.cut_link("UAV-01", 10.0)
        texts = await wait_for(lambda: _noted(rh, incident_id, "link lost"), timeout=8)
        assert any("NO link failsafe" in t for t in texts if "link lost" in t)
        # What the log says is what the autopilot does: it goes on, in GUIDED, towards the scene.
        await asyncio.sleep(6.0)
        copter = sim.drone("UAV-01").copter
        assert copter.mode.name == "GUIDED" and copter.armed


async def test_a_ground_station_id_the_autopilot_does_not_listen_to_is_no_failsafe(settings: Settings,
                                                                                   tmp_path: Path) -> None:
    async with drone_stack(settings, tmp_path, params={"FS_GCS_ENABLE": 1}, mavlink_system_id=250) as (rh, _):
        v = await wait_for(lambda: state_is(rh, "no_failsafe"), timeout=15)
        assert "system 255 (MAV_GCS_SYSID)" in v["reason"] and "system 250" in v["reason"]


async def test_rtl_lands_on_the_dock_after_a_landing_elsewhere(settings: Settings, tmp_path: Path) -> None:
    async with drone_stack(settings, tmp_path, speed=3.0) as (rh, sim):
        await wait_for(lambda: state_is(rh, "ready"), timeout=15)
        copter = sim.drone("UAV-01").copter
        operator = await token(rh, "drone_operator")
        try:
            body = {"lat": AWAY[0], "lon": AWAY[1], "alt": 20}
            assert (await operator.post("/api/v1/drones/UAV-01/goto", json=body)).status_code == 202
            await wait_for(lambda: haversine_m(*copter.position()[:2], *AWAY) < 3, timeout=60)
            assert (await operator.post("/api/v1/drones/UAV-01/land")).status_code == 202
            v = await wait_for(lambda: state_is(rh, "landed_away"), timeout=60)
            assert v["actions"] == ["return_to_dock"] and "m from its dock" in v["reason"]
            # Flying again from there: the hub sets home to the dock first, so its RTL lands on the dock.
            there = offset(*AWAY, 30.0, 0.0)
            assert (await operator.post("/api/v1/drones/UAV-01/goto",
                                        json={"lat": there[0], "lon": there[1], "alt": 20})).status_code == 202
            v = await wait_for(lambda: _home_at_dock(rh), timeout=10)
            await wait_for(lambda: copter.position()[2] > 15, timeout=30)
            assert (await operator.post("/api/v1/drones/UAV-01/rtl")).status_code == 202
            await wait_for(lambda: state_is(rh, "ready"), timeout=90)
            assert haversine_m(*copter.position()[:2], DOCKS[0].lat, DOCKS[0].lon) < 5 and not copter.armed
            # Landed away again: "return to dock" brings it home.
            assert (await operator.post("/api/v1/drones/UAV-01/goto", json=body)).status_code == 202
            await wait_for(lambda: haversine_m(*copter.position()[:2], *AWAY) < 3, timeout=60)
            assert (await operator.post("/api/v1/drones/UAV-01/land")).status_code == 202
            await wait_for(lambda: state_is(rh, "landed_away"), timeout=60)
            r = await operator.post("/api/v1/drones/UAV-01/return")
            assert r.status_code == 202, r.text
            await wait_for(lambda: state_is(rh, "ready"), timeout=90)
            assert haversine_m(*copter.position()[:2], DOCKS[0].lat, DOCKS[0].lon) < 5
            commands = [c["command"] for c in (await operator.get("/api/v1/drones/UAV-01/commands")).json()["commands"]]
            assert "return_to_dock" in commands
        finally:
            await operator.aclose()


async def _home_at_dock(rh: RunningHub) -> bool:
    home = (await view(rh))["home"]
    return bool(home and home["at_dock"])


async def test_an_arming_refusal_carries_the_autopilots_reason_and_restores_the_mode(settings: Settings,
                                                                                      tmp_path: Path) -> None:
    async with drone_stack(settings, tmp_path) as (rh, sim):
        await wait_for(lambda: state_is(rh, "ready"), timeout=15)
        copter = sim.drone("UAV-01").copter
        mode_before = copter.mode
        copter.set_fault("Gyros inconsistent")
        # The operator's goto: the arm is refused, the answer says why in the autopilot's words, mode restored.
        operator = await token(rh, "drone_operator")
        try:
            r = await operator.post("/api/v1/drones/UAV-01/goto", json={"lat": SCENE[0], "lon": SCENE[1], "alt": 30})
            assert r.status_code == 409 and r.json()["error"]["code"] == "command_rejected", r.text
            assert "Arm: Gyros inconsistent" in r.json()["error"]["message"]
        finally:
            await operator.aclose()
        assert copter.mode == mode_before and not copter.armed
        # Its pre-arm health is part of readiness: not ready, with the autopilot's text, and not dispatched.
        v = await wait_for(lambda: state_is(rh, "not_ready"), timeout=5)
        assert "Gyros inconsistent" in v["reason"]
        incident_id = await incident(rh)
        r = await rh.api.post(f"/api/v1/incidents/{incident_id}/drone", json={"drone_id": "UAV-01"})
        assert r.status_code == 409 and "Gyros inconsistent" in r.json()["error"]["message"], r.text
        copter.set_fault(None)
        await wait_for(lambda: state_is(rh, "ready"), timeout=5)


async def test_a_launch_the_autopilot_refuses_is_logged_with_its_reason_never_as_landed(settings: Settings,
                                                                                         tmp_path: Path) -> None:
    async with drone_stack(settings, tmp_path) as (rh, sim):
        await wait_for(lambda: state_is(rh, "ready"), timeout=15)
        copter = sim.drone("UAV-01").copter
        mode_before = copter.mode
        copter.set_tilt(40.0)  # an arm-time check only ("Arm: Leaning"): pre-arm health stays good
        incident_id = await incident(rh)
        r = await rh.api.post(f"/api/v1/incidents/{incident_id}/drone", json={"drone_id": "UAV-01"})
        assert r.status_code == 201, r.text
        texts = await wait_for(lambda: _noted(rh, incident_id, "launch failed"), timeout=10)
        assert any(t == "drone UAV-01: launch failed: Arm: Leaning" for t in texts), texts
        assert (await assignment(rh, incident_id, "UAV-01"))["status"] == "cancelled"
        await asyncio.sleep(2.0)
        texts = await log_texts(rh, incident_id)
        assert not any("landed" in t for t in texts), texts
        assert copter.mode == mode_before and not copter.armed
        commands = [(c["command"], c["result"]) for c in
                    reversed((await rh.api.get("/api/v1/drones/UAV-01/commands")).json()["commands"])]
        assert ("rtl", "accepted") not in commands and commands[0] == ("dispatch", "rejected")


async def test_an_autopilot_reboot_in_flight_is_seen_and_telemetry_comes_back(settings: Settings,
                                                                               tmp_path: Path) -> None:
    async with drone_stack(settings, tmp_path) as (rh, sim):
        await wait_for(lambda: state_is(rh, "ready"), timeout=15)
        incident_id = await incident(rh)
        assert (await rh.api.post(f"/api/v1/incidents/{incident_id}/drone", json={})).status_code == 201
        await wait_for(lambda: _with(assignment(rh, incident_id, "UAV-01"), "departed"), timeout=60)
        sim.power_cycle("UAV-01", down_s=2.0)
        texts = await wait_for(lambda: _noted(rh, incident_id, "rebooted"), timeout=15)
        assert not any("landed" in t for t in texts), texts
        assert (await assignment(rh, incident_id, "UAV-01"))["status"] == "cancelled"
        # The hub asks for its streams again: a fresh position, on the ground, where it came down.
        v = await wait_for(lambda: _fresh_on_ground(rh), timeout=15)
        assert v["reboots"] == 1 and v["position"]["alt_m"] < 2 and not v["armed"]
        assert v["state"] in ("landed_away", "ready")
        commands = (await rh.api.get("/api/v1/drones/UAV-01/commands")).json()["commands"]
        assert all(c["command"] != "rtl" for c in commands)  # no RTL to a disarmed copter


async def _fresh_on_ground(rh: RunningHub) -> dict[str, Any] | None:
    v = await view(rh)
    p = v["position"]
    return v if v["reboots"] >= 1 and p is not None and not p["stale"] and v["landed"] == "on_ground" else None


async def test_milestones_are_in_hub_time_with_the_drone_clock_offset_recorded(settings: Settings,
                                                                             tmp_path: Path) -> None:
    async with drone_stack(settings, tmp_path) as (rh, sim):
        v = await wait_for(lambda: state_is(rh, "ready"), timeout=15)
        v = await wait_for(lambda: _offset(rh), timeout=10)
        assert abs(v["clock"]["offset_ms"] + 2650) < 150  # the simulated autopilot's clock is 2.65 s behind
        # Its fixes carry hub time: as fresh as the 4 Hz stream, not 2.65 s old.
        for _ in range(5):
            p = (await view(rh))["position"]
            age = time.time() * 1000 - p["ts"]
            assert -100 <= age <= 1000, age
            await asyncio.sleep(0.3)
        copter = sim.drone("UAV-01").copter
        incident_id = await incident(rh)
        assert (await rh.api.post(f"/api/v1/incidents/{incident_id}/drone", json={})).status_code == 201
        moved: list[int] = []

        async def watch_truth() -> None:  # the hub's wall clock when the copter really set off (after its climb)
            while not moved:
                if copter.position()[2] > 10 and copter.ground_speed() > 0.3:
                    moved.append(int(time.time() * 1000))
                await asyncio.sleep(0.02)

        truth = asyncio.create_task(watch_truth())
        a = await wait_for(lambda: _with(assignment(rh, incident_id, "UAV-01"), "departed"), timeout=60)
        truth.cancel()
        assert moved, "the copter never set off"
        # In hub time, not 2.65 s early: the departure rule (movement away from where it stood) dates the departure
        # at the first fixes of that movement, which GPS noise may put a little before the truth.
        assert a["dispatched"] <= a["acknowledged"] <= a["departed"]
        assert -1500 <= a["departed"] - moved[0] <= 6000, (a["departed"], moved[0])
        texts = await log_texts(rh, incident_id)
        assert any("clock runs 2.6" in t and "behind the hub's" in t for t in texts), texts


async def _offset(rh: RunningHub) -> dict[str, Any] | None:
    v = await view(rh)
    return v if v["clock"]["offset_ms"] is not None else None


async def test_a_drone_that_signs_with_a_key_the_hub_lacks_is_shown_and_refused_at_once(settings: Settings,
                                                                                      tmp_path: Path) -> None:
    key = bytes(range(32))
    async with drone_stack(settings, tmp_path, sim_keys={"UAV-01": key}, hub_keys={},
                           unsigned=("UAV-01", "UAV-02")) as (rh, _):
        v = await wait_for(lambda: state_is(rh, "signed_no_key"), timeout=15)
        assert v["link"] == "signed_no_key"
        operator = await token(rh, "drone_operator")
        try:
            started = time.monotonic()
            r = await operator.post("/api/v1/drones/UAV-01/land")
            assert r.status_code == 409 and r.json()["error"]["code"] == "signed_no_key", r.text
            assert time.monotonic() - started < 1.0
        finally:
            await operator.aclose()
        incident_id = await incident(rh)
        r = await rh.api.post(f"/api/v1/incidents/{incident_id}/drone", json={"drone_id": "UAV-01"})
        assert r.status_code == 409 and "no key" in r.json()["error"]["message"], r.text


async def test_a_mission_over_the_api_flies_with_progress_on_the_live_feed(settings: Settings,
                                                                           tmp_path: Path) -> None:
    async with drone_stack(settings, tmp_path, speed=3.0) as (rh, sim):
        await wait_for(lambda: state_is(rh, "ready"), timeout=15)
        watcher = rh.hub.feed.subscribe()
        operator = await token(rh, "drone_operator")
        points = [offset(*BASE, 60.0, 0.0), offset(*BASE, 60.0, 60.0)]
        try:
            r = await operator.post("/api/v1/drones/UAV-01/mission", json={
                "waypoints": [{"lat": lat, "lon": lon, "alt": 20} for lat, lon in points], "loiter_s": 2,
                "rtl": True})
            assert r.status_code == 202, r.text
            assert r.json()["items"] == 6  # home, take-off, two waypoints, the hold, RTL
            bad = await operator.post("/api/v1/drones/UAV-02/mission", json={"waypoints": []})
            assert bad.status_code == 422
            far = offset(*BASE, 60_000.0, 0.0)
            r = await operator.post("/api/v1/drones/UAV-02/mission",
                                    json={"waypoints": [{"lat": far[0], "lon": far[1], "alt": 30}]})
            assert r.status_code == 409 and r.json()["error"]["code"] == "battery", r.text
        finally:
            await operator.aclose()
        reached: set[int] = set()

        async def progress() -> bool:
            frame = msgspec.json.decode(await watcher.queue.get())
            for message in _messages(frame):
                mission = (message.get("drone") or {}).get("mission") or {}
                p = mission.get("progress")
                if message.get("type") == "drone" and p:
                    reached.add(p["reached"])
            return {2, 3} <= reached

        await wait_for(progress, timeout=90)
        rh.hub.feed.unsubscribe(watcher)
        await wait_for(lambda: state_is(rh, "ready"), timeout=90)
        copter = sim.drone("UAV-01").copter
        assert haversine_m(*copter.position()[:2], DOCKS[0].lat, DOCKS[0].lon) < 5


def _messages(frame: Any) -> list[dict[str, Any]]:
    return frame if isinstance(frame, list) else [frame]


async def _noted(rh: RunningHub, incident_id: str, part: str) -> list[str] | None:
    texts = await log_texts(rh, incident_id)
    return texts if any(part in t for t in texts) else None
