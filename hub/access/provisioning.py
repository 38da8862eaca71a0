"""Provisioning: a device gets its login, a new secret, or loses it, in the hub's table and in the broker at once.

The table is the truth. The broker learns each change through its dynamic-security plugin when the hub has the
broker's administrator login (the embedded broker, or an external Mosquitto configured as in docs/brokers.md); a
broker that checks logins against the table itself (EMQX) needs nothing more. The secret is returned once, to the
caller, and never stored or logged.

GB/T 28181 devices (``protocol="gb28181"``) do not use the broker: they register over SIP with digest
authentication, so their login is the digest HA1 of a password (:mod:`hub.storage.sip_logins`), made for the hub's
SIP realm, and the answer tells the device where the hub's SIP server is.

Gateway devices (``protocol`` ``jt808``, ``owntracks``, ``osmand``, :mod:`hub.storage.gateway_logins`): a JT/T 808
terminal is known by its phone number and gets no secret here (its first registration gets a code); the phone apps
get a secret, and an OwnTracks phone also a broker login whose role grants only its own OwnTracks topics.

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
from hub.access.dynsec import GONE, BrokerAdmin, BrokerAdminError
from hub.config import Settings
from hub.domain import device_login, gateway_login, sip_login
from hub.domain.gateway_login import GATEWAY_PROTOCOLS, GatewayEndpoints
from hub.infra.broker import ADMIN_USER
from hub.infra.tls import Pki, client_cert_pem
from hub.storage.audit import AuditRecorder
from hub.storage.device_logins import DeviceLoginStore, LoginProblem
from hub.storage.gateway_logins import GatewayLogin, GatewayLoginStore
from hub.storage.sip_logins import SipLoginStore

__all__ = ["PROTOCOLS", "Credentials", "GatewayEndpoints", "Provisioner", "ProvisioningError", "SipServer",
           "gateway_endpoints", "sip_server"]

PROTOCOLS = ("mqtt", "gb28181", *GATEWAY_PROTOCOLS)

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
    password: str | None  # None: a JT/T 808 terminal, whose code comes at its registration
    mqtt_url: str | None  # where devices connect (no secret in it)
    ca_file: str | None
    protocol: str = "mqtt"
    sip: SipServer | None = None  # a GB/T 28181 device's platform settings
    gateway: dict[str, Any] | None = None  # a gateway device's settings (gateway_login.device_settings)

    def as_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"device_id": self.device_id, "username": self.username, "password": self.password,
                  "client_id": self.username, "mqtt_url": self.mqtt_url, "ca_file": self.ca_file,
                  "protocol": self.protocol, "sip": self.sip.as_dict() if self.sip is not None else None,
                  "gateway": self.gateway}
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


def gateway_endpoints(s: Settings, jt808_port: int | None = None) -> GatewayEndpoints:
    """Where gateway devices are told to reach the hub; ``jt808_port``: the bound one (when the setting is 0)."""
    host = s.jt808_announce_host or ("127.0.0.1" if s.jt808_host in ("", "0.0.0.0", "::") else s.jt808_host)
    return GatewayEndpoints(host if s.jt808 else None, jt808_port or s.jt808_port, s.base_url(), s.owntracks,
                            s.osmand)


class Provisioner:
    def __init__(self, store: DeviceLoginStore, *, admin_url: str | None, device_url: str | None,
                 audit: AuditRecorder | None = None,
                 on_added: Callable[[str, str], Awaitable[None]] | None = None,
                 pki: Pki | None = None, mtls_url: str | None = None, reserved: frozenset[str] = frozenset(),
                 sip_store: SipLoginStore | None = None, sip_server: SipServer | None = None,
                 gateway_store: GatewayLoginStore | None = None, gateways: GatewayEndpoints | None = None) -> None:
        self.store = store
        self.gateway_store = gateway_store or GatewayLoginStore(store.db)  # the same database as the others
        self.gateways = gateways or GatewayEndpoints()
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
        # (device_id): a revoked GB/T 28181 or gateway device is dropped from its gateway at once
        self.on_revoked: Callable[[str], Awaitable[None]] | None = None
        # (device_id): a gateway device's secret changed (a phone gateway forgets what it checked; a JT/T 808
        # terminal's registration reopened)
        self.on_rotated: Callable[[str], Awaitable[None]] | None = None

    def _credentials(self, device_id: str, secret: str) -> Credentials:
        ca = BrokerAddress.parse(self.device_url).cafile if self.device_url else None
        return Credentials(device_id, device_id, secret, self._public_url(), ca)

    def _public_url(self) -> str | None:
        if not self.device_url:
            return None
        return BrokerAddress.parse(self.device_url).with_login(None, None).url()

    async def _broker(self, change: Callable[[BrokerAdmin], Awaitable[object]]) -> None:
        if self.admin_url is None:
            return  # the broker checks logins against the table (EMQX): nothing to tell it
        async with BrokerAdmin(self.admin_url) as admin:
            await change(admin)

    async def _give_broker(self, device_id: str, secret: str, *, owntracks: bool = False) -> None:
        """The device's login in the broker, replacing any it had: a login left by an earlier, half-done attempt,
        or the old secret on rotation (the plugin would keep a connected client on it; removing the login
        disconnects it, so from now on only the new secret works). ``owntracks``: a phone's role (its topics)."""
        commands = (device_login.dynsec_delete_device(device_id)
                    + device_login.dynsec_create_device(device_id, secret, owntracks=owntracks))
        await self._broker(lambda admin: admin.run(commands, allow=GONE))

    async def _audit(self, actor: str, role: str | None, action: str, device_id: str, **detail: object) -> None:
        if self.audit is not None:
            await self.audit.record(actor, action, device_id, dict(detail), role=role)

    async def add(self, device_id: str, unit_id: str, kind: str | None, *, actor: str, role: str | None = None,
                  protocol: str = "mqtt", password: str | None = None, phone: str | None = None,
                  terminal_id: str | None = None) -> Credentials:
        if not topics.is_valid_id(device_id) or not topics.is_valid_id(unit_id):
            raise ProvisioningError("invalid", "device and unit ids must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
        if protocol not in PROTOCOLS:
            raise ProvisioningError("invalid", f"protocol must be one of {', '.join(PROTOCOLS)}")
        if (phone is not None or terminal_id is not None) and protocol != "jt808":
            raise ProvisioningError("invalid", "a phone number and a terminal id are for JT/T 808 terminals only")
        if password is not None and protocol != "gb28181":
            raise ProvisioningError("invalid", f"a {protocol} device's secret is always generated by the hub")
        if device_id in self.reserved and protocol in ("mqtt", "owntracks"):  # its broker login would replace theirs
            raise ProvisioningError("invalid", f"{device_id} is the broker login of the hub or its administrator")
        if protocol in GATEWAY_PROTOCOLS:
            return await self._add_gateway(device_id, unit_id, kind, protocol, phone, terminal_id, actor=actor,
                                           role=role)
        if protocol == "gb28181":
            return await self._add_sip(device_id, unit_id, kind, password, actor=actor, role=role)
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

    def _gateway_credentials(self, login: GatewayLogin, secret: str | None) -> Credentials:
        mqtt_url = self._public_url() if login.protocol == "owntracks" else None
        answer = gateway_login.device_settings(login.protocol, login.device_id, login.ident, secret=secret,
                                               terminal_id=login.terminal_id, mqtt_url=mqtt_url,
                                               registration_open=login.registration_open, where=self.gateways)
        ca = BrokerAddress.parse(self.device_url).cafile if self.device_url and mqtt_url else None
        return Credentials(login.device_id, login.device_id, secret, mqtt_url, ca, login.protocol, gateway=answer)

    async def _add_gateway(self, device_id: str, unit_id: str, kind: str | None, protocol: str, phone: str | None,
                           terminal_id: str | None, *, actor: str, role: str | None) -> Credentials:
        try:
            ident = gateway_login.login_ident(protocol, device_id, phone, terminal_id)
        except ValueError as exc:
            raise ProvisioningError("invalid", str(exc)) from exc
        kind = kind or gateway_login.KIND_DEFAULTS[protocol]
        secret = None if protocol == "jt808" else device_login.new_secret()
        stored = device_login.new_login(device_id, secret) if secret is not None else None
        try:
            await self.gateway_store.add(device_id, unit_id, kind, protocol, ident, secret=stored,
                                         terminal_id=terminal_id)
        except LoginProblem as exc:
            raise ProvisioningError(exc.code, str(exc)) from exc
        if protocol == "owntracks" and secret is not None:
            try:
                await self._give_broker(device_id, secret, owntracks=True)
            except BrokerAdminError as exc:
                await self.gateway_store.revoke(device_id)
                raise ProvisioningError("broker", f"the broker refused the new login ({exc}); it was not created") \
                    from exc
        await self._audit(actor, role, "device.add", device_id, unit_id=unit_id, kind=kind, protocol=protocol,
                          ident=ident)
        if self.on_added is not None:
            await self.on_added(device_id, unit_id)
        login = GatewayLogin(device_id, unit_id, protocol, ident, stored, terminal_id, protocol == "jt808")
        return self._gateway_credentials(login, secret)

    async def _rotate_gateway(self, current: GatewayLogin, *, actor: str, role: str | None) -> Credentials:
        device_id = current.device_id
        secret = None if current.protocol == "jt808" else device_login.new_secret()
        try:
            login = await self.gateway_store.rotate(
                device_id, device_login.new_login(device_id, secret) if secret is not None else None)
        except LoginProblem as exc:
            raise ProvisioningError(exc.code, str(exc)) from exc
        if login.protocol == "owntracks" and secret is not None:
            try:
                await self._give_broker(device_id, secret, owntracks=True)
            except BrokerAdminError as exc:
                raise ProvisioningError("broker", f"the new secret is stored but the broker could not take it ({exc})"
                                                  "; the phone cannot connect until the broker is updated") from exc
        await self._audit(actor, role, "device.rotate", device_id, protocol=login.protocol, ident=login.ident)
        if self.on_rotated is not None:
            await self.on_rotated(device_id)
        return self._gateway_credentials(login, secret)

    async def _revoke_gateway(self, device_id: str, *, actor: str, role: str | None) -> None:
        try:
            login = await self.gateway_store.revoke(device_id)
        except LoginProblem as exc:
            raise ProvisioningError(exc.code, str(exc)) from exc
        await self._audit(actor, role, "device.revoke", device_id, protocol=login.protocol, ident=login.ident)
        if self.on_revoked is not None:
            await self.on_revoked(device_id)
        if login.protocol == "owntracks":
            try:
                await self._broker(lambda admin: admin.remove_device(device_id))
            except BrokerAdminError as exc:
                log.error("phone %s is revoked in the table but the broker was not told: %s", device_id, exc)
                raise ProvisioningError("broker", f"revoked in the table, but the broker could not be told ({exc}): "
                                                  "it still accepts the phone until it is reached") from exc

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
        gateway = await self.gateway_store.by_device(device_id)
        if gateway is not None and password is None:
            return await self._rotate_gateway(gateway, actor=actor, role=role)
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
            raise ProvisioningError("invalid", "only a GB/T 28181 camera's password may be given: others are made "
                                               "by the hub")
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
        if await self.gateway_store.by_device(device_id) is not None:
            await self._revoke_gateway(device_id, actor=actor, role=role)
            return
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
        # A device revoked in one table may be live in the other (an MQTT device turned OwnTracks phone): kept.
        live = {login.username for login in await self.store.active()}
        live |= {login.device_id for login in await self.gateway_store.live("owntracks")}
        revoked = (set(await self.store.revoked()) | set(await self.gateway_store.revoked("owntracks"))) - live
        if not revoked:
            return 0
        async with BrokerAdmin(self.admin_url) as admin:
            present = [c for c in await admin.list_clients() if c in revoked]
            for device_id in present:
                await admin.remove_device(device_id)
        if present:
            log.warning("removed %d revoked device login(s) from the broker: %s", len(present), ", ".join(present))
        return len(present)
