"""The city simulator against a real hub and Mosquitto, and its officers' script on a simulated clock."""

from __future__ import annotations

import time

import pytest

from devices.payloads import Command
from geo.geodesy import haversine_m
from hub.infra.embedded import free_port
from sim.response import Timing
from sim.runner import CitySim, SimError
from sim.scenarios import DeadZone, Plan
from tests.conftest import ADMIN_TOKEN, TOKEN, RunningHub, wait_for


async def test_units_register_and_every_fix_arrives(hub: RunningHub) -> None:
    assert hub.hub.mqtt_url is not None
    async with CitySim(hub.base_url, "", ADMIN_TOKEN, units=3, seed=3, interval_s=(0.2, 0.4)) as sim:
        assert sim.connected == 9
        await wait_for(lambda: min(sim.fixes_sent.values()) >= 5, timeout=20)
        listing = (await hub.api.get("/api/v1/units")).json()["units"]
        units = {u["unit_id"]: u for u in listing}
        assert {"P001", "P002", "P003"} <= set(units)
        assert {d["device_id"] for d in units["P002"]["devices"]} == {"P002-trk", "P002-cam", "P002-radio"}
        assert units["P001"]["kind"] == "patrol" and units["P001"]["home"] is not None

        async def all_placed() -> bool:
            listing = (await hub.api.get("/api/v1/units")).json()["units"]
            return all(u["position"] is not None for u in listing if u["unit_id"] in ("P001", "P002", "P003"))

        await wait_for(all_placed, timeout=5)
    assert set(sim.fixes_sent) == {f"P00{i}-{k}" for i in (1, 2, 3) for k in ("trk", "cam", "radio")}
    sent = sim.total_fixes

    async def stored() -> bool:
        return await hub.count() == sent

    await wait_for(stored, timeout=20)  # QoS 1 and a clean stop: not one fix lost
    assert sim.errors == 0


async def test_positions_follow_the_cars(hub: RunningHub) -> None:
    assert hub.hub.mqtt_url is not None
    async with CitySim(hub.base_url, "", ADMIN_TOKEN, units=2, seed=5, interval_s=(0.2, 0.3)) as sim:
        await wait_for(lambda: sim.total_fixes >= 20, timeout=20)

        async def close_to_the_car() -> bool:
            listing = (await hub.api.get("/api/v1/units")).json()["units"]
            position = next(u["position"] for u in listing if u["unit_id"] == "P001")
            if position is None:
                return False
            car = sim.units[0].vehicle.position
            # GPS noise, outliers aside, and the car's travel since the fix
            return haversine_m(position["lat"], position["lon"], *car) < 60.0

        await wait_for(close_to_the_car, timeout=10)


async def test_a_refused_token_is_a_clear_error(hub: RunningHub) -> None:
    assert hub.hub.mqtt_url is not None
    sim = CitySim(hub.base_url, hub.hub.mqtt_url, "fh_wrong_token", units=1, register_attempts=2)
    with pytest.raises(SimError, match=r"HTTP 40[13].*check the token"):
        await sim.start()


async def test_no_hub_is_a_clear_error() -> None:
    sim = CitySim(f"http://127.0.0.1:{free_port()}", "mqtt://127.0.0.1:1", TOKEN, units=1, register_attempts=2)
    started = time.monotonic()
    with pytest.raises(SimError, match="cannot register"):
        await sim.start()
    assert time.monotonic() - started < 5.0


async def test_dispatch_drives_the_unit_and_the_officer_makes_contact() -> None:
    sim = CitySim("http://127.0.0.1:1", "mqtt://127.0.0.1:1", TOKEN, units=2, seed=9, start_parked=True,
                  timing=Timing(turnout_s=(20.0, 20.0), contact_after_s=(30.0, 30.0), on_scene_s=(300.0, 300.0)))
    sim._build()  # the fleet without the network: commands go straight to the devices' handlers
    cleared: list[tuple[str, str]] = []
    sim.on_clear.append(lambda unit_id, incident_id: cleared.append((unit_id, incident_id)))
    unit = sim.units[0]
    assert sim.city is not None
    lat, lon = sim.city.nodes[sim.city.node_ids[-30]]
    now = time.time_ns() // 1_000_000
    dispatch = Command("c1", now, "dispatch", {"incident": {"id": "I1", "lat": lat + 0.0004, "lon": lon}})
    for device in unit.devices:  # every device of the unit gets the command; the unit acts once
        assert device.client.on_command is not None
        device.client.on_command(dispatch)
    assert unit.incident_id == "I1" and unit.response is not None
    response = unit.response
    # Parked at dispatch: it stands through its turnout, then drives off.
    for _ in range(19):
        now += 1000
        sim.step(now)
    assert unit.vehicle.state == "parked" and unit.vehicle.speed == 0.0
    now += 1500
    sim.step(now)
    assert unit.vehicle.state == "driving" and unit.vehicle.speed > 0.0
    for _ in range(3600):
        now += 1000
        sim.step(now)
        if response.phase == "on_scene":
            break
    assert unit.vehicle.state == "on_scene" and response.stopped_at == now
    road = sim.city.nearest_road_point(lat + 0.0004, lon)
    assert haversine_m(*unit.vehicle.position, lat + 0.0004, lon) == pytest.approx(road.distance_m, abs=1.0)
    for _ in range(31):
        now += 1000
        sim.step(now)
    # Not connected: the radio keeps the contact event, with the device time it happened at.
    [contact] = [e for e in unit.devices[-1].client.pending_events if e.type == "contact"]
    assert contact.ts == response.stopped_at + 30_000 and contact.data == {"incident_id": "I1"}
    assert unit.incident_id == "I1" and unit.vehicle.state == "on_scene"
    for _ in range(270):
        now += 1000
        sim.step(now)
    assert cleared == [("P001", "I1")] and unit.response is None and unit.vehicle.state == "driving"
    truth = sim.truth.get("I1", "P001")
    assert truth is not None and truth.case == "normal" and truth.cleared == response.stopped_at + 300_000
    assert truth.contacted == contact.ts and truth.radius_m == 100.0

    # A second dispatch, cancelled on the way: the unit patrols again, its truth says so.
    other = sim.units[1]
    sim.radii["I2"] = 150.0
    other.devices[0].client.on_command(Command("c2", now, "dispatch", {"incident": {"id": "I2", "lat": lat,
                                                                                    "lon": lon}}))
    now += 30_000
    sim.step(now)
    other.devices[1].client.on_command(Command("c3", now, "cancel", {"incident_id": "I2"}))
    assert other.incident_id is None and other.vehicle.state == "driving"
    cancelled = sim.truth.get("I2", "P002")
    assert cancelled is not None and "cancelled" in cancelled.notes and cancelled.radius_m == 150.0
    assert cleared[-1] == ("P002", "I2")
    assert sim.errors == 0


async def test_a_dispatch_without_a_place_is_ignored() -> None:
    sim = CitySim("http://127.0.0.1:1", "mqtt://127.0.0.1:1", TOKEN, units=1)
    sim._build()
    unit = sim.units[0]
    assert unit.devices[0].client.on_command is not None
    unit.devices[0].client.on_command(Command("c1", 0, "dispatch", {"incident": {"id": "I1"}}))
    unit.devices[0].client.on_command(Command("c2", 0, "dispatch", {"incident": "nonsense"}))
    assert unit.incident_id is None and unit.response is None


async def test_a_new_dispatch_releases_a_held_uplink_and_keeps_the_old_truth() -> None:
    sim = CitySim("http://127.0.0.1:1", "mqtt://127.0.0.1:1", TOKEN, units=1, seed=12, start_parked=True)
    sim._build()
    unit = sim.units[0]
    assert sim.city is not None
    lat, lon = unit.vehicle.position
    now = time.time_ns() // 1_000_000
    # The dead zone starts at once (it reaches 5 km), so the uplink is held from the first step on the way.
    sim.expect("I1", "P001", Plan("dead_zone", turnout_s=1.0, dead_zone=DeadZone(5000.0, 600.0, 60.0)))
    unit.devices[0].client.on_command(Command("c1", now, "dispatch", {"incident": {"id": "I1", "lat": lat + 0.01,
                                                                                   "lon": lon}}))
    now += 3000
    sim.step(now)
    assert all(d.client.uplink_held for d in unit.devices)
    unit.devices[1].client.on_command(Command("c2", now, "dispatch", {"incident": {"id": "I2", "lat": lat - 0.01,
                                                                                   "lon": lon}}))
    assert not any(d.client.uplink_held for d in unit.devices)
    assert unit.incident_id == "I2"
    replaced = sim.truth.get("I1", "P001")
    assert replaced is not None and "replaced" in replaced.notes and "cancelled" in replaced.notes
    assert sim.errors == 0
