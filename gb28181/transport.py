"""SIP over UDP and TCP for a server facing untrusted devices: framing, limits and counted drops.

aiosipua's transports log and drop an unparsable message but cannot tell their owner, and frame TCP by a
Content-Length they read leniently; these count every drop by reason, close a bad TCP connection alone and
leave every other peer untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from devices.tasks import cancel_and_wait

from .sip import MAX_MESSAGE_BYTES, MalformedMessage, Peer, SipRequest, SipResponse, parse

__all__ = ["Delivery", "SipTransports"]

log = logging.getLogger(__name__)

Delivery = Callable[[SipRequest | SipResponse, Peer], None]

# A connection that sends no complete message for this long is not a device (devices keep alive every 60 s).
_TCP_IDLE_S = 300.0


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransports) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner.received(data, Peer("udp", str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a device that went away: nothing to do but note it.
        log.debug("sip udp: %s", exc)


class SipTransports:
    """One UDP socket and one TCP listener on the same host; messages go to ``deliver``, drops to ``drops``."""

    def __init__(self, deliver: Delivery, *, host: str, udp_port: int, tcp_port: int) -> None:
        self.deliver = deliver
        self.host = host
        self.udp_port = udp_port
        self.tcp_port = tcp_port
        self.drops: Counter[str] = Counter()
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._writers: dict[tuple[str, int], asyncio.StreamWriter] = {}
        self._readers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(self.host, self.udp_port))
        self._udp = udp
        self.udp_port = int(udp.get_extra_info("sockname")[1])
        self._server = await asyncio.start_server(self._connection, self.host, self.tcp_port, limit=MAX_MESSAGE_BYTES)
        self.tcp_port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        # Stop accepting first, then end the readers, then close what is left.
        if self._server is not None:
            self._server.close()
        await cancel_and_wait(*self._readers)
        for writer in list(self._writers.values()):
            writer.close()
        self._writers.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    def drop(self, reason: str, peer: Peer) -> None:
        self.drops[reason] += 1
        log.debug("sip: dropped a message from %s:%s (%s)", peer.host, peer.port, reason)

    def received(self, data: bytes, peer: Peer) -> None:
        # Keep-alive CRLFs (RFC 5626) are not messages and not errors.
        if not data.strip(b"\r\n"):
            return
        try:
            message = parse(data)
        except MalformedMessage as exc:
            self.drop(exc.reason, peer)
            return
        try:
            self.deliver(message, peer)
        except Exception:
            self.drop("handler_error", peer)
            log.exception("sip: handling a message from %s:%s failed", peer.host, peer.port)

    def send(self, peer: Peer, data: bytes) -> bool:
        """Send to the peer's source address (TCP: on its open connection); False if it cannot be reached."""
        if peer.transport == "udp":
            if self._udp is None:
                return False
            self._udp.sendto(data, (peer.host, peer.port))
            return True
        writer = self._writers.get((peer.host, peer.port))
        if writer is None or writer.is_closing():
            return False
        writer.write(data)
        return True

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._readers.add(task)
        name = writer.get_extra_info("peername")
        peer = Peer("tcp", str(name[0]), int(name[1]))
        self._writers[(peer.host, peer.port)] = writer
        try:
            while True:
                async with asyncio.timeout(_TCP_IDLE_S):
                    frame = await self._frame(reader, peer)
                if frame is None:
                    break
                self.received(frame, peer)
        except TimeoutError:
            self.drop("tcp_idle", peer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.pop((peer.host, peer.port), None)
            if task is not None:
                self._readers.discard(task)
            writer.close()

    async def _frame(self, reader: asyncio.StreamReader, peer: Peer) -> bytes | None:
        """One message off the stream, framed by Content-Length (RFC 3261 section 18.3); None ends the connection.

        A frame that cannot be delimited leaves the stream unsynchronised, so its connection is closed.
        """
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            self.drop("too_large", peer)
            return None
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip(b"\r\n"):
                self.drop("truncated", peer)
            return None
        stripped = head.lstrip(b"\r\n")
        if not stripped:
            return b""  # CRLF keep-alives
        length: int | None = None
        for line in stripped.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if colon and name.strip().lower() in (b"content-length", b"l"):
                if not value.strip().isdigit():
                    self.drop("bad_content_length", peer)
                    return None
                length = int(value.strip())
                break
        if length is None:
            self.drop("no_content_length", peer)  # mandatory on stream transports (RFC 3261 section 20.14)
            return None
        if len(stripped) + length > MAX_MESSAGE_BYTES:
            self.drop("too_large", peer)
            return None
        try:
            body = await reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError:
            self.drop("truncated", peer)
            return None
        return stripped + body
