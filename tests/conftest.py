"""Shared fixtures: a real Mosquitto and a real PostgreSQL for the whole session.

Each test gets its own database (created fresh) and its own hub session id, so
tests do not see each other's data or MQTT sessions.

The broker runs as deployed: the dynamic-security plugin, no anonymous access, devices over TLS with their own
logins (``RunningHub.device_url`` provisions one through the hub). ``broker.url`` is a service login with the hub's
rights (not pinned to a client id): each test's hub connects with it under its own session id, and the tests of the
hub's own defences (unknown devices, hostile payloads on any topic) publish with it. ``broker.admin_url`` is the
plugin's administrator, which the hubs provision devices with.
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

from devices.broker import BrokerAddress
from fieldhub.cli import serve_city
from hub.access.dynsec import BrokerAdmin
from hub.access.provisioning import ProvisioningError
from hub.api.app import serve
from hub.config import Settings
from hub.domain.device_login import new_login, new_secret
from hub.infra.broker import ADMIN_USER
from hub.infra.embedded import BrokerSecurity, EmbeddedPostgres, MosquittoBroker, free_port
from hub.infra.tls import ensure_ca
from hub.server import Hub

TOKEN = "fh_test_dispatcher_token"
ADMIN_TOKEN = "fh_test_admin_token"  # provisions devices' logins (simulators, as an installer would)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fieldhub")


class SecureBroker(MosquittoBroker):
    service_url: str  # the service login (see the module's docstring)
    admin_url: str
    anonymous_url: str  # no login at all: refused

    @property
    def url(self) -> str:
        return self.service_url

    async def device_login(self, device_id: str) -> str:
        """A device login made straight in the broker (for simulator tests that run without a hub): the device's
        own TLS URL with a fresh secret, and an ACL for its own topics only."""
        secret = new_secret()
        async with BrokerAdmin(self.admin_url) as admin:
            await admin.replace_device(device_id, secret)
        return self.device_url(device_id, secret)

    def login(self, client: Any) -> None:
        """Give a bare gmqtt client the service login."""
        address = BrokerAddress.parse(self.service_url)
        client.set_auth_credentials(address.username, address.password)


SERVICE_USER = "tests-service"


@pytest.fixture(scope="session")
def broker(workdir: Path) -> Iterator[SecureBroker]:
    b = SecureBroker(workdir / "mosquitto")
    admin_secret, service_secret = new_secret(), new_secret()
    b.start(BrokerSecurity(hub=new_login("fieldhub-hub", new_secret()), admin=new_login(ADMIN_USER, admin_secret),
                           devices=[], pki=ensure_ca(workdir / "tls"),
                           services=(new_login(SERVICE_USER, service_secret),)))
    plain = BrokerAddress.parse(f"mqtt://127.0.0.1:{b.port}")
    b.anonymous_url = plain.url()
    b.service_url = plain.with_login(SERVICE_USER, service_secret).url()
    b.admin_url = plain.with_login(ADMIN_USER, admin_secret).url()
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
def settings(broker: SecureBroker, database_url: str, tmp_path: Path) -> Settings:
    return Settings(mqtt_url=broker.url, mqtt_admin_url=broker.admin_url, device_mqtt_url=broker.device_url(),
                    database_url=database_url, data_dir=tmp_path,
                    port=free_port(), bootstrap_token=TOKEN, bootstrap_admin_token=ADMIN_TOKEN,
                    mqtt_client_id="hub-" + uuid.uuid4().hex[:8],
                    write_retry_s=0.5)


class RunningHub:
    """A hub serving HTTP on a free port, with an API client bound to it."""

    def __init__(self, hub: Hub, base_url: str, verify: Any = True) -> None:
        self.hub = hub
        self.base_url = base_url
        self.api = httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10,
                                     verify=verify)

    async def put_unit(self, unit_id: str, devices: list[str], **extra: Any) -> dict[str, Any]:
        body = {"name": unit_id, "kind": "patrol", "devices": devices, **extra}
        r = await self.api.put(f"/api/v1/units/{unit_id}", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    async def device_url(self, device_id: str, unit_id: str | None = None, kind: str | None = None) -> str:
        """The device's own MQTT-over-TLS URL with a login provisioned through the hub (as an installer would; a
        device with a login gets a new secret). The device must be on a unit (``put_unit``) or ``unit_id`` given."""
        provisioner = self.hub.provisioner
        assert provisioner is not None
        live = self.hub.live.devices.get(device_id)
        unit = unit_id or (live.unit_id if live is not None else None)
        assert unit is not None, f"{device_id} is on no unit: put_unit first or pass unit_id"
        try:
            creds = await provisioner.add(device_id, unit, kind, actor="tests")
        except ProvisioningError as exc:
            if exc.code != "exists":
                raise
            creds = await provisioner.rotate(device_id, actor="tests")
        return creds.url()

    async def count(self, query: str = "SELECT count(*) FROM fixes", *params: Any) -> int:
        return int(await self.hub.db.scalar(query, params))


@asynccontextmanager
async def running_hub(settings: Settings, verify: Any = True) -> AsyncIterator[RunningHub]:
    """The hub serving on its port (HTTPS when the settings name a certificate; ``verify``: the API client's
    trust, e.g. an SSL context trusting only a test's CA). Its road network is `fieldhub serve`'s."""
    async with Hub(settings, city=serve_city(settings)) as hub:
        started = asyncio.Event()
        server = asyncio.create_task(serve(hub, started=started))
        await asyncio.wait_for(started.wait(), 10)
        scheme = "https" if settings.tls_cert else "http"
        rh = RunningHub(hub, f"{scheme}://127.0.0.1:{settings.port}", verify)
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
               FIELDHUB_MQTT_ADMIN_URL=settings.mqtt_admin_url or "",
               FIELDHUB_DEVICE_MQTT_URL=settings.device_mqtt_url or "",
               FIELDHUB_BOOTSTRAP_TOKEN=TOKEN, FIELDHUB_BOOTSTRAP_ADMIN_TOKEN=ADMIN_TOKEN,
               FIELDHUB_MQTT_CLIENT_ID=settings.mqtt_client_id,
               FIELDHUB_DATA_DIR=str(settings.data_dir), FIELDHUB_WRITE_RETRY_S="0.5")
    return env
