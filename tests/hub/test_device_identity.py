"""Only a device may speak for itself, and nobody else may listen (issue 13): the attacks of the issue, each refused
by the real Mosquitto with its dynamic-security plugin, as the hub configures it."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from typing import Any

import pytest
from gmqtt import Client as MqttClient
from gmqtt.mqtt.constants import MQTTv50
from gmqtt.mqtt.handler import MQTTConnectError

from devices import topics
from devices.broker import BrokerAddress
from devices.client import DeviceClient
from devices.payloads import Fix
from tests.conftest import RunningHub, SecureBroker, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Probe:
    """A bare MQTT 5 client that records what it receives and the broker's answers to its subscriptions."""

    def __init__(self, client_id: str) -> None:
        self.client = MqttClient(client_id)
        self.received: list[tuple[str, bytes]] = []
        self.suback: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        self.received.append((topic, payload))
        return 0

    def _on_subscribe(self, client: Any, mid: int, qos: Any, properties: Any) -> None:
        if not self.suback.done():
            self.suback.set_result(list(qos))

    async def connect(self, url: str) -> Probe:
        address = BrokerAddress.parse(url)
        if address.username:
            self.client.set_auth_credentials(address.username, address.password)
        self.client.set_config({"reconnect_retries": 0})
        await asyncio.wait_for(self.client.connect(address.host, address.port, ssl=address.ssl_context() or False,
                                                   version=MQTTv50, keepalive=30), 10)
        return self

    async def subscribe(self, topic: str) -> list[int]:
        self.client.subscribe(topic, qos=1)
        return await asyncio.wait_for(self.suback, 5)

    async def close(self) -> None:
        await self.client.disconnect()


def _fix(lat: float = 34.26) -> bytes:
    return json.dumps({"ts": int(time.time() * 1000), "lat": lat, "lon": 117.18}).encode()


async def _two_devices(hub: RunningHub) -> tuple[str, str]:
    await hub.put_unit("VICTIM", ["victim-cam"])
    await hub.put_unit("OTHER", ["attacker-cam"])
    return await hub.device_url("victim-cam"), await hub.device_url("attacker-cam")


async def test_anonymous_and_wrong_secret_are_refused(hub: RunningHub, broker: SecureBroker) -> None:
    with pytest.raises(MQTTConnectError):
        await Probe("anon-" + uuid.uuid4().hex[:6]).connect(broker.anonymous_url)
    victim_url, _ = await _two_devices(hub)
    wrong = BrokerAddress.parse(victim_url).with_login("victim-cam", "not-the-secret").url()
    with pytest.raises(MQTTConnectError):
        await Probe("victim-cam").connect(wrong)
    # The real login works (so the refusals above are about the login, not the set-up).
    ok = await Probe("victim-cam").connect(victim_url)
    await ok.close()


async def test_a_device_cannot_speak_for_another(hub: RunningHub, broker: SecureBroker) -> None:
    _victim_url, attacker_url = await _two_devices(hub)
    watcher = await Probe("watch-" + uuid.uuid4().hex[:6]).connect(broker.url)  # sees all a device really publishes
    await watcher.subscribe("fieldhub/v1/dev/#")
    now = int(time.time() * 1000)
    forged = [(topics.device_topic("victim-cam", "telemetry"), _fix(35.0), False),
              (topics.device_topic("victim-cam", "status"), json.dumps({"ts": now, "state": "offline"}).encode(), True),
              (topics.device_topic("victim-cam", "event"), json.dumps(
                  {"ts": now, "type": "sos", "lat": 35.0, "lon": 117.0}).encode(), False),
              (topics.device_topic("victim-cam", "cmd"), json.dumps(
                  {"cmd_id": "x", "ts": now, "type": "ping"}).encode(), False)]
    for topic, payload, retain in forged:
        attacker = await Probe("attacker-cam").connect(attacker_url)
        attacker.client.publish(topic, payload, qos=1, retain=retain)
        # Mosquitto 2.0 answers a publish its ACL denies by closing the connection.
        await wait_for(lambda a=attacker: not a.client.is_connected, timeout=5)
    # Its own telemetry goes through: the refusals are the ACL's, not a broken login.
    attacker = await Probe("attacker-cam").connect(attacker_url)
    attacker.client.publish(topics.device_topic("attacker-cam", "telemetry"), _fix(34.3), qos=1)
    await wait_for(lambda: any(t.endswith("attacker-cam/telemetry") for t, _ in watcher.received), timeout=10)
    await asyncio.sleep(0.5)
    assert [t for t, _ in watcher.received if "victim-cam" in t] == []
    assert await hub.count("SELECT count(*) FROM fixes WHERE device_id = 'victim-cam'") == 0
    assert await hub.count("SELECT count(*) FROM incidents") == 0
    assert hub.hub.live.devices["victim-cam"].state != "offline"
    await attacker.close()
    await watcher.close()


async def test_a_device_cannot_listen_to_another_or_to_everything(hub: RunningHub) -> None:
    victim_url, attacker_url = await _two_devices(hub)
    async with DeviceClient("victim-cam", victim_url, unit_id="VICTIM") as victim:
        for topic in (topics.device_topic("victim-cam", "cmd"), "fieldhub/v1/#", "#"):
            spy = await Probe("attacker-cam").connect(attacker_url)
            granted = await spy.subscribe(topic)
            assert granted and all(code >= 0x80 for code in granted), (topic, granted)  # refused by the broker
            await spy.close()
        spy = await Probe("attacker-cam").connect(attacker_url)
        await spy.subscribe("fieldhub/v1/dev/victim-cam/cmd")
        r = await hub.api.post("/api/v1/incidents", json={"category": "theft", "priority": 3, "lat": 34.26,
                                                          "lon": 117.18, "address": "secret address"})
        assert r.status_code == 201, r.text
        r = await hub.api.post(f"/api/v1/incidents/{r.json()['id']}/dispatch", json={"unit_ids": ["VICTIM"]})
        assert r.status_code == 200, r.text
        await wait_for(lambda: any(c.type == "dispatch" for c in victim.commands), timeout=10)  # the victim got it
        await asyncio.sleep(0.5)
        assert spy.received == []  # ... and the spy did not
        await spy.close()


async def test_a_device_may_retain_only_its_status(hub: RunningHub, broker: SecureBroker) -> None:
    _, attacker_url = await _two_devices(hub)
    attacker = await Probe("attacker-cam").connect(attacker_url)
    attacker.client.publish(topics.device_topic("attacker-cam", "telemetry"), _fix(), qos=1, retain=True)
    attacker.client.publish(topics.device_topic("attacker-cam", "status"), json.dumps(
        {"ts": int(time.time() * 1000), "state": "online"}).encode(), qos=1, retain=True)
    await wait_for(lambda: hub.count("SELECT count(*) FROM rejects WHERE reason = 'retained'"), timeout=10)
    await asyncio.sleep(0.5)
    late = await Probe("late-" + uuid.uuid4().hex[:6]).connect(broker.url)  # a new subscriber gets retained messages
    await late.subscribe("fieldhub/v1/dev/attacker-cam/#")
    await asyncio.sleep(1.0)
    assert [t for t, p in late.received if p] == [topics.device_topic("attacker-cam", "status")]
    await late.close()
    await attacker.close()


async def test_a_device_cannot_take_another_client_id(hub: RunningHub, broker: SecureBroker) -> None:
    victim_url, attacker_url = await _two_devices(hub)
    attacker = BrokerAddress.parse(attacker_url)
    async with DeviceClient("victim-cam", victim_url, unit_id="VICTIM") as victim:
        # On the device listener the broker replaces the client id asked for with the login's own: the attacker
        # gets a session as itself, and the victim's and the hub's sessions stay where they are.
        for stolen in ("victim-cam", hub.hub.settings.mqtt_client_id):
            impostor = await Probe(stolen).connect(attacker_url)
            await asyncio.sleep(1.0)
            assert victim.connected and hub.hub.bridge.connected.is_set()  # type: ignore[union-attr]
            await impostor.close()
        # Where the id is the client's to choose (the loopback listener), the plugin's pin refuses it.
        loopback = BrokerAddress.parse(broker.url).with_login(attacker.username, attacker.password)
        for stolen in ("victim-cam", hub.hub.settings.mqtt_client_id):
            with pytest.raises(MQTTConnectError):
                await Probe(stolen).connect(loopback.url())
        assert victim.connected


async def test_a_revoked_device_is_cut_off_within_seconds(hub: RunningHub) -> None:
    url, _ = await _two_devices(hub)
    async with DeviceClient("victim-cam", url, unit_id="VICTIM", reconnect_delay=0.2) as dev:
        assert dev.connected
        admin = await hub.hub.create_token("admin", "revoker")
        t0 = time.monotonic()
        r = await hub.api.delete("/api/v1/devices/victim-cam", headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 200, r.text
        await wait_for(lambda: not dev.connected, timeout=5)
        cut_after = time.monotonic() - t0
        await asyncio.sleep(1.0)
        assert not dev.connected  # its reconnects are refused
    assert cut_after < 5
    with pytest.raises(MQTTConnectError):
        await Probe("victim-cam").connect(url)
    r = await hub.api.get("/api/v1/devices", headers={"Authorization": f"Bearer {admin}"})
    assert {d["device_id"]: d["login"] for d in r.json()["devices"]}["victim-cam"] == "revoked"
    assert "password" not in r.text and "secret" not in r.text


async def test_tls_needs_the_hubs_ca(hub: RunningHub) -> None:
    url, _ = await _two_devices(hub)
    address = BrokerAddress.parse(url)
    assert address.tls and address.cafile
    ok = await Probe("victim-cam").connect(url)  # verified against the generated CA
    await ok.close()
    # Without the CA (the system's trust store) the broker's certificate is not trusted.
    untrusted = BrokerAddress(address.host, address.port, address.username, address.password, tls=True)
    with pytest.raises(ssl.SSLCertVerificationError):
        await Probe("victim-cam").connect(untrusted.url())
    # Plaintext to the TLS listener: no MQTT session.
    plain = BrokerAddress(address.host, address.port, address.username, address.password)
    with pytest.raises((MQTTConnectError, OSError, TimeoutError, asyncio.TimeoutError)):
        await Probe("victim-cam").connect(plain.url())


async def test_device_fixes_go_through_over_tls(hub: RunningHub) -> None:
    url, _ = await _two_devices(hub)
    async with DeviceClient("victim-cam", url, unit_id="VICTIM") as dev:
        t0 = int(time.time() * 1000) - 10_000
        for i in range(5):
            dev.send_fix(Fix(t0 + i * 1000, 34.26, 117.18))
        await wait_for(lambda: hub.count("SELECT count(*) FROM fixes WHERE device_id = 'victim-cam'"), timeout=10)
