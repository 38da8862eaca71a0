"""Response models of who may do what: the caller, live-feed tickets, API tokens, device logins, the audit log.

Like :mod:`hub.api.models` they describe the JSON the hub already builds and never reshape it: fields in the
order the keys are written, every field required, any other key passed through (``extra="allow"``).
"""

from __future__ import annotations

from typing import Any

from hub.api.models import View

__all__ = ["AuditEntry", "AuditPage", "DeviceCertificate", "DeviceLogin", "DeviceLoginList", "DeviceLoginState",
           "DeviceRevoked", "GatewaySettings", "LiveTicket", "Me", "NewToken", "Token", "TokenList"]


class Me(View):
    """The caller's token name and role, and whether the page should offer it the dispatcher's actions."""

    name: str
    role: str
    can_dispatch: bool


class LiveTicket(View):
    """A single-use ticket to open ``/api/v1/live?ticket=`` with."""

    ticket: str
    expires_in_s: int


class Token(View):
    """An API token as listed: never its secret or digest; times in epoch ms."""

    id: int
    name: str
    role: str
    device_id: str | None
    created_at: int
    expires_at: int | None
    revoked_at: int | None
    state: str  # valid, revoked or expired


class NewToken(View):
    """A token just created: its secret ``token``, shown this once, then what a listing shows."""

    token: str
    id: int
    name: str
    role: str
    device_id: str | None
    created_at: int
    expires_at: int | None
    revoked_at: int | None
    state: str


class TokenList(View):
    tokens: list[Token]


class DeviceLoginState(View):
    """A device and the state of its login (``none``, ``active``, ``revoked``); times in epoch ms."""

    device_id: str
    unit_id: str | None
    kind: str | None
    created_at: int | None
    rotated_at: int | None
    revoked_at: int | None
    login: str
    protocol: str | None  # of the login: mqtt, gb28181, jt808, owntracks or osmand; None without one
    ident: str | None  # what it logs in as: the device id, or a JT/T 808 terminal's phone number


class DeviceLoginList(View):
    devices: list[DeviceLoginState]


class SipPlatform(View):
    """The hub's SIP server as a GB/T 28181 camera is configured with it (its platform settings)."""

    server_id: str
    domain: str
    host: str | None  # None while the hub's GB/T 28181 gateway is off
    port: int
    transport: str
    enabled: bool


class GatewaySettings(View):
    """What a gateway device is configured with; the other keys by protocol: jt808 ``host``, ``port``,
    ``transport``, ``phone``, ``terminal_id``, ``registration_open``; owntracks ``user``, ``mqtt`` {url, username,
    client_id, topic}, ``http`` {path, url, username}; osmand ``identifier``, ``path``, ``server_url`` (the secret
    in it as ``key``)."""

    protocol: str  # jt808, owntracks or osmand
    enabled: bool  # whether the hub's gateway for it is on


class DeviceLogin(View):
    """A device's new login, its password shown this once."""

    device_id: str
    username: str
    password: str | None  # None for a JT/T 808 terminal: its code comes at its registration
    client_id: str
    mqtt_url: str | None
    ca_file: str | None
    protocol: str  # mqtt, gb28181, jt808, owntracks or osmand
    sip: SipPlatform | None = None  # gb28181: what the camera is configured with
    gateway: GatewaySettings | None = None  # jt808, owntracks, osmand: what the device is configured with


class DeviceCertificate(View):
    """A device's client certificate for the broker's mTLS listener, with its private key shown this once."""

    device_id: str
    certificate: str
    private_key: str
    ca_certificate: str
    mqtt_url: str


class DeviceRevoked(View):
    device_id: str
    login: str


class AuditEntry(View):
    """One recorded act: who (a token's name and role, or the hub itself) did what to what, at epoch ms ``at``."""

    id: int
    at: int
    actor: str
    role: str | None
    action: str
    target: str
    detail: dict[str, Any]


class AuditPage(View):
    entries: list[AuditEntry]
    next_before_id: int | None  # the next page's before_id; null when there is nothing older
