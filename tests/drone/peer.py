"""A tiny fake autopilot for the link tests: real MAVLink 2 on a real UDP socket.

It is a *peer*, not a mock: frames are encoded/decoded by pymavlink in this
process and travel through the kernel's loopback like a drone's would. Behaviour
is scripted per test through ``on_command`` / ``on_mission``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from drone.codec import Framer, decode, encode, mavlink, new_codec
from drone.signing import SigningKey, signing_timestamp

__all__ = ["FakeAutopilot"]

# on_command(msg) -> list of MAV_RESULT values to ACK with (in order), or None to ignore it.
CommandHandler = Callable[[Any], list[int] | None]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: FakeAutopilot) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        for frame in Framer().feed(data):
            self.owner._frame(frame)


class FakeAutopilot:
    def __init__(self, system_id: int, hub: tuple[str, int], *, key: SigningKey | None = None,
                 heartbeat_s: float = 0.2, custom_mode: int = 0, autopilot: int = 3) -> None:
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
        self.on_command: CommandHandler = lambda msg: [0]
        self.on_message: Callable[[Any], None] = lambda msg: None
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self.local_address: tuple[str, int] = ("", 0)

    async def __aenter__(self) -> FakeAutopilot:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), local_addr=("127.0.0.1", 0))
        self._transport = transport
        self.local_address = transport.get_extra_info("sockname")[:2]
        self._task = loop.create_task(self._beat())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._transport is not None:
            self._transport.close()

    def send(self, msg: Any) -> None:
        if self.codec.signing.sign_outgoing:
            self.codec.signing.timestamp = max(self.codec.signing.timestamp, signing_timestamp())
        self.send_raw(encode(self.codec, msg))

    def send_raw(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.sendto(data, self.hub)

    def heartbeat(self) -> Any:
        base = 1 | (128 if self.armed else 0)  # custom mode enabled (+ armed)
        return mavlink.MAVLink_heartbeat_message(2, self.autopilot, base, self.custom_mode, 4, 3)

    async def _beat(self) -> None:
        while True:
            if self.heartbeats:
                self.send(self.heartbeat())
            await asyncio.sleep(self.heartbeat_s)

    def _frame(self, frame: bytes) -> None:
        try:
            msg = decode(self.codec, frame)
        except Exception:
            self.rejected_frames += 1
            return
        self.received.append(msg)
        self.on_message(msg)
        if msg.get_type() in ("COMMAND_LONG", "COMMAND_INT"):
            results = self.on_command(msg)
            for result in results or ():
                self.send(mavlink.MAVLink_command_ack_message(msg.command, result, 0, 0,
                                                              msg.get_srcSystem(), msg.get_srcComponent()))

    def of_type(self, kind: str) -> list[Any]:
        return [m for m in self.received if m.get_type() == kind]
