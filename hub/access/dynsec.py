"""Mosquitto's dynamic-security plugin, driven over its control topic.

The hub (and ``fieldhub device ...``) add, re-key and remove device logins on a running broker by publishing
control commands to ``$CONTROL/dynamic-security/v1`` with the administrator login and reading the plugin's answers
on ``.../response``. The plugin applies each change at once: a deleted login is disconnected and refused from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from typing import Any

from gmqtt import Client as MqttClient
from gmqtt.mqtt.constants import MQTTv50
from gmqtt.mqtt.handler import MQTTConnectError

from devices.broker import BrokerAddress
from hub.domain.device_login import CONTROL_TOPIC, dynsec_create_device, dynsec_delete_device
from hub.errors import HubError

__all__ = ["GONE", "BrokerAdmin", "BrokerAdminError"]

log = logging.getLogger(__name__)

RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
GONE = ("Client not found", "Role not found")  # what removing an absent login answers


class BrokerAdminError(HubError):
    """The broker could not be reached with the administrator login, or refused a control command."""


class BrokerAdmin:
    """One administrator session. Commands go out one batch at a time; each batch's answers come back in order,
    matched by a correlation id."""

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self.address = BrokerAddress.parse(url)
        self.timeout_s = timeout_s
        # Not pinned to a client id: the hub and the CLI may both administer at once.
        self._client = MqttClient("fieldhub-admin-" + secrets.token_hex(4), clean_session=True)
        if self.address.username:
            self._client.set_auth_credentials(self.address.username, self.address.password)
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._waiting: dict[str, asyncio.Future[list[dict[str, Any]]]] = {}
        self._subscribed = asyncio.Event()
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> BrokerAdmin:
        where = f"{self.address.host}:{self.address.port}"
        try:
            await asyncio.wait_for(self._client.connect(
                self.address.host, self.address.port, ssl=self.address.ssl_context() or False, version=MQTTv50,
                keepalive=30), self.timeout_s)
        except MQTTConnectError as exc:
            raise BrokerAdminError(f"broker {where} refused the administrator login: {exc}") from exc
        except (TimeoutError, OSError) as exc:
            raise BrokerAdminError(f"broker {where} not reachable: {exc or 'timed out'}") from exc
        self._client.subscribe(RESPONSE_TOPIC, qos=1)
        try:
            await asyncio.wait_for(self._subscribed.wait(), self.timeout_s)
        except TimeoutError as exc:
            await self.close()
            raise BrokerAdminError(f"broker {where} did not confirm the control subscription") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._client.disconnect(), 2)

    def _on_subscribe(self, client: Any, mid: int, qos: Any, properties: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        try:
            responses = json.loads(payload)["responses"]
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable answer on %s", topic)
            return 0
        key = next((r.get("correlationData") for r in responses if isinstance(r, dict) and r.get("correlationData")),
                   None)
        future = self._waiting.pop(key, None) if key else None
        if future is not None and not future.done():
            future.set_result(responses)
        return 0

    async def run(self, commands: list[dict[str, Any]], *, allow: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Send ``commands`` as one batch; raise on the first answer carrying an error not named in ``allow``
        (e.g. ``"Client not found"`` when removing what is already gone)."""
        if not commands:
            return []
        async with self._lock:
            key = secrets.token_hex(8)
            batch = [dict(c, correlationData=key) for c in commands]
            future: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
            self._waiting[key] = future
            self._client.publish(CONTROL_TOPIC, json.dumps({"commands": batch}).encode(), qos=1)
            try:
                responses = await asyncio.wait_for(future, self.timeout_s)
            except TimeoutError as exc:
                raise BrokerAdminError(f"the broker did not answer {commands[0]['command']} within "
                                       f"{self.timeout_s} s (is the dynamic-security plugin loaded?)") from exc
            finally:
                self._waiting.pop(key, None)
        for response in responses:
            error = response.get("error")
            if error and error not in allow:
                raise BrokerAdminError(f"{response.get('command')}: {error}")
        return responses

    async def replace_device(self, device_id: str, secret: str) -> None:
        """The device's login and role with ``secret``, replacing any it had (one batch: the removal may find
        nothing, the creation may not fail). Removing a login disconnects a client connected with it."""
        await self.run(dynsec_delete_device(device_id) + dynsec_create_device(device_id, secret), allow=GONE)

    async def remove_device(self, device_id: str) -> None:
        await self.run(dynsec_delete_device(device_id), allow=GONE)

    async def list_clients(self) -> list[str]:
        (answer,) = await self.run([{"command": "listClients", "verbose": False}])
        return [str(c) for c in answer.get("data", {}).get("clients", [])]
