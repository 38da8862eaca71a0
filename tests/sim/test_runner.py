"""The city simulator against a real hub and Mosquitto, and its officers' script on a simulated clock."""

from __future__ import annotations

import time

import pytest

from devices.geo import haversine_m
from devices.payloads import Command
from hub.embedded import free_port
from sim.runner import CitySim, SimError
from tests.conftest import TOKEN, RunningHub, wait_for


async def test_units_register_and_every_fix_arrives(hub: RunningHub) -> None:
    assert hub.hub.mqtt_url is not None
    async with CitySim(hub.base_url, hub.hub.mqtt_url, TOKEN, units=3, seed=3, interval_s=(0.2, 0.4)) as sim:
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
    async with CitySim(hub.base_url, hub.hub.mqtt_url, TOKEN, units=2, seed=5, interval_s=(0.2, 0.3)) as sim:
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
    sim = CitySim("http://127.0.0.1:1", "mqtt://127.0.0.1:1", TOKEN, units=2, seed=9)
    sim._build()  # the fleet without the network: commands go straight to the devices' handlers
    unit = sim.units[0]
    assert sim.city is not None
    lat, lon = sim.city.nodes[sim.city.node_ids[-30]]
    now = time.time_ns() // 1_000_000
    dispatch = Command("c1", now, "dispatch", {"incident": {"id": "I1", "lat": lat + 0.0004, "lon": lon}})
    for device in unit.devices:  # every device of the unit gets the command; the unit acts once
        assert device.client.on_command is not None
        device.client.on_command(dispatch)
    assert unit.incident_id == "I1"
    assert unit.vehicle.state == "driving"
    for _ in range(3600):
        now += 1000
        sim.step(now)
        if unit.arrived_ms is not None:
            break
    assert unit.vehicle.state == "on_scene"
    assert unit.contact_ms is not None and unit.contact_ms > now
    road = sim.city.nearest_road_point(lat + 0.0004, lon)
    assert haversine_m(*unit.vehicle.position, lat + 0.0004, lon) == pytest.approx(road.distance_m, abs=1.0)
    for _ in range(120):
        now += 1000
        sim.step(now)
    assert unit.contact_ms is None  # the contact event went out
    assert unit.incident_id == "I1" and unit.vehicle.state == "on_scene"
    cancel = Command("c2", now, "cancel", {"incident_id": "I1"})
    unit.devices[0].client.on_command(cancel)
    assert unit.incident_id is None and unit.vehicle.state == "driving"
    assert sim.units[1].incident_id is None  # the other unit was never involved
    assert sim.errors == 0


async def test_a_dispatch_without_a_place_is_ignored() -> None:
    sim = CitySim("http://127.0.0.1:1", "mqtt://127.0.0.1:1", TOKEN, units=1)
    sim._build()
    unit = sim.units[0]
    assert unit.devices[0].client.on_command is not None
    unit.devices[0].client.on_command(Command("c1", 0, "dispatch", {"incident": {"id": "I1"}}))
    unit.devices[0].client.on_command(Command("c2", 0, "dispatch", {"incident": "nonsense"}))
    assert unit.incident_id is None and unit.vehicle.state == "parked"
