"""Embedded defaults: with no URLs configured the hub starts its own PostgreSQL and a secure broker."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
from gmqtt.mqtt.handler import MQTTConnectError

from devices.broker import BrokerAddress
from devices.client import DeviceClient
from devices.payloads import Fix
from hub.config import Settings
from hub.errors import HubStartError
from hub.infra.embedded import MosquittoBroker, free_port
from tests.conftest import TOKEN, running_hub, wait_for
from tests.hub.test_device_identity import Probe


def _settings(tmp_path: Path) -> Settings:
    return Settings(mqtt_url=None, database_url=None, data_dir=tmp_path, port=free_port(), bootstrap_token=TOKEN,
                    broker_tls_port=0, broker_mtls_port=0)


async def test_embedded_services_devices_over_tls_and_no_takeover_of_the_hub(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    async with running_hub(settings) as hub:
        assert (tmp_path / "pg" / "PG_VERSION").exists()
        conf = (tmp_path / "mosquitto" / "mosquitto.conf").read_text()
        assert "allow_anonymous false" in conf and "mosquitto_dynamic_security.so" in conf
        assert "max_inflight_messages 20000" in conf
        assert oct(os.stat(tmp_path / "broker-admin.json").st_mode & 0o777) == "0o600"
        await hub.put_unit("E1", ["e1-trk"])
        url = await hub.device_url("e1-trk")
        assert url.startswith("mqtts://e1-trk:")
        # Someone with no login, or a device's login on the hub's own listener, asks for the hub's client id:
        # refused. On the device listener the broker replaces the id asked for with the login: a session as the
        # device, not the hub's. Either way the hub stays connected, its session intact.
        connects = hub.hub.bridge.connects  # type: ignore[union-attr]
        loopback = BrokerAddress.parse(hub.hub.mqtt_url or "")
        for who in (loopback.with_login(None, None).url(),
                    loopback.with_login("e1-trk", BrokerAddress.parse(url).password).url()):
            with pytest.raises(MQTTConnectError):
                await Probe(settings.mqtt_client_id).connect(who)
        impostor = await Probe(settings.mqtt_client_id).connect(url)
        await asyncio.sleep(1.0)
        assert hub.hub.bridge.connected.is_set()  # type: ignore[union-attr]
        await impostor.close()
        async with DeviceClient("e1-trk", url, unit_id="E1") as dev:
            t0 = time.time_ns() // 1_000_000 - 60_000
            for i in range(40):
                dev.send_fix(Fix(t0 + i * 1000, 34.26, 117.18))
            await wait_for(lambda: _count(hub, 40), timeout=15)
        assert hub.hub.bridge.connects == connects  # type: ignore[union-attr]
        # A device with a client certificate (from the hub's CA) logs in with it alone, on the mTLS listener: the
        # certificate's name is its login and its client id, whatever id it asks for.
        admin = await hub.hub.create_token("admin", "installer")
        r = await hub.api.post("/api/v1/devices/e1-trk/certificate", headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 200, r.text
        (tmp_path / "e1.pem").write_text(r.json()["certificate"])
        (tmp_path / "e1.key").write_text(r.json()["private_key"])
        base = BrokerAddress.parse(r.json()["mqtt_url"])
        with_cert = BrokerAddress(base.host, base.port, None, None, tls=True, cafile=base.cafile,
                                  certfile=str(tmp_path / "e1.pem"), keyfile=str(tmp_path / "e1.key")).url()
        probe = await Probe("not-e1").connect(with_cert)
        probe.client.publish("fieldhub/v1/dev/e1-trk/telemetry",
                             json.dumps({"ts": time.time_ns() // 1_000_000, "lat": 34.3, "lon": 117.2}).encode(), qos=1)
        await wait_for(lambda: _count(hub, 41), timeout=15)
        # Revoked: the certificate still completes the TLS handshake (there is no CRL), but the login has no role
        # any more, so its publish is denied (the broker closes the connection) and nothing is stored.
        r = await hub.api.delete("/api/v1/devices/e1-trk", headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 200, r.text
        await wait_for(lambda: not probe.client.is_connected, timeout=5)
        again = await Probe("e1-trk").connect(with_cert)
        again.client.publish("fieldhub/v1/dev/e1-trk/telemetry",
                             json.dumps({"ts": time.time_ns() // 1_000_000, "lat": 34.4, "lon": 117.2}).encode(), qos=1)
        await wait_for(lambda: not again.client.is_connected, timeout=5)
        await asyncio.sleep(0.5)
        assert await hub.count() == 41
        without = BrokerAddress(base.host, base.port, "e1-trk", BrokerAddress.parse(url).password, tls=True,
                                cafile=base.cafile).url()
        with pytest.raises((MQTTConnectError, OSError, TimeoutError)):  # no certificate: no TLS session there
            await Probe("e1-trk").connect(without)
    assert not (tmp_path / "pg" / "postmaster.pid").exists()  # shut down cleanly
    assert not (tmp_path / "broker-admin.json").exists()
    # A restart builds the broker's logins from the table: a secret issued in one run works in the next.
    async with running_hub(_settings(tmp_path)) as hub:
        assert await hub.count("SELECT count(*) FROM device_logins WHERE revoked_at IS NULL") == 0
        url = await hub.device_url("e1-trk")  # added again: a new secret
    secret = BrokerAddress.parse(url).password
    async with running_hub(_settings(tmp_path)) as hub:
        assert hub.hub.broker_links is not None and hub.hub.broker_links.device_url  # (a new port: ports are free ones)
        again = BrokerAddress.parse(hub.hub.broker_links.device_url).with_login("e1-trk", secret).url()
        async with DeviceClient("e1-trk", again, unit_id="E1") as dev:
            assert dev.connected


async def _count(hub: object, n: int) -> bool:
    return await hub.count() == n  # type: ignore[attr-defined,no-any-return]


async def test_no_mosquitto_no_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MosquittoBroker, "available", staticmethod(lambda: False))  # as if not installed
    t0 = time.monotonic()
    with pytest.raises(HubStartError, match="mosquitto is not installed"):
        async with running_hub(_settings(tmp_path)):
            pass
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "pg" / "postmaster.pid").exists()  # what did start was stopped


def test_embedded_mosquitto_anonymous_mode_is_loopback_only(tmp_path: Path) -> None:
    broker = MosquittoBroker(tmp_path)
    broker.start()  # the benchmark's baseline
    assert broker.process is not None and broker.process.poll() is None
    conf = (tmp_path / "mosquitto.conf").read_text()
    assert f"listener {broker.port} 127.0.0.1" in conf and "8883" not in conf
    broker.stop()
    assert broker.process is None
