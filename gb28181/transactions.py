"""The client side of the registrar: requests the hub sends to devices, their retransmission and their responses.

A request is built for a device's registration (or inside a dialog, for BYE and subscription refreshes), sent to
the address the device registered from (devices sit behind NAT), retransmitted over UDP as RFC 3261 timer A/E
says, and matched to its responses by the Via branch *and* the CSeq (RFC 3261 section 17.1.3), so a device that
answers with a wrong CSeq or a foreign Call-ID is a counted stray, never a confused transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiosipua.headers import parse_cseq, parse_via
from aiosipua.utils import generate_branch, generate_call_id, generate_tag

from .sip import Peer, SipError, SipRequest, SipResponse, finish_request
from .transport import SipTransports

__all__ = [
    "Dialog", "Listener", "NotReachable", "RequestTimeout", "Transactions", "Via", "dialog_of_response",
]

log = logging.getLogger(__name__)

Listener = Callable[[SipResponse], None]
# RFC 3261 timer T1 and the cap of the non-INVITE retransmission interval (T2).
T1_S = 0.5
T2_S = 4.0


class RequestTimeout(SipError):
    """No final response from the device in time."""


class NotReachable(SipError):
    """The device's connection is gone (TCP) or the transports are stopped."""


@dataclass(frozen=True, slots=True)
class Via:
    """Where the hub says it is, per transport: the Via sent-by and the Contact of its requests."""

    host: str
    udp_port: int
    tcp_port: int

    def port(self, peer: Peer) -> int:
        return self.udp_port if peer.transport == "udp" else self.tcp_port


@dataclass(frozen=True, slots=True)
class Dialog:
    """What an in-dialog request needs (RFC 3261 section 12): the dialog's ids and the device's target."""

    call_id: str
    local_uri: str  # our From, without its tag
    local_tag: str
    remote_uri: str  # the device's To, without its tag
    remote_tag: str
    remote_target: str  # the Request-URI: the Contact the device gave in its 2xx


def dialog_of_response(response: SipResponse, target: str) -> Dialog:
    """The dialog a 2xx to our request makes (a SUBSCRIBE's), from its echoed From/To/Call-ID and its Contact;
    ``target`` (the request's URI) when the Contact is missing or unusable."""
    local_uri, _, local_tag = (response.headers.get_first("from") or "").partition(";tag=")
    remote_uri, _, remote_tag = (response.headers.get_first("to") or "").partition(";tag=")
    contact = response.headers.get_first("contact") or ""
    inner = contact[contact.find("<") + 1 : contact.find(">")] if "<" in contact and ">" in contact else ""
    usable = inner.lower().startswith("sip:") and len(inner) <= 256 and not any(c.isspace() for c in inner)
    return Dialog(response.headers.get_first("call-id") or "", local_uri, local_tag.split(";")[0], remote_uri,
                  remote_tag.split(";")[0], inner if usable else target)


@dataclass(frozen=True, slots=True)
class _Key:
    branch: str
    method: str
    seq: int
    call_id: str


class Transactions:
    """Outgoing requests and the listeners waiting for their responses; owned by the registrar."""

    def __init__(self, transports: SipTransports, via: Callable[[], Via], counters: Counter[str] | None = None) -> None:
        self.transports = transports
        self.via = via
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self._listeners: dict[tuple[str, str], tuple[_Key, Listener]] = {}
        self._cseq = 0

    def next_cseq(self) -> int:
        self._cseq += 1
        return self._cseq

    # --- building ---------------------------------------------------------------------------------------------

    def request(
        self,
        peer: Peer,
        method: str,
        *,
        uri: str,
        from_uri: str,
        to_uri: str,
        body: bytes = b"",
        content_type: str = "Application/MANSCDP+xml",
        extra: dict[str, str] | None = None,
        dialog: Dialog | None = None,
        cseq: int | None = None,
    ) -> SipRequest:
        """A new request with a fresh branch; inside ``dialog`` its ids and target, else a new Call-ID and tag."""
        via = self.via()
        request = SipRequest(method=method, uri=dialog.remote_target if dialog else uri)
        branch = generate_branch()
        sent_by = f"{via.host}:{via.port(peer)}"
        request.headers.append("Via", f"SIP/2.0/{peer.transport.upper()} {sent_by};rport;branch={branch}")
        if dialog is not None:
            request.headers.append("From", f"{dialog.local_uri};tag={dialog.local_tag}")
            to = f"{dialog.remote_uri};tag={dialog.remote_tag}" if dialog.remote_tag else dialog.remote_uri
            request.headers.append("To", to)
            request.headers.append("Call-ID", dialog.call_id)
        else:
            request.headers.append("From", f"{from_uri};tag={generate_tag()}")
            request.headers.append("To", to_uri)
            request.headers.append("Call-ID", generate_call_id(via.host))
        return finish_request(request, method, cseq if cseq is not None else self.next_cseq(), body=body,
                              content_type=content_type, headers=extra)

    # --- matching ---------------------------------------------------------------------------------------------

    def listen(self, request: SipRequest, listener: Listener) -> None:
        """Hand every response of ``request`` (same branch, CSeq and Call-ID) to ``listener`` until forgotten."""
        key = _key_of(request)
        self._listeners[(key.branch, key.method)] = (key, listener)

    def forget(self, request: SipRequest) -> None:
        key = _key_of(request)
        self._listeners.pop((key.branch, key.method), None)

    def deliver(self, response: SipResponse) -> None:
        """A response from the transports: to its transaction's listener, else counted as a stray."""
        branch = parse_via(response.headers.get_first("via") or "").branch or ""
        try:
            cseq = parse_cseq(response.headers.get_first("cseq") or "")
        except Exception:
            self.counters["stray_response"] += 1
            return
        entry = self._listeners.get((branch, cseq.method.upper()))
        if entry is None:
            self.counters["stray_response"] += 1
            return
        key, listener = entry
        if cseq.seq != key.seq or (response.headers.get_first("call-id") or "") != key.call_id:
            self.counters["mismatched_response"] += 1
            return
        try:
            listener(response)
        except Exception:
            self.counters["listener_error"] += 1
            log.exception("gb28181: handling a %s response failed", key.method)

    def close(self) -> None:
        self._listeners.clear()

    # --- sending ----------------------------------------------------------------------------------------------

    def send(self, peer: Peer, request: SipRequest) -> None:
        if not self.transports.send(peer, bytes(request)):
            raise NotReachable(f"{peer.host}:{peer.port} cannot be reached over {peer.transport}")

    async def exchange(self, peer: Peer, request: SipRequest, timeout_s: float) -> SipResponse:
        """Send a non-INVITE request and return its final response; UDP retransmits at 0.5 s doubling to 4 s."""
        future: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()

        def take(response: SipResponse) -> None:
            if response.status_code >= 200 and not future.done():
                future.set_result(response)

        self.listen(request, take)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        interval = T1_S
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise RequestTimeout(f"{request.method} to {peer.host}:{peer.port}: no final response")
                self.send(peer, request)
                wait = min(left, interval) if peer.transport == "udp" else left
                done, _ = await asyncio.wait({future}, timeout=wait)
                if done:
                    return future.result()
                interval = min(interval * 2, T2_S)
        finally:
            self.forget(request)
            future.cancel()


def _key_of(request: SipRequest) -> _Key:
    cseq = parse_cseq(request.headers.get_first("cseq") or "")
    return _Key(
        parse_via(request.headers.get_first("via") or "").branch or "",
        cseq.method.upper(),
        cseq.seq,
        request.headers.get_first("call-id") or "",
    )
