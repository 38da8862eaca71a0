"""Live-video calls with devices (GB/T 28181 section 9.2): INVITE with the hub's SDP offer, ACK, BYE both ways.

The hub is the caller: it offers a receive port, the device answers with where its stream comes from. A call is a
SIP dialog; the registrar routes the INVITE's responses here by transaction and a device's BYE by dialog, and
tells us when a device unregisters or goes offline, which ends its calls. A device is hostile: responses with a
wrong CSeq are strays, a 2xx without a To tag is tolerated (sloppy firmware), a 2xx that comes after the hub gave
up is ACKed and hung up, and every 2xx retransmission is ACKed again for ``linger_s`` (RFC 6026).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aiosipua.headers import parse_address

from .invite import InviteClient, dialog_of
from .registrar import Registrar
from .sip import DEVICE_ID, Peer, SipError, SipRequest, SipResponse, response_to
from .transactions import Dialog, NotReachable, RequestTimeout

__all__ = ["Call", "CallRefused", "Calls"]

log = logging.getLogger(__name__)

RemoteBye = Callable[[str], None]
Ended = Callable[[str, str], None]

SDP: Final = "APPLICATION/SDP"
_SSRC_LINE: Final = re.compile(r"^y=([0-9]{10})\s*$", re.MULTILINE)
_SSRC: Final = re.compile(r"[0-9]{10}")


class CallRefused(SipError):
    """The device answered the INVITE with a final status of 300 or more."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Call:
    """An established call: what the video side needs (the answer) and what a BYE needs (the dialog)."""

    call_id: str
    device_id: str
    channel_id: str
    ssrc: str
    answer_sdp: str
    dialog: Dialog
    cseq: int  # the INVITE's; the BYE takes the next number
    peer: Peer  # where the device answered from when the call was set up

    @property
    def from_tag(self) -> str:
        return self.dialog.local_tag

    @property
    def to_tag(self) -> str:
        return self.dialog.remote_tag

    @property
    def remote_target(self) -> str:
        return self.dialog.remote_target


def ssrc_of(sdp: str) -> str | None:
    """The GB/T 28181 SSRC of an SDP (its ``y=`` line, 10 digits), or None."""
    found = _SSRC_LINE.search(sdp)
    return found.group(1) if found else None


class Calls:
    """The hub's calls to the devices of one registrar; attaches itself to the registrar at construction."""

    def __init__(
        self,
        registrar: Registrar,
        *,
        on_remote_bye: RemoteBye | None = None,
        on_ended: Ended | None = None,
        bye_timeout_s: float = 2.0,
        linger_s: float = 32.0,
    ) -> None:
        self.registrar = registrar
        self.on_remote_bye = on_remote_bye  # the device hung up: (call_id)
        self.on_ended = on_ended  # the device unregistered or went offline: (call_id, reason)
        self.bye_timeout_s = bye_timeout_s
        self.linger_s = linger_s
        self.counters: Counter[str] = Counter()
        self._active: dict[str, Call] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        registrar.attach(self)

    def active(self) -> list[Call]:
        return list(self._active.values())

    def get(self, call_id: str) -> Call | None:
        return self._active.get(call_id)

    # --- calling ----------------------------------------------------------------------------------------------

    async def invite(
        self, device_id: str, channel_id: str, sdp_offer: str, *, ssrc: str | None = None, timeout_s: float = 10.0
    ) -> Call:
        """Call ``channel_id`` of ``device_id`` with ``sdp_offer``; the established call once the device's 2xx is ACKed.

        ``ssrc`` (10 digits) goes into the Subject; by default the offer's ``y=`` line. Raises CallRefused (>= 300),
        RequestTimeout (no final answer; a CANCEL is sent when the device had said 1xx), NotRegistered.
        """
        ssrc = ssrc if ssrc is not None else ssrc_of(sdp_offer) or "0000000000"
        if not _SSRC.fullmatch(ssrc) or not DEVICE_ID.fullmatch(channel_id):
            raise ValueError(f"bad ssrc {ssrc!r} or channel id {channel_id!r}")
        reg = self.registrar
        server = reg.config.server_id
        request, peer = reg.request_for(device_id, "INVITE", target_user=channel_id, body=sdp_offer.encode(),
                                        content_type=SDP, extra_headers={"Subject": f"{channel_id}:{ssrc},{server}:0"})
        via = reg.via()
        request.headers.set_single("Contact", f"<sip:{server}@{via.host}:{via.port(peer)}>")
        self.counters["invite"] += 1
        client = InviteClient(reg.transactions, request, peer, counters=self.counters,
                              on_late_answer=lambda late: self._late_answer(device_id, peer, request, late))
        reg.transactions.listen(request, client.on_response)
        try:
            response = await client.run(timeout_s)
        except RequestTimeout:
            self.counters["invite_timeout"] += 1
            if client.provisional:
                await client.cancel(self.bye_timeout_s)
            raise
        except NotReachable:
            reg.transactions.forget(request)
            raise
        finally:
            # The listener stays a while to ACK retransmitted finals and to hang up a 2xx that comes too late.
            self._later(self.linger_s, reg.transactions.forget, request)
        if response.status_code >= 300:
            self.counters["invite_refused"] += 1
            raise CallRefused(response.status_code, response.reason_phrase)
        dialog = dialog_of(request, response)
        answer = response.body.decode("utf-8", "replace")
        call = Call(dialog.call_id, device_id, channel_id, ssrc, answer, dialog, _seq(request), peer)
        self._active[call.call_id] = call
        self.counters["established"] += 1
        return call

    async def bye(self, call: Call) -> None:
        """Hang up ``call``; waits briefly for the device's answer and never raises (a gone device is counted)."""
        if self._active.pop(call.call_id, None) is None:
            self.counters["bye_not_active"] += 1
            return
        await self._hang_up(call)

    async def close(self) -> None:
        """Hang up every call (bounded by ``bye_timeout_s``), then forget every pending answer."""
        calls, self._active = list(self._active.values()), {}
        await asyncio.gather(*(self._hang_up(call) for call in calls))
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- the registrar's side (DialogRequests) ----------------------------------------------------------------

    def in_dialog(self, request: SipRequest, peer: Peer) -> SipResponse:
        """A device's BYE: 200 and ``on_remote_bye`` for one of our calls, else 481 (403 from another host)."""
        call = self._active.get(request.headers.get_first("call-id") or "")
        if call is None or not _tags_match(request, call.dialog):
            self.counters["bye_unknown_call"] += 1
            return response_to(request, 481, "Call/Transaction Does Not Exist")
        if peer.host != call.peer.host:
            self.counters["bye_wrong_host"] += 1
            return response_to(request, 403, "Forbidden (not the device of this call)")
        del self._active[call.call_id]
        self.counters["remote_bye"] += 1
        self._notify(self.on_remote_bye, call.call_id)
        return response_to(request, 200, "OK")

    def device_gone(self, device_id: str, reason: str) -> None:
        """End the device's calls: ``on_ended`` now, and a best-effort BYE in case it still streams."""
        for call in [c for c in self._active.values() if c.device_id == device_id]:
            del self._active[call.call_id]
            self.counters["ended_device_gone"] += 1
            self._notify(self.on_ended, call.call_id, reason)
            self._spawn(self._hang_up(call))

    # --- internals --------------------------------------------------------------------------------------------

    async def _hang_up(self, call: Call) -> None:
        binding = self.registrar.registration(call.device_id)
        peer = binding.peer if binding is not None else call.peer
        transactions = self.registrar.transactions
        request = transactions.request(peer, "BYE", uri="", from_uri="", to_uri="", dialog=call.dialog,
                                       cseq=call.cseq + 1)
        try:
            response = await transactions.exchange(peer, request, self.bye_timeout_s)
        except RequestTimeout:
            self.counters["bye_timeout"] += 1
        except SipError:
            self.counters["bye_unreachable"] += 1
        else:
            self.counters["bye_ok" if response.status_code < 300 else "bye_refused"] += 1

    def _late_answer(self, device_id: str, peer: Peer, request: SipRequest, response: SipResponse) -> None:
        """A 2xx after the hub gave up (timed out, cancelled): it has been ACKed; hang it up."""
        self.counters["late_answer_hung_up"] += 1
        dialog = dialog_of(request, response)
        self._spawn(self._hang_up(Call(dialog.call_id, device_id, "", "", "", dialog, _seq(request), peer)))

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _later(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            self._timers.discard(handle)
            callback(*args)

        handle = asyncio.get_running_loop().call_later(delay, run)
        self._timers.add(handle)

    def _notify(self, callback: Callable[..., None] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            self.counters["callback_error"] += 1
            log.exception("gb28181: a call callback failed for %s", args[0])


def _seq(request: SipRequest) -> int:
    return int((request.headers.get_first("cseq") or "0").split()[0])


def _tags_match(request: SipRequest, dialog: Dialog) -> bool:
    try:
        from_tag = parse_address(request.headers.get_first("from") or "").tag or ""
        to_tag = parse_address(request.headers.get_first("to") or "").tag or ""
    except Exception:
        return False
    # A device that sent its 2xx without a tag cannot be held to one.
    return to_tag == dialog.local_tag and (not dialog.remote_tag or from_tag == dialog.remote_tag)
