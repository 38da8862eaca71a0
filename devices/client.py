"""The client a field device runs: body camera, radio, vehicle tracker.

It connects with a retained ``offline`` Last Will, announces itself ``online``,
publishes fixes at QoS 1, keeps fixes in a bounded buffer while the link is
down and uploads them as batches when it comes back (store-and-forward), and
signs for every command automatically with an ``ack`` event before handing it
to the application. ``hold_uplink`` keeps fixes and events on the device without dropping the
link, as in a dead zone where commands still get through, and uploads them on release.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from gmqtt import Client as MqttClient
from gmqtt import Message
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

from devices import payloads, topics
from devices.broker import BrokerAddress
from devices.clock import now_ms
from devices.errors import PayloadError
from devices.payloads import Command, Event, Fix, Status
from devices.tasks import cancel_and_wait

__all__ = ["DeviceClient"]

log = logging.getLogger(__name__)

CommandHandler = Callable[[Command], Awaitable[None] | None]



class DeviceClient:
    """One device's MQTT session.

    ``protocol`` is 5 or 4 (MQTT 3.1.1). ``buffer_size`` bounds the
    store-and-forward buffer; when it overflows the oldest fixes go first and
    are counted in ``dropped``.
    """

    def __init__(
        self,
        device_id: str,
        mqtt_url: str,
        *,
        kind: str = "vehicle",
        unit_id: str | None = None,
        protocol: int = 5,
        buffer_size: int = 10_000,
        on_command: CommandHandler | None = None,
        reconnect_delay: float = 1.0,
    ) -> None:
        if not topics.is_valid_id(device_id):
            raise ValueError(f"invalid device id {device_id!r}")
        self.device_id = device_id
        self.kind = kind
        self.unit_id = unit_id
        self.address = BrokerAddress.parse(mqtt_url)
        self._ssl = self.address.ssl_context()
        self.protocol = MQTTv50 if protocol == 5 else MQTTv311
        self.on_command = on_command
        self.buffer: deque[Fix] = deque(maxlen=buffer_size)
        self.pending_events: deque[Event] = deque(maxlen=1000)
        self.dropped = 0
        self.sent = 0
        self.commands: list[Command] = []
        self.acks: dict[str, int] = {}  # cmd_id -> device time of the first ack sent for it
        self._held = False
        self._connected = asyncio.Event()
        self._stopping = False
        self._reconnect_delay = reconnect_delay
        self._connector: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._topic_fix = topics.device_topic(device_id, "telemetry")
        self._topic_status = topics.device_topic(device_id, "status")
        self._topic_event = topics.device_topic(device_id, "event")
        self._topic_cmd = topics.device_topic(device_id, "cmd")
        self._client = self._make_client()

    # ------------------------------------------------------------ lifecycle
    def _make_client(self) -> MqttClient:
        will = Message(
            self._topic_status,
            payloads.encode_status(Status(ts=now_ms(), state="offline", kind=self.kind, unit_id=self.unit_id)),
            qos=1,
            retain=True,
        )
        # A persistent session keeps commands sent while the device is away.
        extra: dict[str, Any] = {"session_expiry_interval": 3600} if self.protocol == MQTTv50 else {}
        client = MqttClient(self.device_id, clean_session=False, will_message=will, **extra)
        client.set_config({"reconnect_retries": -1, "reconnect_delay": self._reconnect_delay})
        if self.address.username:
            client.set_auth_credentials(self.address.username, self.address.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def set_login(self, username: str, password: str, url: str | None = None) -> None:
        """The login (and, optionally, the broker) to connect with from the next connect on."""
        address = BrokerAddress.parse(url) if url else self.address
        self.address = address.with_login(username, password)
        self._ssl = self.address.ssl_context()
        self._client.set_auth_credentials(username, password)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self, wait: float | None = 10.0) -> None:
        """Connect in the background (retrying forever); wait up to ``wait`` s for the first link."""
        self._stopping = False
        self._connector = asyncio.create_task(self._connect_loop())
        if wait:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._connected.wait(), wait)

    async def _connect_loop(self) -> None:
        while not self._stopping:
            try:
                await self._client.connect(self.address.host, self.address.port, ssl=self._ssl or False,
                                           version=self.protocol, keepalive=30)
                return  # from here on gmqtt reconnects by itself
            except (TimeoutError, OSError) as exc:
                log.debug("%s: broker not reachable (%s), retrying", self.device_id, exc)
            except Exception as exc:  # gmqtt raises its own errors for refused CONNACKs
                log.warning("%s: connect refused: %s", self.device_id, exc)
            await asyncio.sleep(self._reconnect_delay)

    async def stop(self, announce: bool = True) -> None:
        """Say ``offline`` (retained) and disconnect cleanly."""
        self._stopping = True
        await cancel_and_wait(self._connector)
        if self.connected:
            if announce:
                self.send_status(state="offline")
                await asyncio.sleep(0.05)
            with contextlib.suppress(Exception):
                await self._client.disconnect()
        self._connected.clear()
        for task in list(self._tasks):
            task.cancel()

    async def kill(self) -> None:
        """Drop the connection without a DISCONNECT, so the broker publishes the Last Will."""
        self._stopping = True
        self._client.stop_reconnect()
        self._connected.clear()
        conn = self._client._connection
        if conn is not None and conn._transport is not None:
            conn._transport.abort()

    async def __aenter__(self) -> DeviceClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----------------------------------------------------------- callbacks
    def _on_connect(self, client: MqttClient, flags: int, rc: int, properties: Any) -> None:
        client.subscribe(self._topic_cmd, qos=1)
        self.send_status(state="online")
        self._connected.set()
        self.flush()

    def _on_disconnect(self, client: MqttClient, packet: Any, exc: Exception | None = None) -> None:
        self._connected.clear()

    def _on_message(self, client: MqttClient, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        try:
            command = payloads.decode_command(payload)
        except PayloadError as exc:
            log.warning("%s: bad command refused: %s", self.device_id, exc)
            return 0
        # Sign for it first (签收): the hub times acknowledgment from this event.
        ts = now_ms()
        self.acks.setdefault(command.cmd_id, ts)
        self.send_event("ack", ts=ts, cmd_id=command.cmd_id)
        self.commands.append(command)
        if self.on_command is not None:
            result = self.on_command(command)
            if asyncio.iscoroutine(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return 0

    # ------------------------------------------------------------ publishing
    def hold_uplink(self, on: bool) -> None:
        """Hold fixes and events on the device (``True``) without disconnecting; ``False`` uploads what was held."""
        self._held = on
        if not on:
            self.flush()

    @property
    def uplink_held(self) -> bool:
        return self._held

    def send_fix(self, fix: Fix) -> None:
        """Publish one fix (QoS 1), or keep it for later while offline or held."""
        if not self.connected or self._held or self.buffer:
            if len(self.buffer) == self.buffer.maxlen:
                self.dropped += 1
            self.buffer.append(fix)
            self.flush()
            return
        self._client.publish(self._topic_fix, payloads.encode_fixes([fix]), qos=1)
        self.sent += 1

    def flush(self) -> int:
        """Upload held events, then buffered fixes as batches of up to 1000; returns the fixes sent."""
        if self._held:
            return 0
        while self.pending_events and self.connected:
            self._client.publish(self._topic_event, payloads.encode_event(self.pending_events.popleft()), qos=1)
        count = 0
        while self.buffer and self.connected:
            batch = [self.buffer.popleft() for _ in range(min(payloads.MAX_BATCH, len(self.buffer)))]
            self._client.publish(self._topic_fix, payloads.encode_fixes(batch), qos=1)
            count += len(batch)
        self.sent += count
        return count

    def send_status(self, state: str = "online", **fields: Any) -> None:
        status = Status(ts=now_ms(), state=state, kind=self.kind, unit_id=self.unit_id, **fields)
        self._client.publish(self._topic_status, payloads.encode_status(status), qos=1, retain=True)

    def send_event(self, type: str, ts: int | None = None, **fields: Any) -> None:
        event = Event(ts=ts if ts is not None else now_ms(), type=type, data=fields)
        if self.connected and not self._held:
            self._client.publish(self._topic_event, payloads.encode_event(event), qos=1)
        else:  # kept with its own device time, sent on reconnect or release
            self.pending_events.append(event)
