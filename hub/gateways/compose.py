"""The gateways of non-MQTT devices in a running hub: their owned devices, their start, and what a change of a
device's login (provisioned, rotated, revoked, here or from the CLI in another process) does to them.

:class:`GatewayDevices` keeps the ids of the live gateway logins in memory, by protocol, so a command is routed
without a query; it is loaded at start and kept by the devices' NOTIFY channel. A JT/T 808 terminal whose login is
revoked, or rotated (its registration reopened: the code it holds no longer works), is disconnected at once; a
phone's cached secret check is forgotten.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Protocol

from hub.access.auth import FailedAuthLimiter
from hub.config import Settings
from hub.gateways.commands import DeviceCommands
from hub.gateways.jt808.gateway import Jt808Gateway
from hub.gateways.osmand.gateway import OsmAndGateway
from hub.gateways.owntracks.gateway import OwnTracksGateway
from hub.gateways.submit import Submit
from hub.gateways.tak.compose import TakCommands, TakLink, start_tak
from hub.gateways.tak.gateway import TakGateway
from hub.storage.gateway_logins import GatewayLoginStore

__all__ = ["GatewayDevices", "Gateways", "LoginFollower", "start_jt808", "start_phones"]

log = logging.getLogger(__name__)


class LoginFollower(Protocol):
    """A gateway's side of a login change: drop what it holds for the device (a connection, a cached check)."""

    def login_changed(self, device_id: str, live: bool) -> None: ...


class GatewayDevices:
    """Device ids with a live gateway login, by protocol; and the gateways to tell when one changes."""

    def __init__(self, store: GatewayLoginStore) -> None:
        self.store = store
        self.ids: dict[str, set[str]] = {}
        self.followers: dict[str, LoginFollower] = {}

    async def load(self) -> None:
        ids: dict[str, set[str]] = {}
        for login in await self.store.live():
            ids.setdefault(login.protocol, set()).add(login.device_id)
        self.ids = ids

    def owns(self, protocol: str) -> Callable[[str], bool]:
        def owned(device_id: str) -> bool:
            return device_id in self.ids.get(protocol, ())
        return owned

    def protocol_of(self, device_id: str) -> str | None:
        return next((p for p, ids in self.ids.items() if device_id in ids), None)

    async def changed(self, device_id: str) -> None:
        """A device's login changed somewhere (NOTIFY, or this hub's own provisioning call)."""
        before = self.protocol_of(device_id)
        login = await self.store.by_device(device_id)
        if before is not None:
            self.ids[before].discard(device_id)
        if login is not None:
            self.ids.setdefault(login.protocol, set()).add(device_id)
        for protocol in {before, login.protocol if login is not None else None} - {None}:
            follower = self.followers.get(protocol or "")
            if follower is not None:
                # Live, but a JT/T 808 login whose registration is open again has no valid code: as good as gone.
                live = login is not None and login.protocol == protocol and not (
                    protocol == "jt808" and login.registration_open)
                follower.login_changed(device_id, live)


async def start_jt808(stack: AsyncExitStack, s: Settings, devices: GatewayDevices, submit: Submit) -> Jt808Gateway:
    """The JT/T 808 server on ``stack`` (its port in use stops the start-up, named). Entered after the pipeline,
    so it leaves before it: its terminals' ``offline`` statuses are still taken."""
    gateway = await stack.enter_async_context(Jt808Gateway(
        host=s.jt808_host, port=s.jt808_port, logins=devices.store, submit=submit, owns=devices.owns("jt808"),
        datum=s.jt808_datum, idle_s=s.jt808_idle_s, store_timeout_s=s.jt808_store_timeout_s,
        max_connections=s.jt808_max_connections))
    devices.followers["jt808"] = _Kick(gateway)
    log.info("jt808: terminals on %s:%d (datum %s)", s.jt808_host, gateway.port, s.jt808_datum)
    return gateway


class _Kick:
    def __init__(self, gateway: Jt808Gateway) -> None:
        self.gateway = gateway

    def login_changed(self, device_id: str, live: bool) -> None:
        if not live:
            self.gateway.kick(device_id)


class _Forget:
    def __init__(self, gateway: OwnTracksGateway | OsmAndGateway) -> None:
        self.gateway = gateway

    def login_changed(self, device_id: str, live: bool) -> None:
        self.gateway.forget(device_id)  # a rotated secret must not stay good in the cache of checks


def start_phones(s: Settings, devices: GatewayDevices, submit: Submit, publish: Callable[[str, bytes], object],
                 limiter: FailedAuthLimiter) -> tuple[OwnTracksGateway | None, OsmAndGateway | None]:
    """The phone apps' receivers that are enabled (they have no socket of their own: the broker's ``owntracks/#``
    and the API's ``/gateway/...`` routes feed them)."""
    owntracks = osmand = None
    if s.owntracks:
        owntracks = OwnTracksGateway(submit=submit, logins=devices.store, owns=devices.owns("owntracks"),
                                     publish=publish, datum=s.owntracks_datum, limiter=limiter,
                                     store_timeout_s=s.phone_store_timeout_s)
        devices.followers["owntracks"] = _Forget(owntracks)
    if s.osmand:
        osmand = OsmAndGateway(submit=submit, logins=devices.store, owns=devices.owns("osmand"),
                               datum=s.osmand_datum, limiter=limiter, store_timeout_s=s.phone_store_timeout_s)
        devices.followers["osmand"] = _Forget(osmand)
    return owntracks, osmand


class Gateways:
    """The hub's gateways of devices with a protocol of their own (GB/T 28181 apart: hub.gateways.gb28181.compose).
    Made with the hub, started after its pipeline (so they stop before it); None where off."""

    def __init__(self) -> None:
        self.devices: GatewayDevices | None = None
        self.jt808: Jt808Gateway | None = None
        self.owntracks: OwnTracksGateway | None = None
        self.osmand: OsmAndGateway | None = None
        self.tak: TakGateway | None = None

    async def start(self, stack: AsyncExitStack, s: Settings, store: GatewayLoginStore, submit: Submit,
                    publish: Callable[[str, bytes], object], limiter: FailedAuthLimiter,
                    tak: TakLink) -> list[DeviceCommands]:
        """Start the enabled gateways; the ones that take the hub's device commands."""
        devices = GatewayDevices(store)
        await devices.load()
        self.devices = devices
        if s.jt808:
            self.jt808 = await start_jt808(stack, s, devices, submit)
        self.owntracks, self.osmand = start_phones(s, devices, submit, publish, limiter)
        commands: list[DeviceCommands] = [g for g in (self.jt808, self.owntracks, self.osmand) if g is not None]
        if s.tak:
            self.tak = await start_tak(stack, s, submit, tak)
            commands.append(TakCommands(self.tak))
        return commands

    def owntracks_message(self, topic: str, payload: bytes, qos: int, retained: bool) -> asyncio.Future[None] | None:
        """The broker's ``owntracks/#``. Before the gateway is up (a resumed session delivers at once) the message
        is not taken, so the broker sends it again."""
        return self.owntracks.on_owntracks(topic, payload) if self.owntracks is not None else None

    async def changed(self, device_id: str) -> None:
        """A device's login changed (provisioned, rotated, revoked; here or elsewhere)."""
        if self.devices is not None:
            await self.devices.changed(device_id)
