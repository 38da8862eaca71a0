"""The demo's GB/T 28181 body cameras (:mod:`sim.gb28181_demo`) against a real hub with its SIP server on.

Two camera units are provisioned over the API; their simulated cameras register with digest and report the
positions of cars patrolling the city's roads as ``MobilePosition``. One is dispatched to an incident a few hundred
metres ahead of it by road: its officer hears that by "radio" (the runner polling the unit), the car drives there,
and the hub detects departure and arrival from the camera's positions alone and starts the camera's video by INVITE.
Closing the incident releases the unit and the car patrols again.

Time: the arrival detector wants a minute of standing still. After the dispatch the vehicles' and the cameras' clock
runs four times faster than the wall clock (:class:`FastClock`, as in tests/web/test_gb28181.py): the positions
carry the camera's own times, which the hub accepts up to ``max_future_skew_s`` ahead, so the test stays under 90 s.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from fieldhub.cli import build_parser
from geo.geodesy import haversine_m
from hub.config import Settings
from sim.city import City, build_city
from sim.gb28181_demo import CameraUnit, GbDemo, GbDemoConfig
from sim.gb28181_officer import INCIDENT_ID, Officer, assignment, location
from tests.conftest import ADMIN_TOKEN, RunningHub, running_hub, wait_for
from tests.hostile import JSON_VALUE, NUMBER, TEXT
from tests.sim.gb28181_support import FastClock

ON_ROAD_M = 35.0  # a body camera's GPS error (4-10 m accuracy, no outliers here) stays well within this
CITY = build_city(7)  # for the tests without a hub


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The SIP server on a free loopback port, positions subscribed every second; the test dispatches itself. A
    camera cannot acknowledge a dispatch (the standard has no such message): its unit is not escalated for it, which
    a short ack time-out shows (the unit would otherwise be taken off within the test)."""
    return settings.model_copy(update={"gb28181": True, "gb28181_host": "127.0.0.1", "gb28181_port": 0,
                                       "gb28181_position_interval_s": 1, "auto_dispatch_priority": 0,
                                       "ack_timeout_s": 2.0})


@pytest.fixture
async def gbhub(settings: Settings) -> AsyncIterator[RunningHub]:
    async with running_hub(settings) as rh:
        yield rh


async def unit_view(hub: RunningHub, unit_id: str) -> dict[str, Any]:
    r = await hub.api.get(f"/api/v1/units/{unit_id}")
    assert r.status_code == 200, r.text
    view: dict[str, Any] = r.json()
    return view


async def incident_view(hub: RunningHub, incident_id: str) -> dict[str, Any]:
    r = await hub.api.get(f"/api/v1/incidents/{incident_id}")
    assert r.status_code == 200, r.text
    view: dict[str, Any] = r.json()
    return view


async def moving_on_roads(hub: RunningHub, city: City, unit_id: str) -> list[tuple[float, float]]:
    """The unit's live positions until it has moved 30 m; each one checked to lie on a road."""
    seen: list[tuple[float, float]] = []

    async def moved() -> bool:
        position = (await unit_view(hub, unit_id))["position"]
        if position is not None and (position["lat"], position["lon"]) not in seen:
            seen.append((position["lat"], position["lon"]))
            off = city.nearest_road_point(*seen[-1]).distance_m
            assert off < ON_ROAD_M, f"{unit_id} at {seen[-1]} is {off:.0f} m off the roads"
        return len(seen) >= 3 and haversine_m(*seen[0], *seen[-1]) > 30.0

    await wait_for(moved, timeout=25, interval=0.5)
    return seen


def scene_ahead(city: City, unit: CameraUnit, low_m: float = 300.0, high_m: float = 700.0) -> tuple[float, float]:
    """A crossing ``low_m``..``high_m`` ahead of the car by road and well outside the arrival zone from it now."""
    here = unit.vehicle.position
    start = unit.vehicle.edge[1]
    candidates = []
    for node in city.node_ids:
        length = city.path_length_m(city.shortest_path(start, node))
        if low_m <= length <= high_m and haversine_m(*here, *city.nodes[node]) > 250.0:
            candidates.append((length, node))
    assert candidates, f"no crossing {low_m}-{high_m} m ahead of {unit.unit_id}"
    return city.nodes[min(candidates)[1]]


async def milestone(hub: RunningHub, incident_id: str, name: str, timeout_s: float, unit: CameraUnit) -> dict[str, Any]:
    """The incident's milestone ``name`` once set; on time-out, what the hub got from ``unit``'s camera."""
    async def reached() -> dict[str, Any] | None:
        value: dict[str, Any] | None = (await incident_view(hub, incident_id))["milestones"].get(name)
        return value

    try:
        found: dict[str, Any] = await wait_for(reached, timeout=timeout_s, interval=0.25)
    except AssertionError:
        view = await incident_view(hub, incident_id)
        everything = {"from": 0, "to": 4_102_444_800_000}  # the camera's clock runs ahead of the hub's
        track = (await hub.api.get(f"/api/v1/units/{unit.unit_id}/track", params=everything)).json()["fixes"]
        counters = unit.camera.counters if unit.camera is not None else None
        raise AssertionError(
            f"no {name} within {timeout_s} s: milestones {view['milestones']}, log "
            f"{[(e.get('type'), e.get('text')) for e in view['log']]}; car {unit.vehicle.state} at "
            f"{unit.vehicle.position}, clock {unit.now_ms()}; last fixes "
            f"{[(f['ts'], f['lat'], f['lon'], f['speed']) for f in track[-12:]]}; camera {counters}") from None
    return found


async def test_two_demo_cameras_patrol_and_one_answers_a_dispatch_with_arrival_and_video(
        gbhub: RunningHub, settings: Settings) -> None:
    started = time.monotonic()
    gateway = gbhub.hub.gb28181
    assert gateway is not None
    city = build_city(settings.city_seed)
    clock = FastClock()
    config = GbDemoConfig(gbhub.base_url, ADMIN_TOKEN, settings.gb28181_server_id, "127.0.0.1", gateway.udp_port,
                          count=2, seed=3, gps_outlier_probability=0.0, scene_s=None, keepalive_s=10.0)
    demo = GbDemo(config, city=city, clock=clock)
    for unit in demo.units:
        unit.vehicle.resume_patrol()  # on the road at once, instead of after the fleet's staggered first departures
    async with demo:
        await wait_for(lambda: demo.registered == 2, timeout=15)
        a, b = demo.units
        for unit in demo.units:
            view = await unit_view(gbhub, unit.unit_id)
            assert [d["device_id"] for d in view["devices"]] == [unit.device_id], view
            assert view["devices"][0]["video_on_demand"] is True, view
            await moving_on_roads(gbhub, city, unit.unit_id)
        assert all(u.camera is not None and u.camera.counters.positions_sent >= 3 for u in demo.units)

        scene = scene_ahead(city, a)
        r = await gbhub.api.post("/api/v1/incidents", json={"category": "theft", "priority": 2, "lat": scene[0],
                                                            "lon": scene[1], "summary": "demo body camera"})
        assert r.status_code == 201, r.text
        incident_id: str = r.json()["id"]
        r = await gbhub.api.post(f"/api/v1/incidents/{incident_id}/dispatch", json={"unit_ids": [a.unit_id]})
        assert r.status_code == 200, r.text
        clock.set_speed(4.0)  # the drive and the minute on scene in a quarter of the time (see the module)

        # The officer heard it by radio; the hub sees the unit leave and arrive only through its camera.
        await wait_for(lambda: a.officer.incident_id == incident_id, timeout=5)
        departed = await milestone(gbhub, incident_id, "departed", 30, a)
        arrived = await milestone(gbhub, incident_id, "arrived", 50, a)
        assert departed["unit_id"] == arrived["unit_id"] == a.unit_id, (departed, arrived)
        assert a.vehicle.state == "on_scene" and haversine_m(*a.vehicle.position, *scene) < 5.0
        assert b.officer.incident_id is None and b.vehicle.state != "on_scene"

        # Arrival -> video_start routed to the gateway -> INVITE -> the camera's live stream, for the incident.
        async def stream() -> dict[str, Any] | None:
            listed = (await gbhub.api.get("/api/v1/streams")).json()["streams"]
            return next((s for s in listed if s["device_id"] == a.device_id), None)

        live = await wait_for(stream, timeout=20, interval=0.25)
        assert live["unit_id"] == a.unit_id and live["incident_id"] == incident_id, live
        assert a.camera is not None and a.camera.counters.invites == 1 and a.camera.counters.streams_started == 1

        # Closing the incident releases the unit: its officer stands down and the car patrols again.
        r = await gbhub.api.post(f"/api/v1/incidents/{incident_id}/close", json={"reason": "resolved"})
        assert r.status_code == 200, r.text
        await wait_for(lambda: a.officer.incident_id is None and a.vehicle.state == "driving", timeout=10)
        assert demo.counts["dispatched"] == 1 and demo.counts["released"] == 1 and not demo.errors
    assert demo.registered == 0  # each camera unregistered on the way out
    assert time.monotonic() - started < 90


def test_fieldhub_demo_offers_gb28181_cameras(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["demo"]).gb_cameras == 3
    assert parser.parse_args(["demo", "--gb-cameras", "0"]).gb_cameras == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--help"])
    assert "--gb-cameras N" in capsys.readouterr().out


# ------------------------------------------------------------------------ the officer (pure)
def officer(scene_s: tuple[float, float] | None = (100.0, 100.0)) -> Officer:
    return Officer(random.Random(1), contact_s=(10.0, 10.0), scene_s=scene_s)


def test_the_officer_goes_once_per_assignment_and_stands_down_when_released() -> None:
    o = officer()
    assert o.hear(None) is None
    assert o.hear("I1") == "go"
    assert o.hear("I1") is None  # heard again at the next poll: nothing new
    assert o.hear("I2") == "go"  # re-assigned elsewhere
    assert o.hear(None) == "stand_down"
    assert o.hear(None) is None


def test_the_officer_radios_contact_then_clear_from_arrival_each_once() -> None:
    o = officer()
    o.on_scene(1_000)  # not assigned: nothing scheduled
    assert o.due(10**9) == []
    o.hear("I1")
    o.on_scene(1_000)
    o.on_scene(5_000)  # still on scene at the next poll: the reports keep their times
    assert o.due(10_999) == []
    assert o.due(11_000) == ["contact"]
    assert o.due(100_999) == []
    assert o.due(101_000) == ["clear"]
    assert o.due(10**9) == []


def test_a_released_officer_forgets_the_reports_of_the_old_assignment() -> None:
    o = officer(scene_s=None)
    o.hear("I1")
    o.on_scene(0)
    o.hear(None)
    assert o.due(10**9) == []
    o.hear("I2")
    o.on_scene(50_000)
    assert o.due(10**9) == ["contact"]  # without scene_s the officer never radios clear


def test_location_is_a_place_on_earth_or_refused() -> None:
    assert location({"lat": 34.26, "lon": 117.18, "id": "I1"}) == (34.26, 117.18)
    assert location({"lat": 34, "lon": 117}) == (34.0, 117.0)
    for bad in ({"lat": math.nan, "lon": 1.0}, {"lat": 91.0, "lon": 1.0}, {"lat": 1.0, "lon": -180.5},
                {"lat": math.inf, "lon": 0.0}):
        with pytest.raises(ValueError):
            location(bad)
    for wrong in ({"lat": "34.2", "lon": 117.1}, {"lat": True, "lon": 117.1}, [34.2, 117.1], None):
        with pytest.raises(TypeError):
            location(wrong)
    with pytest.raises(KeyError):
        location({"lat": 34.2})


def test_an_assignment_is_none_or_an_id_of_the_hubs_syntax() -> None:
    assert assignment({"incident_id": None, "unit_id": "GB01"}) is None
    assert assignment({"incident_id": "I20261206-000001"}) == "I20261206-000001"
    for bad in ({"incident_id": "a\x00b"}, {"incident_id": "../close"}, {"incident_id": ""}, {"incident_id": "x" * 65}):
        with pytest.raises(ValueError):
            assignment(bad)
    for wrong in ({"incident_id": 7}, ["incident_id"], None):
        with pytest.raises(TypeError):
            assignment(wrong)
    with pytest.raises(KeyError):
        assignment({})


# ------------------------------------------------------------------------ a hub answering garbage
# A real hub answers as documented; what a broken proxy or a hub of another version might send instead is
# served by an in-process HTTP transport (no camera is started: the radio is all this is about).
GOOD_SCENE = {"id": "I-GOOD", "lat": 34.2610, "lon": 117.1859}
HOSTILE_ANSWER = st.one_of(
    st.tuples(st.just(200), st.binary(max_size=40)),  # not JSON at all
    st.tuples(st.sampled_from([200, 404, 409, 500, 502]), JSON_VALUE.map(lambda v: json.dumps(v).encode())),
    st.tuples(st.just(200), st.fixed_dictionaries({"incident_id": st.one_of(TEXT, NUMBER, JSON_VALUE)})
              .map(lambda v: json.dumps(v).encode())),
)
HOSTILE_INCIDENT = st.one_of(
    st.binary(max_size=40),
    st.fixed_dictionaries({"lat": st.one_of(NUMBER, TEXT, st.none()), "lon": st.one_of(NUMBER, TEXT)}).map(
        lambda v: json.dumps(v, allow_nan=True).encode()),
    JSON_VALUE.map(lambda v: json.dumps(v).encode()),
)


class HostileHub:
    """Answers the unit poll with ``unit`` and the incident look-up with ``incident`` until told to behave."""

    def __init__(self, unit: tuple[int, bytes], incident: bytes) -> None:
        self.unit, self.incident = unit, incident
        self.good = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.good:
            if request.url.path.startswith("/api/v1/units/"):
                return httpx.Response(200, json={"incident_id": GOOD_SCENE["id"]})
            return httpx.Response(200, json=GOOD_SCENE)
        if request.url.path.startswith("/api/v1/units/"):
            return httpx.Response(self.unit[0], content=self.unit[1])
        return httpx.Response(200, content=self.incident)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(unit=HOSTILE_ANSWER, incident=HOSTILE_INCIDENT)
def test_garbage_from_the_hub_is_a_counted_poll_error_and_the_next_good_answer_is_obeyed(
        unit: tuple[int, bytes], incident: bytes) -> None:
    async def scenario() -> None:
        hub = HostileHub(unit, incident)
        demo = GbDemo(GbDemoConfig("http://hub.invalid", "t", "34020000002000000001", "127.0.0.1", 5060, count=1),
                      city=CITY, transport=httpx.MockTransport(hub))
        [car] = demo.units
        demo.open_api()
        try:
            await demo.poll()  # garbage: one counted error (or, if it happens to be a valid answer, obeyed)
            errors, heard = sum(demo.errors.values()), car.officer.incident_id
            assert errors == 1 or (errors == 0 and (heard is None or INCIDENT_ID.fullmatch(heard))), demo.errors
            hub.good = True
            await demo.poll()
            assert car.officer.incident_id == GOOD_SCENE["id"], demo.errors
            assert car.vehicle.state == "driving" and car.vehicle.destination is not None
        finally:
            await demo.stop()

    asyncio.run(scenario())

