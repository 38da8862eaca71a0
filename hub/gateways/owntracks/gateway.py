"""OwnTracks phones into the ingest pipeline: over MQTT (the hub's bridge hands over ``owntracks/#``) and over HTTP.

* MQTT (:meth:`OwnTracksGateway.on_owntracks`): the broker's ACL makes the topic's user the phone's own login, which
  is its device id, so the topic names the device; it must be a live OwnTracks login (``owns``). The {device} part
  of the topic is the app's own name for the phone, remembered for its command topic.
* HTTP (:meth:`OwnTracksGateway.http`, ``POST /gateway/owntracks``): Basic authentication, user = device id,
  password = the device's secret; the answer is a JSON array, as the app expects, and carries a pending
  ``reportLocation`` command, which is how an HTTP-mode phone receives commands.

``location`` -> a fix on the device's ``telemetry``; ``lwt`` -> a retained ``offline`` status; ``transition`` -> its
fix and a ``geofence`` event. Other known types are ignored (counted). Every refusal is counted by reason.

Commands (:class:`~hub.gateways.commands.DeviceCommands`): the app has no message that shows a dispatch order or
signs for one (``can_sign`` is False: the incident service asks the dispatcher to confirm by radio), but it can be
told to report its position now: a ``dispatch`` makes the gateway send ``reportLocation``, so the hub has a fresh
fix of the dispatched officer. The app executes remote commands only when "remote commands" are enabled in it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from devices import payloads
from devices.clock import now_ms
from geo.gcj02 import Datum
from hub.access.auth import FailedAuthLimiter
from hub.gateways.credentials import basic_credentials
from hub.gateways.errors import CodecError
from hub.gateways.owntracks.codec import (
    Ignored,
    Location,
    Message,
    Offline,
    Transition,
    command_topic,
    decode,
    encode_report_location,
    parse_topic,
)
from hub.gateways.phones import Logins, Outcome, PhoneGateway, Submit, consume

__all__ = ["CHALLENGE", "OwnTracksGateway"]

log = logging.getLogger(__name__)

CHALLENGE = 'Basic realm="fieldhub", charset="UTF-8"'
_REPORT_LOCATION = {"_type": "cmd", "action": "reportLocation"}


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


def _all(futures: list[asyncio.Future[None] | None]) -> asyncio.Future[None] | None:
    """One future for the commits of several messages of one MQTT message (None if the pipeline refused one)."""
    if any(f is None for f in futures):
        return None
    distinct = list({id(f): f for f in futures if f is not None}.values())
    if len(distinct) == 1:
        return distinct[0]
    combined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    left = len(distinct)

    def one_done(future: asyncio.Future[None]) -> None:
        nonlocal left
        left -= 1
        if combined.done():
            consume(future)
        elif future.cancelled():
            combined.cancel()
        elif (exc := future.exception()) is not None:
            combined.set_exception(exc)
        elif left == 0:
            combined.set_result(None)

    for future in distinct:
        future.add_done_callback(one_done)
    return combined


class OwnTracksGateway(PhoneGateway):
    """See the module docstring. ``publish``: the hub's MQTT publish ``(topic, payload)``, for commands."""

    protocol = "owntracks"

    def __init__(self, *, submit: Submit, logins: Logins, owns: Callable[[str], bool],
                 publish: Callable[[str, bytes], object] | None = None, datum: Datum = "wgs84",
                 limiter: FailedAuthLimiter | None = None, secret_ttl_s: float = 60.0, store_timeout_s: float = 5.0,
                 wall_ms: Callable[[], int] = now_ms, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(submit=submit, logins=logins, owns=owns, datum=datum, limiter=limiter,
                         secret_ttl_s=secret_ttl_s, store_timeout_s=store_timeout_s, wall_ms=wall_ms, clock=clock)
        self.publish = publish
        self._app_device: dict[str, str] = {}  # device id -> the app's {device} topic level, as last seen
        self._over_http: set[str] = set()  # devices that reported over HTTP
        self._pending_http: set[str] = set()  # HTTP-mode devices with a reportLocation to hand over

    def forget(self, device_id: str) -> None:
        super().forget(device_id)
        self._app_device.pop(device_id, None)
        self._over_http.discard(device_id)
        self._pending_http.discard(device_id)

    # --- MQTT -----------------------------------------------------------------------------------------------------

    def on_owntracks(self, topic: str, payload: bytes) -> asyncio.Future[None] | None:
        """One message the bridge received on ``owntracks/#``. Returns the future of its commit, as
        ``Pipeline.submit`` does: the bridge acknowledges the message once it resolves, and never when None (the
        pipeline is full: the broker sends it again). A refused or ignored message gets a resolved future: it is
        acknowledged, never sent again. Never raises for a message."""
        try:
            parsed = parse_topic(topic)
        except CodecError as exc:
            self.refuse("", exc.reason, exc.detail)
            return _done()
        device_id = parsed.user
        if not self.owns(device_id):
            self.refuse(device_id, "unknown_device", f"{device_id} has no live OwnTracks login")
            return _done()
        if len(self._app_device) < 100_000 or device_id in self._app_device:
            self._app_device[device_id] = parsed.device
        if not payload:  # the app or the broker clearing a retained message
            self.ignored["empty"] += 1
            return _done()
        try:
            message = decode(payload, datum=self.datum, now_ms=self.wall_ms())
            futures = self._submit_message(device_id, message)
        except CodecError as exc:
            self.refuse(device_id, exc.reason, exc.detail)
            return _done()
        return _all(futures) if futures else _done()

    def _submit_message(self, device_id: str, message: Message) -> list[asyncio.Future[None] | None]:
        """Hand the message's fixes, status or event to the pipeline (nothing for an ignored type)."""
        try:
            if isinstance(message, Location):
                return [self.submit_fix(device_id, message.fix)]
            if isinstance(message, Offline):
                return [self.submit_status(device_id, message.status)]
            if isinstance(message, Transition):
                return [self.submit_fix(device_id, message.fix), self.submit_event(device_id, message.event)]
        except Exception as exc:  # contained: a value the contract cannot encode is this message's refusal only
            raise CodecError("bad_value", f"{type(exc).__name__}: {exc}") from None
        assert isinstance(message, Ignored)
        self.ignored[message.type] += 1
        return []

    # --- HTTP -----------------------------------------------------------------------------------------------------

    async def http(self, authorization: str | None, body: bytes, client: str | None) -> Outcome:
        """``POST /gateway/owntracks``: 200 with a JSON array once stored; 401 (with a Basic challenge) for bad
        credentials, 429 for an address over its failure limit, 400 for a refused body, 503 when not stored."""
        try:
            device_id, secret = basic_credentials(authorization)
        except CodecError:
            return self.denied("", "bad_secret", CHALLENGE)
        refused = await self.secrets.check(device_id, secret, client)
        if refused is not None:
            return self.denied(device_id, refused, CHALLENGE)
        if len(self._over_http) < 100_000:
            self._over_http.add(device_id)
        try:
            message = decode(body, datum=self.datum, now_ms=self.wall_ms())
            futures = self._submit_message(device_id, message)
        except CodecError as exc:
            return self.refuse(device_id, exc.reason, exc.detail)
        failure = await self.store(device_id, futures)
        if failure is not None:
            return self.not_stored(failure)
        self.counters["http_answered"] += 1
        if device_id in self._pending_http:
            self._pending_http.discard(device_id)
            self.counters["commands_in_answer"] += 1
            return Outcome(200, body=[_REPORT_LOCATION])
        return Outcome(200, body=[])

    # --- commands -------------------------------------------------------------------------------------------------

    def report_location(self, device_id: str) -> bool:
        """Ask the phone for its position now: ``reportLocation`` on its command topic (the app's {device} topic
        level as last seen, else the device id), and in the next HTTP answer if it reports over HTTP. False when
        the device is not an OwnTracks phone of this hub or nothing could carry the command."""
        if not self.owns(device_id):
            self.counters["command_unknown_device"] += 1
            return False
        sent = False
        if device_id in self._over_http:
            self._pending_http.add(device_id)
            sent = True
        if self.publish is not None and (device_id in self._app_device or device_id not in self._over_http):
            topic = command_topic(device_id, self._app_device.get(device_id, device_id))
            try:
                self.publish(topic, encode_report_location())
            except Exception as exc:  # contained: the bridge away is this command's failure only
                self.counters["command_failed"] += 1
                log.warning("owntracks: reportLocation to %s not published: %s", device_id, exc)
            else:
                sent = True
        self.counters["report_location" if sent else "command_undeliverable"] += 1
        return sent

    def can_sign(self, device_id: str) -> bool:
        return False  # the app has no message that shows a dispatch order or signs for it

    def command(self, device_id: str, raw: bytes) -> None:
        """A contract command for an OwnTracks phone (CommandRouter): a dispatch asks for a fresh fix; the rest
        cannot reach the app (counted). Never raises."""
        try:
            command = payloads.decode_command(raw)
        except Exception as exc:  # the hub's own command: a bug, but one phone's
            self.counters["command_bad"] += 1
            log.error("owntracks: an unreadable command for %s: %s", device_id, exc)
            return
        if command.type == "dispatch":
            self.report_location(device_id)
        else:
            self.counters["command_unsupported"] += 1
            log.info("owntracks: %s cannot take a %s command (the app has no such message)", device_id, command.type)
