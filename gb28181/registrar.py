"""The GB/T 28181 SIP server side: device registration with digest, messages in, requests out, presence.

Knows nothing of the hub: credentials come from ``password_of``, message bodies (MANSCDP) and presence changes
go to the callbacks it is given; the hub decides what they mean.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiosipua.headers import parse_address, parse_via
from aiosipua.utils import generate_branch, generate_call_id, generate_tag

from devices.tasks import cancel_and_wait

from . import digest
from .presence import Presence, Registration
from .sip import DEVICE_ID, Peer, SipError, SipRequest, SipResponse, response_to, uri_user
from .transport import SipTransports

__all__ = ["NotRegistered", "Registrar", "RegistrarConfig", "RequestTimeout", "format_date"]

log = logging.getLogger(__name__)

PasswordOf = Callable[[str], Awaitable[str | None]]
MessageHandler = Callable[[str, bytes, str], Awaitable[None] | None]
OnlineHandler = Callable[[str], None]
OfflineHandler = Callable[[str, str], None]

_ALLOW = "REGISTER, MESSAGE, NOTIFY, OPTIONS"


class NotRegistered(SipError):
    """A request for a device that has no live registration."""


class RequestTimeout(SipError):
    """No final response from the device in time."""


@dataclass(frozen=True, slots=True)
class RegistrarConfig:
    server_id: str
    host: str = "0.0.0.0"
    udp_port: int = 5060
    tcp_port: int = 5060
    realm: str = ""  # default: the first 10 digits of server_id (the SIP domain, GB/T 28181 appendix D)
    announce_host: str = ""  # the address devices reach us at, for Via/From in our requests; default: host
    keepalive_interval_s: float = 60.0
    max_missed: int = 3
    default_expires_s: int = 3600
    max_expires_s: int = 86400
    nonce_lifetime_s: float = 300.0
    request_timeout_s: float = 5.0
    check_interval_s: float = 1.0
    max_in_flight: int = 1024

    @property
    def domain(self) -> str:
        return self.realm or self.server_id[:10]


def format_date(moment: datetime) -> str:
    """The 200's Date in GB/T 28181 form (``2024-01-02T03:04:05.123``), from which devices set their clocks."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


class Registrar:
    """SIP server for GB/T 28181 devices over UDP and TCP; an async context manager.

    Each request is handled in its own task (bounded by ``max_in_flight``), so a slow credential look-up or
    message consumer for one device does not hold up another's REGISTER.
    """

    def __init__(
        self,
        config: RegistrarConfig,
        *,
        password_of: PasswordOf,
        on_message: MessageHandler | None = None,
        on_online: OnlineHandler | None = None,
        on_offline: OfflineHandler | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.config = config
        self.password_of = password_of
        self.on_message = on_message
        self.on_online = on_online
        self.on_offline = on_offline
        self.clock = clock
        self.wall = wall
        self.counters: Counter[str] = Counter()
        self.presence = Presence(keepalive_interval_s=config.keepalive_interval_s, max_missed=config.max_missed)
        self.nonces = digest.NonceTable(lifetime_s=config.nonce_lifetime_s)
        self.transports = SipTransports(
            self._deliver, host=config.host, udp_port=config.udp_port, tcp_port=config.tcp_port
        )
        self._handlers: set[asyncio.Task[None]] = set()
        self._pending: dict[str, asyncio.Future[SipResponse]] = {}
        # Answers to recent requests, so a device's UDP retransmission gets the same answer and is not handled
        # (or handed to on_message) twice.
        self._answered: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        self._checker: asyncio.Task[None] | None = None
        self._cseq = 0

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Registrar:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        await self.transports.start()
        self._checker = asyncio.create_task(self._check_loop(), name="gb28181-presence")

    async def stop(self) -> None:
        # The presence check first (no offline callbacks during shutdown), then the handlers, then the sockets.
        await cancel_and_wait(self._checker)
        self._checker = None
        await cancel_and_wait(*self._handlers)
        for future in self._pending.values():
            future.cancel()
        await self.transports.stop()

    @property
    def udp_port(self) -> int:
        return self.transports.udp_port

    @property
    def tcp_port(self) -> int:
        return self.transports.tcp_port

    @property
    def drops(self) -> Counter[str]:
        return self.transports.drops

    def registration(self, device_id: str) -> Registration | None:
        return self.presence.get(device_id)

    # --- presence ----------------------------------------------------------------------------------------------

    def check(self) -> None:
        """Send ``offline`` for devices silent too long or whose registration ran out."""
        for device_id, reason in self.presence.sweep(self.clock()):
            self.counters["offline"] += 1
            self._notify(self.on_offline, device_id, reason)

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_interval_s)
            self.check()

    def _notify(self, callback: Callable[..., Any] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            self.counters["callback_error"] += 1
            log.exception("gb28181: a presence callback failed for %s", args[0])

    # --- incoming ----------------------------------------------------------------------------------------------

    def _deliver(self, message: SipRequest | SipResponse, peer: Peer) -> None:
        if isinstance(message, SipResponse):
            self._response(message)
            return
        if message.method == "ACK":
            self.counters["ack"] += 1  # a 2xx-less exchange: nothing to answer
            return
        key = (
            message.headers.get_first("call-id") or "",
            message.headers.get_first("cseq") or "",
            parse_via(message.headers.get_first("via") or "").branch or "",
        )
        if key in self._answered:
            self.counters["retransmission"] += 1
            self.transports.send(peer, self._answered[key])
            return
        if len(self._handlers) >= self.config.max_in_flight:
            self.transports.drop("overloaded", peer)
            return
        self.counters["request"] += 1
        task = asyncio.get_running_loop().create_task(self._handle(message, peer, key))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _handle(self, request: SipRequest, peer: Peer, key: tuple[str, str, str]) -> None:
        try:
            if request.method == "REGISTER":
                response = await self._register(request, peer)
            elif request.method in ("MESSAGE", "NOTIFY"):
                response = await self._message(request, peer)
            elif request.method == "OPTIONS":
                response = response_to(request, 200, "OK")
                response.headers.set_single("Allow", _ALLOW)
            else:
                response = response_to(request, 405, "Method Not Allowed")
                response.headers.set_single("Allow", _ALLOW)
        except Exception:
            self.counters["handler_error"] += 1
            log.exception("gb28181: handling %s from %s:%s failed", request.method, peer.host, peer.port)
            response = response_to(request, 500, "Server Internal Error")
        wire = bytes(response)
        self._answered[key] = wire
        while len(self._answered) > 1024:
            self._answered.popitem(last=False)
        self.transports.send(peer, wire)

    async def _register(self, request: SipRequest, peer: Peer) -> SipResponse:
        device_id = uri_user(request.headers.get_first("to")) or ""
        if not DEVICE_ID.fullmatch(device_id):
            self.counters["register_bad_device_id"] += 1
            return response_to(request, 403, "Forbidden (device id is not 20 digits)")
        try:
            password = await self.password_of(device_id)
        except Exception:
            self.counters["credential_lookup_failed"] += 1
            log.exception("gb28181: looking up the credentials of %s failed", device_id)
            return response_to(request, 500, "Credential Lookup Failed")
        if password is None:
            self.counters["register_unknown_device"] += 1
            return response_to(request, 404, "Unknown Device")
        header = request.headers.get_first("authorization")
        if header is None:
            return self._challenge(request, stale=False)
        try:
            creds = digest.parse_authorization(header)
        except digest.DigestError as exc:
            self.counters["auth_malformed"] += 1
            return response_to(request, 400, f"Bad Authorization ({exc})"[:80])
        if creds.username != device_id:
            self.counters["auth_failed"] += 1
            return response_to(request, 403, "Forbidden (username is not the device id)")
        now = self.clock()
        verdict = digest.verify(
            creds, method="REGISTER", password=password, realm=self.config.domain, nonces=self.nonces, now=now
        )
        if verdict in ("stale", "unknown_nonce"):
            return self._challenge(request, stale=verdict == "stale")
        if verdict != "ok":
            self.counters["auth_failed"] += 1
            log.info("gb28181: REGISTER of %s from %s refused: %s", device_id, peer.host, verdict)
            reason = {"wrong_response": "wrong password", "wrong_realm": "wrong realm"}.get(verdict, verdict)
            return response_to(request, 403, f"Forbidden ({reason})")
        # One nonce, one REGISTER: a captured request cannot be replayed to move the binding elsewhere.
        self.nonces.forget(creds.nonce)
        expires = self._expires(request)
        if expires is None:
            self.counters["register_bad_expires"] += 1
            return response_to(request, 400, "Bad Expires")
        response = response_to(request, 200, "OK")
        response.headers.set_single("Date", format_date(self.wall()))
        response.headers.set_single("Expires", str(expires))
        if expires == 0:
            self.counters["unregistered"] += 1
            if self.presence.unregister(device_id):
                self.counters["offline"] += 1
                self._notify(self.on_offline, device_id, "unregistered")
            return response
        contact = request.headers.get_first("contact") or f"<sip:{device_id}@{peer.host}:{peer.port}>"
        response.headers.set_single("Contact", contact)
        self.counters["registered"] += 1
        if self.presence.register(device_id, peer, contact, expires, now):
            self.counters["online"] += 1
            self._notify(self.on_online, device_id)
        return response

    def _challenge(self, request: SipRequest, *, stale: bool) -> SipResponse:
        self.counters["challenged"] += 1
        response = response_to(request, 401, "Unauthorized")
        nonce = self.nonces.issue(self.clock())
        response.headers.set_single("WWW-Authenticate", digest.challenge(self.config.domain, nonce, stale=stale))
        return response

    def _expires(self, request: SipRequest) -> int | None:
        raw = request.headers.get_first("expires")
        if raw is None:
            contact = request.headers.get_first("contact")
            raw = (parse_address(contact).params.get("expires") if contact else None) or None
        if raw is None:
            return self.config.default_expires_s
        if not raw.strip().isdigit():
            return None
        return min(int(raw.strip()), self.config.max_expires_s)

    async def _message(self, request: SipRequest, peer: Peer) -> SipResponse:
        device_id = uri_user(request.headers.get_first("from")) or ""
        binding = self.presence.get(device_id)
        # GB/T 28181 does not authenticate MESSAGEs: accept them only from where the device registered.
        if binding is None or binding.peer.host != peer.host:
            self.counters["message_unregistered"] += 1
            return response_to(request, 403, "Forbidden (not registered)")
        came_online = self.presence.heard(device_id, peer, self.clock())
        if came_online is None:
            self.counters["message_unregistered"] += 1
            return response_to(request, 403, "Forbidden (registration expired)")
        self.counters["message"] += 1
        if came_online:
            self.counters["online"] += 1
            self._notify(self.on_online, device_id)
        if self.on_message is not None:
            # Answered after the consumer has taken the body, so a 200 means the hub has it.
            content_type = request.headers.get_first("content-type") or ""
            try:
                result = self.on_message(device_id, request.body, content_type)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                self.counters["callback_error"] += 1
                log.exception("gb28181: the message handler failed for %s", device_id)
        return response_to(request, 200, "OK")

    def _response(self, response: SipResponse) -> None:
        branch = parse_via(response.headers.get_first("via") or "").branch or ""
        future = self._pending.get(branch)
        if future is None:
            self.counters["stray_response"] += 1
            return
        if response.status_code >= 200 and not future.done():
            future.set_result(response)

    # --- outgoing ----------------------------------------------------------------------------------------------

    async def send_request(
        self,
        device_id: str,
        method: str,
        body: bytes,
        content_type: str = "Application/MANSCDP+xml",
        *,
        timeout_s: float | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> SipResponse:
        """Send MESSAGE/SUBSCRIBE/... to a registered device and return its final response.

        Over UDP the request is retransmitted (RFC 3261 timer A: 0.5 s, doubling) until answered or timed out.
        """
        binding = self.presence.get(device_id)
        if binding is None:
            raise NotRegistered(f"{device_id} is not registered")
        request, branch = self._build(binding, method, body, content_type, extra_headers or {})
        wire = bytes(request)
        future: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self._pending[branch] = future
        deadline = self.clock() + (timeout_s if timeout_s is not None else self.config.request_timeout_s)
        interval = 0.5
        try:
            while True:
                left = deadline - self.clock()
                if left <= 0:
                    raise RequestTimeout(f"{method} to {device_id}: no final response")
                if not self.transports.send(binding.peer, wire):
                    raise NotRegistered(f"{device_id} cannot be reached over {binding.peer.transport}")
                wait = min(left, interval) if binding.peer.transport == "udp" else left
                done, _ = await asyncio.wait({future}, timeout=wait)
                if done:
                    return future.result()
                interval = min(interval * 2, 4.0)
        finally:
            self._pending.pop(branch, None)

    def _build(
        self, binding: Registration, method: str, body: bytes, content_type: str, extra: dict[str, str]
    ) -> tuple[SipRequest, str]:
        cfg = self.config
        peer = binding.peer
        host = cfg.announce_host or cfg.host
        port = self.udp_port if peer.transport == "udp" else self.tcp_port
        branch = generate_branch()
        self._cseq += 1
        request = SipRequest(method=method, uri=f"sip:{binding.device_id}@{peer.host}:{peer.port}")
        request.headers.append("Via", f"SIP/2.0/{peer.transport.upper()} {host}:{port};rport;branch={branch}")
        request.headers.append("From", f"<sip:{cfg.server_id}@{cfg.domain}>;tag={generate_tag()}")
        request.headers.append("To", f"<sip:{binding.device_id}@{cfg.domain}>")
        request.headers.append("Call-ID", generate_call_id(host))
        request.headers.append("CSeq", f"{self._cseq} {method}")
        request.headers.append("Max-Forwards", "70")
        for name, value in extra.items():
            request.headers.set_single(name, value)
        if body:
            request.headers.append("Content-Type", content_type)
        request.body = body
        return request, branch
