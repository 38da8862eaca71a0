"""The benchmark's publisher as a device with a login: its CONNECT bytes, and against a real Mosquitto with the
dynamic-security plugin and TLS (the broker the stack runs): accepted with its login over TLS, refused with a wrong
secret or without the CA, and what it publishes on another device's topic never reaches the hub's login."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from gmqtt import Client as MqttClient

from bench.ingest_security import compare
from bench.publisher import MqttProtocolError, connect, connect_devices, encode_connect, encode_topic
from devices.broker import BrokerAddress
from devices.topics import device_topic
from hub.domain.device_login import new_login, new_secret
from hub.errors import ServiceError
from hub.infra.embedded import BrokerSecurity, MosquittoBroker, dynsec_plugin
from hub.infra.tls import ensure_ca


def _plugin_present() -> bool:
    try:
        dynsec_plugin()
    except ServiceError:
        return False
    return shutil.which("mosquitto") is not None


needs_secure_mosquitto = pytest.mark.skipif(not _plugin_present(), reason="mosquitto with dynamic security missing")

HUB = "fieldhub-hub"
SECRETS = {"dev-a": new_secret(), "dev-b": new_secret()}
HUB_SECRET = new_secret()


# ------------------------------------------------------------------ CONNECT bytes
def test_connect_with_login_sets_both_flags_and_appends_username_then_password() -> None:
    packet = encode_connect("dev-1", username="dev-1", password="pw")
    body = b"\x00\x04MQTT\x04\xc2\x00\x00" + b"\x00\x05dev-1" + b"\x00\x05dev-1" + b"\x00\x02pw"
    assert packet == b"\x10" + bytes([len(body)]) + body


def test_connect_without_login_is_unchanged() -> None:
    assert encode_connect("c") == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x00\x00\x01c"
    assert encode_connect("c", username="u")[9] == 0x82  # username only


def test_connect_refuses_a_password_without_a_username() -> None:
    with pytest.raises(ValueError):
        encode_connect("c", password="secret")


def test_connect_encodes_a_long_utf8_secret_with_its_byte_length() -> None:
    secret = "é" * 200  # 400 bytes: a two-byte remaining length
    packet = encode_connect("d", username="d", password=secret)
    assert packet.endswith(encode_topic(secret))
    assert packet[1] & 0x80  # remaining length continues


# ------------------------------------------------------------------ the comparison
def _run(stored: int, broker: float, hub: float, generator: float) -> dict[str, object]:
    return {"config": {"rate": 10_000}, "ingest": {
        "stored": {"count": stored, "loss": 0, "rejects": 0}, "sustained_rate": 10_000,
        "cpu": {"seconds": {"broker": broker, "hub": hub, "generator": generator}}}}


def test_compare_splits_the_cost_into_tls_and_logins() -> None:
    runs = {"secure": _run(100_000, 9.0, 30.0, 6.0), "login": _run(100_000, 6.0, 30.0, 3.0),
            "anonymous": _run(50_000, 2.5, 15.0, 1.0)}
    result = compare(runs)
    assert result["stacks"]["secure"]["cpu_s_per_1000_fixes"] == {"broker": 0.09, "hub": 0.3, "generator": 0.06}
    assert result["secure_vs_anonymous"]["cpu_ratio"] == {"broker": 1.8, "hub": 1.0, "generator": 3.0}
    assert result["secure_vs_anonymous"]["extra_cpu_us_per_fix"] == {"broker": 40.0, "hub": 0.0, "generator": 40.0}
    assert result["cpu_us_per_fix_of"]["tls"] == {"broker": 30.0, "hub": 0.0, "generator": 30.0}
    assert result["cpu_us_per_fix_of"]["logins_and_acl"] == {"broker": 10.0, "hub": 0.0, "generator": 10.0}


# ------------------------------------------------------------------ a real secure broker
@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    if not _plugin_present():
        pytest.skip("mosquitto with dynamic security missing")
    workdir: Path = tmp_path_factory.mktemp("secure-broker")
    broker = MosquittoBroker(workdir / "mosquitto")
    broker.start(BrokerSecurity(hub=new_login(HUB, HUB_SECRET), admin=new_login("fieldhub-admin", new_secret()),
                                devices=[new_login(d, s) for d, s in SECRETS.items()], pki=ensure_ca(workdir / "ca")))
    yield broker
    broker.stop()


@pytest.fixture
async def hub_reader(secure_broker: MosquittoBroker) -> AsyncIterator[list[tuple[str, bytes]]]:
    """The hub's login on the loopback listener, reading every device topic."""
    received: list[tuple[str, bytes]] = []
    subscribed = asyncio.Event()
    client = MqttClient(HUB)
    client.set_auth_credentials(HUB, HUB_SECRET)

    def on_message(client: object, topic: str, payload: bytes, qos: int, properties: object) -> int:
        received.append((topic, payload))
        return 0

    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    await client.connect("127.0.0.1", secure_broker.port)
    client.subscribe("fieldhub/v1/dev/#", qos=1)
    await asyncio.wait_for(subscribed.wait(), 5)
    yield received
    await client.disconnect()


def _tls(broker: MosquittoBroker) -> tuple[str, int, ssl.SSLContext]:
    address = BrokerAddress.parse(broker.device_url())
    context = address.ssl_context()
    assert context is not None
    return address.host, address.port, context


@needs_secure_mosquitto
@pytest.mark.timeout(30)
async def test_a_device_connects_over_tls_with_its_login(secure_broker: MosquittoBroker) -> None:
    host, port, context = _tls(secure_broker)
    pub = await connect(host, port, "dev-a", username="dev-a", password=SECRETS["dev-a"], ssl=context)
    assert pub.connected.done() and pub.connected.exception() is None
    pub.disconnect()


@needs_secure_mosquitto
@pytest.mark.timeout(30)
@pytest.mark.parametrize(("client_id", "username", "secret"), [
    ("dev-a", "dev-a", "wrong-secret"),  # a wrong secret
    ("dev-a", "dev-c", "any-secret"),  # an unknown login
    ("dev-a", None, None),  # anonymous
])
async def test_the_broker_refuses_a_bad_login(secure_broker: MosquittoBroker, client_id: str, username: str | None,
                                             secret: str | None) -> None:
    host, port, context = _tls(secure_broker)
    with pytest.raises(MqttProtocolError):
        await connect(host, port, client_id, 5.0, username=username, password=secret, ssl=context)


@needs_secure_mosquitto
@pytest.mark.timeout(30)
async def test_another_login_under_a_devices_client_id_does_not_take_its_session(
        secure_broker: MosquittoBroker) -> None:
    """The broker takes the client id from the login: b calling itself "dev-a" is dev-b, and dev-a stays on."""
    host, port, context = _tls(secure_broker)
    victim = await connect(host, port, "dev-a", username="dev-a", password=SECRETS["dev-a"], ssl=context)
    intruder = await connect(host, port, "dev-a", username="dev-b", password=SECRETS["dev-b"], ssl=context)
    await asyncio.sleep(0.5)  # a takeover would close the victim's connection now
    assert not victim.closed.done()
    victim.disconnect()
    intruder.disconnect()


@needs_secure_mosquitto
@pytest.mark.timeout(30)
async def test_tls_without_the_ca_is_refused_by_the_device(secure_broker: MosquittoBroker) -> None:
    host, port, _ = _tls(secure_broker)
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect(host, port, "dev-a", 5.0, username="dev-a", password=SECRETS["dev-a"],
                      ssl=ssl.create_default_context())  # the system's trust store: the hub's CA is not in it


@needs_secure_mosquitto
@pytest.mark.timeout(30)
async def test_another_devices_topic_never_reaches_the_hub(secure_broker: MosquittoBroker,
                                                          hub_reader: list[tuple[str, bytes]]) -> None:
    """Mosquitto 2.0 acknowledges the forged PUBLISH (MQTT 3.1.1 has no refusal in a PUBACK), drops it and closes
    the connection: nothing after it is taken either."""
    (pub,) = await connect_devices(secure_broker.device_url(), ["dev-a"], SECRETS)
    own, other = device_topic("dev-a", "telemetry"), device_topic("dev-b", "telemetry")
    for topic, payload in ((own, b'{"own":1}'), (other, b'{"forged":1}'), (own, b'{"own":2}')):
        assert pub.publish(encode_topic(topic), payload, 1)
    pub.flush()
    await asyncio.wait_for(pub.closed, 5)
    await asyncio.sleep(0.3)  # anything the hub's login would still receive
    assert hub_reader == [(own, b'{"own":1}')]
    assert pub.acked <= 2
