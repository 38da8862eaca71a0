"""The SIP user agent of a simulated GB/T 28181 camera: one UDP socket or one persistent TCP connection.

What a device's SIP stack does and no more: client transactions with RFC 3261 retransmission over UDP (timer A
from ``t1_s`` doubling up to 4 s, given up after ``timeout_s``), REGISTER with an MD5 digest answer to the
registrar's 401 (``qop=auth`` when offered, RFC 2069 style otherwise), answers to the platform's requests sent
once and re-sent for a retransmitted request (never handled twice), and every unusable message counted in
``drops`` by reason. What the requests mean is the camera's business (:mod:`sim.gb28181_camera`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import secrets
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiosipua.headers import parse_auth, parse_via
from aiosipua.utils import generate_branch, generate_call_id, generate_tag

from devices.tasks import cancel_and_wait
from gb28181 import digest
from gb28181.sip import (
    MAX_MESSAGE_BYTES,
    MalformedMessage,
    SipRequest,
    SipResponse,
    Transport,
    finish_request,
    parse,
    response_to,
)

__all__ = ["DeviceUa", "RequestHandler", "UaClosed", "UaConfig", "UaError", "UaTimeout", "authorization"]

log = logging.getLogger(__name__)

RequestHandler = Callable[[SipRequest], Awaitable[None] | None]


class UaError(Exception):
    """Base of the simulated camera's SIP errors."""


class UaTimeout(UaError):
    """No final response to a request in time."""


class UaClosed(UaError):
    """The transport is closed or could not be opened."""


@dataclass(frozen=True, slots=True)
class UaConfig:
    device_id: str
    server_id: str
    server_host: str
    server_port: int
    transport: Transport = "udp"
    local_host: str = "127.0.0.1"
    domain: str = ""  # the SIP domain; default: the first 10 digits of server_id (GB/T 28181 appendix D)
    t1_s: float = 0.5
    timeout_s: float = 32.0  # RFC 3261 timer F: 64 * T1

    @property
    def realm(self) -> str:
        return self.domain or self.server_id[:10]


def authorization(challenge: str, *, username: str, password: str, method: str, uri: str,
                  cnonce: str | None = None, nc: int = 1) -> str:
    """The ``Authorization`` value answering a ``WWW-Authenticate`` digest challenge (MD5; qop auth if offered).

    Raises UaError for a challenge a device cannot answer (another scheme or algorithm, no nonce).
    """
    parsed = parse_auth(challenge)
    params = {k.lower(): v for k, v in parsed.params.items()}
    if parsed.scheme.lower() != "digest" or "nonce" not in params:
        raise UaError(f"cannot answer challenge {challenge[:60]!r}")
    if params.get("algorithm", "MD5").upper() != "MD5":
        raise UaError(f"digest algorithm {params['algorithm'][:20]!r} is not supported")
    realm, nonce = params.get("realm", ""), params["nonce"]
    offered = [q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()]
    qop = "auth" if "auth" in offered else None
    if offered and qop is None:
        raise UaError(f"qop {params['qop'][:20]!r} offers no auth")
    nc_text, cnonce = f"{nc:08x}", cnonce or secrets.token_hex(8)
    response = digest.expected_response(username=username, realm=realm, password=password, method=method, uri=uri,
                                        nonce=nonce, qop=qop, nc=nc_text if qop else None,
                                        cnonce=cnonce if qop else None)
    value = (f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
             f'response="{response}", algorithm=MD5')
    if qop:
        value += f', qop=auth, nc={nc_text}, cnonce="{cnonce}"'
    if "opaque" in params:
        value += f', opaque="{params["opaque"]}"'
    return value


def _key(request: SipRequest) -> tuple[str, str, str]:
    """What identifies a request and its retransmissions: Call-ID, CSeq and the top Via's branch."""
    return (request.headers.get_first("call-id") or "", request.headers.get_first("cseq") or "",
            parse_via(request.headers.get_first("via") or "").branch or "")


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, owner: DeviceUa) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner.datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("gb28181 camera udp: %s", exc)  # the platform is not there (yet): the transaction times out


class DeviceUa:
    """The device's SIP endpoint towards one platform; ``on_request`` gets every request (ACK included)."""

    def __init__(self, config: UaConfig, on_request: RequestHandler) -> None:
        self.config = config
        self.on_request = on_request
        self.drops: Counter[str] = Counter()
        self.local_port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[SipResponse]] = {}
        # Answers by (Call-ID, CSeq, branch); None while the request is being handled.
        self._answered: OrderedDict[tuple[str, str, str], bytes | None] = OrderedDict()
        self._handlers: set[asyncio.Task[None]] = set()
        self._cseq = 0
        self._register_call_id = generate_call_id(config.local_host)
        self._from_tag = generate_tag()

    # --- lifecycle ----------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        if self.config.transport == "udp":
            return self._udp is not None
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        """Open the socket (UDP) or the connection (TCP) if it is not open; UaClosed when it cannot be."""
        if self.connected:
            return
        cfg = self.config
        try:
            if cfg.transport == "udp":
                loop = asyncio.get_running_loop()
                self._udp, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagrams(self), local_addr=(cfg.local_host, 0))
                self.local_port = int(self._udp.get_extra_info("sockname")[1])
                return
            reader, writer = await asyncio.open_connection(cfg.server_host, cfg.server_port,
                                                           local_addr=(cfg.local_host, 0), limit=MAX_MESSAGE_BYTES)
        except OSError as exc:
            raise UaClosed(f"cannot reach {cfg.server_host}:{cfg.server_port}: {exc}") from exc
        self._writer = writer
        self.local_port = int(writer.get_extra_info("sockname")[1])
        self._reader_task = asyncio.create_task(self._read_stream(reader), name=f"gb28181-ua-{cfg.device_id}")

    async def close(self) -> None:
        # Handlers first (they may still answer), then the transport; pending requests fail as closed.
        await cancel_and_wait(*self._handlers)
        await cancel_and_wait(self._reader_task)
        self._reader_task = None
        self._close_transport()

    def _close_transport(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(UaClosed("the transport closed"))

    # --- wire ---------------------------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self._udp is not None:
            self._udp.sendto(data, (self.config.server_host, self.config.server_port))
        elif self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)
        else:
            raise UaClosed("not connected")

    async def _read_stream(self, reader: asyncio.StreamReader) -> None:
        try:
            while (frame := await self._frame(reader)) is not None:
                self.received(frame)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.drops["tcp_broken"] += 1
        finally:
            self._close_transport()

    async def _frame(self, reader: asyncio.StreamReader) -> bytes | None:
        """One message framed by Content-Length (RFC 3261 section 18.3); None at the end of the stream."""
        head = (await reader.readuntil(b"\r\n\r\n")).lstrip(b"\r\n")
        if not head:
            return b""  # CRLF keep-alive
        length = 0
        for line in head.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if colon and name.strip().lower() in (b"content-length", b"l"):
                if not value.strip().isdigit() or int(value) > MAX_MESSAGE_BYTES:
                    self.drops["bad_content_length"] += 1
                    return None  # the stream cannot be re-synchronised
                length = int(value)
        return head + (await reader.readexactly(length) if length else b"")

    def datagram(self, data: bytes, source: tuple[str, int]) -> None:
        # Only the platform's host speaks to a camera; anything else is not even parsed.
        if source[0] != self.config.server_host:
            self.drops["foreign_source"] += 1
            return
        self.received(data)

    def received(self, data: bytes) -> None:
        if not data.strip(b"\r\n"):
            return
        try:
            message = parse(data)
        except MalformedMessage as exc:
            self.drops[exc.reason] += 1
            return
        if isinstance(message, SipResponse):
            self._response(message)
        else:
            self._request(message)

    def _response(self, response: SipResponse) -> None:
        branch = parse_via(response.headers.get_first("via") or "").branch or ""
        future = self._pending.get(branch)
        if future is None:
            self.drops["stray_response"] += 1
        elif response.status_code >= 200 and not future.done():
            future.set_result(response)

    def _request(self, request: SipRequest) -> None:
        if request.method == "ACK":
            self._dispatch(request)
            return
        key = _key(request)
        if key in self._answered:
            answer = self._answered[key]
            self.drops["retransmission"] += 1
            if answer is not None:
                self.send(answer)
            return
        self._answered[key] = None
        while len(self._answered) > 256:
            self._answered.popitem(last=False)
        self._dispatch(request)

    def _dispatch(self, request: SipRequest) -> None:
        task = asyncio.get_running_loop().create_task(self._handle(request))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _handle(self, request: SipRequest) -> None:
        try:
            result = self.on_request(request)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.drops["handler_error"] += 1
            log.exception("gb28181 camera %s: handling %s failed", self.config.device_id, request.method)
            if request.method != "ACK":
                with contextlib.suppress(UaError):
                    self.respond(request, 500, "Server Internal Error")

    # --- answering ----------------------------------------------------------------------------------------------

    def respond(self, request: SipRequest, status: int, reason: str, *, body: bytes = b"",
                content_type: str = "Application/MANSCDP+xml", headers: dict[str, str] | None = None,
                to_tag: str | None = None) -> SipResponse:
        """Send the answer to ``request`` and keep it for the request's retransmissions."""
        response = response_to(request, status, reason, to_tag=to_tag)
        response.headers.set_single("User-Agent", "fieldhub-sim")
        for name, value in (headers or {}).items():
            response.headers.set_single(name, value)
        if body:
            response.headers.set_single("Content-Type", content_type)
            response.body = body
        wire = bytes(response)
        key = _key(request)
        if key in self._answered:
            self._answered[key] = wire
        self.send(wire)
        return response

    def resend_answer(self, request: SipRequest) -> bool:
        """Send the kept answer to ``request`` again (a 2xx to an INVITE until its ACK); False if none is kept."""
        answer = self._answered.get(_key(request))
        if answer is None:
            return False
        self.send(answer)
        return True

    # --- asking -------------------------------------------------------------------------------------------------

    @property
    def contact(self) -> str:
        return f"<sip:{self.config.device_id}@{self.config.local_host}:{self.local_port}>"

    @property
    def server_uri(self) -> str:
        return f"sip:{self.config.server_id}@{self.config.server_host}:{self.config.server_port}"

    def next_cseq(self) -> int:
        self._cseq += 1
        return self._cseq

    def build(self, method: str, *, uri: str | None = None, from_: str | None = None, to: str | None = None,
              call_id: str | None = None, cseq: int | None = None, body: bytes = b"",
              content_type: str = "Application/MANSCDP+xml", headers: dict[str, str] | None = None) -> SipRequest:
        """A request with a fresh branch; outside a dialog From/To name the device and the platform."""
        cfg = self.config
        request = SipRequest(method=method, uri=uri or self.server_uri)
        request.headers.append("Via", f"SIP/2.0/{cfg.transport.upper()} {cfg.local_host}:{self.local_port};"
                                      f"rport;branch={generate_branch()}")
        request.headers.append("From", from_ or f"<sip:{cfg.device_id}@{cfg.realm}>;tag={generate_tag()}")
        request.headers.append("To", to or f"<sip:{cfg.server_id}@{cfg.realm}>")
        request.headers.append("Call-ID", call_id or generate_call_id(cfg.local_host))
        return finish_request(request, method, cseq if cseq is not None else self.next_cseq(), body=body,
                              content_type=content_type, headers={"User-Agent": "fieldhub-sim", **(headers or {})})

    async def request(self, request: SipRequest) -> SipResponse:
        """Send ``request`` and wait for its final response; UaTimeout or UaClosed otherwise."""
        await self.connect()
        branch = parse_via(request.headers.get_first("via") or "").branch or ""
        wire = bytes(request)
        future: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self._pending[branch] = future
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout_s
        interval = self.config.t1_s
        try:
            while True:
                self.send(wire)
                left = deadline - loop.time()
                wait = min(left, interval) if self.config.transport == "udp" else left
                done, _ = await asyncio.wait({future}, timeout=max(wait, 0.0))
                if done:
                    return future.result()
                if loop.time() >= deadline:
                    raise UaTimeout(f"{request.method}: no final response in {self.config.timeout_s:g} s")
                interval = min(interval * 2, 4.0)
        finally:
            self._pending.pop(branch, None)

    async def register(self, password: str, expires_s: int) -> SipResponse:
        """REGISTER (``expires_s`` 0 unregisters), answering one 401 challenge; the final response."""
        cfg = self.config
        await self.connect()
        aor = f"<sip:{cfg.device_id}@{cfg.realm}>"
        uri = f"sip:{cfg.server_id}@{cfg.realm}"
        headers = {"Contact": self.contact, "Expires": str(expires_s)}
        response = await self.request(self._register_request(uri, aor, headers))
        if response.status_code not in (401, 407):
            return response
        challenge = response.headers.get_first("www-authenticate") or response.headers.get_first(
            "proxy-authenticate") or ""
        answer = authorization(challenge, username=cfg.device_id, password=password, method="REGISTER", uri=uri)
        name = "Authorization" if response.status_code == 401 else "Proxy-Authorization"
        return await self.request(self._register_request(uri, aor, {**headers, name: answer}))

    def _register_request(self, uri: str, aor: str, headers: dict[str, str]) -> SipRequest:
        # One Call-ID for all of a device's registrations, CSeq rising (RFC 3261 section 10.2).
        return self.build("REGISTER", uri=uri, from_=f"{aor};tag={self._from_tag}", to=aor,
                          call_id=self._register_call_id, headers=headers)
