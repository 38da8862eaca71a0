"""Shared fixtures: a real Mosquitto and a real PostgreSQL for the whole session.

Each test gets its own database (created fresh) and its own hub session id, so
tests do not see each other's data or MQTT sessions.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.config import Settings
from hub.embedded import EmbeddedPostgres, MosquittoBroker, free_port
from hub.server import Hub

TOKEN = "fh_test_dispatcher_token"


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fieldhub")


@pytest.fixture(scope="session")
def broker(workdir: Path) -> Iterator[MosquittoBroker]:
    b = MosquittoBroker(workdir / "mosquitto")
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def postgres(workdir: Path) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(workdir / "pg")
    pg.start()
    yield pg
    pg.close()


@pytest.fixture
def database_url(postgres: EmbeddedPostgres) -> str:
    return postgres.create_database("t_" + uuid.uuid4().hex[:12])


@pytest.fixture
def settings(broker: MosquittoBroker, database_url: str, tmp_path: Path) -> Settings:
    return Settings(mqtt_url=broker.url, database_url=database_url, data_dir=tmp_path,
                    port=free_port(), bootstrap_token=TOKEN, mqtt_client_id="hub-" + uuid.uuid4().hex[:8],
                    write_retry_s=0.5)


class RunningHub:
    """A hub serving HTTP on a free port, with an API client bound to it."""

    def __init__(self, hub: Hub, base_url: str) -> None:
        self.hub = hub
        self.base_url = base_url
        self.api = httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)

    async def put_unit(self, unit_id: str, devices: list[str], **extra: Any) -> dict[str, Any]:
        body = {"name": unit_id, "kind": "patrol", "devices": devices, **extra}
        r = await self.api.put(f"/api/v1/units/{unit_id}", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    async def count(self, query: str = "SELECT count(*) FROM fixes", *params: Any) -> int:
        return int(await self.hub.db.scalar(query, params))


@asynccontextmanager
async def running_hub(settings: Settings) -> AsyncIterator[RunningHub]:
    async with Hub(settings) as hub:
        started = asyncio.Event()
        server = asyncio.create_task(hub.serve(started=started))
        await asyncio.wait_for(started.wait(), 10)
        rh = RunningHub(hub, f"http://127.0.0.1:{settings.port}")
        try:
            yield rh
        finally:
            await rh.api.aclose()
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)


@pytest.fixture
async def hub(settings: Settings) -> AsyncIterator[RunningHub]:
    async with running_hub(settings) as rh:
        yield rh


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll an (async) predicate until it is truthy; fail the test on time-out."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


def hub_env(settings: Settings) -> dict[str, str]:
    """Environment for a hub run as a separate process with the same services."""
    env = dict(os.environ)
    env.update(FIELDHUB_MQTT_URL=settings.mqtt_url or "", FIELDHUB_DATABASE_URL=settings.database_url or "",
               FIELDHUB_BOOTSTRAP_TOKEN=TOKEN, FIELDHUB_MQTT_CLIENT_ID=settings.mqtt_client_id,
               FIELDHUB_DATA_DIR=str(settings.data_dir), FIELDHUB_WRITE_RETRY_S="0.5")
    return env
