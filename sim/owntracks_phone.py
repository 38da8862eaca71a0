"""A simulated OwnTracks phone (the Android/iOS app), as strict as the app: MQTT or HTTP mode.

MQTT mode (the app's default): login = the device id and its secret, client id = the device id (the hub's broker
pins it), persistent session, a Last Will ``{"_type": "lwt", "tst": <connect time>}`` on the location topic
``owntracks/<id>/<name>``; locations are published there at QoS 1, retained (the app's defaults), and the phone
subscribes to ``owntracks/<id>/<name>/cmd``, where a ``reportLocation`` command makes it publish its position now
(trigger ``"r"``). HTTP mode: each message is POSTed as JSON with Basic authentication (user = device id) and the
``X-Limit-U``/``X-Limit-D`` headers; the answer is a JSON array whose ``cmd`` objects are executed alike. A message
the hub did not take (no answer, not 200) stays queued and is sent again, oldest first, as the app's outbox does.

Reporting follows the app's "move" monitoring mode: a location every ``move_s`` while moving, and while standing
still only the app's ping (trigger ``"p"``) every ``ping_s``. The pure parts (:func:`location_message`,
:func:`lwt_message`, :func:`read_command`, :func:`read_answer`, :class:`MoveSchedule`) hold no I/O.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import httpx
from gmqtt import Client as MqttClient
from gmqtt import Message
from gmqtt.mqtt.constants import MQTTv311

from devices.broker import BrokerAddress
from devices.payloads import Fix
from devices.tasks import cancel_and_wait
from devices.topics import is_valid_id

__all__ = ["CommandRefused", "MoveSchedule", "OwnTracksConfig", "OwnTracksPhone", "location_message", "lwt_message",
           "read_answer", "read_command"]

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES: Final = 64 * 1024
MOVING_MPS: Final = 0.5  # below this the phone counts as standing still
Position = Callable[[], Fix]  # the phone's location provider: a fix now (WGS-84, m/s, degrees, percent)


class CommandRefused(ValueError):
    """A command (or an HTTP answer) the phone does not execute; ``reason`` names why (counted)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


# ------------------------------------------------------------------ pure: the app's JSON
def location_message(fix: Fix, *, tid: str, trigger: str | None, conn: str = "m", charging: bool = False,
                     now_s: int | None = None) -> dict[str, Any]:
    """The app's ``location`` message for ``fix``: ``tst`` in seconds, ``vel`` in km/h, integers as the app
    writes them; ``t`` only for a trigger other than the automatic one (``p`` ping, ``r`` reportLocation, ...)."""
    message: dict[str, Any] = {"_type": "location", "tst": fix.ts // 1000, "lat": fix.lat, "lon": fix.lon,
                               "tid": tid, "conn": conn}
    if fix.acc is not None:
        message["acc"] = round(fix.acc)
    if fix.alt is not None:
        message["alt"] = round(fix.alt)
    if fix.speed is not None:
        message["vel"] = round(fix.speed * 3.6)
    if fix.heading is not None:
        message["cog"] = round(fix.heading) % 360
    if fix.battery is not None:
        message["batt"] = round(fix.battery)
        message["bs"] = 3 if fix.battery >= 100 and charging else (2 if charging else 1)
    if trigger:
        message["t"] = trigger
    if now_s is not None:
        message["created_at"] = now_s
    return message


def lwt_message(connected_s: int) -> dict[str, Any]:
    """The Last Will: ``tst`` is when the app connected (the booklet says so)."""
    return {"_type": "lwt", "tst": connected_s}


def _command(obj: object) -> str:
    if not isinstance(obj, dict):
        raise CommandRefused("not_object", f"a command is a JSON object, not {type(obj).__name__}")
    if obj.get("_type") != "cmd":
        raise CommandRefused("not_cmd", f"_type {str(obj.get('_type'))[:40]!r}")
    action = obj.get("action")
    if not isinstance(action, str) or not action:
        raise CommandRefused("bad_action", "action must be a non-empty string")
    return action[:64]


def _json(raw: bytes) -> object:
    if len(raw) > MAX_COMMAND_BYTES:
        raise CommandRefused("too_large", f"{len(raw)} bytes")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CommandRefused("bad_json", type(exc).__name__) from None


def read_command(raw: bytes) -> str:
    """The action of one command the phone received on its cmd topic; :class:`CommandRefused` otherwise."""
    return _command(_json(raw))


def read_answer(raw: bytes) -> tuple[list[str], int]:
    """An HTTP-mode answer: a JSON array of messages (an empty body is an empty array). Returns the actions of its
    ``cmd`` objects and how many other messages (friends' locations, cards...) it held; CommandRefused when the
    answer is not an array, or when a ``cmd`` object is malformed."""
    if not raw.strip():
        return [], 0
    messages = _json(raw)
    if not isinstance(messages, list):
        raise CommandRefused("not_array", f"the answer is a {type(messages).__name__}, not an array")
    actions, others = [], 0
    for message in messages:
        if isinstance(message, dict) and message.get("_type") == "cmd":
            actions.append(_command(message))
        else:
            others += 1
    return actions, others


@dataclass(slots=True)
class MoveSchedule:
    """The app's "move" mode: a report every ``move_s`` while moving, a ping every ``ping_s`` standing still.
    Pure: time in seconds is passed in. :meth:`due` says what is due now ("" automatic, "p" ping) or None."""

    move_s: float
    ping_s: float
    last_s: float | None = None

    def due(self, now_s: float, moving: bool) -> str | None:
        if self.last_s is None or (moving and now_s - self.last_s >= self.move_s):
            return ""
        if now_s - self.last_s >= self.ping_s:
            return "p"
        return None

    def sent(self, now_s: float) -> None:
        self.last_s = now_s


# ------------------------------------------------------------------ the phone
@dataclass(frozen=True, slots=True)
class OwnTracksConfig:
    """The app's connection preferences. ``mqtt_url``: the broker (mqtts://host:port?cafile=..., no login) for
    MQTT mode; ``http_url``: the hub's ``/gateway/owntracks`` for HTTP mode (exactly one of the two)."""

    device_id: str  # the app's "username" (the hub's device id)
    secret: str
    mqtt_url: str | None = None
    http_url: str | None = None
    name: str = "phone"  # the app's "device id", the last level of its topic
    tid: str = "ph"
    move_s: float = 10.0  # the app's move-mode locator interval
    ping_s: float = 900.0  # the app's ping while standing still
    tick_s: float = 1.0  # how often the location provider is looked at
    retry_s: float = 30.0  # HTTP mode: a failed send is tried again after this
    keepalive_s: int = 60
    remote_commands: bool = True  # the app's "remote commands" preference
    outbox: int = 10_000

    def __post_init__(self) -> None:
        if (self.mqtt_url is None) == (self.http_url is None):
            raise ValueError("give exactly one of mqtt_url (MQTT mode) and http_url (HTTP mode)")
        if not is_valid_id(self.device_id) or not is_valid_id(self.name):
            raise ValueError("the user and the device name follow the hub's id rule")

    @property
    def topic(self) -> str:
        return f"owntracks/{self.device_id}/{self.name}"


class OwnTracksPhone:
    """One phone running OwnTracks; :meth:`start`, :meth:`stop`. ``counters``: sent, answered, commands..."""

    def __init__(self, config: OwnTracksConfig, position: Position, *, wall: Callable[[], float] = time.time,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.position = position
        self.wall = wall
        self.transport = transport
        self.schedule = MoveSchedule(config.move_s, config.ping_s)
        self.counters: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()  # commands not executed, by reason
        # The locations sent: MQTT, handed to the QoS 1 session (gmqtt sends it again until PUBACKed); HTTP, 200.
        self.sent: deque[dict[str, Any]] = deque(maxlen=1000)
        self.connected = asyncio.Event()
        self._outbox: deque[dict[str, Any]] = deque(maxlen=config.outbox)
        self._client: MqttClient | None = None
        self._http: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._connector: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._trigger: str | None = None  # a location asked for now: "r" (reportLocation) or "u" (the user)

    @property
    def mode(self) -> str:
        return "mqtt" if self.config.mqtt_url is not None else "http"

    async def start(self, wait_s: float = 10.0) -> None:
        if self.config.mqtt_url is not None:
            await self._connect_mqtt(self.config.mqtt_url, wait_s)
        else:
            self._http = httpx.AsyncClient(timeout=10.0, transport=self.transport)
        self._task = asyncio.create_task(self._run(), name=f"owntracks-{self.config.device_id}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task, self._connector)
        self._task = self._connector = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.disconnect()
            self._client = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self.connected.clear()

    def report_location(self) -> None:
        """What a ``reportLocation`` command does: a location at once, trigger ``r``."""
        self._trigger = "r"
        self._wake.set()

    def publish_now(self) -> None:
        """The user's "publish now" button: a location at once, trigger ``u``."""
        self._trigger = self._trigger or "u"
        self._wake.set()

    # --- MQTT ---------------------------------------------------------------------------------------------------

    async def _connect_mqtt(self, url: str, wait_s: float) -> None:
        cfg = self.config
        address = BrokerAddress.parse(url).with_login(cfg.device_id, cfg.secret)
        will = Message(cfg.topic, json.dumps(lwt_message(int(self.wall()))), qos=1, retain=False)
        client = MqttClient(cfg.device_id, clean_session=False, will_message=will)
        client.set_auth_credentials(cfg.device_id, cfg.secret)
        client.set_config({"reconnect_retries": -1, "reconnect_delay": 2})
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *_: self.connected.clear()
        client.on_message = self._on_message
        self._client = client
        self._connector = asyncio.create_task(self._first_connect(client, address))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.connected.wait()), wait_s)

    async def _first_connect(self, client: MqttClient, address: BrokerAddress) -> None:
        """Until the first connection (gmqtt reconnects by itself after it), as the app keeps trying."""
        while True:
            try:
                await client.connect(address.host, address.port, ssl=address.ssl_context() or False,
                                     version=MQTTv311, keepalive=self.config.keepalive_s)
                return
            except Exception as exc:  # unreachable, TLS, or a refused CONNACK (gmqtt's own errors): try again
                self.counters["connect_failed"] += 1
                log.info("%s: cannot connect to the broker: %s", self.config.device_id, exc)
                await asyncio.sleep(self.config.retry_s)

    def _on_connect(self, client: MqttClient, flags: int, rc: int, properties: Any) -> None:
        client.subscribe(self.config.topic + "/cmd", qos=1)
        self.counters["connects"] += 1
        self.connected.set()

    def _on_message(self, client: MqttClient, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        if topic != self.config.topic + "/cmd":
            self.refused["other_topic"] += 1
            return 0
        try:
            self._execute(read_command(payload))
        except CommandRefused as exc:
            self.refused[exc.reason] += 1
            log.info("%s: a command refused: %s", self.config.device_id, exc)
        return 0

    def _execute(self, action: str) -> None:
        if not self.config.remote_commands:
            self.refused["remote_commands_off"] += 1
        elif action == "reportLocation":
            self.counters["report_location"] += 1
            self.report_location()
        else:
            self.refused["unsupported_action"] += 1

    # --- the reporting loop -------------------------------------------------------------------------------------

    async def _run(self) -> None:
        retry_at = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.tick_s)
            self._wake.clear()
            now = self.wall()
            fix = self.position()
            trigger = self._trigger or self.schedule.due(now, (fix.speed or 0.0) >= MOVING_MPS)
            self._trigger = None
            if trigger is not None:
                self.schedule.sent(now)
                self._outbox.append(location_message(fix, tid=self.config.tid, trigger=trigger or None,
                                                     now_s=int(now)))
                self.counters["locations"] += 1
            if self._outbox and now >= retry_at:
                # MQTT: tried again at the next tick, once connected; HTTP: after the app's retry delay.
                retry_at = 0.0 if await self._flush() or self.mode == "mqtt" else now + self.config.retry_s

    async def _flush(self) -> bool:
        """Send the outbox oldest first; False when the hub did not take one (it stays, in order)."""
        while self._outbox:
            message = self._outbox[0]
            if not await (self._publish(message) if self._client is not None else self._post(message)):
                return False
            self._outbox.popleft()
            self.sent.append(message)
        return True

    async def _publish(self, message: dict[str, Any]) -> bool:
        client = self._client
        if client is None or not self.connected.is_set():
            self.counters["not_connected"] += 1
            return False
        # QoS 1, retained; gmqtt keeps an unacknowledged message and sends it again after a reconnect.
        client.publish(self.config.topic, json.dumps(message).encode(), qos=1, retain=True)
        self.counters["published"] += 1
        return True

    async def _post(self, message: dict[str, Any]) -> bool:
        cfg, http = self.config, self._http
        assert http is not None and cfg.http_url is not None
        login = base64.b64encode(f"{cfg.device_id}:{cfg.secret}".encode()).decode()
        headers = {"Authorization": f"Basic {login}", "Content-Type": "application/json",
                   "X-Limit-U": cfg.device_id, "X-Limit-D": cfg.name}
        try:
            r = await http.post(cfg.http_url, content=json.dumps(message).encode(), headers=headers)
        except httpx.HTTPError as exc:
            self.counters["http_unreachable"] += 1
            log.info("%s: the hub is unreachable: %s", cfg.device_id, exc)
            return False
        if r.status_code != 200:
            self.counters[f"http_{r.status_code}"] += 1
            return False
        self.counters["answered"] += 1
        try:
            actions, others = read_answer(r.content)
        except CommandRefused as exc:
            self.refused[exc.reason] += 1
            return True  # the message was taken; only the answer is unusable
        self.counters["answer_messages"] += others
        for action in actions:
            self._execute(action)
        return True
