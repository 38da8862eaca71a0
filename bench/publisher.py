"""A minimal MQTT 3.1.1 publisher on an asyncio protocol, for load generation only.

Why not a real client library: the load generator shares a 2-core machine with
the hub, the broker and PostgreSQL, so every microsecond it spends per message
is taken from the system under test. Measured on this machine (one process,
QoS 1 into Mosquitto on loopback, CPU per message including the kernel's share):

- gmqtt 0.8: ~29 us at full speed, which tops out near 34,000 msg/s;
- paho-mqtt 2.2: ~60 us (the project's notes);
- this module, many devices on one connection (before per-device logins): ~12 us
  at full speed (over 60,000 msg/s), ~13 us at 10,000 msg/s (10 us user, 3 us
  system): the topic header is pre-encoded per device, the messages of one
  connection in one pacing slice leave in one write, and their PUBACKs come back
  in a few reads parsed by a fast path;
- this module as the benchmarks use it now, one connection per device with its own
  login (10,000 devices at 1 fix/s each, 10,000 msg/s, QoS 1, uvloop; measured by
  ``fieldhub bench ingest --security both`` on 2026-12-04, a shared, busy machine):
  ~28 us per message on plaintext loopback and ~50 us over TLS (one write and
  one PUBACK read per message, each through OpenSSL; the 10,000 TLS handshakes
  before the run are not counted).

So it plays the part a C publisher would: hand-encoded CONNECT, PUBLISH and
DISCONNECT packets, and a parser for what a broker sends back to a publisher
(CONNACK, PUBACK, PINGRESP). No subscriptions, no retries, no session state;
a message counts as *acknowledged* when its PUBACK arrives. Not for production use.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_
from collections.abc import Mapping, Sequence
from typing import Final, cast

from devices.broker import BrokerAddress

__all__ = ["MqttProtocolError", "Publisher", "connect", "connect_devices", "encode_connect", "encode_publish",
           "encode_remaining_length", "encode_topic", "split_packets"]

CONNECT: Final = 0x10
CONNACK: Final = 0x20
PUBLISH: Final = 0x30
PUBACK: Final = 0x40
PINGRESP: Final = 0xD0
DISCONNECT_PACKET: Final = b"\xe0\x00"
MAX_PACKET_ID: Final = 0xFFFF
CONNECT_CONCURRENCY: Final = 64


class MqttProtocolError(Exception):
    """The broker refused the connection or sent something a publisher cannot parse."""


def encode_remaining_length(length: int) -> bytes:
    """The variable-length "remaining length" of a fixed header (MQTT 3.1.1, 2.2.3)."""
    if not 0 <= length <= 268_435_455:
        raise ValueError(f"remaining length {length} out of range")
    out = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | 0x80 if length else byte)
        if not length:
            return bytes(out)


def encode_topic(topic: str) -> bytes:
    """A topic as a length-prefixed UTF-8 string; pre-computed once per device."""
    raw = topic.encode()
    return len(raw).to_bytes(2, "big") + raw


def encode_connect(client_id: str, *, keepalive_s: int = 0, clean_session: bool = True,
                   username: str | None = None, password: str | None = None) -> bytes:
    """CONNECT (MQTT 3.1.1, 3.1): the flags byte says which of username and password follow the client id."""
    if password is not None and username is None:
        raise ValueError("MQTT 3.1.1 allows a password only with a username")
    flags = (0x02 if clean_session else 0x00) | (0x80 if username is not None else 0) | (
        0x40 if password is not None else 0)
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + keepalive_s.to_bytes(2, "big") + encode_topic(client_id)
    if username is not None:
        body += encode_topic(username)
    if password is not None:
        body += encode_topic(password)
    return bytes([CONNECT]) + encode_remaining_length(len(body)) + body


def encode_publish(topic: bytes, payload: bytes, qos: int, packet_id: int = 0) -> bytes:
    """A PUBLISH packet; ``topic`` comes from :func:`encode_topic`."""
    if qos == 0:
        return bytes([PUBLISH]) + encode_remaining_length(len(topic) + len(payload)) + topic + payload
    return (bytes([PUBLISH | qos << 1]) + encode_remaining_length(len(topic) + 2 + len(payload)) + topic
            + packet_id.to_bytes(2, "big") + payload)


def split_packets(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Take the complete packets off the front of ``buffer`` as (first byte, body); keep the rest."""
    packets = []
    pos = 0
    while (header := _read_header(buffer, pos)) is not None:
        body_start, length = header
        if body_start + length > len(buffer):
            break  # body not complete yet
        packets.append((buffer[pos], bytes(buffer[body_start:body_start + length])))
        pos = body_start + length
    del buffer[:pos]
    return packets


def _read_header(buffer: bytearray, pos: int) -> tuple[int, int] | None:
    """(start of body, remaining length) of the packet at ``pos``; None while the header is incomplete."""
    length, shift, i = 0, 0, pos + 1
    while i < len(buffer):
        byte = buffer[i]
        i += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return i, length
        shift += 7
        if shift > 21:
            raise MqttProtocolError("remaining length longer than 4 bytes")
    return None


class Publisher(asyncio.Protocol):
    """One MQTT connection that publishes and counts PUBACKs.

    ``connected`` resolves on CONNACK; ``closed`` when the connection ends.
    """

    def __init__(self, client_id: str, username: str | None = None, password: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.client_id = client_id
        self._connect = encode_connect(client_id, username=username, password=password)
        self.connected: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.published = 0
        self.acked = 0
        self.unknown_acks = 0
        self.inflight: set[int] = set()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._packet_id = 0

    # ------------------------------------------------------------ asyncio side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self._transport.write(self._connect)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        # Fast path: a run of PUBACKs (0x40 0x02 id id), nearly all a publisher ever reads.
        inflight, i, end = self.inflight, 0, len(buffer) - 3
        while i < end and buffer[i] == PUBACK and buffer[i + 1] == 2:
            packet_id = buffer[i + 2] << 8 | buffer[i + 3]
            if packet_id in inflight:
                inflight.remove(packet_id)
                self.acked += 1
            else:
                self.unknown_acks += 1
            i += 4
        del buffer[:i]
        if not buffer:
            return
        try:
            packets = split_packets(buffer)
        except MqttProtocolError as exc:
            self._fail(exc)
            return
        for first, body in packets:
            kind = first & 0xF0
            if kind == PUBACK and len(body) >= 2:
                packet_id = int.from_bytes(body[:2], "big")
                if packet_id in self.inflight:
                    self.inflight.remove(packet_id)
                    self.acked += 1
                else:
                    self.unknown_acks += 1
            elif kind == CONNACK and not self.connected.done():
                if len(body) == 2 and body[1] == 0:
                    self.connected.set_result(None)
                else:
                    self._fail(MqttProtocolError(f"CONNACK refused the connection: {body.hex()}"))
            elif kind != PINGRESP:
                self._fail(MqttProtocolError(f"unexpected packet 0x{first:02x} for a publisher"))

    def connection_lost(self, exc: Exception | None) -> None:
        error = MqttProtocolError(f"connection lost: {exc or 'closed by the broker'}")
        if not self.connected.done():
            self.connected.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if not self.connected.done():
            self.connected.set_exception(exc)
        if self._transport is not None:
            self._transport.abort()

    # ------------------------------------------------------------ caller side
    def publish(self, topic: bytes, payload: bytes, qos: int) -> bool:
        """Queue one PUBLISH until :meth:`flush`; False when QoS 1 has no free packet id (65,535 unacknowledged)."""
        if qos == 0:
            self._out.append(encode_publish(topic, payload, 0))
            self.published += 1
            return True
        if len(self.inflight) >= MAX_PACKET_ID:
            return False
        packet_id = self._packet_id
        while True:
            packet_id = packet_id % MAX_PACKET_ID + 1
            if packet_id not in self.inflight:
                break
        self._packet_id = packet_id
        self.inflight.add(packet_id)
        self._out.append(encode_publish(topic, payload, qos, packet_id))
        self.published += 1
        return True

    def flush(self) -> None:
        """Write what :meth:`publish` queued, in one system call."""
        if not self._out:
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            raise MqttProtocolError(f"{self.client_id}: not connected")
        transport.write(b"".join(self._out))
        self._out.clear()

    def disconnect(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(DISCONNECT_PACKET)
            self._transport.close()


async def connect(host: str, port: int, client_id: str, timeout_s: float = 10.0, *, username: str | None = None,
                  password: str | None = None, ssl: ssl_.SSLContext | None = None,
                  server_hostname: str | None = None) -> Publisher:
    """Open a connection (over TLS with ``ssl``, the broker's certificate checked for ``server_hostname``, by
    default ``host``) and wait for its CONNACK."""
    loop = asyncio.get_running_loop()
    _, protocol = await asyncio.wait_for(loop.create_connection(
        lambda: Publisher(client_id, username, password), host, port, ssl=ssl,
        server_hostname=(server_hostname or host) if ssl is not None else None), timeout_s)
    await asyncio.wait_for(protocol.connected, timeout_s)
    return protocol


async def connect_devices(url: str, devices: Sequence[str], logins: Mapping[str, str], *,
                          concurrency: int = CONNECT_CONCURRENCY, timeout_s: float = 30.0) -> list[Publisher]:
    """One connection per device, as deployed devices connect: client id = username = the device id with its
    secret from ``logins`` (no login for a device missing there: the anonymous comparison broker), to ``url``
    (``mqtt://`` or ``mqtts://...?cafile=``, one TLS context shared by all). At most ``concurrency`` handshakes at
    once: a burst of thousands overflows the broker's listen backlog, and TLS handshakes are CPU on both sides."""
    address = BrokerAddress.parse(url)
    context = address.ssl_context()
    gate = asyncio.Semaphore(concurrency)

    async def one(device_id: str) -> Publisher:
        async with gate:
            secret = logins.get(device_id)
            return await connect(address.host, address.port, device_id, timeout_s, ssl=context,
                                 username=device_id if secret is not None else None, password=secret)

    return list(await asyncio.gather(*(one(d) for d in devices)))
