"""JT/T 808 vehicle terminals into the ingest pipeline, as if they were native MQTT devices.

A terminal registers (0x0100) once, while the hub holds its registration window open, and gets an authentication
code whose hash the login store keeps; on every connection it authenticates (0x0102) with that code, which binds
the connection to its device. Then a location (0x0200) becomes a fix on the device's ``telemetry`` topic, a batch
(0x0704) one batch of fixes, the emergency alarm's rising edge an ``sos`` event, authentication and the end of the
connection a retained ``online``/``offline`` status, all handed to the pipeline's ``submit``; the hub's dispatch
orders go back as a text message (0x8300) whose terminal response (0x0001) becomes the command's ``ack``.

A location is answered (0x8001) after its commit: result 0 "stored", 1 "not stored, send it again" when the
pipeline refused it or did not commit in time, 4 "alarm confirmed" for a new emergency. Nothing is submitted for
a connection that has not authenticated. Refusals are counted by reason in :attr:`Jt808Gateway.rejects`.
"""

from __future__ import annotations

import logging
import secrets
import string
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Final, Protocol

import msgspec

from devices import payloads
from devices.clock import now_ms
from devices.errors import PayloadError
from devices.payloads import Event, Fix
from devices.topics import Channel
from geo.gcj02 import DATUMS, Datum, to_wgs84
from hub.domain import device_login
from hub.domain.device_login import StoredLogin
from hub.gateways.submit import Submit, post_status, store
from jt808.codec import Message
from jt808.errors import Jt808Error
from jt808.location import BatchLocation, Location, to_fix
from jt808.messages import (
    MSG_TEXT,
    RESULT_FAILURE,
    RESULT_OK,
    Authentication,
    Heartbeat,
    PlatformResponse,
    Registration,
    RegistrationResponse,
    TerminalResponse,
)

from .commands import PendingCommands, command_text
from .server import Connection, Jt808Server

__all__ = ["GatewayLoginLike", "Jt808Gateway", "LoginStore"]

log = logging.getLogger(__name__)

PROTOCOL: Final = "jt808"
RESULT_UNSUPPORTED: Final = 3
RESULT_ALARM_CONFIRMED: Final = 4
REG_OK: Final = 0
REG_TERMINAL_TAKEN: Final = 3  # "terminal already registered": the window is closed
REG_NO_TERMINAL: Final = 4
MAX_AUTH_FAILURES: Final = 3
MAX_CODE: Final = 64  # a code longer than any this hub issues is refused without hashing it
CODE_ALPHABET: Final = string.ascii_letters + string.digits
CODE_LENGTH: Final = 16


class GatewayLoginLike(Protocol):
    """What the gateway reads of ``hub.storage.gateway_logins.GatewayLogin``."""

    @property
    def device_id(self) -> str: ...
    @property
    def secret(self) -> StoredLogin | None: ...
    @property
    def terminal_id(self) -> str | None: ...
    @property
    def registration_open(self) -> bool: ...


class LoginStore(Protocol):
    """The part of ``hub.storage.gateway_logins.GatewayLoginStore`` the gateway uses."""

    async def by_ident(self, protocol: str, ident: str) -> GatewayLoginLike | None: ...

    async def issue_code(self, device_id: str, code: StoredLogin) -> bool: ...


class _Session:
    """What the gateway knows of one connection: the device it authenticated as, its failed attempts."""

    __slots__ = ("device_id", "failures")

    def __init__(self) -> None:
        self.device_id: str | None = None
        self.failures = 0


class Jt808Gateway:
    """A :class:`Jt808Server` whose messages feed ``submit``; an async context manager; the hub's
    :class:`~hub.gateways.commands.DeviceCommands` for the devices ``owns`` says are JT/T 808 terminals."""

    def __init__(self, *, host: str, port: int, logins: LoginStore, submit: Submit, owns: Callable[[str], bool],
                 datum: str = "wgs84", idle_s: float = 180.0, store_timeout_s: float = 5.0,
                 max_connections: int = 20000, wall_ms: Callable[[], int] = now_ms,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if datum not in DATUMS:
            raise ValueError(f"unknown datum {datum!r}, expected one of {sorted(DATUMS)}")
        self.datum: Datum = "gcj02" if datum == "gcj02" else "wgs84"
        self.logins, self.submit, self._owns = logins, submit, owns
        self.store_timeout_s = store_timeout_s
        self.wall_ms, self.clock = wall_ms, clock
        self.server = Jt808Server(host=host, port=port, on_message=self.on_message, on_close=self.on_close,
                                  idle_s=idle_s, max_connections=max_connections, clock=clock)
        self.counters: Counter[str] = Counter()  # fixes, sos, acks, registrations, status, store_timeout, ...
        self.rejects: Counter[str] = Counter()  # refused messages and location items, by reason
        self.pending = PendingCommands(clock=clock)
        self._sessions: dict[Connection, _Session] = {}
        self._bound: dict[str, Connection] = {}  # device id -> its authenticated connection
        # Devices whose emergency bit was last seen set (no new sos until it clears), kept across reconnections.
        self._emergency: set[str] = set()

    async def __aenter__(self) -> Jt808Gateway:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def connected(self) -> int:
        return self.server.connected

    @property
    def drops(self) -> Counter[str]:
        """Frames and connections the server refused, by reason."""
        return self.server.drops

    @property
    def authenticated(self) -> int:
        """Terminals authenticated on a connection now."""
        return len(self._bound)

    def online(self, device_id: str) -> bool:
        return device_id in self._bound

    # --- DeviceCommands --------------------------------------------------------------------------------------

    def owns(self, device_id: str) -> bool:
        return self._owns(device_id)

    def can_sign(self, device_id: str) -> bool:
        return True  # the terminal response to the 0x8300 is the acknowledgment

    def command(self, device_id: str, raw: bytes) -> None:
        """A hub command for a terminal: sent now as a 0x8300 text (writing does not block), never raises."""
        try:
            self._command(device_id, raw)
        except Exception:  # contained: a command's failure is its own; the hub's ack watch sends it again
            self.counters["command_failed"] += 1
            log.exception("jt808: a command for %s failed", device_id)

    def _command(self, device_id: str, raw: bytes) -> None:
        try:
            cmd = payloads.decode_command(raw)
        except PayloadError as exc:
            self.rejects[f"command_{exc.reason}"] += 1
            log.warning("jt808: a command for %s refused: %s", device_id, exc)
            return
        text = command_text(cmd)
        if text is None:
            self.counters["command_unsupported"] += 1
            log.info("jt808: %s commands are not sent to JT/T 808 terminals (%s)", cmd.type, device_id)
            return
        connection = self._bound.get(device_id)
        serial = connection.send(text) if connection is not None else None
        if serial is None:
            self.counters["command_offline"] += 1
            log.info("jt808: %s for %s not sent: the terminal is not connected", cmd.cmd_id, device_id)
            return
        self.pending.add(device_id, serial, cmd.cmd_id)
        self.counters[f"command_{cmd.type}"] += 1

    def kick(self, device_id: str) -> None:
        """The device's login was revoked (or rotated): close its connection; its status becomes offline."""
        connection = self._bound.get(device_id)
        if connection is not None and not connection.closed:  # told twice (this hub's call, then its NOTIFY)
            self.counters["kicked"] += 1
            connection.close("revoked")

    # --- connections -----------------------------------------------------------------------------------------

    def on_close(self, connection: Connection, reason: str) -> None:
        session = self._sessions.pop(connection, None)
        if session is None or session.device_id is None:
            return
        device_id = session.device_id
        if self._bound.get(device_id) is connection:  # a replaced connection's device is online elsewhere
            del self._bound[device_id]
            log.info("jt808: %s is offline (%s)", device_id, reason)
            self._status(device_id, "offline")

    def _status(self, device_id: str, state: str) -> None:
        post_status(self.submit, device_id, state, self.wall_ms(), counters=self.counters, gateway="jt808")

    # --- messages --------------------------------------------------------------------------------------------

    async def on_message(self, connection: Connection, message: Message) -> None:
        session = self._sessions.setdefault(connection, _Session())
        header, body = message.header, message.body
        if isinstance(body, Registration | Authentication):
            try:
                if isinstance(body, Registration):
                    await self._register(connection, header.serial, header.phone, body)
                else:
                    await self._authenticate(connection, session, message)
            except Exception:  # contained: the login store is down; the terminal asks again
                self.counters["logins_failed"] += 1
                log.exception("jt808: the login store failed for %s", header.phone)
        elif session.device_id is None:
            self.rejects["unauthenticated"] += 1
            self._answer(connection, message, RESULT_FAILURE)
        elif isinstance(body, Heartbeat):
            self.counters["heartbeats"] += 1
            self._answer(connection, message, RESULT_OK)
        elif isinstance(body, Location):
            self._answer(connection, message, await self._location(session.device_id, body))
        elif isinstance(body, BatchLocation):
            self._answer(connection, message, await self._batch(session.device_id, body))
        elif isinstance(body, TerminalResponse):
            await self._response(session.device_id, body)
        else:
            self.rejects[f"unsupported_{header.msg_id:04x}"] += 1
            self._answer(connection, message, RESULT_UNSUPPORTED)

    def _answer(self, connection: Connection, message: Message, result: int) -> None:
        header = message.header
        connection.send(PlatformResponse(header.serial, header.msg_id, result))

    async def _register(self, connection: Connection, serial: int, phone: str, reg: Registration) -> None:
        login = await self.logins.by_ident(PROTOCOL, phone)
        result, code = REG_NO_TERMINAL, ""
        if login is None:
            self.rejects["unknown_phone"] += 1
        elif not login.registration_open:
            self.rejects["registration_closed"] += 1
            result = REG_TERMINAL_TAKEN
        elif login.terminal_id and login.terminal_id != reg.terminal_id.strip():
            self.rejects["wrong_terminal_id"] += 1
        else:
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            if await self.logins.issue_code(login.device_id, device_login.new_login(login.device_id, code)):
                self.counters["registrations"] += 1
                result = REG_OK
                log.info("jt808: %s registered as %s", phone, login.device_id)
            else:
                self.rejects["registration_raced"] += 1
                result, code = REG_TERMINAL_TAKEN, ""
        connection.send(RegistrationResponse(serial, result, code))

    async def _authenticate(self, connection: Connection, session: _Session, message: Message) -> None:
        body = message.body
        assert isinstance(body, Authentication)
        login = await self.logins.by_ident(PROTOCOL, message.header.phone)
        if (login is None or login.secret is None or len(body.code) > MAX_CODE
                or not device_login.verify_secret(login.secret, body.code)):
            self.rejects["bad_code"] += 1
            session.failures += 1
            self._answer(connection, message, RESULT_FAILURE)
            if session.failures >= MAX_AUTH_FAILURES:
                self.counters["auth_close"] += 1
                connection.close("bad_code")
            return
        device_id = login.device_id
        if session.device_id is not None and session.device_id != device_id:
            self.on_close(connection, "reauthenticated")  # the connection's former device goes offline
            self._sessions[connection] = session
        session.device_id, session.failures = device_id, 0
        previous = self._bound.get(device_id)
        self._bound[device_id] = connection
        if previous is not None and previous is not connection:
            self.counters["replaced"] += 1
            previous.close("replaced")
        if previous is not connection:
            self.pending.forget(device_id)  # a new connection numbers its messages anew
        self.counters["authenticated"] += 1
        self._answer(connection, message, RESULT_OK)
        if previous is not connection:
            self._status(device_id, "online")

    def _fix(self, location: Location) -> Fix:
        fix = to_fix(location)
        if self.datum == "wgs84":
            return fix
        lat, lon = to_wgs84(fix.lat, fix.lon, self.datum)
        return msgspec.structs.replace(fix, lat=lat, lon=lon)

    async def _store(self, device_id: str, channel: Channel, payload: bytes) -> str | None:
        return await store(self.submit, device_id, channel, payload, timeout_s=self.store_timeout_s,
                           counters=self.counters, gateway="jt808")

    async def _location(self, device_id: str, location: Location) -> int:
        rising = location.emergency and device_id not in self._emergency
        if not location.emergency:
            self._emergency.discard(device_id)
        fix: Fix | None = None
        try:
            fix = self._fix(location)
        except (Jt808Error, ValueError) as exc:  # nothing to store is not the terminal's error: answered 0
            self.rejects[exc.reason if isinstance(exc, Jt808Error) else "bad_value"] += 1
        failed = False
        if fix is not None:
            failed = await self._store(device_id, "telemetry", payloads.encode_fixes([fix])) is not None
            self.counters["fixes" if not failed else "fixes_not_stored"] += 1
        if rising:
            # The hub's time: the alarm is live (a rising edge now), and a terminal's wrong clock must not get the
            # sos refused by the pipeline's time window; the terminal's own time goes along in the data.
            event = Event(ts=self.wall_ms(), type="sos", data=self._sos_data(location, fix))
            if await self._store(device_id, "event", payloads.encode_event(event)) is None:
                self._emergency.add(device_id)
                self.counters["sos"] += 1
            else:
                failed = True
        if failed:
            return RESULT_FAILURE
        return RESULT_ALARM_CONFIRMED if rising else RESULT_OK

    def _sos_data(self, location: Location, fix: Fix | None) -> dict[str, Any]:
        data: dict[str, Any] = {"source": "jt808", "alarm": location.alarm}
        if fix is not None:
            data["lat"], data["lon"], data["device_ts"] = fix.lat, fix.lon, fix.ts
        return data

    async def _batch(self, device_id: str, batch: BatchLocation) -> int:
        for _, reason in batch.rejected:
            self.rejects[reason] += 1
        fixes: list[Fix] = []
        for location in batch.locations:
            if location.emergency:
                self.counters["historical_emergency"] += 1  # a past alarm, uploaded late: no sos now
            try:
                fixes.append(self._fix(location))
            except (Jt808Error, ValueError) as exc:
                self.rejects[exc.reason if isinstance(exc, Jt808Error) else "bad_value"] += 1
        for start in range(0, len(fixes), payloads.MAX_BATCH):
            chunk = fixes[start : start + payloads.MAX_BATCH]
            if await self._store(device_id, "telemetry", payloads.encode_fixes(chunk)) is not None:
                return RESULT_FAILURE
            self.counters["fixes"] += len(chunk)
        return RESULT_OK

    async def _response(self, device_id: str, response: TerminalResponse) -> None:
        if response.reply_id != MSG_TEXT:
            self.counters["terminal_responses"] += 1
            return
        cmd_id = self.pending.take(device_id, response.reply_serial)
        if cmd_id is None:
            self.rejects["unknown_reply"] += 1
            return
        if response.result != RESULT_OK:
            self.counters[f"command_result_{response.result}"] += 1
            return
        event = Event(ts=self.wall_ms(), type="ack", data={"cmd_id": cmd_id})
        if await self._store(device_id, "event", payloads.encode_event(event)) is None:
            self.counters["acks"] += 1
