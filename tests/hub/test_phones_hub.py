"""Phones in a running hub (real PostgreSQL, real Mosquitto): OwnTracks over MQTT with the login the REST API
provisions (the app's documented location JSON through the hub's broker; a dispatch sends it ``reportLocation``,
cannot be signed for, and its arrival is detected), OwnTracks over HTTP, and OsmAnd / Traccar Client query-string
reports; the refusals: a wrong password at the broker, another device's topic, a wrong secret or key (401), a
malformed report (400) that costs the next good one nothing.

A phone's reports carry its own time; the drive's are sent as fast as the broker takes them (the app's buffered
queue after a dead spot looks the same), so the 60 s stop that makes an arrival a stay costs the test no minute.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from gmqtt.mqtt.handler import MQTTConnectError
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from devices.broker import BrokerAddress
from geo.geodesy import haversine_m, offset
from hub.config import Settings
from tests.conftest import RunningHub, SecureBroker, running_hub, wait_for
from tests.hostile import EVIL_TEXT, JSON_VALUE
from tests.hub.test_device_identity import Probe
from tests.hub.test_incidents_api import INCIDENT, LAT, LON, incident
from tests.hub.test_jt808_hub import admin, reached

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ZONE_M = 100.0  # the built-in arrival zone of a robbery


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Dispatch is explicit; both phone gateways on."""
    return settings.model_copy(update={"auto_dispatch_priority": 0, "owntracks": True, "osmand": True})


@pytest.fixture
async def phub(settings: Settings) -> AsyncIterator[RunningHub]:
    async with running_hub(settings) as rh:
        yield rh


async def provision(rh: RunningHub, device_id: str, unit_id: str, protocol: str) -> dict[str, Any]:
    """A phone-only unit and its phone's login, through the REST API."""
    await rh.put_unit(unit_id, [])
    async with await admin(rh) as api:
        r = await api.post("/api/v1/devices", json={"device_id": device_id, "unit_id": unit_id,
                                                    "protocol": protocol})
    assert r.status_code == 201, r.text
    creds: dict[str, Any] = r.json()
    assert creds["protocol"] == protocol and creds["gateway"]["enabled"] is True and creds["password"]
    return creds


def route(t0_s: int) -> list[tuple[int, float, float, float]]:
    """(epoch s, lat, lon, km/h), one a second: parked 505 m south of the incident for 10 s, north at 43 km/h to
    35 m short of it, parked there for 70 s."""
    points, north, t = [], -505.0, t0_s
    for _ in range(10):
        points.append((t, north, 0.0))
        t += 1
    while north < -35.0:
        north = min(north + 12.0, -35.0)
        points.append((t, north, 43.0))
        t += 1
    for _ in range(70):
        points.append((t, north, 0.0))
        t += 1
    return [(ts, *offset(LAT, LON, n, 0.0), kmh) for ts, n, kmh in points]


def first_inside(points: list[tuple[int, float, float, float]]) -> int:
    return next(ts * 1000 for ts, lat, lon, _ in points if haversine_m(LAT, LON, lat, lon) < ZONE_M)


def owntracks_location(ts: int, lat: float, lon: float, kmh: float) -> bytes:
    """The app's location message (owntracks.org booklet, tech/json.md)."""
    return json.dumps({"_type": "location", "tst": ts, "lat": round(lat, 7), "lon": round(lon, 7), "acc": 5,
                       "vel": round(kmh), "cog": 0, "batt": 80, "tid": "p1", "t": "u", "conn": "m"}).encode()


def owntracks_url(creds: dict[str, Any], password: str | None = None) -> str:
    return BrokerAddress.parse(creds["mqtt_url"]).with_login(creds["username"],
                                                             password or creds["password"]).url()


async def dispatch(rh: RunningHub, unit_id: str) -> tuple[str, dict[str, Any]]:
    iid = (await rh.api.post("/api/v1/incidents", json=INCIDENT)).json()["id"]
    r = await rh.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": [unit_id]})
    assert r.status_code == 200, r.text
    [assignment] = r.json()["assignments"]
    return iid, assignment


async def test_owntracks_phone_over_mqtt_is_dispatched_and_arrives(phub: RunningHub, broker: SecureBroker) -> None:
    creds = await provision(phub, "ot-phone-1", "OT1", "owntracks")
    other = await provision(phub, "ot-phone-2", "OT2", "owntracks")
    setup = creds["gateway"]
    assert setup["user"] == "ot-phone-1" and setup["mqtt"]["client_id"] == "ot-phone-1"
    # A wrong password is refused by the broker.
    with pytest.raises(MQTTConnectError):
        await Probe("ot-phone-1").connect(owntracks_url(creds, "not-the-secret"))
    watcher = await Probe("watch-" + uuid.uuid4().hex[:6]).connect(broker.url)
    await watcher.subscribe("owntracks/#")

    phone = await Probe("ot-phone-1").connect(owntracks_url(creds))
    try:
        assert await phone.subscribe("owntracks/ot-phone-1/phone/cmd") == [1]
        for point in route(int(time.time()) - 3)[:2]:  # parked, before the dispatch
            phone.client.publish("owntracks/ot-phone-1/phone", owntracks_location(*point), qos=1)
        await wait_for(lambda: phub.hub.live.units["OT1"].fix is not None)
        iid, assignment = await dispatch(phub, "OT1")

        # The hub asks the app for its position; it cannot sign, so the dispatcher is told to confirm by radio.
        await wait_for(lambda: phone.received)
        [(topic, payload)] = phone.received
        assert topic == "owntracks/ot-phone-1/phone/cmd"
        assert json.loads(payload) == {"_type": "cmd", "action": "reportLocation"}

        async def cannot_sign() -> dict[str, Any] | None:
            alerts = (await phub.api.get("/api/v1/alerts")).json()["alerts"]
            return next((a for a in alerts if a.get("cannot_sign") and a.get("incident_id") == iid), None)

        alert = await wait_for(cannot_sign)
        assert alert["kind"] == "unacknowledged" and alert["unit_id"] == "OT1"

        # Parked a while after the dispatch, then it drives in; each report with its own time.
        points = route(assignment["dispatched"] // 1000 + 1)
        for point in points:
            phone.client.publish("owntracks/ot-phone-1/phone", owntracks_location(*point), qos=1)
        arrived = await reached(phub, iid, "arrived", timeout=30)
        assert arrived == {"ts": first_inside(points), "source": "geofence", "unit_id": "OT1"}
        view = await incident(phub, iid)
        assert view["milestones"]["acknowledged"] is None
        assert view["assignments"][0]["status"] == "on_scene"
    finally:
        await phone.close()

    # Another device's OwnTracks topic is not delivered: the broker drops the publisher, nothing is stored.
    intruder = await Probe("ot-phone-1").connect(owntracks_url(creds))
    intruder.client.publish("owntracks/ot-phone-2/phone", owntracks_location(int(time.time()), LAT, LON, 0), qos=1)
    await wait_for(lambda: not intruder.client.is_connected, timeout=5)
    # Its own topic works with the other's login (so the refusal is the ACL's).
    victim = await Probe("ot-phone-2").connect(owntracks_url(other))
    victim.client.publish("owntracks/ot-phone-2/phone", owntracks_location(int(time.time()), LAT, LON, 0), qos=1)
    await wait_for(lambda: phub.count("SELECT count(*) FROM fixes WHERE device_id = 'ot-phone-2'"))
    await victim.close()
    await asyncio.sleep(0.3)
    assert await phub.count("SELECT count(*) FROM fixes WHERE device_id = 'ot-phone-2'") == 1
    assert sum(t == "owntracks/ot-phone-2/phone" for t, _ in watcher.received) == 1
    await watcher.close()


async def test_owntracks_over_http(phub: RunningHub) -> None:
    creds = await provision(phub, "ot-http-1", "OTH", "owntracks")
    assert creds["gateway"]["http"]["path"] == "/gateway/owntracks"
    body = owntracks_location(int(time.time()), LAT, LON, 0)
    async with httpx.AsyncClient(base_url=phub.base_url, timeout=10) as app:
        r = await app.post("/gateway/owntracks", content=body, auth=("ot-http-1", creds["password"]),
                           headers={"Content-Type": "application/json"})
        assert (r.status_code, r.json()) == (200, [])
        assert await phub.count("SELECT count(*) FROM fixes WHERE device_id = 'ot-http-1'") == 1
        fix = phub.hub.live.devices["ot-http-1"].fix
        assert fix is not None and (fix.lat, fix.lon, fix.battery) == (LAT, LON, 80)
        r = await app.post("/gateway/owntracks", content=body, auth=("ot-http-1", "wrong-secret"))
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    assert await phub.count("SELECT count(*) FROM fixes WHERE device_id = 'ot-http-1'") == 1


def osmand_query(device_id: str, key: str, ts: int, lat: float, lon: float, kmh: float) -> str:
    """Traccar Client's report (speed in knots), with the hub's key in the server URL's query."""
    return "/gateway/osmand?" + urlencode({"id": device_id, "lat": f"{lat:.7f}", "lon": f"{lon:.7f}",
                                           "timestamp": ts, "speed": f"{kmh / 1.852:.2f}", "bearing": 0,
                                           "accuracy": 5, "batt": 77, "key": key})


async def test_osmand_phone_is_dispatched_and_arrives(phub: RunningHub) -> None:
    creds = await provision(phub, "osm-phone-1", "OS1", "osmand")
    key = creds["password"]
    assert creds["gateway"]["identifier"] == "osm-phone-1" and creds["gateway"]["path"] == "/gateway/osmand"
    async with httpx.AsyncClient(base_url=phub.base_url, timeout=10) as app:
        start = route(int(time.time()) - 2)[0]
        r = await app.get(osmand_query("osm-phone-1", key, *start))
        assert r.status_code == 200, r.text
        await wait_for(lambda: phub.hub.live.units["OS1"].fix is not None)
        iid, assignment = await dispatch(phub, "OS1")
        # Refusals: a wrong key, a malformed report; the next good one is stored all the same.
        r = await app.get(osmand_query("osm-phone-1", key + "x", *start))
        assert r.status_code == 401, r.text
        r = await app.get(f"/gateway/osmand?id=osm-phone-1&lat=north&lon=1&timestamp=1&key={key}")
        assert r.status_code == 400, r.text
        stored = await phub.count("SELECT count(*) FROM fixes WHERE device_id = 'osm-phone-1'")
        points = route(assignment["dispatched"] // 1000 + 1)
        for point in points:
            r = await app.get(osmand_query("osm-phone-1", key, *point))
            assert r.status_code == 200, r.text
    assert await phub.count("SELECT count(*) FROM fixes WHERE device_id = 'osm-phone-1'") == stored + len(points)
    arrived = await reached(phub, iid, "arrived", timeout=20)
    assert arrived == {"ts": first_inside(points), "source": "geofence", "unit_id": "OS1"}
    assert (await incident(phub, iid))["milestones"]["acknowledged"] is None


ANSWERS = (200, 400, 422)
EXAMPLES = itertools.count()
HOSTILE = hypothesis_settings(max_examples=40, deadline=None, database=None,
                              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
async def phones(phub: RunningHub) -> tuple[RunningHub, dict[str, Any], dict[str, Any]]:
    return phub, await provision(phub, "ot-fuzz", "OTF", "owntracks"), await provision(phub, "osm-fuzz", "OSF",
                                                                                       "osmand")


@HOSTILE
@given(lat=EVIL_TEXT, ts=EVIL_TEXT, body=JSON_VALUE)
async def test_hostile_reports_of_authenticated_phones_never_fail_the_hub(
        phones: tuple[RunningHub, dict[str, Any], dict[str, Any]], lat: str, ts: str, body: Any) -> None:
    """Through the real hub: whatever a phone with a good secret sends is stored (200) or refused (400; 422 from the
    API's parameter rule, e.g. a NUL), never a 5xx; its next good report is stored all the same."""
    rh, ot, osm = phones
    async with httpx.AsyncClient(base_url=rh.base_url, timeout=10) as app:
        raw = {"id": "osm-fuzz", "lat": lat, "lon": "121.47", "timestamp": ts, "key": osm["password"]}
        query = urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in raw.items()})
        r = await app.get("/gateway/osmand?" + query)
        assert r.status_code in ANSWERS, r.text
        content = json.dumps(body).encode("utf-8", "surrogatepass")
        r = await app.post("/gateway/owntracks", content=content, auth=("ot-fuzz", ot["password"]))
        assert r.status_code in ANSWERS, r.text
        for device_id, creds in (("osm-fuzz", osm), ("ot-fuzz", ot)):
            before = await rh.count("SELECT count(*) FROM fixes WHERE device_id = %s", device_id)
            now = int(time.time()) - 600 - next(EXAMPLES)  # a second of its own: never a duplicate
            if device_id == "osm-fuzz":
                r = await app.get(osmand_query(device_id, creds["password"], now, LAT, LON, 0.0))
            else:
                r = await app.post("/gateway/owntracks", content=owntracks_location(now, LAT, LON, 0),
                                   auth=(device_id, creds["password"]))
            assert r.status_code == 200, r.text
            assert await rh.count("SELECT count(*) FROM fixes WHERE device_id = %s", device_id) == before + 1
