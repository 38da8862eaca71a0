"""The demo's JT/T 808 patrol cars (:mod:`sim.jt808_demo`): reading the dispatch text, the provisioning request
(accepted by a real hub's API), and the officer following a text. The hub's JT/T 808 gateway is played by the test
platform of tests/sim/test_jt808_terminal.py over real TCP; the hub's unit and incident views, where a test needs
them to say something particular, by an in-process HTTP transport (as tests/sim/test_gb28181_demo.py does).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fieldhub.cli import build_parser
from hub.config import Settings
from jt808 import messages as msg
from jt808.location import ALARM_EMERGENCY, Location
from sim.city import build_city
from sim.gb28181_officer import INCIDENT_ID
from sim.jt808_demo import Jt808Demo, Jt808DemoConfig, device_request, dispatched_incident, is_cancel, phone_numbers
from tests.conftest import ADMIN_TOKEN, RunningHub, running_hub, wait_for
from tests.sim.test_jt808_terminal import Platform

CITY = build_city(7)
SCENE_ID = "I20261206-000007"
SCENE = {"id": SCENE_ID, "lat": 34.2610, "lon": 117.1859}


def test_the_incident_is_read_off_the_end_of_the_text() -> None:
    assert dispatched_incident("P1 burglary | 12 Main St | two men at the back door #I20261206-000007") == SCENE["id"]
    assert dispatched_incident("紧急 盗窃 解放路12号 #inc_42 \n") == "inc_42"
    assert dispatched_incident("#a#b") == "b"
    assert dispatched_incident("P2 theft Jiefang Rd 12 [I20261206-000007]") == SCENE_ID  # as the gateway writes it
    assert dispatched_incident("cancelled: I20261206-000007") == SCENE_ID
    for none in ("no tag here", "#", "tag # in the middle #bad/id", "#x " + "y" * 10, "#" + "x" * 65, "",
                 "[I1", "cancelled: ", "cancelled: a/b", "I1"):
        assert dispatched_incident(none) is None, none


def test_a_cancel_text_is_told_from_a_dispatch() -> None:
    assert is_cancel("cancelled: #I1") and is_cancel("Cancelled: P1 theft #I1") and is_cancel("取消: #I1")
    assert not is_cancel("P1 theft, cancel nothing #I1")


@given(st.text(max_size=200), st.from_regex(INCIDENT_ID, fullmatch=True))
def test_any_text_ending_in_a_tag_names_that_incident(text: str, incident_id: str) -> None:
    assert dispatched_incident(f"{text} #{incident_id}") == incident_id
    assert dispatched_incident(f"{text} [{incident_id}]") == incident_id
    found = dispatched_incident(text)
    assert found is None or INCIDENT_ID.fullmatch(found)


def test_phone_numbers_are_eleven_distinct_digits() -> None:
    phones = phone_numbers(13_900_008_001, 3)
    assert phones == ["13900008001", "13900008002", "13900008003"]
    for first, count in ((999_999_999, 1), (99_999_999_999, 2)):
        with pytest.raises(ValueError):
            phone_numbers(first, count)


def test_the_provisioning_request_says_jt808_and_the_phone() -> None:
    assert device_request("JT01-terminal", "JT01", "13900008001", "FH00001") == {
        "device_id": "JT01-terminal", "unit_id": "JT01", "protocol": "jt808", "kind": "vehicle",
        "phone": "13900008001", "terminal_id": "FH00001"}


def test_fieldhub_demo_offers_jt808_terminals(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["demo"]).jt808_terminals == 3
    assert parser.parse_args(["demo", "--jt808-terminals", "0"]).jt808_terminals == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--help"])
    assert "--jt808-terminals N" in capsys.readouterr().out


async def started_platform(platform: Platform) -> Platform:
    platform.server = await asyncio.start_server(platform.connection, "127.0.0.1", 0)
    return platform


async def test_a_real_hub_provisions_the_demo_terminals_again_and_again(hub: RunningHub) -> None:
    platform = await started_platform(Platform())
    config = Jt808DemoConfig(hub.base_url, ADMIN_TOKEN, "127.0.0.1", platform.port, count=2, report_s=0.5)
    try:
        for run in (1, 2):  # the second run finds the devices provisioned: registration is opened again
            async with Jt808Demo(config, city=CITY) as demo:
                await wait_for(lambda: demo.authenticated == 2, timeout=10)
                for unit in demo.units:
                    view = (await hub.api.get(f"/api/v1/units/{unit.unit_id}")).json()
                    assert [d["device_id"] for d in view["devices"]] == [unit.device_id], view
                async with httpx.AsyncClient(base_url=hub.base_url,
                                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
                    rows = (await admin.get("/api/v1/devices")).raise_for_status().json()["devices"]
                mine = {r["device_id"]: r for r in rows if r["device_id"].startswith("JT")}
                assert {(r["protocol"], r["ident"]) for r in mine.values()} == {
                    ("jt808", "13900008001"), ("jt808", "13900008002")}, (run, mine)
    finally:
        assert platform.server is not None
        platform.server.close()


class Views:
    """The hub's unit and incident views as this test needs them; provisioning calls just succeed."""

    def __init__(self) -> None:
        self.assigned: str | None = None
        self.calls: list[tuple[str, str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.calls.append((request.method, request.url.path, body))
        if request.method == "GET" and request.url.path.startswith("/api/v1/units/"):
            return httpx.Response(200, json={"incident_id": self.assigned})
        if request.method == "GET" and request.url.path == f"/api/v1/incidents/{SCENE['id']}":
            return httpx.Response(200, json=SCENE)
        return httpx.Response(201 if request.url.path == "/api/v1/devices" else 200, json={})


@pytest.fixture
async def one_car() -> AsyncIterator[tuple[Jt808Demo, Platform, Views]]:
    platform = await started_platform(Platform())
    views = Views()
    config = Jt808DemoConfig("http://hub.invalid", "t", "127.0.0.1", platform.port, count=1, report_s=60.0,
                             contact_s=(0.0, 0.0), scene_s=None, poll_s=3600.0)
    demo = Jt808Demo(config, city=CITY, transport=httpx.MockTransport(views))
    try:
        async with demo:
            await wait_for(lambda: demo.authenticated == 1)
            yield demo, platform, views
    finally:
        assert platform.server is not None
        platform.server.close()


async def test_the_officer_follows_the_text_and_stands_down_when_released(
        one_car: tuple[Jt808Demo, Platform, Views]) -> None:
    demo, platform, views = one_car
    [car] = demo.units
    assert views.calls[1][2]["protocol"] == "jt808" and views.calls[1][2]["phone"] == car.phone
    views.assigned = SCENE_ID
    platform.send(msg.TextMessage(msg.TEXT_DISPLAY | msg.TEXT_TTS, f"P2 theft | Jiefang Rd 12 #{SCENE['id']}"))
    await wait_for(lambda: car.texts)
    await demo.poll()
    assert car.officer.incident_id == SCENE["id"] and car.vehicle.destination is not None
    assert demo.counts["dispatched"] == 1 and not demo.errors
    await demo.poll()  # the unit view agrees: nothing changes
    assert car.officer.incident_id == SCENE["id"]
    views.assigned = None
    await demo.poll()
    assert car.officer.incident_id == SCENE["id"]  # one look is not believed yet
    await demo.poll()
    assert car.officer.incident_id is None and car.vehicle.state == "driving" and demo.counts["released"] == 1


async def test_a_cancel_text_stands_the_officer_down(one_car: tuple[Jt808Demo, Platform, Views]) -> None:
    demo, platform, views = one_car
    [car] = demo.units
    views.assigned = SCENE_ID
    platform.send(msg.TextMessage(msg.TEXT_DISPLAY, f"P2 theft #{SCENE['id']}"))
    platform.send(msg.TextMessage(msg.TEXT_DISPLAY, f"cancelled: #{SCENE['id']}"))
    await wait_for(lambda: len(car.texts) == 2)
    await demo.poll()
    assert car.officer.incident_id is None and demo.counts == {**demo.counts, "dispatched": 1, "released": 1}
    assert not car.texts


async def test_the_officer_presses_the_emergency_button_when_the_demo_asks() -> None:
    platform = await started_platform(Platform())
    config = Jt808DemoConfig("http://hub.invalid", "t", "127.0.0.1", platform.port, count=1, report_s=60.0,
                             emergencies_per_hour=1e9, emergency_s=0.0, poll_s=3600.0)
    demo = Jt808Demo(config, city=CITY, transport=httpx.MockTransport(Views()))
    try:
        async with demo:
            await wait_for(lambda: demo.authenticated == 1)

            def alarms() -> list[int]:
                return [s.message.body.alarm & ALARM_EMERGENCY for s in platform.of(msg.MSG_LOCATION)
                        if isinstance(s.message.body, Location)]

            await wait_for(alarms)
            before = len(alarms())
            for _ in range(4):  # pressed, then released once emergency_s passed, and so on: a report each time
                await demo.poll()
            await wait_for(lambda: len(alarms()) == before + 4)
            toggles = alarms()[before - 1 :]
            assert all(a != b for a, b in itertools.pairwise(toggles)), toggles
            assert ALARM_EMERGENCY in toggles and demo.counts["emergencies"] >= 2
    finally:
        assert platform.server is not None
        platform.server.close()


@pytest.fixture(params=[(2013, "wgs84"), (2019, "gcj02")], ids=["2013-wgs84", "2019-gcj02"])
async def jt808_hub(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[tuple[RunningHub, int]]:
    """The hub's JT/T 808 server on a free loopback port, in the terminals' datum; the test dispatches itself."""
    version, datum = request.param
    update = {"jt808": True, "jt808_host": "127.0.0.1", "jt808_port": 0, "jt808_datum": datum,
              "auto_dispatch_priority": 0}
    async with running_hub(settings.model_copy(update=update)) as rh:
        yield rh, version


async def test_a_demo_car_reports_to_the_real_gateway_and_follows_a_dispatch_text(
        jt808_hub: tuple[RunningHub, int], settings: Settings) -> None:
    hub, version = jt808_hub
    gateway = hub.hub.jt808
    assert gateway is not None
    config = Jt808DemoConfig(hub.base_url, ADMIN_TOKEN, "127.0.0.1", gateway.port, count=1, report_s=1.0,
                             gps_outlier_probability=0.0, scene_s=None, version=version,
                             datum=hub.hub.settings.jt808_datum)
    city = build_city(settings.city_seed)
    demo = Jt808Demo(config, city=city)
    [car] = demo.units
    car.vehicle.resume_patrol()
    async with demo:
        await wait_for(lambda: demo.authenticated == 1, timeout=10)

        async def positioned() -> dict[str, Any] | None:
            position: dict[str, Any] | None = (await hub.api.get(f"/api/v1/units/{car.unit_id}")).json()["position"]
            return position

        position = await wait_for(positioned, timeout=15, interval=0.25)
        off = city.nearest_road_point(position["lat"], position["lon"]).distance_m
        assert off < 35.0, f"{position} is {off:.0f} m off the roads: a datum went wrong"  # GCJ-02 shifts ~500 m
        r = await hub.api.post("/api/v1/incidents", json={"category": "theft", "priority": 2,
                                                                "lat": SCENE["lat"], "lon": SCENE["lon"],
                                                                "summary": "demo vehicle terminal"})
        assert r.status_code == 201, r.text
        incident_id: str = r.json()["id"]
        r = await hub.api.post(f"/api/v1/incidents/{incident_id}/dispatch", json={"unit_ids": [car.unit_id]})
        assert r.status_code == 200, r.text
        await wait_for(lambda: car.officer.incident_id == incident_id, timeout=10)
        assert car.terminal is not None and car.vehicle.destination is not None
        r = await hub.api.post(f"/api/v1/incidents/{incident_id}/close", json={"reason": "resolved"})
        assert r.status_code == 200, r.text
        await wait_for(lambda: car.officer.incident_id is None, timeout=10)
        assert demo.counts["dispatched"] == 1 and demo.counts["released"] == 1 and not demo.errors
        car.terminal.emergency(True)  # the gateway confirms the alarm (0x8001 result 4)
        await wait_for(lambda: car.terminal is not None and car.terminal.counters.events["alarm_confirmed"] == 1)
        assert not car.terminal.counters.rejected and not car.terminal.counters.refused, car.terminal.counters
