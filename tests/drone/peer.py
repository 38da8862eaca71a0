"""A tiny fake autopilot for the link tests: real MAVLink 2 on a real UDP socket.

It is a *peer*, not a mock: frames are encoded/decoded by pymavlink in this
process and travel through the kernel's loopback like a drone's would. Its
defaults are a stock ArduCopter's where the tests touch them: it streams nothing
until SET_MESSAGE_INTERVAL asks (and forgets the rates when it reboots), answers
REQUEST_MESSAGE after the ACK, keeps parameters (a read-only one is refused with
the old value echoed and a STATUSTEXT, an unknown one gets no answer), takes
DO_SET_HOME, and runs its wall clock ``clock_offset_ms`` off the host's.
Behaviour is scripted per test through ``on_command`` / ``on_message``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from drone.codec import Framer, decode, encode, mavlink, new_codec
from drone.signing import SigningKey, signing_timestamp
from drone.state import text_of

__all__ = ["FakeAutopilot"]

# on_command(msg) -> list of MAV_RESULT values to ACK with (in order), or None to ignore it.
CommandHandler = Callable[[Any], list[int] | None]
M = mavlink
PREARM_BIT = 0x1000_0000
GYRO_BIT = 0x1
_TICK_S = 0.02


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: FakeAutopilot) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        for frame in Framer().feed(data):
            self.owner._frame(frame)


class FakeAutopilot:
    def __init__(self, system_id: int, hub: tuple[str, int], *, key: SigningKey | None = None,
                 heartbeat_s: float = 0.2, custom_mode: int = 0, autopilot: int = 3, uptime_s: float = 600.0) -> None:
        self.system_id = system_id
        self.hub = hub
        self.codec = new_codec(system_id, 1)
        if key is not None:
            self.codec.signing.secret_key = key.secret
            self.codec.signing.link_id = key.link_id
            self.codec.signing.sign_outgoing = True
            self.codec.signing.timestamp = signing_timestamp()
            self.codec.signing.allow_unsigned_callback = lambda _mav, _id: False
        self.heartbeat_s = heartbeat_s
        self.custom_mode = custom_mode
        self.autopilot = autopilot
        self.armed = False
        self.heartbeats = True
        self.received: list[Any] = []
        self.rejected_frames = 0  # frames our codec refused (e.g. unsigned while we have a key)
        self.on_command: CommandHandler = self.handle_command
        self.on_message: Callable[[Any], None] = lambda msg: None
        # The autopilot's world, as ArduCopter keeps it. It has been up for a while when the hub connects.
        self.boot_at = time.monotonic() - uptime_s
        self.clock_offset_ms = 0  # its wall clock minus the host's
        self.position = (52.52, 13.405, 85.0, 40.0)  # lat, lon, amsl m, relative alt m
        self.home: tuple[float, float, float] | None = (52.52, 13.405, 45.0)
        self.params: dict[str, tuple[float, int]] = {"FS_GCS_ENABLE": (0.0, 2), "MAV_GCS_SYSID": (255.0, 4)}
        self.read_only: set[str] = set()
        self.prearm_ok = True
        self.intervals: dict[int, float] = {}  # message id -> seconds, from SET_MESSAGE_INTERVAL
        self.refuse_streams: dict[int, tuple[int, str | None]] = {}  # message id -> (MAV_RESULT, STATUSTEXT)
        self._next_due: dict[int, float] = {}
        self._after_ack: list[Any] = []
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.local_address: tuple[str, int] = ("", 0)

    async def __aenter__(self) -> FakeAutopilot:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), local_addr=("127.0.0.1", 0))
        self._transport = transport
        self.local_address = transport.get_extra_info("sockname")[:2]
        self._tasks = [loop.create_task(self._beat()), loop.create_task(self._stream())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._transport is not None:
            self._transport.close()

    # ------------------------------------------------------------------ sending
    def send(self, msg: Any) -> None:
        if self.codec.signing.sign_outgoing:
            self.codec.signing.timestamp = max(self.codec.signing.timestamp, signing_timestamp())
        self.send_raw(encode(self.codec, msg))

    def send_raw(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.sendto(data, self.hub)

    def say(self, severity: int, text: str) -> None:
        """A STATUSTEXT, as ArduPilot explains itself."""
        self.send(M.MAVLink_statustext_message(severity, text.encode()[:50]))

    def heartbeat(self) -> Any:
        base = 1 | (128 if self.armed else 0)  # custom mode enabled (+ armed)
        return M.MAVLink_heartbeat_message(2, self.autopilot, base, self.custom_mode, 4, 3)

    def boot_ms(self) -> int:
        return int((time.monotonic() - self.boot_at) * 1000)

    def reboot(self) -> None:
        """Restart: the boot clock from 0 and every stream rate forgotten (a stock ArduCopter; its home comes
        back with the first GPS fix, immediate here)."""
        self.boot_at = time.monotonic()
        self.intervals.clear()
        self._next_due.clear()
        self.armed = False

    def message(self, msg_id: int) -> Any | None:
        """The current value of one telemetry message, None for one this autopilot does not have."""
        lat, lon, amsl, rel = self.position
        if msg_id == M.MAVLINK_MSG_ID_GLOBAL_POSITION_INT:
            return M.MAVLink_global_position_int_message(self.boot_ms(), round(lat * 1e7), round(lon * 1e7),
                                                         round(amsl * 1000), round(rel * 1000), 0, 0, 0, 9000)
        if msg_id == M.MAVLINK_MSG_ID_SYS_STATUS:
            health = GYRO_BIT | (PREARM_BIT if self.prearm_ok else 0)
            return M.MAVLink_sys_status_message(GYRO_BIT | PREARM_BIT, GYRO_BIT | PREARM_BIT, health, 0, 15_800, -1,
                                                76, 0, 0, 0, 0, 0, 0)
        if msg_id == M.MAVLINK_MSG_ID_BATTERY_STATUS:
            return M.MAVLink_battery_status_message(0, 0, 0, 2500, [4000] * 4 + [65535] * 6, 120, -1, -1, 76)
        if msg_id == M.MAVLINK_MSG_ID_EXTENDED_SYS_STATE:
            return M.MAVLink_extended_sys_state_message(0, 2 if self.armed else 1)
        if msg_id == M.MAVLINK_MSG_ID_SYSTEM_TIME:
            return M.MAVLink_system_time_message((time.time_ns() // 1_000_000 + self.clock_offset_ms) * 1000,
                                                 self.boot_ms())
        if msg_id == M.MAVLINK_MSG_ID_MISSION_CURRENT:
            return M.MAVLink_mission_current_message(0)
        if msg_id == M.MAVLINK_MSG_ID_HOME_POSITION and self.home is not None:
            hl, hn, ha = self.home
            return M.MAVLink_home_position_message(round(hl * 1e7), round(hn * 1e7), round(ha * 1000), 0, 0, 0,
                                                   [1, 0, 0, 0], 0, 0, 0)
        return None

    async def _beat(self) -> None:
        while True:
            if self.heartbeats:
                self.send(self.heartbeat())
            await asyncio.sleep(self.heartbeat_s)

    async def _stream(self) -> None:
        while True:
            now = time.monotonic()
            for msg_id, interval in list(self.intervals.items()):
                if now >= self._next_due.get(msg_id, 0.0):
                    self._next_due[msg_id] = now + interval
                    msg = self.message(msg_id)
                    if msg is not None:
                        self.send(msg)
            await asyncio.sleep(_TICK_S)

    # ------------------------------------------------------------------ receiving
    def _frame(self, frame: bytes) -> None:
        try:
            msg = decode(self.codec, frame)
        except Exception:
            self.rejected_frames += 1
            return
        self.received.append(msg)
        self.on_message(msg)
        kind = msg.get_type()
        if kind in ("COMMAND_LONG", "COMMAND_INT"):
            results = self.on_command(msg)
            for result in results or ():
                self.send(M.MAVLink_command_ack_message(msg.command, result, 0, 0,
                                                        msg.get_srcSystem(), msg.get_srcComponent()))
            for deferred in self._after_ack:
                self.send(deferred)
            self._after_ack.clear()
        elif kind == "PARAM_REQUEST_READ":
            self._param_read(text_of(msg.param_id))
        elif kind == "PARAM_SET":
            self._param_set(text_of(msg.param_id), msg.param_value)

    def handle_command(self, msg: Any) -> list[int] | None:
        """A stock ArduCopter's answer to the commands the hub sends; every other command is ACCEPTED."""
        if msg.command == M.MAV_CMD_SET_MESSAGE_INTERVAL:
            msg_id, interval_us = int(msg.param1), int(msg.param2)
            if msg_id in self.refuse_streams:
                result, text = self.refuse_streams[msg_id]
                if text:
                    self.say(M.MAV_SEVERITY_WARNING, text)
                return [result]
            if interval_us < 0:
                self.intervals.pop(msg_id, None)
            else:
                self.intervals[msg_id] = interval_us / 1e6 if interval_us > 0 else 1.0
                self._next_due[msg_id] = 0.0
            return [M.MAV_RESULT_ACCEPTED]
        if msg.command == M.MAV_CMD_REQUEST_MESSAGE:
            reply = self.message(int(msg.param1))
            if reply is None:
                return [M.MAV_RESULT_FAILED]
            self._after_ack.append(reply)  # ArduPilot: the ACK first, the message with the next update
            return [M.MAV_RESULT_ACCEPTED]
        if msg.command == M.MAV_CMD_DO_SET_HOME:
            if msg.get_type() == "COMMAND_INT":
                self.home = (msg.x / 1e7, msg.y / 1e7, msg.z)
            else:
                self.home = (msg.param5, msg.param6, msg.param7)
            return [M.MAV_RESULT_ACCEPTED]
        return [M.MAV_RESULT_ACCEPTED]

    def _param_value(self, name: str) -> Any:
        value, kind = self.params[name]
        index = sorted(self.params).index(name)
        return M.MAVLink_param_value_message(name.encode(), value, kind, len(self.params), index)

    def _param_read(self, name: str) -> None:
        if name in self.params:  # an unknown name: ArduPilot does not answer
            self.send(self._param_value(name))

    def _param_set(self, name: str, value: float) -> None:
        if name not in self.params:
            return
        if name in self.read_only:
            self.say(M.MAV_SEVERITY_WARNING, f"Param write denied ({name})")
        else:
            self.params[name] = (value, self.params[name][1])
        self.send(self._param_value(name))

    def of_type(self, kind: str) -> list[Any]:
        return [m for m in self.received if m.get_type() == kind]
