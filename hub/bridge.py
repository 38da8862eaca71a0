"""The hub's MQTT session: a persistent QoS 1 subscription with acknowledgment after commit.

The session is persistent (clean start off, a session expiry), so what devices
publish while the hub is down waits in the broker. A QoS 1 message is
acknowledged (PUBACK) only once the pipeline has committed it to the database:
if the hub dies first, the broker delivers it again and the database's
idempotent insert keeps one copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from gmqtt import Client as MqttClient
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

from devices.broker import BrokerAddress
from devices.topics import HUB_SUBSCRIPTIONS
from hub.errors import HubError
from hub.pipeline import Pipeline

log = logging.getLogger(__name__)


class MqttBridge:
    def __init__(self, url: str, pipeline: Pipeline, *, client_id: str = "fieldhub-hub",
                 session_expiry_s: int = 7 * 24 * 3600, receive_maximum: int = 65535, protocol: int = 5) -> None:
        self.address = BrokerAddress.parse(url)
        self.pipeline = pipeline
        self.connected = asyncio.Event()
        self.connects = 0
        self.version = MQTTv50 if protocol == 5 else MQTTv311
        # MQTT 3.1.1 has no properties: its session lives until the broker drops it.
        props: dict[str, int] = ({"session_expiry_interval": session_expiry_s, "receive_maximum": receive_maximum}
                                 if protocol == 5 else {})
        self._client = MqttClient(client_id, clean_session=False, optimistic_acknowledgement=False, **props)
        self._client.set_config({"reconnect_retries": -1, "reconnect_delay": 1})
        if self.address.username:
            self._client.set_auth_credentials(self.address.username, self.address.password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    async def __aenter__(self) -> MqttBridge:
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                await asyncio.wait_for(
                    self._client.connect(self.address.host, self.address.port, version=self.version, keepalive=30), 10)
                break
            except (TimeoutError, OSError) as exc:
                if asyncio.get_running_loop().time() > deadline:
                    raise HubError(f"MQTT broker {self.address.url()} not reachable: {exc}") from exc
                await asyncio.sleep(0.5)
        await asyncio.wait_for(self.connected.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self._client.disconnect()
        self.connected.clear()

    def _on_connect(self, client: MqttClient, flags: int, rc: int, properties: Any) -> None:
        self.connects += 1
        for topic in HUB_SUBSCRIPTIONS:
            client.subscribe(topic, qos=1)
        self.connected.set()
        log.info("MQTT connected to %s (session present: %s)", self.address.url(), bool(flags))

    def _on_disconnect(self, client: MqttClient, packet: Any, exc: Exception | None = None) -> None:
        self.connected.clear()
        log.warning("MQTT connection lost; reconnecting")

    async def _on_message(self, client: MqttClient, topic: str, payload: bytes, qos: int,
                          properties: Any) -> int:
        future = self.pipeline.submit(topic, payload, qos)
        if future is not None:
            await asyncio.shield(future)
        return 0  # PUBACK reason: success

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Send a command to a device."""
        self._client.publish(topic, payload, qos=qos, retain=retain)
