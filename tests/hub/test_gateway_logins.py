"""Logins of gateway devices (issue 17): JT/T 808 terminals by phone number, OwnTracks and OsmAnd phones by device id:
the pure rules, the store against the real PostgreSQL (registration window, one live login per identifier and one
login kind per device, the NOTIFY a running hub follows), provisioning through the real hub's API and CLI, and an
OwnTracks phone's login in the real Mosquitto (its own OwnTracks topics only, also after an embedded broker's restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import string
import sys
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from devices.broker import BrokerAddress
from hub.access.provisioning import gateway_endpoints
from hub.config import Settings
from hub.domain import gateway_login
from hub.domain.device_login import StoredLogin, dynsec_config, new_login, new_secret, verify_secret
from hub.domain.gateway_login import GatewayEndpoints, device_settings, normalise_phone, terminal_id_problem
from hub.infra.broker import broker_logins, start_embedded_broker
from hub.storage import Database
from hub.storage.device_logins import DeviceLoginStore, LoginProblem
from hub.storage.gateway_logins import GatewayLogin, GatewayLoginStore
from hub.storage.sip_logins import SipLoginStore
from tests.conftest import RunningHub, SecureBroker, hub_env, wait_for
from tests.hub.test_device_identity import Probe
from tests.hub.test_provisioning import _admin

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# ---------------------------------------------------------------- pure rules


@given(st.text(alphabet=string.digits, min_size=1, max_size=20))
@example("000")
@example("013800138000")
def test_a_phone_number_is_its_digits_without_leading_zeros(text: str) -> None:
    assert normalise_phone(text) == str(int(text))  # as jt808.header.Header.phone gives it


@given(st.text(max_size=40))
@example("+8613800138000")
@example("138-0013-8000")
@example("\u0661\u0662\u0663")  # Arabic-Indic digits: str.isdigit() says yes, a terminal says no
def test_anything_else_is_refused_with_a_reason(text: str) -> None:
    if 1 <= len(text) <= 20 and all(c in string.digits for c in text):
        return  # the property above
    with pytest.raises(ValueError, match="phone number"):
        normalise_phone(text)


def test_terminal_ids_codes_and_identifiers() -> None:
    assert terminal_id_problem("T-0001") is None and terminal_id_problem("A" * 30) is None
    assert all(terminal_id_problem(bad) for bad in ("", "A" * 31, "T 1", "T\u00e9", "T_1"))
    codes = {gateway_login.new_auth_code() for _ in range(50)}
    assert len(codes) == 50 and all(len(c) == 16 and c.isascii() and c.isalnum() for c in codes)
    assert gateway_login.login_ident("jt808", "truck-1", "0013800138000", "T1") == "13800138000"
    assert gateway_login.login_ident("owntracks", "ph-1", None, None) == "ph-1"
    for protocol, phone, terminal in (("jt808", None, None), ("jt808", "12", "bad id"), ("osmand", "12", None),
                                      ("mqtt", None, None)):
        with pytest.raises(ValueError):
            gateway_login.login_ident(protocol, "d1", phone, terminal)


def test_what_each_device_is_told() -> None:
    where = GatewayEndpoints("10.0.0.5", 6808, "https://hub.example:8443/", owntracks=True, osmand=False)
    jt = device_settings("jt808", "truck-1", "138", secret=None, terminal_id="T1", registration_open=True, where=where)
    assert jt == {"protocol": "jt808", "enabled": True, "host": "10.0.0.5", "port": 6808, "transport": "tcp",
                  "phone": "138", "terminal_id": "T1", "registration_open": True}
    ot = device_settings("owntracks", "ph-1", "ph-1", secret="s", terminal_id=None, registration_open=False,
                         where=where, mqtt_url="mqtts://hub.example:8883")
    assert ot["mqtt"] == {"url": "mqtts://hub.example:8883", "username": "ph-1", "client_id": "ph-1",
                          "topic": "owntracks/ph-1/<any device name>"} and ot["user"] == "ph-1"
    assert ot["http"]["url"] == "https://hub.example:8443/gateway/owntracks"
    os_ = device_settings("osmand", "ph-2", "ph-2", secret="a+b/c", terminal_id=None, registration_open=False,
                          where=where)
    assert os_["server_url"] == "https://hub.example:8443/gateway/osmand?key=a%2Bb%2Fc" and not os_["enabled"]


def test_the_broker_grants_an_owntracks_phone_only_its_own_topics() -> None:
    phone = StoredLogin("ph-1", "salt", "ab" * 64, topics="owntracks")
    config = dynsec_config(new_login("hub", "x"), new_login("admin", "y"), [new_login("dev-1", "z"), phone])
    roles = {r["rolename"]: r["acls"] for r in config["roles"]}
    assert roles["fieldhub-device-ph-1"] == [
        {"acltype": "publishClientSend", "topic": "owntracks/ph-1/+", "allow": True},
        {"acltype": "publishClientSend", "topic": "owntracks/ph-1/+/+", "allow": True},
        {"acltype": "subscribePattern", "topic": "owntracks/ph-1/+/cmd", "allow": True}]
    assert all(a["topic"].startswith("fieldhub/v1/dev/dev-1/") for a in roles["fieldhub-device-dev-1"])
    hub = {(a["acltype"], a["topic"]) for a in roles["fieldhub-hub"]}
    assert {("subscribePattern", "owntracks/#"), ("publishClientSend", "owntracks/+/+/cmd")} <= hub


# ---------------------------------------------------------------- the store, against PostgreSQL


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with Database(database_url) as database:
        await database.upsert_unit({"unit_id": "U1", "name": "U1", "kind": "patrol", "devices": []})
        yield database


async def test_a_terminal_registers_once_until_rotated(db: Database) -> None:
    store = GatewayLoginStore(db)
    await store.add("truck-1", "U1", "vehicle", "jt808", "13800138000", secret=None, terminal_id="T-1")
    login = await store.by_ident("jt808", "13800138000")
    assert login == await store.by_device("truck-1") == GatewayLogin("truck-1", "U1", "jt808", "13800138000", None,
                                                                     "T-1", True)
    code = gateway_login.new_auth_code()
    assert await store.issue_code("truck-1", new_login("truck-1", code)) is True
    assert await store.issue_code("truck-1", new_login("truck-1", "taken-by-another")) is False  # window closed
    login = await store.by_device("truck-1")
    assert login is not None and not login.registration_open and login.secret is not None
    assert verify_secret(login.secret, code) and not verify_secret(login.secret, "taken-by-another")
    rotated = await store.rotate("truck-1", None)
    assert rotated.registration_open and rotated.secret is None
    # Two registrations at once: exactly one gets the code.
    wins = await asyncio.gather(*(store.issue_code("truck-1", new_login("truck-1", str(i))) for i in range(5)))
    assert sorted(wins) == [False] * 4 + [True]
    revoked = await store.revoke("truck-1")
    assert revoked.device_id == "truck-1" and await store.by_ident("jt808", "13800138000") is None
    assert await store.issue_code("truck-1", new_login("truck-1", "x")) is False
    with pytest.raises(LoginProblem, match="no live gateway login"):
        await store.revoke("truck-1")
    assert await store.revoked("jt808") == ["truck-1"]
    # The phone number is free again, for this device or another.
    await store.add("truck-2", "U1", None, "jt808", "13800138000", secret=None)
    assert [g.device_id for g in await store.live("jt808")] == ["truck-2"]


async def test_one_live_login_per_identifier_and_one_kind_per_device(db: Database) -> None:
    gateways, mqtt, sip = GatewayLoginStore(db), DeviceLoginStore(db), SipLoginStore(db)
    await gateways.add("truck-1", "U1", None, "jt808", "13800138000", secret=None)
    for attempt in (gateways.add("truck-9", "U1", None, "jt808", "13800138000", secret=None),
                    gateways.add("truck-1", "U1", None, "osmand", "truck-1", secret=new_login("truck-1", "s")),
                    mqtt.add("truck-1", "U1", None, new_login("truck-1", "s")),
                    sip.add("truck-1", "U1", None, "3402000000", "0" * 32)):
        with pytest.raises(LoginProblem) as refused:
            await attempt
        assert refused.value.code == "exists", refused.value
    raced = await asyncio.gather(*(gateways.add(f"t-{i}", "U1", None, "jt808", "777", secret=None)
                                   for i in range(4)), return_exceptions=True)  # the same number, at once
    assert sorted(getattr(r, "code", "added") for r in raced) == ["added", "exists", "exists", "exists"], raced
    await mqtt.add("radio-1", "U1", "radio", new_login("radio-1", "s"))
    await sip.add("cam-1", "U1", "bodycam", "3402000000", "0" * 32)
    for device_id in ("radio-1", "cam-1"):
        with pytest.raises(LoginProblem, match="already has") as refused:
            await gateways.add(device_id, "U1", None, "owntracks", device_id, secret=new_login(device_id, "s"))
        assert refused.value.code == "exists"
    with pytest.raises(LoginProblem) as refused:
        await gateways.add("ph-1", "NOPE", None, "owntracks", "ph-1", secret=new_login("ph-1", "s"))
    assert refused.value.code == "unknown_unit"
    for bad in (gateways.add("ph-1", "U1", None, "owntracks", "ph-1", secret=None),
                gateways.add("ph-1", "U1", None, "owntracks", "someone-else", secret=new_login("ph-1", "s")),
                gateways.add("t-2", "U1", None, "jt808", "0138", secret=None)):  # not normalised
        with pytest.raises(LoginProblem) as refused:
            await bad
        assert refused.value.code == "invalid"
    # A phone's secret rotates; a JT/T 808 rotation is not a phone's (and vice versa).
    await gateways.add("ph-1", "U1", "phone", "owntracks", "ph-1", secret=new_login("ph-1", "old"))
    login = await gateways.rotate("ph-1", new_login("ph-1", "new"))
    assert login.secret is not None and verify_secret(login.secret, "new") and not verify_secret(login.secret, "old")
    for wrong_kind in (gateways.rotate("ph-1", None), gateways.rotate("truck-1", new_login("truck-1", "x"))):
        with pytest.raises(LoginProblem):
            await wrong_kind
    rows = {r["device_id"]: (r["protocol"], r["ident"], r["login"]) for r in await mqtt.list()}
    assert rows["truck-1"] == ("jt808", "13800138000", "active") and rows["ph-1"] == ("owntracks", "ph-1", "active")
    assert rows["radio-1"] == ("mqtt", "radio-1", "active") and rows["cam-1"] == ("gb28181", "cam-1", "active")


async def test_a_change_is_notified_to_running_hubs(db: Database, database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("LISTEN fieldhub_devices")
        store = GatewayLoginStore(db)
        await store.add("truck-1", "U1", None, "jt808", "42", secret=None)
        await store.rotate("truck-1", None)
        heard: list[str] = []
        async for note in conn.notifies(timeout=5, stop_after=2):
            heard.append(note.payload)
    assert heard == ["truck-1", "truck-1"]


# ---------------------------------------------------------------- provisioning through a running hub


async def test_rest_provisions_a_terminal_by_its_phone_number(hub: RunningHub) -> None:
    await hub.put_unit("U1", [])
    revoked: list[str] = []
    provisioner = hub.hub.provisioner
    assert provisioner is not None

    async def on_revoked(device_id: str) -> None:
        revoked.append(device_id)
    provisioner.on_revoked = on_revoked
    async with await _admin(hub) as admin:
        body = {"device_id": "truck-1", "unit_id": "U1", "protocol": "jt808", "phone": "013800138000",
                "terminal_id": "T-0001"}
        r = await admin.post("/api/v1/devices", json=body)
        assert r.status_code == 201, r.text
        creds = r.json()
        assert creds["protocol"] == "jt808" and creds["password"] is None and creds["mqtt_url"] is None
        gw = creds["gateway"]
        assert (gw["phone"], gw["terminal_id"], gw["registration_open"], gw["port"]) == \
            ("13800138000", "T-0001", True, 6808)
        assert hub.hub.live.devices["truck-1"].unit_id == "U1"
        # The same number for another terminal, a bad number, a phone number for another protocol: refused.
        r = await admin.post("/api/v1/devices", json=dict(body, device_id="truck-2", terminal_id=None))
        assert r.status_code == 409 and "13800138000" in r.json()["error"]["message"]
        for bad in ({"phone": "138 0013 8000"}, {"phone": ""}, {"phone": "1" * 21}, {"phone": None},
                    {"terminal_id": "T 1"}, {"protocol": "osmand"}, {"protocol": "mqtt"}):
            r = await admin.post("/api/v1/devices", json=dict(body, device_id="truck-3", **bad))
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid", (bad, r.text)
        listed = {d["device_id"]: d for d in (await admin.get("/api/v1/devices")).json()["devices"]}
        assert (listed["truck-1"]["protocol"], listed["truck-1"]["ident"]) == ("jt808", "13800138000")
        # The terminal registers (the gateway's part), then a rotation reopens its window.
        store = provisioner.gateway_store
        assert await store.issue_code("truck-1", new_login("truck-1", "code")) is True
        r = await admin.post("/api/v1/devices/truck-1/rotate")
        assert r.status_code == 200 and r.json()["gateway"]["registration_open"] is True, r.text
        login = await store.by_device("truck-1")
        assert login is not None and login.secret is None and login.registration_open
        assert (await admin.delete("/api/v1/devices/truck-1")).status_code == 200
        assert revoked == ["truck-1"] and await store.by_ident("jt808", "13800138000") is None
        assert (await admin.delete("/api/v1/devices/truck-1")).status_code == 404
        audit = [(a["action"], a["detail"].get("protocol"), a["detail"].get("ident"))
                 for a in (await admin.get("/api/v1/audit")).json()["entries"] if a["target"] == "truck-1"]
        assert audit == [("device.revoke", "jt808", "13800138000"), ("device.rotate", "jt808", "13800138000"),
                         ("device.add", "jt808", "13800138000")]


async def test_rest_provisions_a_traccar_client_phone(hub: RunningHub) -> None:
    await hub.put_unit("U1", [])
    assert hub.hub.provisioner is not None  # as the composition root sets it (see gateway_endpoints)
    hub.hub.provisioner.gateways = gateway_endpoints(hub.hub.settings)
    async with await _admin(hub) as admin:
        r = await admin.post("/api/v1/devices", json={"device_id": "ph-2", "unit_id": "U1", "protocol": "osmand"})
        assert r.status_code == 201 and r.headers["cache-control"] == "no-store", r.text
        creds = r.json()
        secret = creds["password"]
        assert len(secret) >= 40 and creds["gateway"]["identifier"] == "ph-2"
        assert creds["gateway"]["server_url"] == f"{hub.base_url}/gateway/osmand?key={secret}"
        login = await hub.hub.provisioner.gateway_store.by_device("ph-2")
        assert login is not None and login.secret is not None and verify_secret(login.secret, secret)
        r = await admin.post("/api/v1/devices/ph-2/rotate")
        assert r.status_code == 200 and r.json()["password"] != secret
        assert secret not in (await admin.get("/api/v1/devices")).text
        async with hub.hub.db.connection() as conn:
            kinds = await (await conn.execute("SELECT kind FROM devices WHERE device_id = 'ph-2'")).fetchone()
        assert kinds == ("phone",)


async def test_hostile_gateway_bodies_never_500(hub: RunningHub) -> None:
    bodies: list[dict[str, object]] = []

    # Hypothesis drives a sync function; draw the examples first, then send them.
    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.fixed_dictionaries({}, optional={
        "protocol": st.sampled_from(["jt808", "owntracks", "osmand", "mqtt", "gb28181", "JT808", ""]),
        "phone": st.one_of(st.text(max_size=30), st.integers(), st.none(), st.text(string.digits, max_size=22)),
        "terminal_id": st.one_of(st.text(max_size=35), st.integers(), st.none()),
        "password": st.one_of(st.text(min_size=8, max_size=12), st.none())}))
    def collect(body: dict[str, object]) -> None:
        bodies.append(body)

    collect()
    await hub.put_unit("U1", [])
    async with await _admin(hub) as admin:
        for i, body in enumerate(bodies):
            r = await admin.post("/api/v1/devices", json=dict(body, device_id=f"h-{i}", unit_id="U1"))
            assert r.status_code in (201, 409, 422), (body, r.status_code, r.text)
            assert r.status_code == 201 or r.json()["error"]["message"], r.text
        ok = await admin.post("/api/v1/devices", json={"device_id": "good", "unit_id": "U1", "protocol": "jt808",
                                                        "phone": "12345"})
        assert ok.status_code in (201, 409), ok.text


async def test_cli_adds_lists_and_rotates_a_terminal(hub: RunningHub) -> None:
    await hub.put_unit("U2", [])

    async def cli(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "fieldhub", "device", *args,
                                                    env=hub_env(hub.hub.settings), stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        return proc.returncode or 0, out.decode(), err.decode()

    code, out, err = await cli("add", "truck-7", "--unit", "U2", "--protocol", "jt808", "--phone", "0064123")
    assert code == 0 and "phone number: 64123" in out and "registration: open" in out, err
    code, out, err = await cli("add", "truck-8", "--unit", "U2", "--protocol", "jt808", "--phone", "64123")
    assert code == 2 and "64123" in err and "Traceback" not in err
    code, out, err = await cli("add", "truck-8", "--unit", "U2", "--protocol", "jt808", "--phone", "+64")
    assert code == 2 and "digits" in err and "Traceback" not in err
    code, out, err = await cli("add", "ph-9", "--unit", "U2", "--protocol", "osmand", "--json")
    assert code == 0 and json.loads(out)["gateway"]["server_url"].endswith(json.loads(out)["password"]), err
    code, out, _ = await cli("list")
    line = next(x for x in out.splitlines() if x.startswith("truck-7"))
    assert "jt808" in line and "64123" in line and "vehicle" in line
    await wait_for(lambda: "truck-7" in hub.hub.live.devices, timeout=5)  # the hub heard the CLI's change
    code, out, err = await cli("rotate", "truck-7")
    assert code == 0 and "registration: open" in out, err


# ---------------------------------------------------------------- an OwnTracks phone in the real broker


async def test_an_owntracks_phone_publishes_its_own_topics_only(hub: RunningHub, broker: SecureBroker) -> None:
    await hub.put_unit("U1", [])
    async with await _admin(hub) as admin:
        r = await admin.post("/api/v1/devices", json={"device_id": "ph-1", "unit_id": "U1", "protocol": "owntracks"})
        assert r.status_code == 201, r.text
        creds = r.json()
    assert creds["gateway"]["mqtt"]["client_id"] == "ph-1" and creds["mqtt_url"] == hub.hub.settings.device_mqtt_url
    url = broker.device_url("ph-1", creds["password"])
    watcher = await Probe("watch-" + uuid.uuid4().hex[:6]).connect(broker.url)  # the hub's rights
    assert await watcher.subscribe("owntracks/#") == [1]
    location = json.dumps({"_type": "location", "lat": 34.26, "lon": 117.18, "tst": 1795000000}).encode()
    try:
        # Its own command topic only: the app's "friends" subscription (everyone's positions) is refused.
        for topic in ("owntracks/+/+", "owntracks/ph-2/pixel/cmd", "fieldhub/v1/#"):
            spy = await Probe("ph-1").connect(url)
            granted = await spy.subscribe(topic)
            assert granted and all(code >= 0x80 for code in granted), (topic, granted)
            await spy.close()
        phone = await Probe("ph-1").connect(url)
        assert await phone.subscribe("owntracks/ph-1/pixel/cmd") == [1]
        phone.client.publish("owntracks/ph-1/pixel", location, qos=1)
        phone.client.publish("owntracks/ph-1/pixel/event", b'{"_type":"transition"}', qos=1)
        await wait_for(lambda: len(watcher.received) >= 2, timeout=5)
        # The hub may command it (reportLocation) on its cmd topic.
        watcher.client.publish("owntracks/ph-1/pixel/cmd", b'{"_type":"cmd","action":"reportLocation"}', qos=1)
        await wait_for(lambda: any(t == "owntracks/ph-1/pixel/cmd" for t, _ in phone.received), timeout=5)
        await phone.close()
        # Another phone's topic, the contract's device topics, a topic without a device name: refused (Mosquitto
        # 2.0 answers a publish its ACL denies by closing the connection), never delivered.
        for topic in ("owntracks/ph-2/pixel", "fieldhub/v1/dev/ph-1/telemetry", "owntracks/ph-1",
                      "owntracks/ph-1/pixel/cmd/x"):
            forger = await Probe("ph-1").connect(url)
            forger.client.publish(topic, location, qos=1)
            await wait_for(lambda f=forger: not f.client.is_connected, timeout=5)
        await asyncio.sleep(0.5)
        assert sorted(t for t, _ in watcher.received) == ["owntracks/ph-1/pixel", "owntracks/ph-1/pixel/cmd",
                                                          "owntracks/ph-1/pixel/event"]
    finally:
        await watcher.close()
    with pytest.raises(Exception):  # noqa: B017 - a wrong secret: gmqtt raises its own connect error types
        await Probe("ph-1").connect(broker.device_url("ph-1", "wrong"))
    # Revoked: refused from then on.
    async with await _admin(hub) as admin:
        assert (await admin.delete("/api/v1/devices/ph-1")).status_code == 200
    with pytest.raises(Exception):  # noqa: B017
        await Probe("ph-1").connect(url)


async def test_owntracks_logins_survive_a_restart_of_the_embedded_broker(settings: Settings, db: Database) -> None:
    secret = new_secret()
    await GatewayLoginStore(db).add("ph-5", "U1", "phone", "owntracks", "ph-5", secret=new_login("ph-5", secret))
    await GatewayLoginStore(db).add("ph-6", "U1", "phone", "osmand", "ph-6", secret=new_login("ph-6", "s"))
    logins = await broker_logins(DeviceLoginStore(db))
    assert [(x.username, x.topics) for x in logins] == [("ph-5", "owntracks")]  # an OsmAnd phone has no broker login
    local = settings.model_copy(update={"mqtt_url": None, "broker_tls_port": 0, "broker_mtls_port": 0})
    async with contextlib.AsyncExitStack() as stack:
        links = await start_embedded_broker(local, DeviceLoginStore(db), stack)
        assert links.device_url is not None
        url = BrokerAddress.parse(links.device_url).with_login("ph-5", secret).url()
        phone = await Probe("ph-5").connect(url)
        watcher = await Probe(local.mqtt_client_id).connect(links.hub_url)
        try:
            assert await watcher.subscribe("owntracks/#") == [1]
            phone.client.publish("owntracks/ph-5/pixel", b'{"_type":"location"}', qos=1)
            phone.client.publish("owntracks/ph-6/pixel", b'{"_type":"location"}', qos=1)
            await wait_for(lambda: watcher.received, timeout=5)
            await asyncio.sleep(0.3)
            assert [t for t, _ in watcher.received] == ["owntracks/ph-5/pixel"]
        finally:
            await phone.close()
            await watcher.close()


async def test_reconcile_removes_what_every_table_says_is_revoked(hub: RunningHub, broker: SecureBroker) -> None:
    await hub.put_unit("U1", [])
    provisioner = hub.hub.provisioner
    assert provisioner is not None
    phone = await provisioner.add("ph-r", "U1", None, actor="tests", protocol="owntracks")
    await provisioner.add("radio-r", "U1", None, actor="tests")
    await provisioner.store.revoke("radio-r")  # revoked while the broker was away: only the table knows
    radio = await provisioner.add("radio-r", "U1", None, actor="tests", protocol="owntracks")  # live again, a phone
    await provisioner.gateway_store.revoke("ph-r")  # as above
    assert await provisioner.reconcile() == 1
    with pytest.raises(Exception):  # noqa: B017
        await Probe("ph-r").connect(broker.device_url("ph-r", phone.password))
    kept = await Probe("radio-r").connect(broker.device_url("radio-r", radio.password))
    await kept.close()
