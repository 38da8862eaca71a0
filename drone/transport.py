"""Asyncio byte transports for MAVLink: udpin, udpout, tcp (client) and tcpin (server).

A transport cuts what it receives into CRC-checked frames (see :class:`Framer`)
and hands each to ``on_frame(frame, peer)``. ``peer`` is where the frame came from
and where replies to its sender go: the (host, port) for UDP, the connection for
TCP. ``send`` is synchronous (asyncio transports buffer), so encoding and writing a
frame happen in one event-loop step and frames never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable
from typing import Any

from drone.codec import Framer
from drone.errors import DroneError, LinkLost

__all__ = ["OnFrame", "Peer", "Transport", "open_transport", "parse_url"]

log = logging.getLogger(__name__)

Peer = Hashable
OnFrame = Callable[[bytes, Peer], None]
# A TCP peer that stops reading gets its frames dropped past this much backlog.
_MAX_WRITE_BUFFER = 256 * 1024
_RECONNECT_S = (0.2, 5.0)
_SCHEMES = ("udpin", "udpout", "tcp", "tcpin")


def parse_url(url: str) -> tuple[str, str, int]:
    """``scheme:host:port`` -> (scheme, host, port); port 0 only for listening schemes."""
    try:
        scheme, rest = url.split(":", 1)
        host, port_text = rest.rsplit(":", 1)
        port = int(port_text)
    except ValueError:
        raise DroneError(f"bad MAVLink URL {url!r}: expected scheme:host:port") from None
    host = host.strip("[]")
    if scheme not in _SCHEMES:
        raise DroneError(f"bad MAVLink URL {url!r}: scheme must be one of {', '.join(_SCHEMES)}")
    if not host or not 0 <= port <= 65535 or (port == 0 and scheme in ("udpout", "tcp")):
        raise DroneError(f"bad MAVLink URL {url!r}: need a host and a port (0 only for udpin/tcpin)")
    return scheme, host, port


class Transport:
    """Base: subclasses set ``local_address`` in ``start`` and implement send/close."""

    def __init__(self, host: str, port: int, on_frame: OnFrame, stats: dict[str, int]) -> None:
        self.host, self.port = host, port
        self.local_address: tuple[str, int] = (host, port)
        self._on_frame = on_frame
        self._stats = stats

    def _count(self, key: str, n: int = 1) -> None:
        self._stats[key] = self._stats.get(key, 0) + n

    def _deliver(self, framer: Framer, data: bytes, peer: Peer) -> None:
        before = (framer.bad_crc, framer.unknown_message)
        frames = framer.feed(data)
        self._count("bad_crc", framer.bad_crc - before[0])
        self._count("unknown_message", framer.unknown_message - before[1])
        for frame in frames:
            self._on_frame(frame, peer)

    def default_peers(self) -> list[Peer]:
        """Peers that get our heartbeat even before any vehicle was heard."""
        return []

    async def start(self) -> None:
        raise NotImplementedError

    def send(self, data: bytes, peer: Peer | None) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _Datagrams(asyncio.DatagramProtocol):
    """asyncio's side of a UDP socket: hands datagrams and socket errors to the two callbacks it is given."""

    def __init__(self, on_datagram: Callable[[bytes, Peer], None], on_error: Callable[[Exception], None]) -> None:
        self.on_datagram = on_datagram
        self.on_error = on_error

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self.on_error(exc)


class _Udp(Transport):
    def __init__(self, host: str, port: int, on_frame: OnFrame, stats: dict[str, int], *, listen: bool) -> None:
        super().__init__(host, port, on_frame, stats)
        self._listen = listen
        self._transport: asyncio.DatagramTransport | None = None

    def _datagram(self, data: bytes, peer: Peer) -> None:
        # A fresh framer per datagram: a datagram holds whole frames, garbage dies with it.
        self._deliver(Framer(), data, peer)

    def _error(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the peer is gone for now, the watchdog tells.
        self._count("send_errors")
        log.debug("udp error: %s", exc)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._listen:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagrams(self._datagram, self._error), local_addr=(self.host, self.port))
            else:
                # A connected socket: only the peer's datagrams are accepted.
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagrams(self._datagram, self._error), remote_addr=(self.host, self.port))
        except OSError as exc:
            raise LinkLost(f"cannot open udp {self.host}:{self.port}: {exc.strerror}") from exc
        self._transport = transport
        sockname = transport.get_extra_info("sockname")
        self.local_address = (sockname[0], sockname[1])

    def default_peers(self) -> list[Peer]:
        return [] if self._listen else [(self.host, self.port)]

    def send(self, data: bytes, peer: Peer | None) -> None:
        if self._transport is None or self._transport.is_closing():
            raise LinkLost("link is closed")
        if self._listen:
            if peer is None:
                raise LinkLost("no address known for this vehicle yet")
            self._transport.sendto(data, peer)  # type: ignore[arg-type]
        else:
            self._transport.sendto(data)

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _Connection:
    """One TCP connection; hashable by identity so it can key routes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.framer = Framer()

    def __repr__(self) -> str:
        return f"<tcp {self.writer.get_extra_info('peername')}>"


class _Tcp(Transport):
    """tcp (client, reconnects) and tcpin (server, many connections)."""

    def __init__(self, host: str, port: int, on_frame: OnFrame, stats: dict[str, int], *, listen: bool) -> None:
        super().__init__(host, port, on_frame, stats)
        self._listen = listen
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    async def start(self) -> None:
        if self._listen:
            try:
                self._server = await asyncio.start_server(self._accept, self.host, self.port)
            except OSError as exc:
                raise LinkLost(f"cannot listen on tcp {self.host}:{self.port}: {exc.strerror}") from exc
            sockname = self._server.sockets[0].getsockname()
            self.local_address = (sockname[0], sockname[1])
        else:
            self._spawn(self._dial())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await self._serve(_Connection(reader, writer))

    async def _dial(self) -> None:
        delay = _RECONNECT_S[0]
        while not self._closing:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                log.debug("tcp connect %s:%s failed: %s", self.host, self.port, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_S[1])
                continue
            delay = _RECONNECT_S[0]
            sockname = writer.get_extra_info("sockname")
            self.local_address = (sockname[0], sockname[1])
            await self._serve(_Connection(reader, writer))

    async def _serve(self, conn: _Connection) -> None:
        self._connections.add(conn)
        try:
            while True:
                data = await conn.reader.read(65536)
                if not data:
                    break
                self._deliver(conn.framer, data, conn)
        except (ConnectionError, OSError) as exc:
            log.debug("tcp connection %r ended: %s", conn, exc)
        finally:
            self._connections.discard(conn)
            conn.writer.close()

    def default_peers(self) -> list[Peer]:
        return [] if self._listen else list(self._connections)

    def send(self, data: bytes, peer: Peer | None) -> None:
        if self._closing:
            raise LinkLost("link is closed")
        if peer is None:
            if self._listen or not self._connections:
                raise LinkLost("no connection to this vehicle")
            peer = next(iter(self._connections))
        if not isinstance(peer, _Connection) or peer not in self._connections:
            raise LinkLost(f"connection {peer!r} is gone")
        transport = peer.writer.transport
        if transport.get_write_buffer_size() > _MAX_WRITE_BUFFER:
            self._count("send_dropped")  # the peer does not read: do not buffer without bound
            return
        peer.writer.write(data)

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


def open_transport(url: str, on_frame: OnFrame, stats: dict[str, int]) -> Transport:
    """The (not yet started) transport for a MAVLink URL."""
    scheme, host, port = parse_url(url)
    if scheme in ("udpin", "udpout"):
        return _Udp(host, port, on_frame, stats, listen=scheme == "udpin")
    return _Tcp(host, port, on_frame, stats, listen=scheme == "tcpin")
