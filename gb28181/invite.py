"""One INVITE client transaction (RFC 3261 section 17.1.1) and the dialog its 2xx makes (section 12.1.2).

Separate from :mod:`gb28181.calls` because the INVITE is the one request whose retransmission, ACK and CANCEL
rules differ from every other: retransmit at timer A until *any* response (then stop), ACK a failure inside the
transaction (same branch) and a 2xx outside it (new branch, sent again for every retransmitted 2xx).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import Callable
from typing import Final

from aiosipua.headers import parse_address
from aiosipua.utils import generate_branch

from .sip import Peer, SipError, SipRequest, SipResponse
from .transactions import T1_S, Dialog, RequestTimeout, Transactions

__all__ = ["InviteClient", "contact_uri", "dialog_of"]

_BRANCH: Final = re.compile(r"branch=[^;,\s]+", re.IGNORECASE)
_MAX_URI: Final = 256


def contact_uri(value: str | None) -> str | None:
    """The URI of a Contact header (``<sip:...>;params`` or a bare ``sip:...``), None when it is not a usable one."""
    if not value:
        return None
    text = value.strip()
    if "<" in text:
        start, end = text.find("<") + 1, text.find(">")
        inner = text[start:end] if end >= start else ""
    else:
        inner = text.split(";")[0]
    if not inner.lower().startswith(("sip:", "sips:")) or len(inner) > _MAX_URI or any(c.isspace() for c in inner):
        return None
    return inner


def dialog_of(request: SipRequest, response: SipResponse) -> Dialog:
    """The dialog an INVITE's 2xx establishes; a To without a tag (sloppy firmware) gives an empty remote tag."""
    local_uri, _, local_tag = (request.headers.get_first("from") or "").partition(";tag=")
    try:
        remote_tag = parse_address(response.headers.get_first("to") or "").tag or ""
    except Exception:
        remote_tag = ""
    target = contact_uri(response.headers.get_first("contact")) or request.uri
    return Dialog(request.headers.get_first("call-id") or "", local_uri, local_tag.split(";")[0],
                  request.headers.get_first("to") or "", remote_tag, target)


def _ack(request: SipRequest, response: SipResponse, *, success: bool) -> SipRequest:
    via = request.headers.get_first("via") or ""
    if success:  # a 2xx's ACK is its own transaction, sent to the dialog's target
        ack = SipRequest(method="ACK", uri=dialog_of(request, response).remote_target)
        via = _BRANCH.sub(f"branch={generate_branch()}", via)
    else:
        ack = SipRequest(method="ACK", uri=request.uri)
    ack.headers.append("Via", via)
    ack.headers.append("From", request.headers.get_first("from") or "")
    ack.headers.append("To", response.headers.get_first("to") or request.headers.get_first("to") or "")
    ack.headers.append("Call-ID", request.headers.get_first("call-id") or "")
    ack.headers.append("CSeq", f"{_seq(request)} ACK")
    ack.headers.append("Max-Forwards", "70")
    return ack


def _seq(request: SipRequest) -> int:
    return int((request.headers.get_first("cseq") or "0").split()[0])


class InviteClient:
    """Sends one INVITE, hands back its final response, ACKs every final response it sees (again and again)."""

    def __init__(
        self,
        transactions: Transactions,
        request: SipRequest,
        peer: Peer,
        *,
        counters: Counter[str],
        on_late_answer: Callable[[SipResponse], None],
    ) -> None:
        self.transactions = transactions
        self.request = request
        self.peer = peer
        self.counters = counters
        self.on_late_answer = on_late_answer
        self.provisional = False
        self.abandoned = False  # the caller gave up: a 2xx now is ACKed and hung up
        self.final: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self._success_ack: bytes | None = None

    def on_response(self, response: SipResponse) -> None:
        """The transactions' listener: every response with this INVITE's branch, CSeq and Call-ID."""
        status = response.status_code
        if status < 200:
            self.provisional = True
            self.counters["invite_provisional"] += 1
            return
        if status >= 300:
            self._send(bytes(_ack(self.request, response, success=False)))
        elif self._success_ack is not None:
            self.counters["invite_2xx_retransmission"] += 1
            self._send(self._success_ack)
            return
        else:
            if not dialog_of(self.request, response).remote_tag:
                self.counters["answer_without_tag"] += 1
            self._success_ack = bytes(_ack(self.request, response, success=True))
            self._send(self._success_ack)
            if self.abandoned:
                self.on_late_answer(response)
                return
        if not self.final.done() and not self.abandoned:
            self.final.set_result(response)

    async def run(self, timeout_s: float) -> SipResponse:
        """The final response; RequestTimeout without one. Over UDP the INVITE is resent at 0.5 s, 1 s, 2 s, ...
        until the device says anything (a 1xx stops timer A)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        interval = T1_S
        udp = self.peer.transport == "udp"
        sent = False
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise RequestTimeout(f"INVITE {self.request.uri}: no final response in {timeout_s:g} s")
                if not sent or (udp and not self.provisional):
                    self.transactions.send(self.peer, self.request)
                    sent = True
                wait = min(left, interval) if udp and not self.provisional else left
                done, _ = await asyncio.wait({self.final}, timeout=wait)
                if done:
                    return self.final.result()
                interval *= 2
        except BaseException:
            self.abandoned = True
            # Given up (time-out, the caller cancelled) just as a 2xx came: that call must not stay up.
            if self.final.done() and self.final.result().status_code < 300:
                self.on_late_answer(self.final.result())
            raise

    async def cancel(self, timeout_s: float) -> None:
        """CANCEL the INVITE (after a 1xx); its 487 is ACKed by :meth:`on_response` when it comes."""
        cancel = SipRequest(method="CANCEL", uri=self.request.uri)
        for name in ("Via", "From", "To", "Call-ID"):
            cancel.headers.append(name, self.request.headers.get_first(name) or "")
        cancel.headers.append("CSeq", f"{_seq(self.request)} CANCEL")
        cancel.headers.append("Max-Forwards", "70")
        self.counters["invite_cancelled"] += 1
        with contextlib.suppress(SipError):
            await self.transactions.exchange(self.peer, cancel, timeout_s)

    def _send(self, wire: bytes) -> None:
        if not self.transactions.transports.send(self.peer, wire):
            self.counters["ack_unreachable"] += 1
