"""Device logins: the secret a device connects with, how it is stored, and what the broker lets it do.

A device's MQTT login is its device id (username = client id) and a random secret shown once at provisioning.
The hub stores only a PBKDF2-SHA512 digest of it, in a form two brokers can check without the hub:

- Mosquitto's dynamic-security plugin keeps ``password`` (base64 of the 64-byte key), ``salt`` (base64 of the salt
  bytes) and ``iterations`` per client, so the embedded broker's configuration is written straight from the table;
- EMQX's PostgreSQL authenticator (``pbkdf2``, ``mac_fun = sha512``) takes the salt column as text and the hash as
  hex, so the salt is generated as text (its UTF-8 bytes are the PBKDF2 salt) and the digest is stored as hex.

OwnTracks phones (a gateway login, :mod:`hub.domain.gateway_login`) connect to the same broker with the same kind
of login; their role grants the OwnTracks topics of their own device id instead (:func:`owntracks_acls`).

The secrets are 256-bit random values, not passwords a person chose: key stretching adds nothing against guessing
them, while every iteration is paid by the broker on every CONNECT. 1,000 iterations keep a fleet's reconnect storm
cheap (Mosquitto's own default is 101).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, Final, Literal

from devices.topics import device_topic

__all__ = [
    "ADMIN_ROLE",
    "HUB_ROLE",
    "ITERATIONS",
    "StoredLogin",
    "device_acls",
    "device_role",
    "dynsec_client",
    "dynsec_config",
    "dynsec_create_device",
    "dynsec_delete_device",
    "hash_secret",
    "login_acls",
    "new_login",
    "new_secret",
    "owntracks_acls",
    "verify_secret",
]

ITERATIONS: Final = 1000
KEY_BYTES: Final = 64
HUB_ROLE: Final = "fieldhub-hub"
ADMIN_ROLE: Final = "fieldhub-admin"
ROLE_PREFIX: Final = "fieldhub-device-"
CONTROL_TOPIC: Final = "$CONTROL/dynamic-security/v1"
DEVICE_WRITES: Final = ("telemetry", "status", "event")
OWNTRACKS_ROOT: Final = "owntracks"


@dataclass(frozen=True, slots=True)
class StoredLogin:
    """What is kept of a login: never the secret."""

    username: str
    salt: str
    secret_hash: str  # hex
    iterations: int = ITERATIONS
    # The topics the broker grants the login: the contract's device topics, or an OwnTracks phone's own topics.
    topics: Literal["fieldhub", "owntracks"] = "fieldhub"


def new_secret() -> str:
    """A device secret: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def hash_secret(secret: str, salt: str, iterations: int = ITERATIONS) -> str:
    return hashlib.pbkdf2_hmac("sha512", secret.encode(), salt.encode(), iterations, KEY_BYTES).hex()


def new_login(username: str, secret: str) -> StoredLogin:
    salt = secrets.token_urlsafe(9)  # 12 text characters, 72 random bits
    return StoredLogin(username, salt, hash_secret(secret, salt))


def verify_secret(login: StoredLogin, secret: str) -> bool:
    return hmac.compare_digest(hash_secret(secret, login.salt, login.iterations), login.secret_hash)


def device_role(device_id: str) -> str:
    return ROLE_PREFIX + device_id


def device_acls(device_id: str) -> list[dict[str, Any]]:
    """A device writes its own telemetry, status and event topics and subscribes to its own cmd topic; nothing else
    (the plugin's default denies every other publish and subscription). Exact topics, one role per device: the
    plugin in Mosquitto 2.0 does not substitute %u/%c in its ACLs."""
    acls: list[dict[str, Any]] = [
        {"acltype": "publishClientSend", "topic": device_topic(device_id, channel), "allow": True}
        for channel in DEVICE_WRITES]
    acls.append({"acltype": "subscribePattern", "topic": device_topic(device_id, "cmd"), "allow": True})
    return acls


def owntracks_acls(device_id: str) -> list[dict[str, Any]]:
    """An OwnTracks phone (user = device id) publishes below ``owntracks/{its id}/{any device name}`` (the location
    topic and its sub-topics: event, lwt, waypoints, ...) and subscribes to its own command topics; it may not read
    other phones' positions (the app's "friends" subscription is refused)."""
    mine = f"{OWNTRACKS_ROOT}/{device_id}"
    return [_allow("publishClientSend", mine + "/+"), _allow("publishClientSend", mine + "/+/+"),
            _allow("subscribePattern", mine + "/+/cmd")]


def login_acls(login: StoredLogin) -> list[dict[str, Any]]:
    return owntracks_acls(login.username) if login.topics == "owntracks" else device_acls(login.username)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def dynsec_client(login: StoredLogin, roles: list[str], *, pin_client_id: bool = True) -> dict[str, Any]:
    """A client entry of the plugin's configuration file, from a stored login. ``pin_client_id``: the broker refuses
    this login with any other client id, so nobody can take over its session."""
    entry: dict[str, Any] = {"username": login.username, "password": _b64(bytes.fromhex(login.secret_hash)),
                             "salt": _b64(login.salt.encode()), "iterations": login.iterations,
                             "roles": [{"rolename": role} for role in roles]}
    if pin_client_id:
        entry["clientid"] = login.username
    return entry


def _allow(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "allow": True}


def _hub_role() -> dict[str, Any]:
    acls = [_allow(kind, "fieldhub/#") for kind in ("publishClientSend", "publishClientReceive",
                                                     "subscribePattern", "unsubscribePattern")]
    # The OwnTracks gateway: every phone's messages in, commands (reportLocation) out on their cmd topics.
    acls += [_allow("subscribePattern", OWNTRACKS_ROOT + "/#"), _allow("unsubscribePattern", OWNTRACKS_ROOT + "/#"),
             _allow("publishClientReceive", OWNTRACKS_ROOT + "/#"),
             _allow("publishClientSend", OWNTRACKS_ROOT + "/+/+/cmd")]
    return {"rolename": HUB_ROLE, "acls": acls}


def _admin_role() -> dict[str, Any]:
    acls = [_allow(kind, CONTROL_TOPIC + "/#") for kind in ("publishClientSend", "publishClientReceive",
                                                             "subscribePattern", "unsubscribePattern")]
    return {"rolename": ADMIN_ROLE, "acls": acls}


def dynsec_config(hub: StoredLogin, admin: StoredLogin, devices: list[StoredLogin],
                  services: tuple[StoredLogin, ...] = ()) -> dict[str, Any]:
    """The whole configuration of the embedded broker's plugin: the hub's login (pinned to its client id), the
    administrator the hub provisions devices with, and one login and role per device (an OwnTracks phone's role
    grants its OwnTracks topics: ``StoredLogin.topics``). ``services``: further logins
    with the hub's rights, not pinned to a client id (the test suite's, whose hubs each take their own session id)."""
    clients = [dynsec_client(hub, [HUB_ROLE]), dynsec_client(admin, [ADMIN_ROLE], pin_client_id=False)]
    clients += [dynsec_client(login, [HUB_ROLE], pin_client_id=False) for login in services]
    roles = [_hub_role(), _admin_role()]
    for login in devices:
        clients.append(dynsec_client(login, [device_role(login.username)]))
        roles.append({"rolename": device_role(login.username), "acls": login_acls(login)})
    return {"clients": clients, "roles": roles, "groups": [],
            "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": True,
                                 "subscribe": False, "unsubscribe": True}}


def dynsec_create_device(device_id: str, secret: str, *, owntracks: bool = False) -> list[dict[str, Any]]:
    """Control commands that give a running broker this device's login and role (``owntracks``: an OwnTracks
    phone's, see :func:`owntracks_acls`)."""
    role = device_role(device_id)
    acls = owntracks_acls(device_id) if owntracks else device_acls(device_id)
    return [{"command": "createRole", "rolename": role, "acls": acls},
            {"command": "createClient", "username": device_id, "password": secret, "clientid": device_id,
             "roles": [{"rolename": role}]}]


def dynsec_delete_device(device_id: str) -> list[dict[str, Any]]:
    """Control commands that remove the login (the plugin disconnects a connected client) and its role."""
    return [{"command": "deleteClient", "username": device_id},
            {"command": "deleteRole", "rolename": device_role(device_id)}]

