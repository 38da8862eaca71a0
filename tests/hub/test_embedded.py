"""Embedded defaults: with no URLs configured the hub starts its own PostgreSQL and broker."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from devices.client import DeviceClient
from devices.payloads import Fix
from hub.config import Settings
from hub.embedded import MosquittoBroker, free_port
from tests.conftest import TOKEN, running_hub, wait_for


async def test_no_urls_embedded_postgres_and_amqtt_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MosquittoBroker, "available", staticmethod(lambda: False))  # as if not installed
    settings = Settings(mqtt_url=None, database_url=None, data_dir=tmp_path, port=free_port(), bootstrap_token=TOKEN)
    async with running_hub(settings) as hub:
        assert hub.hub.mqtt_protocol == 4 and (tmp_path / "pg" / "PG_VERSION").exists()
        await hub.put_unit("E1", ["e1-trk"])
        async with DeviceClient("e1-trk", hub.hub.mqtt_url or "", unit_id="E1", protocol=4) as dev:
            dev.send_fix(Fix(time.time_ns() // 1_000_000, 34.26, 117.18))
            await wait_for(lambda: _one(hub), timeout=15)
    assert not (tmp_path / "pg" / "postmaster.pid").exists()  # shut down cleanly


async def _one(hub: object) -> bool:
    return await hub.count() == 1  # type: ignore[attr-defined,no-any-return]


async def test_embedded_mosquitto_is_started_and_stopped(tmp_path: Path) -> None:
    broker = MosquittoBroker(tmp_path)
    broker.start()
    assert broker.process is not None and broker.process.poll() is None
    assert "max_inflight_messages 20000" in (tmp_path / "mosquitto.conf").read_text()
    broker.stop()
    assert broker.process is None
