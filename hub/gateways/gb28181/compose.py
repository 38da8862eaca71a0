"""The hub's settings and device registry as the GB/T 28181 gateway takes them.

Devices' secrets come from the registry (migration 010): the digest HA1 of each device's password, made for the
realm the hub had when the device was provisioned. A device whose HA1 belongs to another realm (the hub's SIP
domain was changed since) cannot authenticate: it is refused as unknown, counted, and logged with what to do.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

from gb28181.digest import Ha1
from gb28181.registrar import RegistrarConfig
from hub.access.provisioning import sip_server
from hub.config import Settings
from hub.gateways.gb28181.gateway import Gb28181Gateway, Submit
from hub.gateways.gb28181.video import CameraVideo, Publishing
from hub.storage.database import Database
from hub.storage.sip_logins import SipLoginStore

__all__ = ["Gb28181Parts", "Revocations", "SipDevices", "SipSecrets", "registrar_config", "start_gb28181"]

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

    def __init__(self, gateway: Gb28181Gateway, store: SipLoginStore, devices: SipDevices) -> None:
        self.gateway = gateway
        self.store = store
        self.devices = devices

    async def revoked(self, device_id: str) -> None:
        self.devices.ids.discard(device_id)
        self.gateway.registrar.unregister(device_id, "revoked")  # its calls end too

    async def changed(self, device_id: str) -> None:
        """A device's login changed somewhere: drop its registration if it no longer has a live SIP login."""
        await self.devices.refresh(device_id)
        if self.gateway.registrar.presence.get(device_id) is not None and not await self.store.has_live(device_id):
            await self.revoked(device_id)


class SipDevices:
    """The ids of the devices with a live SIP login, in memory: the hub's commands to them go to the gateway.
    Loaded at start, then kept by the provisioning calls and the devices' notification channel."""

    def __init__(self, store: SipLoginStore) -> None:
        self.store = store
        self.ids: set[str] = set()

    async def load(self) -> None:
        self.ids = set(await self.store.live_ids())

    async def refresh(self, device_id: str) -> None:
        if await self.store.has_live(device_id):
            self.ids.add(device_id)
        else:
            self.ids.discard(device_id)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self.ids


@dataclass(frozen=True, slots=True)
class Gb28181Parts:
    gateway: Gb28181Gateway
    video: CameraVideo
    revocations: Revocations


async def start_gb28181(stack: AsyncExitStack, s: Settings, db: Database, submit: Submit, desk: Publishing,
                        wall_ms: Callable[[], int]) -> Gb28181Parts:
    """Start the gateway (its SIP port: one in use stops the start-up, named) and its cameras' video on
    ``stack``, so they stop (calls hung up first) before the pipeline drains."""
    store = SipLoginStore(db)
    config = registrar_config(s)
    gateway = await stack.enter_async_context(Gb28181Gateway(
        config, submit=submit, password_of=SipSecrets(store, config.domain), utc_offset_min=s.gb28181_utc_offset_min,
        store_timeout_s=s.gb28181_store_timeout_s, position_interval_s=s.gb28181_position_interval_s))
    devices = SipDevices(store)
    await devices.load()
    video = await stack.enter_async_context(CameraVideo(
        gateway.registrar, submit=submit, publishing=desk, owns=devices.__contains__,
        channel_of=gateway.video_channel, media_host=s.gb28181_host, announce_host=config.announce_host,
        transport=s.gb28181_media_transport, wall_ms=wall_ms, no_media_timeout_s=s.gb28181_no_media_s,
        idle_s=s.gb28181_idle_s))
    log.info("gb28181: SIP server %s (domain %s) on %s, udp %d, tcp %d; video over %s", s.gb28181_server_id,
             config.domain, s.gb28181_host, gateway.udp_port, gateway.tcp_port, s.gb28181_media_transport)
    return Gb28181Parts(gateway, video, Revocations(gateway, store, devices))
