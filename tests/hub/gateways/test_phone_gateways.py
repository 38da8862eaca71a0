"""The phone gateways end to end through a real FastAPI app (the hub's error table, body limit and parameter rule),
with the real codecs and real PBKDF2 logins in an in-memory login store, and a recording ``Pipeline.submit``:
the apps' documented payloads are stored and answered as the apps expect, a wrong secret is a counted 401, the
secret cache expires and forgets, the failure limit answers 429, a commit that does not come is a 503; OwnTracks
over MQTT (``on_owntracks``), its reportLocation command, and Traccar's forwarding with API tokens.
(The hub's own end-to-end tests, with PostgreSQL and Mosquitto, are the lead's.)"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from fastapi import FastAPI

from devices import payloads
from devices.clock import now_ms
from devices.payloads import Command
from devices.topics import device_topic
from geo.gcj02 import wgs84_to_gcj02
from hub.access.auth import FailedAuthLimiter
from hub.gateways.commands import CommandRouter
from hub.gateways.osmand.gateway import OsmAndGateway
from hub.gateways.owntracks.gateway import OwnTracksGateway
from tests.conftest import RunningHub
from tests.hub.gateways.phone_standins import (
    ADMIN,
    BOUND_TOKEN,
    DEVICE_TOKEN,
    DISPATCHER,
    KEY,
    PHONE,
    SECRET,
    TRACKER,
    Clock,
    MemoryLogins,
    Phones,
    Pipe,
    basic,
    make_app,
    make_phones,
    phones,
    post_owntracks,
)
from tests.hub.gateways.test_osmand import TRACCAR_CLIENT_JSON, TRACCAR_FORWARD, TRACCAR_QUERIES
from tests.hub.gateways.test_owntracks import BOOKLET_LOCATION, BOOKLET_LWT, BOOKLET_TRANSITION, MINIMAL_HTTP

__all__ = ["phones"]  # the fixture


# --- OwnTracks over HTTP ------------------------------------------------------------------------------------------

async def test_owntracks_http_documented_payloads_are_stored_and_answered_with_an_array(phones: Phones) -> None:
    r = await post_owntracks(phones, BOOKLET_LOCATION)
    assert (r.status_code, r.json()) == (200, [])
    fix = phones.pipe.on("telemetry")[0]
    assert (fix["ts"], fix["lat"], fix["lon"], fix["acc"], fix["battery"]) == (1376715317000, 48.85833, 2.29513, 75, 40)
    assert fix["speed"] == pytest.approx(15.0)  # 54 km/h
    assert (await post_owntracks(phones, MINIMAL_HTTP)).status_code == 200
    assert (await post_owntracks(phones, BOOKLET_TRANSITION)).json() == []
    [event] = phones.pipe.on("event")
    assert event["type"] == "geofence" and event["event"] == "enter" and event["desc"] == "my Indian restaurant"
    assert (await post_owntracks(phones, BOOKLET_LWT)).status_code == 200
    [(topic, status, qos, retained)] = [m for m in phones.pipe.messages if m[0].endswith("/status")]
    assert topic == device_topic(PHONE, "status") and status["state"] == "offline" and (qos, retained) == (1, True)
    assert all(m[0].startswith(f"fieldhub/v1/dev/{PHONE}/") and m[2] == 1 for m in phones.pipe.messages)
    assert phones.owntracks.counters["fixes"] == 3 and phones.owntracks.counters["events"] == 1
    r = await post_owntracks(phones, {"_type": "waypoint", "tst": 1, "desc": "x"})
    assert (r.status_code, r.json()) == (200, []) and phones.owntracks.ignored == {"waypoint": 1}


@pytest.mark.parametrize(("user", "password"), [(PHONE, "wrong"), ("nobody", SECRET), (PHONE, ""), (TRACKER, KEY)])
async def test_owntracks_wrong_credentials_are_401_with_a_challenge_and_counted(
        phones: Phones, user: str, password: str) -> None:
    r = await post_owntracks(phones, BOOKLET_LOCATION, user, password)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    assert r.json()["error"]["code"] == "unauthorized"
    assert sum(phones.owntracks.rejects.values()) == 1 and phones.pipe.messages == []
    assert set(phones.owntracks.rejects) <= {"bad_secret", "unknown_device"}


async def test_owntracks_without_or_with_garbled_credentials_is_401(phones: Phones) -> None:
    for headers in ({}, {"Authorization": "Bearer x"}, {"Authorization": "Basic !!!"}):
        r = await phones.http.post("/gateway/owntracks", content=json.dumps(BOOKLET_LOCATION), headers=headers)
        assert r.status_code == 401
    assert phones.owntracks.rejects == {"bad_secret": 3} and phones.pipe.messages == []


@pytest.mark.parametrize(("body", "reason"), [
    (b"not json", "bad_json"), (b"[1]", "not_object"), (b'{"_type": "encrypted", "data": "x"}', "encrypted"),
    (b'{"_type": "location", "lat": 91, "lon": 0, "tst": 1500000000}', "out_of_range"), (b"{}", "missing_field"),
    (json.dumps({**BOOKLET_LOCATION, "tst": now_ms() // 1000 + 86_400}).encode(), "bad_time"),
])
async def test_owntracks_refused_bodies_are_400_with_the_reason(phones: Phones, body: bytes, reason: str) -> None:
    r = await post_owntracks(phones, body)
    assert r.status_code == 400 and r.json()["error"]["code"] == reason
    assert phones.owntracks.rejects == {reason: 1} and phones.pipe.messages == []


async def test_not_stored_in_time_or_refused_by_a_full_pipeline_is_503() -> None:
    for hold in (True, False):
        made = make_phones(store_timeout_s=0.1, hold=hold, full=not hold)
        async with made.http:
            r = await post_owntracks(made, BOOKLET_LOCATION)
            assert r.status_code == 503 and r.json()["error"]["code"] == "not_stored" and "retry-after" in r.headers
            q = await made.http.get(f"/gateway/osmand?id={TRACKER}&lat=1&lon=2&timestamp=1500000000&key={KEY}")
            assert q.status_code == 503
            want = "store_timeout" if hold else "store_refused"
            assert made.owntracks.counters[want] == 1 and made.osmand.counters[want] == 1
            assert made.owntracks.fixes == (1 if hold else 0)  # taken by the pipeline, not committed


# --- the secret cache, revocation, the failure limit ---------------------------------------------------------------

async def test_a_phone_reporting_often_costs_one_hash_per_ttl(phones: Phones) -> None:
    secrets = phones.owntracks.secrets
    for _ in range(5):
        assert (await post_owntracks(phones, BOOKLET_LOCATION)).status_code == 200
    assert secrets.counters["hashes"] == 1 and secrets.counters["cache_hits"] == 4 and phones.logins.lookups == 1
    phones.clock.t += 61  # past the TTL: checked against the store again
    assert (await post_owntracks(phones, BOOKLET_LOCATION)).status_code == 200
    assert secrets.counters["hashes"] == 2
    assert (await post_owntracks(phones, BOOKLET_LOCATION, password="wrong")).status_code == 401  # not the cached one


async def test_forget_and_revocation_end_a_cached_login_at_once(phones: Phones) -> None:
    assert (await post_owntracks(phones, BOOKLET_LOCATION)).status_code == 200
    # Rotated: the new secret in the store, the old one still cached until forget().
    phones.logins.add(PHONE, "owntracks", "rotated-secret-0123456789")
    assert (await post_owntracks(phones, BOOKLET_LOCATION)).status_code == 200
    phones.owntracks.forget(PHONE)
    assert (await post_owntracks(phones, BOOKLET_LOCATION)).status_code == 401
    assert (await post_owntracks(phones, BOOKLET_LOCATION, password="rotated-secret-0123456789")).status_code == 200
    # Revoked: out of the owned set, refused at once even with its secret cached.
    phones.logins.revoke(PHONE)
    assert (await post_owntracks(phones, BOOKLET_LOCATION, password="rotated-secret-0123456789")).status_code == 401
    assert phones.owntracks.rejects["unknown_device"] == 1


async def test_a_check_that_read_the_login_before_a_rotation_does_not_cache_it(phones: Phones) -> None:
    phones.logins.gate = asyncio.Event()
    request = asyncio.create_task(post_owntracks(phones, BOOKLET_LOCATION))
    while phones.logins.lookups == 0:
        await asyncio.sleep(0.001)
    phones.logins.add(PHONE, "owntracks", "rotated-secret-0123456789")  # rotated while the old login was read
    phones.owntracks.forget(PHONE)
    phones.logins.gate.set()
    assert (await request).status_code == 200  # it was the secret when the phone sent it
    assert (await post_owntracks(phones, BOOKLET_LOCATION)).status_code == 401  # and not cached


async def test_no_secret_at_all_is_not_counted_against_the_address() -> None:
    made = make_phones(limiter=FailedAuthLimiter(per_min=6, burst=1))
    async with made.http:
        for _ in range(3):
            r = await made.http.get(f"/gateway/osmand?id={TRACKER}&lat=1&lon=2&timestamp=1500000000")
            assert r.status_code == 401
        assert (await made.http.get(f"/gateway/osmand?id={TRACKER}&lat=1&lon=2&timestamp=1500000000&key={KEY}"
                                    )).status_code == 200
    assert made.osmand.rejects == {"bad_secret": 3} and made.osmand.secrets.counters["hashes"] == 1


async def test_failures_past_the_limit_are_429_without_hashing_and_a_cached_phone_keeps_reporting() -> None:
    made = make_phones(limiter=FailedAuthLimiter(per_min=6, burst=2))
    async with made.http:
        assert (await post_owntracks(made, BOOKLET_LOCATION)).status_code == 200  # cached from now on
        answers = [(await post_owntracks(made, BOOKLET_LOCATION, password=f"guess{i}")).status_code for i in range(4)]
        assert answers == [401, 401, 429, 429]
        hashes = made.owntracks.secrets.counters["hashes"]
        r = await post_owntracks(made, BOOKLET_LOCATION, password="guess9")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert made.owntracks.secrets.counters["hashes"] == hashes  # refused without PBKDF2
        assert (await post_owntracks(made, BOOKLET_LOCATION)).status_code == 200  # the cached phone
        made.clock.t += 11  # the block ended: the next failure is judged by the limiter again
        assert (await post_owntracks(made, BOOKLET_LOCATION, password="guess10")).status_code in (401, 429)


async def test_the_registry_away_is_503_not_401(phones: Phones) -> None:
    phones.logins.down = True
    r = await post_owntracks(phones, BOOKLET_LOCATION)
    assert r.status_code == 503 and phones.owntracks.counters["login_unavailable"] == 1


# --- OwnTracks over MQTT, and its command ------------------------------------------------------------------------

async def test_owntracks_mqtt_messages_become_the_contracts_messages(phones: Phones) -> None:
    ot = phones.owntracks
    future = ot.on_owntracks(f"owntracks/{PHONE}/iphone", json.dumps(BOOKLET_LOCATION).encode())
    assert future is not None and future.done()
    transition = ot.on_owntracks(f"owntracks/{PHONE}/iphone/event", BOOKLET_TRANSITION)
    assert transition is not None
    await asyncio.wait_for(transition, 1)
    assert len(phones.pipe.on("telemetry")) == 2 and phones.pipe.on("event")[0]["type"] == "geofence"
    lwt = ot.on_owntracks(f"owntracks/{PHONE}/iphone", BOOKLET_LWT)
    assert lwt is not None and phones.pipe.messages[-1][3] is True  # retained status
    # Refused or ignored: a resolved future (acknowledged, never sent again), counted; nothing submitted.
    before = len(phones.pipe.messages)
    for topic, payload in [("owntracks/stranger/x", BOOKLET_LWT), ("owntracks/p1", BOOKLET_LWT),
                           (f"owntracks/{PHONE}/iphone", b""), (f"owntracks/{PHONE}/iphone", b"{"),
                           (f"owntracks/{PHONE}/iphone/cmd", b'{"_type":"cmd","action":"reportLocation"}')]:
        done = ot.on_owntracks(topic, payload)
        assert done is not None and done.done() and done.exception() is None
    assert len(phones.pipe.messages) == before
    assert ot.rejects == {"unknown_device": 1, "bad_topic": 1, "bad_json": 1}
    assert ot.ignored == {"empty": 1, "cmd": 1}


async def test_owntracks_mqtt_waits_for_the_commit_and_none_when_the_pipeline_is_full() -> None:
    held = make_phones(hold=True)
    future = held.owntracks.on_owntracks(f"owntracks/{PHONE}/a", BOOKLET_TRANSITION)
    assert future is not None and not future.done()
    full = make_phones(full=True)
    assert full.owntracks.on_owntracks(f"owntracks/{PHONE}/a", BOOKLET_LWT) is None
    assert full.owntracks.counters["store_refused"] == 1


async def test_dispatch_to_an_owntracks_phone_asks_for_its_position(phones: Phones) -> None:
    ot = phones.owntracks
    router = CommandRouter(lambda topic, payload: phones.published.append(("mqtt:" + topic, payload)))
    router.gateways.extend([ot, phones.osmand])
    dispatch = payloads.encode_command(Command("c1", now_ms(), "dispatch", {"incident": {"id": "I1"}}))
    router.publish(device_topic(PHONE, "cmd"), dispatch)  # never seen: the device id as the app's device name
    ot.on_owntracks(f"owntracks/{PHONE}/iphone", json.dumps(BOOKLET_LOCATION).encode())
    router.publish(device_topic(PHONE, "cmd"), dispatch)
    assert [t for t, _ in phones.published] == [f"owntracks/{PHONE}/{PHONE}/cmd", f"owntracks/{PHONE}/iphone/cmd"]
    assert json.loads(phones.published[0][1]) == {"_type": "cmd", "action": "reportLocation"}
    assert not router.can_sign(PHONE) and not router.can_sign(TRACKER) and router.can_sign("mqtt-cam")
    router.publish(device_topic(TRACKER, "cmd"), dispatch)  # OsmAnd: nothing can carry it
    assert phones.osmand.counters["command_undeliverable"] == 1 and len(phones.published) == 2
    router.publish(device_topic(PHONE, "cmd"), payloads.encode_command(Command("c2", now_ms(), "ping")))
    ot.command(PHONE, b"garbage")
    assert ot.counters["command_unsupported"] == 1 and ot.counters["command_bad"] == 1
    assert not ot.report_location("stranger")


async def test_an_http_mode_phone_gets_report_location_in_its_next_answer(phones: Phones) -> None:
    assert (await post_owntracks(phones, BOOKLET_LOCATION)).json() == []
    assert phones.owntracks.report_location(PHONE)
    assert (await post_owntracks(phones, BOOKLET_LOCATION)).json() == [{"_type": "cmd", "action": "reportLocation"}]
    assert (await post_owntracks(phones, BOOKLET_LOCATION)).json() == []  # handed over once
    assert phones.published == []  # an HTTP-mode phone never seen over MQTT: no publish


# --- OsmAnd / Traccar Client ------------------------------------------------------------------------------------

@pytest.mark.parametrize("query", TRACCAR_QUERIES)
async def test_osmand_documented_queries_with_the_key_are_stored(phones: Phones, query: str) -> None:
    device = query.split("id=")[1].split("&")[0]
    phones.logins.add(device, "osmand", KEY)
    r = await phones.http.get(f"/gateway/osmand{query[1:]}&key={KEY}")
    assert r.status_code == 200 and r.content == b""
    [fix] = phones.pipe.on("telemetry")
    assert phones.pipe.messages[0][0] == device_topic(device, "telemetry") and -90 <= fix["lat"] <= 90


async def test_osmand_post_forms_and_traccar_client_json(phones: Phones) -> None:
    form = f"id={TRACKER}&lat=34.2&lon=117.1&timestamp=1500000000&speed=10"
    r = await phones.http.post("/gateway/osmand", content=f"{form}&key={KEY}",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    assert (await phones.http.post(f"/gateway/osmand?{form}&key={KEY}")).status_code == 200  # old Traccar Client
    assert (await phones.http.get(f"/gateway/osmand?{form}&key={KEY}&note=why?")).status_code == 200  # a bare "?"
    phones.logins.add("8737767034", "osmand", KEY)
    r = await phones.http.post(f"/gateway/osmand?key={KEY}", content=TRACCAR_CLIENT_JSON,
                               headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    fixes = phones.pipe.on("telemetry")
    assert fixes[0]["speed"] == pytest.approx(10 * 1852 / 3600) and fixes[3]["battery"] == pytest.approx(79)


@pytest.mark.parametrize("target", [
    f"/gateway/osmand?id={TRACKER}&lat=1&lon=2&timestamp=1500000000&key=wrong",
    f"/gateway/osmand?id={TRACKER}&lat=1&lon=2&timestamp=1500000000",
    f"/gateway/osmand?id=stranger&lat=1&lon=2&timestamp=1500000000&key={KEY}",
    f"/gateway/osmand?id={PHONE}&lat=1&lon=2&timestamp=1500000000&key={SECRET}",  # an OwnTracks login is not one
])
async def test_osmand_bad_keys_are_401_and_counted(phones: Phones, target: str) -> None:
    r = await phones.http.get(target)
    assert r.status_code == 401 and sum(phones.osmand.rejects.values()) == 1 and phones.pipe.messages == []


@pytest.mark.parametrize(("query", "reason"), [
    ("lat=1&lon=2", "missing_field"), (f"id={TRACKER}&lat=1&lon=200&key={KEY}", "out_of_range"),
    (f"id={TRACKER}&lat=1&lon=2&valid=false&key={KEY}", "invalid_fix"), (f"id=a&id=b&key={KEY}", "bad_value"),
    (f"id={TRACKER}&lat=1&lon=2&key=a&key=b", "bad_value"),
])
async def test_osmand_refused_reports_are_400(phones: Phones, query: str, reason: str) -> None:
    r = await phones.http.get(f"/gateway/osmand?{query}")
    assert r.status_code == 400 and r.json()["error"]["code"] == reason and phones.osmand.rejects == {reason: 1}


async def test_osmand_gcj02_datum_is_converted_at_the_edge() -> None:
    made = make_phones()
    made.osmand.datum = "gcj02"
    lat, lon = wgs84_to_gcj02(34.2, 117.1)
    async with made.http:
        r = await made.http.get(f"/gateway/osmand?id={TRACKER}&lat={lat}&lon={lon}&timestamp=1500000000&key={KEY}")
    assert r.status_code == 200
    [fix] = made.pipe.on("telemetry")
    assert abs(fix["lat"] - 34.2) < 1e-5 and abs(fix["lon"] - 117.1) < 1e-5


# --- Traccar forwarding -------------------------------------------------------------------------------------------

def forwarded(unique_id: str) -> bytes:
    doc = json.loads(TRACCAR_FORWARD)
    doc["device"]["uniqueId"] = unique_id
    return json.dumps(doc).encode()


async def test_traccar_forwarding_with_a_device_or_admin_token(phones: Phones) -> None:
    for token in (DEVICE_TOKEN, ADMIN):
        r = await phones.http.post("/gateway/traccar", content=forwarded(TRACKER),
                                   headers={"Authorization": f"Bearer {token}"})
        assert (r.status_code, r.json()) == (200, {"stored": 1})
    assert phones.osmand.counters["forwarded"] == 2
    fix = phones.pipe.on("telemetry")[0]
    assert (fix["lat"], fix["lon"], fix["ts"]) == (49.0156556, 8.3975169, 1536939257000)
    r = await phones.http.post("/gateway/traccar", content=TRACCAR_FORWARD,
                               headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.json() == {"stored": 0, "refused": "unknown_device"} and phones.osmand.rejects["unknown_device"] == 1
    assert len(phones.pipe.messages) == 2


@pytest.mark.parametrize(("token", "status"), [(None, 401), ("fh_wrong", 401), (DISPATCHER, 403), (BOUND_TOKEN, 403)])
async def test_traccar_forwarding_refuses_other_callers(phones: Phones, token: str | None, status: int) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = await phones.http.post("/gateway/traccar", content=forwarded(TRACKER), headers=headers)
    assert r.status_code == status and phones.pipe.messages == []


async def test_traccar_forwarding_refuses_garbage_with_400(phones: Phones) -> None:
    r = await phones.http.post("/gateway/traccar", content=b'{"position": {}}',
                               headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 400 and phones.osmand.rejects == {"missing_field": 1}


# --- the routes ---------------------------------------------------------------------------------------------------

async def test_a_gateway_that_is_off_is_404_and_the_token_is_checked_first() -> None:
    app = make_app(None, None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
        assert (await http.post("/gateway/owntracks", content=b"{}")).status_code == 404
        assert (await http.get("/gateway/osmand?id=x")).status_code == 404
        assert (await http.post("/gateway/traccar", content=b"{}")).status_code == 401
        r = await http.post("/gateway/traccar", content=b"{}", headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_bodies_over_the_api_limit_are_413_and_unstorable_queries_422() -> None:
    made = make_phones()
    app = make_app(made.owntracks, made.osmand, max_body=1024)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
        r = await http.post("/gateway/owntracks", content=b"{" + b" " * 2000 + b"}", headers=basic(PHONE, SECRET))
        assert r.status_code == 413
        assert (await http.get(f"/gateway/osmand?id={TRACKER}%00&key={KEY}")).status_code == 422
    assert made.pipe.messages == []


# --- with a running hub (PostgreSQL, Mosquitto): what the gateways submit, the pipeline takes ------------------------

async def test_through_a_running_hub_the_phones_reports_are_the_units_track(hub: RunningHub) -> None:
    await hub.put_unit("PH1", [PHONE, TRACKER])
    logins = MemoryLogins()
    logins.add(PHONE, "owntracks", SECRET)
    logins.add(TRACKER, "osmand", KEY)
    submit = hub.hub.pipeline.submit
    made = Phones(OwnTracksGateway(submit=submit, logins=logins, owns=logins.owns("owntracks")),
                  OsmAndGateway(submit=submit, logins=logins, owns=logins.owns("osmand")), logins, Pipe(), Clock(), [],
                  httpx.AsyncClient(), FastAPI())
    t0 = now_ms() // 1000 - 60
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(made.owntracks, made.osmand)),
                                 base_url="http://hub") as made.http:
        assert (await post_owntracks(made, {**BOOKLET_LOCATION, "tst": t0})).status_code == 200
        r = await made.http.get(f"/gateway/osmand?id={TRACKER}&lat=34.25&lon=117.18&timestamp={t0 + 10}&key={KEY}")
        assert r.status_code == 200
        transition = {**json.loads(BOOKLET_TRANSITION), "tst": t0 + 20, "wtst": t0 - 600}
        assert (await post_owntracks(made, transition)).status_code == 200
        assert (await post_owntracks(made, {"_type": "lwt", "tst": t0 - 30})).status_code == 200
    # Each 200 came after the commit of its cut (rows and any reject rows alike): all of it is there now.
    track = (await hub.api.get("/api/v1/units/PH1/track", params={"from": t0 * 1000 - 1, "to": t0 * 1000 + 30_000}))
    assert [(f["device_id"], f["ts"]) for f in track.json()["fixes"]] == [
        (PHONE, t0 * 1000), (TRACKER, (t0 + 10) * 1000), (PHONE, (t0 + 20) * 1000)]
    assert await hub.count("SELECT count(*) FROM device_events WHERE device_id = %s AND type = 'geofence'", PHONE) == 1
    assert hub.hub.live.devices[PHONE].state == "offline"
    assert await hub.count("SELECT count(*) FROM rejects WHERE device_id IN (%s, %s)", PHONE, TRACKER) == 0
    assert made.owntracks.counters["store_timeout"] == 0 and made.osmand.fixes == 1
