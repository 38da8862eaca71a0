"""Drone cameras: a drone over the scene streams its view. Real Mosquitto, PostgreSQL, the drone simulator over
MAVLink/UDP, the simulated gimbal camera as an MQTT device publishing over WHIP, and a WHEP viewer decoding VP8,
at 320x240. Also the fleet file's ``camera``, with and without it."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from devices.payloads import Status
from geo.geodesy import haversine_m
from hub.config import Settings
from hub.drones.fleet import DroneConfig, FleetConfigError, load_fleet
from hub.ingest.live import LiveState, camera_devices
from sim.drone_runner import DroneCameras, drone_keys, read_keys, rest_login, run_drones
from sim.framecode import read_code
from sim.stations import DroneDock, camera_id, fleet_entries
from sim.video_devices import SimCameras
from tests.conftest import ADMIN_TOKEN, RunningHub, running_hub, wait_for
from tests.hub.test_drones import (
    DOCKS,
    SCENE,
    _no_ambient_drone_settings,  # noqa: F401  (autouse: no ambient drone settings)
    _with,
    assignment,
    drone_stack,
    incident,
    log_texts,
    ready,
)
from video.client import WhepViewer

WIDTH, HEIGHT = 320, 240
HOVER_SPEED_MPS = 1.5  # the hub's aerial arrival rule: slower than this, inside the zone, at altitude


async def streams(rh: RunningHub) -> list[dict[str, Any]]:
    r = await rh.api.get("/api/v1/streams")
    assert r.status_code == 200, r.text
    result: list[dict[str, Any]] = r.json()["streams"]
    return result


async def test_a_drone_over_the_scene_streams_its_camera_until_the_incident_closes(settings: Settings,
                                                                                   tmp_path: Path) -> None:
    """A stock-configured simulated ArduCopter straight on the hub's link (no MAVProxy), in real time: the operator
    turns its link failsafe on once, then incident -> drone sent -> arrival recorded within 5 s of the copter
    hovering over the scene -> video_start to its camera device at once -> the camera publishes the ground below
    the copter over WHIP -> listed as the drone unit's stream -> a viewer decodes its frames -> close ->
    video_stop -> the camera ends its stream."""
    base_url = f"http://127.0.0.1:{settings.port}"
    async with drone_stack(settings, tmp_path, public_base_url=base_url, params={}) as (rh, sim), \
            DroneCameras(sim, "", cameras=SimCameras(width=WIDTH, height=HEIGHT, fps=10),
                         login=rest_login(rh.base_url, ADMIN_TOKEN)) as cams:
        cam1, cam2 = camera_id("UAV-01"), camera_id("UAV-02")
        assert rh.hub.live.units["UAV-01"].devices == ["UAV-01", cam1]
        operator = await rh.hub.create_token("drone_operator", "pilot")
        for drone_id in ("UAV-01", "UAV-02"):
            r = await rh.api.post(f"/api/v1/drones/{drone_id}/failsafe",
                                  headers={"Authorization": f"Bearer {operator}"})
            assert r.status_code == 202, r.text
        await ready(rh, "UAV-01", "UAV-02")
        await wait_for(lambda: all(_kind(rh, c) == "camera" for c in (cam1, cam2)), timeout=10)
        viewer_token = await rh.hub.create_token("viewer", "wall")

        incident_id = await incident(rh)
        r = await rh.api.post(f"/api/v1/incidents/{incident_id}/drone", json={})
        assert r.status_code == 201 and r.json()["drone_id"] == "UAV-01", r.text
        copter = sim.drone("UAV-01").copter
        cruise = rh.hub.settings.drone_cruise_alt_m
        hovering: list[float] = []

        async def watch_hover() -> None:  # the truth: when the copter came to a hover over the scene
            while not hovering:
                lat, lon, alt = copter.position()
                if (haversine_m(lat, lon, *SCENE) <= 100 and alt >= 0.7 * cruise
                        and copter.ground_speed() <= HOVER_SPEED_MPS):
                    hovering.append(time.monotonic())
                await asyncio.sleep(0.02)

        truth = asyncio.create_task(watch_hover())
        await wait_for(lambda: _with(assignment(rh, incident_id, "UAV-01"), "arrived"), timeout=150, interval=0.05)
        arrived_seen = time.monotonic()
        truth.cancel()
        assert hovering, "arrival recorded before the copter hovered over the scene"
        assert arrived_seen - hovering[0] <= 5.0, f"arrival {arrived_seen - hovering[0]:.1f} s after the hover began"

        [start] = await wait_for(lambda: _commands(cams, "UAV-01", "video_start"), timeout=2, interval=0.02)
        assert time.monotonic() - arrived_seen <= 2.0
        assert start.body["whip_url"] == f"{base_url}/whip/{cam1}" and start.body["incident_id"] == incident_id
        [stream] = await wait_for(lambda: streams(rh), timeout=20)
        assert (stream["device_id"], stream["unit_id"], stream["incident_id"]) == (cam1, "UAV-01", incident_id)
        # The hub lists the stream as soon as it answers; the camera records its feed when the answer arrives.
        feed = await wait_for(lambda: cams.cameras.feeds.get(cam1), timeout=5)
        assert feed.stream_id == stream["stream_id"] and feed.track.view == "drone"
        # The camera looks down from where the copter is: over the scene.
        await wait_for(lambda: feed.track.pose is not None, timeout=5)
        assert feed.track.pose is not None and haversine_m(feed.track.pose[0], feed.track.pose[1], *SCENE) < 40

        viewer = WhepViewer(f"{rh.base_url}/whep/{stream['stream_id']}", viewer_token)
        await viewer.start()
        try:
            frames = [await asyncio.wait_for(viewer.recv(), 10) for _ in range(8)]
        finally:
            await viewer.stop()
        assert {(f.width, f.height) for f in frames} == {(WIDTH, HEIGHT)}
        codes = [c for c in (read_code(f.to_ndarray(format="bgr24")) for f in frames) if c is not None]
        assert codes, "no frame code read: not the camera's pictures"
        assert all(feed.track.sent_ms.get(n, -1) & 0xFFFFFFFF == sent for n, sent in codes)
        assert _commands(cams, "UAV-02", "video_start") == []  # only the drone over the scene

        r = await rh.api.post(f"/api/v1/incidents/{incident_id}/close", json={})
        assert r.status_code == 200, r.text
        assert any(t.startswith(f"video_stop sent to {cam1}") for t in await log_texts(rh, incident_id))
        await wait_for(lambda: _commands(cams, "UAV-01", "video_stop"), timeout=10)
        await wait_for(lambda: cams.cameras.counters.stopped == 1, timeout=15)

        async def gone() -> bool:
            return await streams(rh) == []

        await wait_for(gone, timeout=10)
        row = await rh.hub.video.store.stream(stream["stream_id"])  # type: ignore[union-attr]
        assert row is not None and row["ended_at"] is not None
        assert cams.cameras.counters.started == 1 and cams.cameras.counters.refused == 0


def _kind(rh: RunningHub, device_id: str) -> str | None:
    dev = rh.hub.live.devices.get(device_id)
    return None if dev is None else dev.kind


def _commands(cams: DroneCameras, drone_id: str, kind: str) -> list[Any]:
    return [c for c in cams.devices[drone_id].commands if c.type == kind]


async def test_run_drones_with_a_broker_brings_each_drones_camera_online_and_offline(settings: Settings,
                                                                                     tmp_path: Path) -> None:
    """What `fieldhub demo` and `fieldhub sim --drones` run: drones on MAVLink, signing with the keys of the
    hub's key file (made on first use, owner-only), their cameras on MQTT."""
    fleet = tmp_path / "drones.json"
    fleet.write_text(json.dumps(fleet_entries(DOCKS)))
    key_file = tmp_path / "keys" / "drone-keys.json"
    keys = drone_keys(DOCKS, key_file)
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600 and sorted(json.loads(key_file.read_text())) == ["1", "2"]
    assert drone_keys(DOCKS, key_file) == read_keys(DOCKS, key_file) == keys  # read again, not made anew
    settings = settings.model_copy(update={"mavlink_url": "udpin:127.0.0.1:0", "drones": fleet,
                                           "drone_keys": key_file})
    async with running_hub(settings) as rh:
        assert rh.hub.drones is not None
        gcs = ("127.0.0.1", rh.hub.drones.link.local_address[1])
        task = asyncio.create_task(run_drones(DOCKS, gcs, keys=keys, login=rest_login(rh.base_url, ADMIN_TOKEN)))
        try:
            await ready(rh, "UAV-01", "UAV-02")
            assert rh.hub.drones.link.stats["bad_signature"] == 0
            assert all(v["signing"] == "signed" for v in rh.hub.drones.views())
            await wait_for(lambda: all(_state(rh, camera_id(d.drone_id)) == ("camera", "online") for d in DOCKS),
                           timeout=10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await wait_for(lambda: all(_state(rh, camera_id(d.drone_id)) == ("camera", "offline") for d in DOCKS),
                       timeout=5)


def _state(rh: RunningHub, device_id: str) -> tuple[str | None, str | None]:
    dev = rh.hub.live.devices.get(device_id)
    return (None, None) if dev is None else (dev.kind, dev.state)


def test_camera_devices_are_body_and_mounted_cameras_not_the_drone_itself() -> None:
    live = LiveState()
    live.register_unit("UAV-01", "UAV-01", "drone", ["UAV-01", "UAV-01-cam", "UAV-01-gimbal"])
    live.register_unit("P1", "P1", "patrol", ["p1-body", "p1-radio", "p1-cam"])
    for device_id, kind in (("UAV-01", "drone"), ("UAV-01-cam", "camera"), ("UAV-01-gimbal", "camera"),
                            ("p1-body", "bodycam"), ("p1-radio", "radio")):
        live.apply_status(device_id, Status(ts=1_700_000_000_000, state="online", kind=kind), 1_700_000_000_000)
    assert camera_devices(live, "UAV-01") == ["UAV-01-cam", "UAV-01-gimbal"]
    assert camera_devices(live, "P1") == ["p1-body", "p1-cam"]  # p1-cam: never heard from, named like a camera
    assert camera_devices(live, "nobody") == []


# ------------------------------------------------------------------ fleet file


def test_fleet_entries_give_every_drone_a_camera_and_the_hub_reads_it(tmp_path: Path) -> None:
    entries = fleet_entries(DOCKS)
    assert [e["camera"] for e in entries] == ["UAV-01-cam", "UAV-02-cam"]
    path = tmp_path / "drones.json"
    path.write_text(json.dumps(entries))
    fleet = load_fleet(path)
    assert [(c.drone_id, c.camera) for c in fleet] == [("UAV-01", "UAV-01-cam"), ("UAV-02", "UAV-02-cam")]
    assert fleet[0].devices == ["UAV-01", "UAV-01-cam"]


def test_a_fleet_file_without_cameras_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "drones.json"
    path.write_text(json.dumps([{"drone_id": "UAV-07", "system_id": 7, "dock": {"lat": 34.26, "lon": 117.18}}]))
    assert load_fleet(path) == [DroneConfig("UAV-07", 7, "UAV-07", 34.26, 117.18, "", None)]
    assert load_fleet(path)[0].devices == ["UAV-07"]


def test_unsigned_is_an_explicit_per_drone_opt_in(tmp_path: Path) -> None:
    entries = fleet_entries(DOCKS)
    entries[1]["unsigned"] = True
    path = tmp_path / "drones.json"
    path.write_text(json.dumps(entries))
    assert [c.unsigned for c in load_fleet(path)] == [False, True]
    for loose in ("yes", "true", 1, None):  # anything but JSON true/false is a mistake, not an opt-in
        entries[1]["unsigned"] = loose
        path.write_text(json.dumps(entries))
        with pytest.raises(FleetConfigError, match="unsigned"):
            load_fleet(path)


@pytest.mark.parametrize("cameras", [
    ["bad id!", None],  # not a device id
    [7, None],  # not a string
    ["UAV-02", None],  # another drone's own device
    ["UAV-01", None],  # the drone itself
    ["shared-cam", "shared-cam"],  # one camera on two drones
])
def test_bad_cameras_are_refused_with_a_reason(tmp_path: Path, cameras: list[object]) -> None:
    docks = [*DOCKS, DroneDock("UAV-03", 3, 34.27, 117.19, "East Police Station")]
    entries = fleet_entries(docks)
    for entry, camera in zip(entries, cameras, strict=False):
        entry["camera"] = camera
    path = tmp_path / "drones.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(FleetConfigError, match="camera"):
        load_fleet(path)
