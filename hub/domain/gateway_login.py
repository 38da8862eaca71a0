"""Logins of gateway devices: JT/T 808 terminals, OwnTracks and OsmAnd/Traccar Client phones.

Such a device does not speak the contract's MQTT, so its login is kept beside the MQTT and SIP ones
(:mod:`hub.storage.gateway_logins`) under an identifier its protocol presents:

- ``jt808``: the terminal's phone number, as :class:`jt808.header.Header` gives it (decimal digits without leading
  zeros). Nothing is secret at provisioning: the terminal's first registration gets an authentication code from
  :func:`new_auth_code`, whose digest is stored, and the registration window closes.
- ``owntracks`` and ``osmand``: the device id itself (the apps' user / device identifier), with a secret made by
  :func:`hub.domain.device_login.new_secret`.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

__all__ = ["GATEWAY_PROTOCOLS", "KIND_DEFAULTS", "MAX_PHONE_DIGITS", "MAX_TERMINAL_ID", "OSMAND_PATH",
           "OWNTRACKS_PATH", "GatewayEndpoints", "device_settings", "login_ident", "new_auth_code", "normalise_phone",
           "terminal_id_problem"]

GATEWAY_PROTOCOLS: Final = ("jt808", "owntracks", "osmand")
# The device kind a gateway device gets when provisioning names none.
KIND_DEFAULTS: Final = {"jt808": "vehicle", "owntracks": "phone", "osmand": "phone"}
MAX_PHONE_DIGITS: Final = 20  # JT/T 808-2019: BCD[10]; 2013: BCD[6] (12 digits)
MAX_TERMINAL_ID: Final = 30  # JT/T 808-2019: STRING[30]; 2013: BYTE[7]
AUTH_CODE_LENGTH: Final = 16
OWNTRACKS_PATH: Final = "/gateway/owntracks"  # the OwnTracks app's HTTP mode posts here (Basic authentication)
OSMAND_PATH: Final = "/gateway/osmand"  # Traccar Client / OsmAnd report here, the secret as ``key``
_CODE_ALPHABET: Final = string.ascii_letters + string.digits
_TERMINAL_ID_CHARS: Final = frozenset(string.ascii_letters + string.digits + "-")


def normalise_phone(text: str) -> str:
    """A terminal phone number as the codec's header gives it: the digits, leading zeros stripped ("0" for an
    all-zero number). Spaces, dashes and a leading ``+`` are not accepted: a number is typed as the terminal is
    configured with it, so what is stored matches what the terminal sends."""
    if not isinstance(text, str):
        raise ValueError("a terminal phone number is text of decimal digits")
    if not text:
        raise ValueError("a terminal phone number needs at least one digit")
    if len(text) > MAX_PHONE_DIGITS:
        raise ValueError(f"a terminal phone number has at most {MAX_PHONE_DIGITS} digits (got {len(text)})")
    if not all("0" <= c <= "9" for c in text):
        raise ValueError("a terminal phone number has only the digits 0-9 (no spaces, '+' or '-')")
    return text.lstrip("0") or "0"


def terminal_id_problem(text: str) -> str | None:
    """Why ``text`` cannot be a JT/T 808 terminal id (1..30 ASCII letters, digits or '-'), or None."""
    if not text:
        return "a terminal id has at least one character"
    if len(text) > MAX_TERMINAL_ID:
        return f"a terminal id has at most {MAX_TERMINAL_ID} characters (got {len(text)})"
    if not all(c in _TERMINAL_ID_CHARS for c in text):
        return "a terminal id has only ASCII letters, digits and '-'"
    return None


def login_ident(protocol: str, device_id: str, phone: str | None, terminal_id: str | None) -> str:
    """The identifier a gateway device logs in with (a terminal's normalised phone number, else the device id),
    after checking what its provisioning was given; ValueError says what is wrong."""
    if protocol not in GATEWAY_PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(GATEWAY_PROTOCOLS)}")
    if protocol != "jt808":
        if phone is not None or terminal_id is not None:
            raise ValueError("a phone number and a terminal id are for JT/T 808 terminals only")
        return device_id
    if phone is None:
        raise ValueError("a JT/T 808 terminal is known by its phone number: give it (--phone)")
    problem = terminal_id_problem(terminal_id) if terminal_id is not None else None
    if problem is not None:
        raise ValueError(problem)
    return normalise_phone(phone)


def new_auth_code() -> str:
    """A JT/T 808 authentication code: 16 random ASCII letters and digits (about 95 bits)."""
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(AUTH_CODE_LENGTH))


@dataclass(frozen=True, slots=True)
class GatewayEndpoints:
    """Where gateway devices reach the hub (what their configuration is told)."""

    jt808_host: str | None = None  # where terminals reach the JT/T 808 server; None while that gateway is off
    jt808_port: int = 6808
    base_url: str | None = None  # the hub's HTTP(S) base URL, where the phone apps post; None: not known here
    owntracks: bool = False  # whether the hub's OwnTracks gateway is on
    osmand: bool = False  # whether the hub's OsmAnd/Traccar Client gateway is on


def device_settings(protocol: str, device_id: str, ident: str, *, secret: str | None, terminal_id: str | None,
                    registration_open: bool, where: GatewayEndpoints, mqtt_url: str | None = None) -> dict[str, Any]:
    """What a gateway device is configured with, for the provisioning answer (``secret``: shown this once;
    ``mqtt_url``: the devices' broker, without a login, for OwnTracks' MQTT mode)."""
    if protocol == "jt808":
        return {"protocol": protocol, "enabled": where.jt808_host is not None, "host": where.jt808_host,
                "port": where.jt808_port, "transport": "tcp", "phone": ident, "terminal_id": terminal_id,
                "registration_open": registration_open}
    base = where.base_url.rstrip("/") if where.base_url else None
    if protocol == "owntracks":
        return {"protocol": protocol, "enabled": where.owntracks, "user": device_id,
                "mqtt": {"url": mqtt_url, "username": device_id, "client_id": device_id,
                         "topic": f"owntracks/{device_id}/<any device name>"},
                "http": {"path": OWNTRACKS_PATH, "url": base + OWNTRACKS_PATH if base else None,
                         "username": device_id}}
    if protocol == "osmand":
        key = quote(secret or "", safe="")
        return {"protocol": protocol, "enabled": where.osmand, "identifier": device_id, "path": OSMAND_PATH,
                "server_url": f"{base or '<hub base URL>'}{OSMAND_PATH}?key={key}"}
    raise ValueError(f"not a gateway protocol: {protocol}")
