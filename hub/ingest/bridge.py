"""The hub's MQTT session: a persistent QoS 1 subscription with acknowledgment after commit.

The session is persistent (clean start off, a session expiry), so what devices
publish while the hub is down waits in the broker. A QoS 1 message is
acknowledged (PUBACK) only once the pipeline has committed it to the database:
if the hub dies first, the broker delivers it again and the database's
idempotent insert keeps one copy.

gmqtt can defer a PUBACK only by running one asyncio Task per message (an async
``on_message``), which cost more than half of the hub's CPU at 8,000 fixes/s.
:class:`_DeferredAckClient` is a small adapter over two gmqtt internals instead:
it takes over the QoS 1 publish handler (hand the message over, no Task) and
sends the PUBACKs of a whole committed cut at once. gmqtt is pinned to a minor
range and :func:`_check_internals` fails loudly at start-up if they move.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

from gmqtt import Client as MqttClient
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.mqtt.handler import MQTTConnectError, MqttPackageHandler

from devices.broker import BrokerAddress
from devices.topics import HUB_SUBSCRIPTIONS
from hub.errors import HubError
from hub.ingest.pipeline import Pipeline

log = logging.getLogger(__name__)


def _check_internals() -> None:
    """The gmqtt internals this module relies on; a gmqtt upgrade that moves them must fail here."""
    for name in ("_handle_qos_1_publish_packet", "_send_puback"):
        if not callable(getattr(MqttPackageHandler, name, None)):
            raise HubError(f"gmqtt internals changed: MqttPackageHandler.{name} is gone; see hub/ingest/bridge.py")
    if "_package_handler" not in MqttClient.__init__.__code__.co_names:
        raise HubError("gmqtt internals changed: Client._package_handler is gone; see hub/ingest/bridge.py")


_check_internals()

# (topic, payload, qos, retained) -> for QoS 1 the future of its commit (PUBACK once it resolves), None: refused
# for now (never acknowledged, so the broker sends it again). The pipeline's submit has this shape.
Submit = Callable[[str, bytes, int, bool], "asyncio.Future[None] | None"]


class MqttBridge:
    def __init__(self, url: str, pipeline: Pipeline, *, client_id: str = "fieldhub-hub",
                 session_expiry_s: int = 7 * 24 * 3600, receive_maximum: int = 65535, protocol: int = 5,
                 connect_timeout_s: float = 5.0) -> None:
        self.address = BrokerAddress.parse(url)
        self.connect_timeout_s = connect_timeout_s
        self.pipeline = pipeline
        self.connected = asyncio.Event()
        self.connects = 0
        self.acks_sent = 0
        self.retained_cleared = 0
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
        self._client.on_message = self._on_message  # QoS 0: a plain call, nothing to acknowledge
        handler = self._client._package_handler
        handler._handle_qos_1_publish_packet = self._on_qos1
        self._send_puback = handler._send_puback
        self._cut_future: asyncio.Future[None] | None = None
        self._cut_mids: list[int] = []
        # Gateways that speak over this broker in their own topics (OwnTracks: ``owntracks/#``): topic filter ->
        # a submit of the same shape as the pipeline's, which translates and submits. Set before entering.
        self.routes: dict[str, Submit] = {}

    async def __aenter__(self) -> MqttBridge:
        # Bounded as a whole: a hub whose broker is not there says so within `connect_timeout_s`, not never.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout_s
        where = f"{self.address.host}:{self.address.port}"  # no credentials in the reason
        while True:
            left = deadline - loop.time()
            try:
                await asyncio.wait_for(
                    self._client.connect(self.address.host, self.address.port, ssl=self.address.ssl_context() or False,
                                         version=self.version, keepalive=30),
                    max(0.5, left))
                break
            except MQTTConnectError as exc:  # CONNACK refused: retrying a wrong login changes nothing
                raise HubError(f"MQTT broker {where} refused the hub's login ({self.address.username}): {exc}") from exc
            except (TimeoutError, OSError) as exc:
                if loop.time() + 0.5 > deadline:
                    raise HubError(f"MQTT broker {where} not reachable: {exc or 'timed out'}") from exc
                await asyncio.sleep(0.5)
        try:
            await asyncio.wait_for(self.connected.wait(), max(1.0, deadline - loop.time()))
        except TimeoutError as exc:
            raise HubError(f"MQTT broker {where} accepted the connection but did not answer") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self._client.disconnect()
        self.connected.clear()

    def _on_connect(self, client: MqttClient, flags: int, rc: int, properties: Any) -> None:
        self.connects += 1
        if flags:  # session present: what the broker held for it arrives now, all at once
            self.pipeline.catch_up()
        for topic in (*HUB_SUBSCRIPTIONS, *self.routes):
            # Retain-as-published (MQTT 5): the hub sees a device's retain flag on live messages and can refuse it.
            client.subscribe(topic, qos=1, retain_as_published=self.version == MQTTv50)
        self.connected.set()
        log.info("MQTT connected to %s (session present: %s)", self.address.safe_url(), bool(flags))

    def _on_disconnect(self, client: MqttClient, packet: Any, exc: Exception | None = None) -> None:
        self.connected.clear()
        log.warning("MQTT connection lost; reconnecting")

    def _retained(self, topic: str, properties: Any) -> bool:
        """A retained message a device may not keep (anything but its status) is cleared from the broker at once
        (an empty retained message on its topic); the pipeline then refuses it with the reason ``retained``."""
        if not properties.get("retain") or topic.endswith("/status"):
            return False
        if self.pipeline.device_known(topic):  # never write on behalf of a device the hub does not know
            self._client.publish(topic, b"", qos=1, retain=True)
            self.retained_cleared += 1
        return True

    def _route(self, topic: str) -> Submit | None:
        for prefix, submit in self._prefixes:
            if topic.startswith(prefix):
                return submit
        return None

    @functools.cached_property
    def _prefixes(self) -> tuple[tuple[str, Submit], ...]:
        # "owntracks/#" -> "owntracks/": the routes' filters are a root and a multi-level wildcard.
        return tuple((f.removesuffix("#"), submit) for f, submit in self.routes.items())

    def _submit(self, topic: str, payload: bytes, qos: int, properties: Any) -> asyncio.Future[None] | None:
        route = self._route(topic) if self.routes else None
        if route is not None:  # a gateway's own topic: its retained messages are its protocol's, left alone
            return route(topic, payload, qos, bool(properties.get("retain")))
        return self.pipeline.submit(topic, payload, qos, self._retained(topic, properties))

    def _on_message(self, client: MqttClient, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        self._submit(topic, payload, 0, properties)
        return 0

    def _on_qos1(self, mid: int, payload: bytes, topic: str, properties: Any) -> None:
        future = self._submit(topic, payload, 1, properties)
        if future is None:
            # Refused at the pipeline's hard cap (a broker ignoring our receive maximum): never acknowledged,
            # so the broker keeps it and sends it again when the session resumes.
            return
        if future is not self._cut_future:
            # A new commit future: acknowledge its messages, in order, once it resolves.
            self._cut_future, self._cut_mids = future, []
            future.add_done_callback(functools.partial(self._ack, mids=self._cut_mids, generation=self.connects))
        self._cut_mids.append(mid)

    def _ack(self, future: asyncio.Future[None], mids: list[int], generation: int) -> None:
        if future.cancelled() or generation != self.connects or not self.connected.is_set():
            return  # the broker re-sends these on the new connection; they are acknowledged then
        for mid in mids:
            self._send_puback(mid)
        self.acks_sent += len(mids)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Send a command to a device."""
        self._client.publish(topic, payload, qos=qos, retain=retain)
