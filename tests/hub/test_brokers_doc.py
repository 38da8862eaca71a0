"""docs/brokers.md, run as written: its Mosquitto configuration and `mosquitto_ctrl` commands make a real broker, a hub
runs against it with the logins the doc gives it, provisions a device, and the broker enforces what the doc says.
The doc's EMQX queries and hash parameters are run against the real views, and must be the ones the provisioning
tests use, so the doc and the tests cannot drift apart."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from gmqtt import Client as MqttClient
from gmqtt.mqtt.constants import MQTTv50
from gmqtt.mqtt.handler import MQTTConnectError

from devices import topics
from devices.broker import BrokerAddress
from devices.client import DeviceClient
from devices.payloads import Fix
from hub.config import Settings
from hub.domain.device_login import new_secret
from hub.infra.embedded import PLUGIN_PATHS, free_port, wait_port
from hub.infra.tls import ensure_ca, issue_client_cert, issue_server_cert
from tests.conftest import ADMIN_TOKEN, TOKEN, running_hub, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "brokers.md"
PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Z_]+)\}")  # {PORT}, not the shell's ${VAR}
PLUGIN = next((p for p in PLUGIN_PATHS if Path(p).exists()), None)

needs_mosquitto = pytest.mark.skipif(
    not (shutil.which("mosquitto") and shutil.which("mosquitto_ctrl") and PLUGIN),
    reason="needs Mosquitto 2.0 with its dynamic-security plugin and mosquitto_ctrl")
# The doc's `chown mosquitto:` is what a real installation needs; it runs only as root.
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the doc's commands are an administrator's (chown)")


def block(info: str) -> str:
    """The one fenced block of the doc whose info string is ``info``."""
    found = re.findall(r"^```" + re.escape(info) + r"\n(.*?)^```", DOC.read_text(), re.M | re.S)
    assert len(found) == 1, f"docs/brokers.md has {len(found)} blocks ```{info}"
    return str(found[0])


def fill(text: str, values: dict[str, str]) -> str:
    unknown = set(PLACEHOLDER.findall(text)) - set(values)
    assert not unknown, f"placeholders the test does not know: {sorted(unknown)}"
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


@dataclass
class External:
    """A broker set up from the doc, and the two logins the doc creates."""

    values: dict[str, str]
    admin_password: str
    hub_password: str
    env: dict[str, str]

    def loopback(self, username: str, password: str) -> str:
        return BrokerAddress("127.0.0.1", int(self.values["PORT"]), username, password).url()

    def sh(self, script: str) -> str:
        """Run the doc's shell block with bash -eu; the plugin's refusals (exit status 0) fail it too."""
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", fill(script, self.values)], env=self.env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "Error" not in done.stdout + done.stderr, done.stdout + done.stderr
        return done.stdout


@pytest.fixture
def external(tmp_path: Path) -> Iterator[External]:
    pki = ensure_ca(tmp_path / "ca")
    cert, key = issue_server_cert(pki, tmp_path / "tls", "broker", ["127.0.0.1", "localhost"])
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    values = {"PLUGIN": str(PLUGIN), "DIR": str(broker_dir), "PORT": str(free_port()), "TLS_PORT": str(free_port()),
              "MTLS_PORT": str(free_port()), "CERT": str(cert), "KEY": str(key), "CA": str(pki.cert_path)}
    ext = External(values, new_secret(), new_secret(), {})
    # mosquitto_ctrl's options file goes to a private XDG_CONFIG_HOME, never the real user's.
    ext.env = dict(os.environ, ADMIN_PASSWORD=ext.admin_password, HUB_PASSWORD=ext.hub_password,
                   XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    ext.sh(block("sh mosquitto-init"))
    conf = fill(block("conf mosquitto-external"), values)
    # Test-only lines: a log to read, and (as root) no drop to the mosquitto user, who cannot reach pytest's private
    # temporary directory (hub/infra/embedded.py does the same).
    conf += f"\nlog_dest file {broker_dir}/mosquitto.log\n" + ("user root\n" if os.geteuid() == 0 else "")
    (tmp_path / "mosquitto.conf").write_text(conf)
    binary = shutil.which("mosquitto")
    assert binary is not None
    proc = subprocess.Popen([binary, "-c", str(tmp_path / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        for port in ("PORT", "TLS_PORT", "MTLS_PORT"):
            wait_port(int(values[port]), process=proc)
        yield ext
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


def _fix(ts: int, lat: float) -> bytes:
    return json.dumps({"ts": ts, "lat": lat, "lon": 117.187}).encode()


class Probe:
    """A bare MQTT 5 client, to do what DeviceClient never would."""

    def __init__(self, client_id: str) -> None:
        self.client = MqttClient(client_id)
        self.client.set_config({"reconnect_retries": 0})

    async def connect(self, url: str) -> Probe:
        address = BrokerAddress.parse(url)
        if address.username:
            self.client.set_auth_credentials(address.username, address.password)
        await asyncio.wait_for(self.client.connect(address.host, address.port, ssl=address.ssl_context() or False,
                                                   version=MQTTv50, keepalive=30), 10)
        return self

    async def close(self) -> None:
        if self.client.is_connected:
            await self.client.disconnect()


@needs_mosquitto
@needs_root
async def test_the_documented_mosquitto_runs_a_hub_and_enforces_the_device_acl(
        external: External, database_url: str, tmp_path: Path) -> None:
    out = external.sh(block("sh mosquitto-ctrl"))
    # What the doc's last three commands show: the hub's login pinned and its role; the administrator without `#`.
    assert "Clientid: fieldhub-hub" in out and re.search(r"Roles:\s+fieldhub-hub", out), out
    hub_role = out[out.index("Rolename: fieldhub-hub"):out.index("Rolename: admin")]
    for acl in ("publishClientSend", "publishClientReceive", "subscribePattern", "unsubscribePattern"):
        assert re.search(rf"{acl}\s*: allow : fieldhub/# ", hub_role), hub_role
    assert ": #" not in out[out.index("Rolename: admin"):], out

    v = external.values
    settings = Settings(
        mqtt_url=external.loopback("fieldhub-hub", external.hub_password),
        mqtt_admin_url=external.loopback("fieldhub-admin", external.admin_password),
        device_mqtt_url=f"mqtts://127.0.0.1:{v['TLS_PORT']}?cafile={v['CA']}", database_url=database_url,
        data_dir=tmp_path / "hub", port=free_port(), bootstrap_token=TOKEN, bootstrap_admin_token=ADMIN_TOKEN)
    assert settings.mqtt_client_id == "fieldhub-hub"  # the default, which the doc's login is pinned to
    async with running_hub(settings) as hub:
        bridge = hub.hub.bridge
        assert bridge is not None and bridge.connected.is_set()
        await hub.put_unit("U1", [])
        url = await hub.device_url("u1-cam", "U1", "bodycam")  # provisioned through the doc's administrator
        address = BrokerAddress.parse(url)
        assert address.tls and address.port == int(v["TLS_PORT"]) and address.cafile == v["CA"]
        ts = int(time.time() * 1000)

        async def stored() -> int:
            return await hub.count("SELECT count(*) FROM fixes WHERE device_id = 'u1-cam'")

        async with DeviceClient("u1-cam", url, unit_id="U1") as dev:
            dev.send_fix(Fix(ts=ts, lat=34.261, lon=117.186))
            await wait_for(stored, timeout=10)

        # A wrong topic: refused by the broker, and with the doc's max_queued_messages 0 the connection goes too.
        await hub.put_unit("U2", [])
        await hub.device_url("u2-cam", "U2")
        spy = await Probe("u1-cam").connect(url)
        spy.client.publish(topics.device_topic("u2-cam", "telemetry"), _fix(ts + 1, 35.0), qos=1)
        await wait_for(lambda: not spy.client.is_connected, timeout=5)
        await asyncio.sleep(0.5)
        assert await hub.count("SELECT count(*) FROM fixes WHERE device_id = 'u2-cam'") == 0

        # Nobody takes over the hub's session: a device asking for its client id gets its own (both listeners),
        # anonymous and wrong-secret logins are refused.
        connects = bridge.connects
        cert, key = issue_client_cert(ensure_ca(tmp_path / "ca"), tmp_path / "clients", "u1-cam")
        mtls = BrokerAddress("127.0.0.1", int(v["MTLS_PORT"]), tls=True, cafile=v["CA"], certfile=str(cert),
                             keyfile=str(key)).url()
        for impostor_url in (url, mtls):
            impostor = await Probe("fieldhub-hub").connect(impostor_url)
            await asyncio.sleep(1.0)
            assert impostor.client.is_connected and bridge.connected.is_set() and bridge.connects == connects
            await impostor.close()
        for refused in (address.with_login(None, None).url(), address.with_login("u1-cam", "not-the-secret").url()):
            with pytest.raises(MQTTConnectError):
                await Probe("u1-cam").connect(refused)

        # The certificate login's own telemetry is accepted: the listener works, the refusals above are the ACL's.
        cert_dev = await Probe("u1-cam").connect(mtls)
        cert_dev.client.publish(topics.device_topic("u1-cam", "telemetry"), _fix(ts + 2, 34.262), qos=1)
        await wait_for(lambda: _equals(stored(), 2), timeout=10)
        await cert_dev.close()
        assert bridge.connects == connects  # the hub's session was never taken over


def _emqx_queries() -> tuple[str, str, dict[str, str]]:
    conf = block("hocon emqx")
    queries = re.findall(r'^\s*query = "(.*)"$', conf, re.M)
    authn = next(q for q in queries if "FROM mqtt_user" in q)
    authz = next(q for q in queries if "FROM mqtt_acl" in q)
    algorithms = re.findall(r"password_hash_algorithm \{ (.*) \}", conf)
    assert len(algorithms) == 2 and algorithms[0] == algorithms[1], algorithms  # devices and the hub alike
    params = dict(item.split(" = ") for item in algorithms[0].split(", "))
    return authn, authz, params


def test_the_doc_queries_are_the_ones_the_provisioning_test_runs() -> None:
    authn, authz, _ = _emqx_queries()
    source = (ROOT / "tests" / "hub" / "test_provisioning.py").read_text()
    tested = dict(re.findall(r'^\s*(authn|authz) = "(.*)"$', source, re.M))
    assert authn.replace("${username}", "%s") == tested["authn"]
    assert authz.replace("${username}", "%s") == tested["authz"]


async def test_the_doc_emqx_login_and_queries_against_the_real_views(hub_for_emqx: tuple[str, str]) -> None:
    database_url, secret = hub_for_emqx
    authn, authz, params = _emqx_queries()
    assert params == {"name": "pbkdf2", "mac_fun": "sha512", "iterations": "1000", "dk_length": "64"}
    reader_password = new_secret()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as owner:
        await owner.execute(fill(block("sql emqx-grant"), {"READER_PASSWORD": reader_password}))
    reader_url = psycopg.conninfo.make_conninfo(database_url, user="emqx_reader", password=reader_password)
    async with await psycopg.AsyncConnection.connect(reader_url, autocommit=True) as reader:
        # EMQX binds ${username} as a parameter; so does this.
        row = await (await reader.execute(authn.replace("${username}", "%s"), ("e1-radio",))).fetchone()
        assert row is not None
        password_hash, salt, superuser = row
        # EMQX's check: pbkdf2(mac_fun, password, salt bytes, iterations, dk_length), lowercase hex, equal.
        derived = hashlib.pbkdf2_hmac(params["mac_fun"], secret.encode(), salt.encode(), int(params["iterations"]),
                                      int(params["dk_length"])).hex()
        assert derived == password_hash and superuser is False
        acl = await (await reader.execute(authz.replace("${username}", "%s"), ("e1-radio",))).fetchall()
        assert sorted(acl) == sorted([("allow", "publish", f"fieldhub/v1/dev/e1-radio/{c}")
                                      for c in ("telemetry", "status", "event")]
                                     + [("allow", "subscribe", "fieldhub/v1/dev/e1-radio/cmd")])
        # The reader sees the two views and nothing else.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await reader.execute("SELECT secret_hash FROM device_logins")


@pytest.fixture
async def hub_for_emqx(settings: Settings) -> tuple[str, str]:
    """A database with one live device login, made by a hub as provisioning makes it; (database URL, secret)."""
    async with running_hub(settings) as hub:
        await hub.put_unit("E1", [])
        url = await hub.device_url("e1-radio", "E1", "radio")
    assert settings.database_url is not None
    return settings.database_url, BrokerAddress.parse(url).password or ""
