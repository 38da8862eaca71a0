"""The hub's settings and device registry as the GB/T 28181 gateway takes them.

Devices' secrets come from the registry (migration 010): the digest HA1 of each device's password, made for the
realm the hub had when the device was provisioned. A device whose HA1 belongs to another realm (the hub's SIP
domain was changed since) cannot authenticate: it is refused as unknown, counted, and logged with what to do.
"""

from __future__ import annotations

import logging
from collections import Counter

from gb28181.digest import Ha1
from gb28181.registrar import RegistrarConfig
from hub.access.provisioning import sip_server
from hub.config import Settings
from hub.gateways.gb28181.gateway import Gb28181Gateway
from hub.storage.sip_logins import SipLoginStore

__all__ = ["Revocations", "SipSecrets", "registrar_config"]

log = logging.getLogger(__name__)

def registrar_config(s: Settings) -> RegistrarConfig:
    announce = sip_server(s).host or ""
    return RegistrarConfig(
        server_id=s.gb28181_server_id, host=s.gb28181_host, udp_port=s.gb28181_port, tcp_port=s.gb28181_port,
        realm=s.gb28181_realm, announce_host=announce, keepalive_interval_s=s.gb28181_keepalive_s,
        max_missed=s.gb28181_max_missed)


class SipSecrets:
    """``password_of`` for the registrar: the device's stored HA1 for the hub's realm, or None."""

    def __init__(self, store: SipLoginStore, realm: str) -> None:
        self.store = store
        self.realm = realm
        self.counters: Counter[str] = Counter()

    async def __call__(self, device_id: str) -> str | None:
        found = await self.store.secret(device_id)
        if found is None:
            return None
        realm, ha1 = found
        if realm != self.realm:
            self.counters["realm_mismatch"] += 1
            log.error("gb28181: device %s was provisioned for SIP domain %s, the hub's is now %s: rotate its "
                      "password (fieldhub device rotate %s) to register it", device_id, realm, self.realm, device_id)
            return None
        return Ha1(ha1)


class Revocations:
    """A revoked device loses its registration at once, not when it would next register: revoked here
    (``fieldhub`` API) or elsewhere (the CLI; the hub hears it through the devices' notification channel)."""

    def __init__(self, gateway: Gb28181Gateway, store: SipLoginStore) -> None:
        self.gateway = gateway
        self.store = store

    async def revoked(self, device_id: str) -> None:
        if self.gateway.registrar.presence.unregister(device_id):
            self.gateway.on_offline(device_id, "revoked")

    async def changed(self, device_id: str) -> None:
        """A device's login changed somewhere: drop its registration if it no longer has a live SIP login."""
        if self.gateway.registrar.presence.get(device_id) is not None and not await self.store.has_live(device_id):
            await self.revoked(device_id)
