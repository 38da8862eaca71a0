"""The GB/T 28181 SIP server side: device registration with digest, messages in, requests out, presence.

Knows nothing of the hub: credentials come from ``password_of``, message bodies (MANSCDP) and presence changes
go to the callbacks it is given; the hub decides what they mean, and the message handler's answer (None, or a
status and reason) is the final response the device gets. Requests to devices and the matching of their responses
are :mod:`gb28181.transactions`; a device's BYE and the loss of a device go to the dialog owner attached with
:meth:`Registrar.attach` (:class:`gb28181.calls.Calls`); ACKs are taken silently.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from aiosipua.headers import parse_address, parse_via

from devices.tasks import cancel_and_wait

from . import digest
from .config import RegistrarConfig, format_date
from .presence import Presence, Registration
from .sip import DEVICE_ID, Peer, SipError, SipRequest, SipResponse, response_to, uri_user
from .transactions import Dialog, NotReachable, RequestTimeout, Transactions, Via
from .transport import SipTransports

__all__ = [
    "Answer", "DialogRequests", "NotReachable", "NotRegistered", "Registrar", "RegistrarConfig", "RequestTimeout",
    "format_date",
]

log = logging.getLogger(__name__)

PasswordOf = Callable[[str], Awaitable[str | None]]
# What the message handler says of a body: None for 200 OK, else the final status and reason phrase to answer.
Answer = tuple[int, str] | None
MessageHandler = Callable[[str, bytes, str], Awaitable[Answer] | Answer]
OnlineHandler = Callable[[str], None]
OfflineHandler = Callable[[str, str], None]

MANSCDP = "Application/MANSCDP+xml"
_ALLOW = "REGISTER, MESSAGE, NOTIFY, OPTIONS, BYE, ACK"


class NotRegistered(SipError):
    """A request for a device that has no live registration."""


class DialogRequests(Protocol):
    """The dialogs' side of the registrar (:class:`gb28181.calls.Calls`): in-dialog requests and lost devices."""

    def in_dialog(self, request: SipRequest, peer: Peer) -> SipResponse:
        """Answer a request of a dialog (a device's BYE)."""

    def device_gone(self, device_id: str, reason: str) -> None:
        """The device unregistered or went offline: its dialogs are over."""


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
        self.transactions = Transactions(self.transports, self.via, self.counters)
        self.dialogs: DialogRequests | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        # Answers to recent requests, so a device's UDP retransmission gets the same answer and is not handled
        # (or handed to on_message) twice; requests still being handled absorb their retransmissions.
        self._answered: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        self._handling: set[tuple[str, str, str]] = set()
        self._checker: asyncio.Task[None] | None = None

    def attach(self, dialogs: DialogRequests) -> None:
        """Route in-dialog requests (BYE) and lost devices to ``dialogs``; one dialog owner per registrar."""
        if self.dialogs is not None and self.dialogs is not dialogs:
            raise ValueError("this registrar already has a dialog owner")
        self.dialogs = dialogs

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
        self.transactions.close()
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

    def unregister(self, device_id: str, reason: str) -> bool:
        """Drop a device's binding (its login was revoked); offline callbacks and its calls end as on expiry."""
        if not self.presence.unregister(device_id):
            return False
        self._gone(device_id, reason)
        return True

    # --- presence ----------------------------------------------------------------------------------------------

    def check(self) -> None:
        """Send ``offline`` for devices silent too long or whose registration ran out."""
        for device_id, reason in self.presence.sweep(self.clock()):
            self._gone(device_id, reason)

    def _gone(self, device_id: str, reason: str) -> None:
        self.counters["offline"] += 1
        self._notify(self.on_offline, device_id, reason)
        if self.dialogs is not None:
            self._notify(self.dialogs.device_gone, device_id, reason)

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
            self.transactions.deliver(message)
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
        if key in self._handling:
            self.counters["retransmission"] += 1  # answered once its handler is done
            return
        if len(self._handlers) >= self.config.max_in_flight:
            self.transports.drop("overloaded", peer)
            return
        self.counters["request"] += 1
        self._handling.add(key)
        task = asyncio.get_running_loop().create_task(self._handle(message, peer, key))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        task.add_done_callback(lambda _: self._handling.discard(key))

    async def _handle(self, request: SipRequest, peer: Peer, key: tuple[str, str, str]) -> None:
        try:
            if request.method == "REGISTER":
                response = await self._register(request, peer)
            elif request.method in ("MESSAGE", "NOTIFY"):
                response = await self._message(request, peer)
            elif request.method == "BYE":
                response = self._bye(request, peer)
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
                self._gone(device_id, "unregistered")
            return response
        contact = request.headers.get_first("contact") or f"<sip:{device_id}@{peer.host}:{peer.port}>"
        response.headers.set_single("Contact", contact)
        self.counters["registered"] += 1
        call_id = request.headers.get_first("call-id") or ""
        restarted = self.presence.restarted(device_id, call_id)
        if self.presence.register(device_id, peer, contact, expires, now, call_id) or restarted:
            self.counters["restarted" if restarted else "online"] += 1
            if restarted and self.dialogs is not None:
                self._notify(self.dialogs.device_gone, device_id, "restarted")
            self._notify(self.on_online, device_id)  # (again:) the hub subscribes and queries anew
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
        if self.on_message is None:
            return response_to(request, 200, "OK")
        # Answered after the consumer has taken the body, so a 200 means the hub has it, and a 4xx/5xx says why not
        # (a 503 makes a device send it again).
        content_type = request.headers.get_first("content-type") or ""
        try:
            result = self.on_message(device_id, request.body, content_type)
            answer = await result if inspect.isawaitable(result) else result
        except Exception:
            self.counters["message_handler_error"] += 1
            log.exception("gb28181: the message handler failed for %s", device_id)
            return response_to(request, 500, "Server Internal Error")
        if answer is None:
            return response_to(request, 200, "OK")
        status, reason = answer
        self.counters[f"message_answered_{status}"] += 1
        return response_to(request, status, reason)

    def _bye(self, request: SipRequest, peer: Peer) -> SipResponse:
        if self.dialogs is None:
            self.counters["bye_unknown_call"] += 1
            return response_to(request, 481, "Call/Transaction Does Not Exist")
        return self.dialogs.in_dialog(request, peer)

    # --- outgoing ----------------------------------------------------------------------------------------------

    def via(self) -> Via:
        """Where devices reach the hub, for the Via and Contact of its requests."""
        return Via(self.config.announce_host or self.config.host, self.udp_port, self.tcp_port)

    def request_for(self, device_id: str, method: str, *, target_user: str | None = None, body: bytes = b"",
                    content_type: str = MANSCDP, extra_headers: dict[str, str] | None = None,
                    dialog: Dialog | None = None, cseq: int | None = None) -> tuple[SipRequest, Peer]:
        """A request to a registered device (``target_user``: the channel it is for) and where to send it."""
        binding = self.presence.get(device_id)
        if binding is None:
            raise NotRegistered(f"{device_id} is not registered")
        cfg, peer = self.config, binding.peer
        user = target_user or device_id
        request = self.transactions.request(
            peer, method, uri=f"sip:{user}@{peer.host}:{peer.port}", from_uri=f"<sip:{cfg.server_id}@{cfg.domain}>",
            to_uri=f"<sip:{user}@{cfg.domain}>", body=body, content_type=content_type, extra=extra_headers,
            dialog=dialog, cseq=cseq,
        )
        return request, peer

    async def send_request(
        self,
        device_id: str,
        method: str,
        body: bytes,
        content_type: str = MANSCDP,
        *,
        timeout_s: float | None = None,
        extra_headers: dict[str, str] | None = None,
        dialog: Dialog | None = None,
        cseq: int | None = None,
    ) -> SipResponse:
        """Send MESSAGE/SUBSCRIBE/... to a registered device and return its final response.

        Over UDP the request is retransmitted (RFC 3261 timer E: 0.5 s, doubling to 4 s) until answered or timed
        out (RequestTimeout); NotRegistered / NotReachable when the device cannot be addressed.
        """
        request, peer = self.request_for(device_id, method, body=body, content_type=content_type,
                                         extra_headers=extra_headers, dialog=dialog, cseq=cseq)
        timeout = timeout_s if timeout_s is not None else self.config.request_timeout_s
        return await self.transactions.exchange(peer, request, timeout)
