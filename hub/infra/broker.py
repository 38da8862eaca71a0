"""Which broker the hub uses and with which logins: the embedded Mosquitto (built from the device-login table at
every start) or an external broker named by the configuration.

The embedded broker's logins are the devices' MQTT logins and the OwnTracks phones' (:func:`broker_logins`).
For the embedded broker the hub makes fresh random secrets for its own login and the administrator login at each
start; nothing but the broker's plugin file (0600, in the broker's directory) and ``broker-admin.json`` (0600, for
``fieldhub device ...`` on the same machine while the hub runs) hold them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from devices.broker import BrokerAddress
from hub.config import Settings
from hub.domain import device_login
from hub.infra.embedded import BrokerSecurity, MosquittoBroker
from hub.infra.tls import Pki, ensure_ca
from hub.storage.device_logins import DeviceLoginStore
from hub.storage.gateway_logins import GatewayLoginStore

__all__ = ["ADMIN_USER", "BrokerLinks", "admin_file", "broker_logins", "read_admin_file", "start_embedded_broker"]

log = logging.getLogger(__name__)

ADMIN_USER = "fieldhub-admin"


@dataclass(frozen=True, slots=True)
class BrokerLinks:
    hub_url: str  # the hub's own login (secret inside: never logged)
    admin_url: str | None  # the dynamic-security administrator, when the hub manages the broker's logins
    device_url: str | None  # where devices connect, without a login
    mtls_url: str | None = None  # where devices with a client certificate connect
    pki: Pki | None = None  # the CA of the embedded broker (signs client certificates)


def external_links(settings: Settings) -> BrokerLinks:
    assert settings.mqtt_url is not None
    return BrokerLinks(settings.mqtt_url, settings.mqtt_admin_url, settings.device_mqtt_url)


def _port(wanted: int, host: str) -> int:
    """``wanted`` if it is free on ``host``, else 0 (a free port is picked) with a line in the log."""
    if wanted == 0:
        return 0
    with socket.socket() as s:
        try:
            s.bind((host, wanted))
        except OSError:
            log.warning("port %d on %s is taken: the embedded broker's device listener takes a free port", wanted,
                        host)
            return 0
    return wanted


def admin_file(data_dir: Path) -> Path:
    return data_dir / "broker-admin.json"


def _write_private(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)


def read_admin_file(data_dir: Path) -> dict[str, str] | None:
    """The running embedded broker's administrator and device URLs, as the hub left them."""
    try:
        data = json.loads(admin_file(data_dir).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


async def broker_logins(store: DeviceLoginStore) -> list[device_login.StoredLogin]:
    """Every live login the broker checks: the devices' MQTT logins and the OwnTracks phones' (with their topics)."""
    phones = await GatewayLoginStore(store.db).live("owntracks")
    return await store.active() + [replace(p.secret, topics="owntracks") for p in phones if p.secret is not None]


async def start_embedded_broker(settings: Settings, store: DeviceLoginStore,
                                stack: contextlib.AsyncExitStack) -> BrokerLinks:
    hub_secret, admin_secret = device_login.new_secret(), device_login.new_secret()
    pki = ensure_ca(settings.data_dir / "tls")
    security = BrokerSecurity(
        hub=device_login.new_login(settings.mqtt_client_id, hub_secret),
        admin=device_login.new_login(ADMIN_USER, admin_secret),
        devices=await broker_logins(store), pki=pki, tls_host=settings.broker_tls_host,
        tls_port=_port(settings.broker_tls_port, settings.broker_tls_host),
        mtls_port=_port(settings.broker_mtls_port, settings.broker_tls_host))
    broker = MosquittoBroker(settings.data_dir / "mosquitto")
    await asyncio.to_thread(broker.start, security)
    stack.callback(broker.stop)
    loopback = BrokerAddress.parse(broker.loopback_url)
    links = BrokerLinks(loopback.with_login(settings.mqtt_client_id, hub_secret).url(),
                        loopback.with_login(ADMIN_USER, admin_secret).url(), broker.device_url(),
                        broker.device_url(mtls=True), pki)
    path = admin_file(settings.data_dir)
    _write_private(path, {"admin_url": links.admin_url or "", "device_url": links.device_url or "",
                          "mtls_url": links.mtls_url or ""})
    stack.callback(lambda: path.unlink(missing_ok=True))
    log.info("embedded broker: devices connect to %s (client certificates: port %s)", links.device_url,
             broker.mtls_port)
    return links
