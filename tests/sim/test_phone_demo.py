"""The demo's officers on foot with phones and its TAK users (:mod:`sim.phone_demo`): walking pace on the city's
streets, the OwnTracks/Traccar split, the command line, and the whole demo against a real hub (PostgreSQL,
Mosquitto, the OwnTracks, OsmAnd and TAK gateways on, TAK on a multicast port of the test's own): the phones'
positions on the map, a dispatch followed by radio and answered by the OwnTracks phone's fresh fix, the release,
and the TAK user on the map reading the officers' units."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from devices.payloads import Fix
from devices.tasks import cancel_and_wait
from fieldhub.cli import build_parser
from hub.config import Settings
from hub.gateways.tak import cot
from sim.city import CENTRE, build_city
from sim.owntracks_phone import OwnTracksPhone
from sim.phone_demo import WALK_MPS, PhoneDemo, PhoneDemoConfig, TakWalker, footpaths, run_phones
from sim.tak_client import TakClient, TakClientConfig, android_uid
from sim.traccar_phone import TraccarPhone
from sim.traffic import SimVehicle
from tests.conftest import ADMIN_TOKEN, RunningHub, running_hub, wait_for
from tests.sim.test_phone_sims import free_udp_port

CITY = build_city(7)


def test_on_footpaths_a_simulated_vehicle_walks() -> None:
    paths = footpaths(CITY)
    assert len(paths.edges) == len(CITY.edges) and paths.nodes == CITY.nodes
    walker = SimVehicle(paths, random.Random(1), CITY.node_ids[0], 0)
    walker.drive_to(CITY.node_ids[-1])
    speeds = []
    for t in range(1, 600):
        walker.advance(t * 1000)
        speeds.append(walker.speed)
    assert 0.8 * WALK_MPS < max(speeds) <= WALK_MPS + 1e-9
    assert walker.odometer_m <= 600 * WALK_MPS


def test_a_tak_user_strolls_near_the_centre() -> None:
    now = [0]
    walker = TakWalker(footpaths(CITY), random.Random(3), lambda: now[0], radius_m=700.0)
    for t in range(0, 3600, 10):
        now[0] = t * 1000
        fix = walker.reading()
        assert fix.speed is not None and fix.speed <= WALK_MPS + 1.5  # the receiver's noise on a walker
    lat, lon = walker.walker.position
    assert abs(lat - CENTRE[0]) < 0.012 and abs(lon - CENTRE[1]) < 0.015  # within the corners it walks between


def test_half_the_officers_carry_owntracks_and_half_traccar_client() -> None:
    demo = PhoneDemo(PhoneDemoConfig("http://hub.invalid", "t", count=3), city=CITY)
    assert [(u.unit_id, u.device_id, u.protocol) for u in demo.units] == [
        ("FT01", "FT01-phone", "owntracks"), ("FT02", "FT02-phone", "osmand"), ("FT03", "FT03-phone", "owntracks")]
    with pytest.raises(ValueError):
        PhoneDemo(PhoneDemoConfig("http://hub.invalid", "t", count=0), city=CITY)


def test_fieldhub_demo_offers_phones_and_tak_clients(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(["demo"])
    assert (args.phones, args.tak_clients) == (2, 1)
    args = parser.parse_args(["demo", "--phones", "0", "--tak-clients", "3"])
    assert (args.phones, args.tak_clients) == (0, 3)
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--help"])
    out = capsys.readouterr().out
    assert "--phones N" in out and "--tak-clients N" in out


@pytest.fixture
async def phone_hub(settings: Settings) -> AsyncIterator[tuple[RunningHub, str]]:
    url = f"udp://239.2.3.1:{free_udp_port()}"
    update = {"owntracks": True, "osmand": True, "tak": True, "tak_url": url, "tak_interval_s": 1.0,
              "auto_dispatch_priority": 0}
    async with running_hub(settings.model_copy(update=update)) as rh:
        yield rh, url


async def test_the_demo_runs_its_phones_and_tak_user_against_a_real_hub(
        phone_hub: tuple[RunningHub, str], settings: Settings) -> None:
    hub, tak_url = phone_hub
    config = PhoneDemoConfig(hub.base_url, ADMIN_TOKEN, count=2, poll_s=0.3, scene_s=None,
                             gps_outlier_probability=0.0, owntracks_move_s=1.0, owntracks_ping_s=2.0,
                             traccar_interval_s=1.0, tak_clients=1, tak_url=tak_url, tak_interval_s=0.5)
    city = build_city(settings.city_seed)
    async with PhoneDemo(config, city=city) as demo:
        ot, tc = demo.units
        assert isinstance(ot.phone, OwnTracksPhone) and ot.phone.mode == "mqtt"
        assert isinstance(tc.phone, TraccarPhone)

        async def positions() -> list[dict[str, Any]] | None:
            views = [(await hub.api.get(f"/api/v1/units/{u.unit_id}")).json() for u in demo.units]
            return views if all(v["position"] is not None for v in views) else None

        views = await wait_for(positions, timeout=20, interval=0.25)
        for view in views:
            assert view["kind"] == "foot" and view["devices"][0]["device_id"].endswith("-phone")
            off = city.nearest_road_point(view["position"]["lat"], view["position"]["lon"]).distance_m
            assert off < 60.0, f"{view['unit_id']} is {off:.0f} m off the streets"

        r = await hub.api.post("/api/v1/incidents", json={"category": "theft", "priority": 2, "lat": CENTRE[0],
                                                          "lon": CENTRE[1], "summary": "phone demo"})
        assert r.status_code == 201, r.text
        incident_id: str = r.json()["id"]
        r = await hub.api.post(f"/api/v1/incidents/{incident_id}/dispatch", json={"unit_ids": [ot.unit_id]})
        assert r.status_code == 200, r.text
        await wait_for(lambda: ot.officer.incident_id == incident_id, timeout=10)
        assert ot.vehicle.destination is not None and demo.counts["dispatched"] == 1
        await wait_for(lambda: ot.phone is not None and ot.phone.counters["report_location"] == 1, timeout=10)
        r = await hub.api.post(f"/api/v1/incidents/{incident_id}/close", json={"reason": "resolved"})
        assert r.status_code == 200, r.text
        await wait_for(lambda: ot.officer.incident_id is None, timeout=10)
        assert demo.counts["released"] == 1

        [client] = demo.tak_users.clients
        await wait_for(lambda: {cot.unit_uid(u.unit_id) for u in demo.units} <= client.uids.get(cot.UNIT_TYPE, set()),
                       timeout=15)

        async def tak_unit() -> dict[str, Any] | None:
            units = (await hub.api.get("/api/v1/units")).json()["units"]
            return next((u for u in units if u["kind"] == "tak" and u["position"] is not None), None)

        unit = await wait_for(tak_unit, timeout=15, interval=0.25)
        assert unit["name"] == client.config.callsign
        assert demo.reporting == 2 and not demo.errors, (demo.errors, ot.phone.counters, tc.phone.counters)
        assert "2/2 phones reporting, 1 TAK users" in demo.status()


async def test_without_phones_the_demo_still_runs_its_tak_users() -> None:
    """``--phones 0``: the TAK users alone, heard on the group by another TAK client (no hub needed for that)."""
    url = f"udp://239.2.3.1:{free_udp_port()}"
    listener = TakClient(TakClientConfig(url=url, uid=android_uid(1), interval_s=3600), lambda: Fix(ts=0, lat=0, lon=0))
    await listener.start()
    config = PhoneDemoConfig("http://hub.invalid", "t", count=0, tak_clients=2, tak_url=url, tak_interval_s=0.2)
    runner = asyncio.create_task(run_phones(config, city=CITY))
    try:
        await wait_for(lambda: len({u for u in listener.uids.get("a-f-G-U-C", ()) if u.startswith("ANDROID-")}) == 2,
                       timeout=10)
    finally:
        await cancel_and_wait(runner)
        await listener.stop()
    assert runner.cancelled() and not listener.refused
