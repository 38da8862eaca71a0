"""Provisioning: a device gets its login, a new secret, or loses it, in the hub's table and in the broker at once.

The table is the truth. The broker learns each change through its dynamic-security plugin when the hub has the
broker's administrator login (the embedded broker, or an external Mosquitto configured as in docs/brokers.md); a
broker that checks logins against the table itself (EMQX) needs nothing more. The secret is returned once, to the
caller, and never stored or logged.

GB/T 28181 devices (``protocol="gb28181"``) do not use the broker: they register over SIP with digest
authentication, so their login is the digest HA1 of a password (:mod:`hub.storage.sip_logins`), made for the hub's
SIP realm, and the answer tells the device where the hub's SIP server is.

Order of the two writes: the table first, then the broker. A new login that the broker refuses is revoked again in
the table, so the two never disagree about a working secret; a revocation the broker could not take is kept in the
table (the embedded broker is rebuilt from it at the next start) and reported as an error, loudly.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from devices import topics
from devices.broker import BrokerAddress
from gb28181.digest import ha1_of
from hub.access.dynsec import BrokerAdmin, BrokerAdminError
from hub.config import Settings
from hub.domain import device_login, sip_login
from hub.infra.broker import ADMIN_USER
from hub.infra.tls import Pki, client_cert_pem
from hub.storage.audit import AuditRecorder
from hub.storage.device_logins import DeviceLoginStore, LoginProblem
from hub.storage.sip_logins import SipLoginStore

__all__ = ["PROTOCOLS", "Credentials", "Provisioner", "ProvisioningError", "SipServer", "sip_server"]

PROTOCOLS = ("mqtt", "gb28181")

log = logging.getLogger(__name__)


class ProvisioningError(Exception):
    """``code``: ``invalid``, ``unknown_unit``, ``unknown_device``, ``exists`` or ``broker`` (the broker could not
    be told; the message says what state the table is in)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a device is given, once."""

    device_id: str
    username: str
    password: str
    mqtt_url: str | None  # where devices connect (no secret in it)
    ca_file: str | None
    protocol: str = "mqtt"
    sip: SipServer | None = None  # a GB/T 28181 device's platform settings

    def as_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"device_id": self.device_id, "username": self.username, "password": self.password,
                  "client_id": self.username, "mqtt_url": self.mqtt_url, "ca_file": self.ca_file,
                  "protocol": self.protocol, "sip": self.sip.as_dict() if self.sip is not None else None}
        return answer

    def url(self) -> str:
        """The device's full connection URL, secret included (for a device's configuration, not for a log)."""
        if self.mqtt_url is None:
            raise ProvisioningError("invalid", "no device MQTT URL is configured (FIELDHUB_DEVICE_MQTT_URL)")
        return BrokerAddress.parse(self.mqtt_url).with_login(self.username, self.password).url()


@dataclass(frozen=True, slots=True)
class SipServer:
    """What a GB/T 28181 device is configured with to reach the hub (the camera's "platform" settings)."""

    server_id: str  # SIP server id (20 digits)
    realm: str  # SIP domain (the realm its digest answers)
    host: str | None  # where devices reach the SIP server; None: the gateway is not enabled
    port: int
    enabled: bool

    def as_dict(self) -> dict[str, Any]:
        return {"server_id": self.server_id, "domain": self.realm, "host": self.host, "port": self.port,
                "transport": "udp or tcp", "enabled": self.enabled}


def sip_server(s: Settings, port: int | None = None) -> SipServer:
    """The platform settings a camera is given; ``port``: the bound one (when the setting is 0, any free port)."""
    host = s.gb28181_announce_host or ("127.0.0.1" if s.gb28181_host in ("", "0.0.0.0", "::") else s.gb28181_host)
    return SipServer(server_id=s.gb28181_server_id, realm=s.gb28181_realm or s.gb28181_server_id[:10],
                     host=host if s.gb28181 else None, port=port if port is not None else s.gb28181_port,
                     enabled=s.gb28181)


class Provisioner:
    def __init__(self, store: DeviceLoginStore, *, admin_url: str | None, device_url: str | None,
                 audit: AuditRecorder | None = None,
                 on_added: Callable[[str, str], Awaitable[None]] | None = None,
                 pki: Pki | None = None, mtls_url: str | None = None, reserved: frozenset[str] = frozenset(),
                 sip_store: SipLoginStore | None = None, sip_server: SipServer | None = None) -> None:
        self.store = store
        self.sip_store = sip_store
        self.sip_server = sip_server
        # Logins that are not devices' (the hub's, the administrator's): a device named so would replace them.
        self.reserved = reserved | {ADMIN_USER}
        self.pki = pki  # the CA that signs devices' client certificates (the embedded broker trusts it)
        self.mtls_url = mtls_url
        self.admin_url = admin_url
        self.device_url = device_url
        self.audit = audit
        self.on_added = on_added  # (device_id, unit_id): the hub puts the device on its unit's live picture
        # (device_id): a revoked GB/T 28181 device is dropped from the SIP registrar at once
        self.on_revoked: Callable[[str], Awaitable[None]] | None = None

    def _credentials(self, device_id: str, secret: str) -> Credentials:
        ca = BrokerAddress.parse(self.device_url).cafile if self.device_url else None
        return Credentials(device_id, device_id, secret, self._public_url(), ca)

    def _public_url(self) -> str | None:
        if not self.device_url:
            return None
        return BrokerAddress.parse(self.device_url).with_login(None, None).url()

    async def _broker(self, change: Callable[[BrokerAdmin], Awaitable[None]]) -> None:
        if self.admin_url is None:
            return  # the broker checks logins against the table (EMQX): nothing to tell it
        async with BrokerAdmin(self.admin_url) as admin:
            await change(admin)

    async def _give_broker(self, device_id: str, secret: str) -> None:
        """The device's login in the broker, replacing any it had: a login left by an earlier, half-done attempt,
        or the old secret on rotation (the plugin would keep a connected client on it; removing the login
        disconnects it, so from now on only the new secret works)."""
        await self._broker(lambda admin: admin.replace_device(device_id, secret))

    async def _audit(self, actor: str, role: str | None, action: str, device_id: str, **detail: object) -> None:
        if self.audit is not None:
            await self.audit.record(actor, action, device_id, dict(detail), role=role)

    async def add(self, device_id: str, unit_id: str, kind: str | None, *, actor: str, role: str | None = None,
                  protocol: str = "mqtt", password: str | None = None) -> Credentials:
        if not topics.is_valid_id(device_id) or not topics.is_valid_id(unit_id):
            raise ProvisioningError("invalid", "device and unit ids must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
        if protocol == "gb28181":
            return await self._add_sip(device_id, unit_id, kind, password, actor=actor, role=role)
        if protocol != "mqtt":
            raise ProvisioningError("invalid", f"protocol must be one of {', '.join(PROTOCOLS)}")
        if password is not None:
            raise ProvisioningError("invalid", "an MQTT device's secret is always generated by the hub")
        if device_id in self.reserved:
            raise ProvisioningError("invalid", f"{device_id} is the broker login of the hub or its administrator")
        secret = device_login.new_secret()
        try:
            await self.store.add(device_id, unit_id, kind, device_login.new_login(device_id, secret))
        except LoginProblem as exc:
            raise ProvisioningError(exc.code, str(exc)) from exc
        try:
            await self._give_broker(device_id, secret)
        except BrokerAdminError as exc:
            await self.store.revoke(device_id)
            raise ProvisioningError("broker", f"the broker refused the new login ({exc}); it was not created") from exc
        await self._audit(actor, role, "device.add", device_id, unit_id=unit_id, kind=kind)
        if self.on_added is not None:
            await self.on_added(device_id, unit_id)
        return self._credentials(device_id, secret)

    def _sip(self) -> tuple[SipLoginStore, SipServer]:
        if self.sip_store is None or self.sip_server is None:
            raise ProvisioningError("invalid", "this hub has no GB/T 28181 device registry")
        return self.sip_store, self.sip_server

    def _sip_secret(self, device_id: str, password: str | None) -> tuple[str, str]:
        """(password, HA1 for the hub's realm): the given password checked, or a new one."""
        if password is None:
            password = sip_login.new_sip_password()
        problem = sip_login.password_problem(password)
        if problem is not None:
            raise ProvisioningError("invalid", problem)
        return password, ha1_of(device_id, self._sip()[1].realm, password)

    def _sip_credentials(self, device_id: str, password: str) -> Credentials:
        return Credentials(device_id, device_id, password, None, None, "gb28181", self._sip()[1])

    async def _add_sip(self, device_id: str, unit_id: str, kind: str | None, password: str | None, *, actor: str,
                       role: str | None) -> Credentials:
        store, server = self._sip()
        if not sip_login.is_gb28181_id(device_id):
            raise ProvisioningError("invalid", "a GB/T 28181 device id is 20 digits")
        password, ha1 = self._sip_secret(device_id, password)
        try:
            await store.add(device_id, unit_id, kind or "bodycam", server.realm, ha1)
        except LoginProblem as exc:
            raise ProvisioningError(exc.code, str(exc)) from exc
        await self._audit(actor, role, "device.add", device_id, unit_id=unit_id, kind=kind or "bodycam",
                          protocol="gb28181")
        if self.on_added is not None:
            await self.on_added(device_id, unit_id)
        return self._sip_credentials(device_id, password)

    async def _is_sip(self, device_id: str) -> bool:
        return self.sip_store is not None and await self.sip_store.has_live(device_id)

    async def rotate(self, device_id: str, *, actor: str, role: str | None = None,
                     password: str | None = None) -> Credentials:
        if await self._is_sip(device_id):
            store, server = self._sip()
            password, ha1 = self._sip_secret(device_id, password)
            try:
                await store.rotate(device_id, server.realm, ha1)
            except LoginProblem as exc:
                raise ProvisioningError(exc.code, str(exc)) from exc
            await self._audit(actor, role, "device.rotate", device_id, protocol="gb28181")
            return self._sip_credentials(device_id, password)
        if password is not None:
            raise ProvisioningError("invalid", "an MQTT device's secret is always generated by the hub")
        secret = device_login.new_secret()
        try:
            await self.store.rotate(device_id, device_login.new_login(device_id, secret))
        except LoginProblem as exc:
            raise ProvisioningError(exc.code, str(exc)) from exc
        try:
            await self._give_broker(device_id, secret)
        except BrokerAdminError as exc:
            raise ProvisioningError("broker", f"the new secret is stored but the broker could not take it ({exc}); "
                                              "the device cannot connect until the broker is updated") from exc
        await self._audit(actor, role, "device.rotate", device_id)
        return self._credentials(device_id, secret)

    async def revoke(self, device_id: str, *, actor: str, role: str | None = None) -> None:
        if await self._is_sip(device_id):
            try:
                await self._sip()[0].revoke(device_id)
            except LoginProblem as exc:
                raise ProvisioningError(exc.code, str(exc)) from exc
            await self._audit(actor, role, "device.revoke", device_id, protocol="gb28181")
            if self.on_revoked is not None:
                await self.on_revoked(device_id)
            return
        try:
            await self.store.revoke(device_id)
        except LoginProblem as exc:
            raise ProvisioningError(exc.code, str(exc)) from exc
        await self._audit(actor, role, "device.revoke", device_id)
        try:
            await self._broker(lambda admin: admin.remove_device(device_id))
        except BrokerAdminError as exc:
            log.error("device %s is revoked in the table but the broker was not told: %s", device_id, exc)
            raise ProvisioningError("broker", f"revoked in the table, but the broker could not be told ({exc}): "
                                              "it still accepts the device until it is reached") from exc

    async def certificate(self, device_id: str, *, actor: str, role: str | None = None) -> dict[str, str]:
        """A client certificate for a device with a live login: its common name is the device id, which the
        broker's mTLS listener takes as the login (and as the client id). The key is made here and kept nowhere."""
        if self.pki is None:
            raise ProvisioningError("invalid", "no device CA here: client certificates come from the embedded "
                                               "broker's CA (an external broker's CA issues its own)")
        if device_id not in await self.store.active_ids([device_id]):
            raise ProvisioningError("unknown_device", f"device {device_id} has no live login")
        cert, key = client_cert_pem(self.pki, device_id)
        await self._audit(actor, role, "device.certificate", device_id)
        return {"device_id": device_id, "certificate": cert.decode(), "private_key": key.decode(),
                "ca_certificate": self.pki.cert_path.read_text(), "mqtt_url": self.mtls_url or ""}

    async def list(self) -> list[dict[str, Any]]:
        return await self.store.list()

    async def reconcile(self) -> int:
        """At start against an external broker: remove from it every login the table says is revoked (a revocation
        made while it was unreachable). Returns how many were removed."""
        if self.admin_url is None:
            return 0
        revoked = set(await self.store.revoked())
        if not revoked:
            return 0
        async with BrokerAdmin(self.admin_url) as admin:
            present = [c for c in await admin.list_clients() if c in revoked]
            for device_id in present:
                await admin.remove_device(device_id)
        if present:
            log.warning("removed %d revoked device login(s) from the broker: %s", len(present), ", ".join(present))
        return len(present)
