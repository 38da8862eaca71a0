"""Getting a device's login from the hub (``POST /api/v1/devices``, admin token), as an installer would.

Used by the simulators, the benchmarks and the tests: each device connects with its own login, like a deployed one.
A device that already has a login gets a new secret (``rotate``): the old one stops working.
"""

from __future__ import annotations

from typing import Any

import httpx

from devices.broker import BrokerAddress
from devices.errors import DevicesError

__all__ = ["UNTIL_LOGIN", "Login", "provision"]

# A client made before its login is known: the real broker URL comes with the login (DeviceClient.set_login).
UNTIL_LOGIN = "mqtts://127.0.0.1:8883"


class Login:
    """A device's credentials as the hub issued them (the secret is not in ``repr``)."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.device_id = str(answer["device_id"])
        self.username = str(answer["username"])
        self._password = str(answer["password"])
        self.mqtt_url: str | None = answer.get("mqtt_url")

    @property
    def password(self) -> str:
        return self._password

    def url(self, base: str | None = None) -> str:
        """The device's connection URL with its login, on ``base`` (mqtts://host:port?cafile=...) or on the
        hub's own device URL."""
        where = base or self.mqtt_url
        if not where:
            raise DevicesError("the hub named no device MQTT URL: pass one")
        return BrokerAddress.parse(where).with_login(self.username, self._password).url()

    def __repr__(self) -> str:
        return f"Login({self.device_id!r})"


async def provision(http: httpx.AsyncClient, device_id: str, unit_id: str, kind: str | None = None) -> Login:
    """The device's login: added, or re-keyed when it has one. ``http`` carries an admin token."""
    body: dict[str, Any] = {"device_id": device_id, "unit_id": unit_id}
    if kind:
        body["kind"] = kind
    resp = await http.post("/api/v1/devices", json=body)
    if resp.status_code == 409:
        resp = await http.post(f"/api/v1/devices/{device_id}/rotate")
    if not resp.is_success:
        raise DevicesError(f"the hub refused a login for {device_id}: HTTP {resp.status_code} {resp.text[:300]}")
    return Login(resp.json())
