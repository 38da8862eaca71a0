"""The TCP side of JT/T 808: connections accepted, their bytes cut into messages, answers written back, bounded.

Each connection is one task: :class:`~jt808.frame.Deframer` cuts the stream into checked packets, a per-connection
:class:`~jt808.subpackage.Reassembler` joins sub-packages, :func:`~jt808.codec.decode_message` reads them, and the
gateway's handler gets each message in order (a location is answered after its commit, so a terminal that sends
faster than the hub stores is slowed by TCP, not queued here). What the server refuses, it counts in ``drops``:

- a bad frame (check code, escape, size, a header or body the codec refuses): that frame only, by its
  :data:`jt808.errors.REASONS` reason; the next 0x7E resynchronises;
- a connection that sends only refusals (``max_refused`` frames in a row, or ``max_garbage_bytes`` without one
  good frame): closed, ``garbage_close``;
- a connection silent for ``idle_s``: closed, ``idle_close``; one beyond ``max_connections``: refused,
  ``too_many_connections``; a terminal that does not read its answers (its write buffer beyond
  ``max_write_buffer``): closed, ``slow_reader``.

A handler's exception is caught per message (``internal``): one connection's failure never reaches another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Final

from jt808.codec import Message, decode_message
from jt808.errors import Jt808Error
from jt808.frame import Deframer, encode_frame
from jt808.header import VERSION_2013, Header, build_packet, parse_packet
from jt808.messages import Body, encode_body, message_id
from jt808.subpackage import Reassembler

__all__ = ["Connection", "Jt808Server"]

log = logging.getLogger(__name__)

READ_SIZE: Final = 4096


class Connection:
    """One terminal's TCP connection: the platform's serial numbers and the phone/version to answer with.

    ``phone`` and ``version`` are those of the last good message (a terminal keeps them for a connection's life);
    :meth:`send` writes with them. Equality is identity, so a connection can key a dict."""

    def __init__(self, writer: asyncio.StreamWriter, peer: str, max_write_buffer: int) -> None:
        self.peer = peer
        self.phone = "0"
        self.version = VERSION_2013
        self.closed = False
        self.close_reason = ""
        self._writer = writer
        self._serial = 0
        self._max_write_buffer = max_write_buffer
        self._task: asyncio.Task[None] | None = None

    def attach(self, task: asyncio.Task[None]) -> None:
        self._task = task

    def heard(self, header: Header) -> None:
        self.phone, self.version = header.phone, header.version

    def next_serial(self) -> int:
        serial = self._serial
        self._serial = (self._serial + 1) & 0xFFFF
        return serial

    def send(self, body: Body) -> int | None:
        """Write one message to the terminal; its platform serial, or None when it could not be written (closed,
        or the terminal's unread answers beyond the limit, which closes the connection)."""
        if self.closed:
            return None
        serial = self.next_serial()
        header = Header(message_id(body), self.phone, serial, self.version)
        self._writer.write(encode_frame(build_packet(header, encode_body(body, header.is_2019))))
        if self._writer.transport.get_write_buffer_size() > self._max_write_buffer:
            self.close("slow_reader")
            return None
        return serial

    def close(self, reason: str) -> None:
        """Close now (from any task): the socket is aborted and the connection's task ends with ``reason``."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._writer.transport.abort()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()


OnMessage = Callable[[Connection, Message], Awaitable[None]]
OnClose = Callable[[Connection, str], None]


class Jt808Server:
    """``asyncio.start_server`` with one task per connection; ``on_message`` per decoded message (in order),
    ``on_close`` once per accepted connection with why it ended."""

    def __init__(self, *, host: str, port: int, on_message: OnMessage, on_close: OnClose, idle_s: float = 180.0,
                 max_connections: int = 20000, max_refused: int = 16, max_garbage_bytes: int = 64 * 1024,
                 max_write_buffer: int = 64 * 1024, max_parts: int = 16, max_pending: int = 4,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.host, self._port = host, port
        self.on_message, self.on_close = on_message, on_close
        self.idle_s = idle_s
        self.max_connections = max_connections
        self.max_refused = max_refused
        self.max_garbage_bytes = max_garbage_bytes
        self.max_write_buffer = max_write_buffer
        self.max_parts, self.max_pending = max_parts, max_pending
        self.clock = clock
        self.drops: Counter[str] = Counter()  # frames and connections refused, by reason
        self.counters: Counter[str] = Counter()  # accepted, closed_<reason>, messages
        self._connections: set[Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connected(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self._port, limit=READ_SIZE)

    async def stop(self) -> None:
        """Stop accepting, then close every connection (each reports its ``on_close``) and wait for their tasks."""
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.close("shutdown")
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        if len(self._connections) >= self.max_connections:
            self.drops["too_many_connections"] += 1
            writer.transport.abort()
            return
        connection = Connection(writer, peer, self.max_write_buffer)
        task = asyncio.current_task()
        assert task is not None
        connection.attach(task)
        self._connections.add(connection)
        self._tasks.add(task)
        self.counters["accepted"] += 1
        try:
            await self._serve(connection, reader)
        except asyncio.CancelledError:
            pass  # closed from outside (replaced, revoked, shut down): the reason is already set
        except Exception:  # contained: a defect here ends this connection only
            self.counters["internal"] += 1
            log.exception("jt808: the connection of %s failed", peer)
            connection.close("internal")
        finally:
            connection.close(connection.close_reason or "closed")
            self._connections.discard(connection)
            self._tasks.discard(task)
            self.counters[f"closed_{connection.close_reason}"] += 1
            try:
                self.on_close(connection, connection.close_reason)
            except Exception:  # contained: the gateway's bookkeeping must not keep a task alive
                log.exception("jt808: closing %s failed", peer)

    async def _serve(self, connection: Connection, reader: asyncio.StreamReader) -> None:
        deframer = Deframer()
        reassembler = Reassembler(max_pending=self.max_pending, timeout=30.0, max_parts=self.max_parts)
        refused = 0  # refusals since the last good frame
        unproductive = 0  # bytes since the last good frame
        while not connection.closed:
            try:
                data = await asyncio.wait_for(reader.read(READ_SIZE), self.idle_s)
            except TimeoutError:
                self.drops["idle_close"] += 1
                connection.close("idle")
                return
            if not data:
                connection.close("eof")
                return
            unproductive += len(data)
            for item in deframer.feed(data):
                message = self._read(item, reassembler, connection)
                if message is None:
                    refused += 1
                    continue
                refused = unproductive = 0
                if isinstance(message, Message):
                    await self._handle(connection, message)
                if connection.closed:
                    return
            if refused >= self.max_refused or unproductive > self.max_garbage_bytes:
                self.drops["garbage_close"] += 1
                connection.close("garbage")
                return
            for expired in reassembler.expire(self.clock()):
                log.info("jt808: %s gave up on message %#06x of %s, parts %s missing (%s)", connection.peer,
                         expired.msg_id, expired.phone, list(expired.missing), expired.reason)

    def _read(self, item: bytes | Jt808Error, reassembler: Reassembler,
              connection: Connection) -> Message | bool | None:
        """A message; True for a good sub-package that is not yet a whole message; None for a refusal (counted)."""
        try:
            if isinstance(item, Jt808Error):
                raise item
            packet = parse_packet(item)
            whole, evicted = reassembler.push(packet, self.clock())
            for expired in evicted:
                self.drops[expired.reason] += 1
            if whole is None:
                return True
            message = decode_message(whole)
        except Jt808Error as exc:
            self.drops[exc.reason] += 1
            log.debug("jt808: a frame from %s refused: %s", connection.peer, exc)
            return None
        connection.heard(message.header)
        self.counters["messages"] += 1
        return message

    async def _handle(self, connection: Connection, message: Message) -> None:
        try:
            await self.on_message(connection, message)
        except asyncio.CancelledError:
            raise
        except Exception:  # contained: this message is lost, the connection and every other go on
            self.counters["internal"] += 1
            log.exception("jt808: handling message %#06x from %s failed", message.header.msg_id, connection.peer)
