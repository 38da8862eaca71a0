"""The camera's live-video calls (GB/T 28181-2016 section 9.2): INVITE, 200 with SDP, ACK, BYE both ways.

An INVITE must name one of the camera's channels (404 otherwise) and carry an SDP offer of ``PS/90000`` it can
use (488 otherwise); beyond ``max_streams`` calls the camera is busy (486). The 200 answers with the camera's
SDP, echoing the offer's ``y=`` SSRC, and is re-sent over UDP until the ACK comes (RFC 3261 timer G; a call
never ACKed within 64*T1 is dropped); the stream starts on the ACK. A BYE of a known call is answered 200 and
stops its stream; any other BYE gets 481. :meth:`MediaSessions.hang_up` ends calls from the camera's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from aiosipua.headers import parse_address, parse_uri, stringify_uri
from aiosipua.utils import generate_tag

from devices.tasks import cancel_and_wait
from gb28181.sdp import MediaOffer, SdpError, build_answer, parse_offer, ssrc_number
from gb28181.sip import SipRequest, uri_user
from sim.gb28181_stream import MediaStream, PsRtpStream, StreamError, StreamFactory, StreamSettings, StreamTarget
from sim.gb28181_ua import DeviceUa, UaError

__all__ = ["MediaOwner", "MediaSessions"]

log = logging.getLogger(__name__)


class _Counters(Protocol):
    invites: int
    streams_started: int
    frames_sent: int
    rejected: Counter[str]


class _Config(Protocol):
    @property
    def device_id(self) -> str: ...

    @property
    def local_host(self) -> str: ...

    @property
    def max_streams(self) -> int: ...

    @property
    def stream(self) -> StreamSettings: ...

    @property
    def stream_factory(self) -> StreamFactory | None: ...


class MediaOwner(Protocol):
    """What the calls need of their camera."""

    @property
    def ua(self) -> DeviceUa: ...

    @property
    def counters(self) -> _Counters: ...

    @property
    def config(self) -> _Config: ...

    def channel_id_list(self) -> list[str]: ...

    def reject(self, request: SipRequest, status: int, reason: str, counter: str) -> None: ...


@dataclass(slots=True)
class _Call:
    call_id: str
    channel_id: str
    local: str  # our side of the dialog: the INVITE's To with our tag
    remote: str  # the platform's side: the INVITE's From with its tag
    target: str  # the platform's Contact: where our BYE goes
    offer: MediaOffer
    stream: MediaStream
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class MediaSessions:
    def __init__(self, owner: MediaOwner) -> None:
        self.owner = owner
        self.calls: dict[str, _Call] = {}
        self._waiters: set[asyncio.Task[None]] = set()

    async def invite(self, request: SipRequest) -> None:
        owner, call_id = self.owner, request.headers.get_first("call-id") or ""
        owner.counters.invites += 1
        channel = _request_user(request)
        if channel not in owner.channel_id_list() or uri_user(request.headers.get_first("to")) != channel:
            owner.reject(request, 404, "Not Found (unknown channel)", "unknown_channel")
            return
        if call_id in self.calls:
            owner.reject(request, 491, "Request Pending", "reinvite")  # re-INVITEs are not supported
            return
        if len(self.calls) >= owner.config.max_streams:
            owner.reject(request, 486, "Busy Here", "busy")
            return
        content_type = (request.headers.get_first("content-type") or "").lower()
        try:
            if content_type != "application/sdp":
                raise SdpError("content_type", content_type[:40])
            offer = parse_offer(request.body.decode("utf-8", "replace"))
            if offer.ssrc is None:
                raise SdpError("ssrc", "no y= line")
            if offer.transport == "tcp" and offer.setup not in (None, "passive", "actpass"):
                raise SdpError("setup", f"{offer.setup}: the camera connects (active) only")
        except SdpError as exc:
            owner.reject(request, 488, f"Not Acceptable Here ({exc.reason})", f"sdp_{exc.reason}")
            return
        target = StreamTarget(offer.host, offer.port, offer.transport, ssrc_number(offer.ssrc), offer.payload_type)
        factory = owner.config.stream_factory or PsRtpStream
        stream = factory(target, owner.config.stream, label=channel, local_host=owner.config.local_host)
        tag = generate_tag()
        to = request.headers.get_first("to") or ""
        contact = request.headers.get_first("contact")
        call = _Call(call_id, channel, f"{to};tag={tag}", request.headers.get_first("from") or "",
                     stringify_uri(parse_address(contact).uri) if contact else owner.ua.server_uri, offer, stream)
        self.calls[call_id] = call
        # The answer names where the stream comes from: over UDP the socket it will be sent from, opened now;
        # over TCP the camera connects after the ACK, from port 9 (RFC 4145: the active side's discard port).
        if offer.transport == "udp":
            try:
                await stream.open()
            except StreamError:
                self.calls.pop(call_id, None)
                owner.reject(request, 500, "Server Internal Error (no media socket)", "media_socket")
                return
        port = stream.local_port if offer.transport == "udp" else 9
        answer = build_answer(device_id=channel, host=owner.config.local_host, port=port,
                              transport=offer.transport, ssrc=offer.ssrc, payload_type=offer.payload_type)
        headers = {"Contact": owner.ua.contact}
        owner.ua.respond(request, 200, "OK", body=answer.encode(), content_type="application/sdp",
                         headers=headers, to_tag=tag)
        waiter = asyncio.get_running_loop().create_task(self._await_ack(request, call))
        self._waiters.add(waiter)
        waiter.add_done_callback(self._waiters.discard)

    async def _await_ack(self, request: SipRequest, call: _Call) -> None:
        """Re-send the 200 (UDP) until the ACK; then start the stream. No ACK in 64*T1: the call is dropped."""
        ua = self.owner.ua
        interval, waited = ua.config.t1_s, 0.0
        limit = 64 * ua.config.t1_s
        while not call.acked.is_set():
            step = min(interval, limit - waited)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.acked.wait(), step)
            if call.acked.is_set():
                break
            waited += step
            if waited >= limit or self.calls.get(call.call_id) is not call:
                self.calls.pop(call.call_id, None)
                call.stream.close()
                self.owner.counters.rejected["invite_not_acked"] += 1
                return
            if ua.config.transport == "udp":
                with contextlib.suppress(UaError):
                    ua.resend_answer(request)  # the kept 200, SDP and To tag as they were
            interval = min(interval * 2, 4.0)
        if self.calls.get(call.call_id) is not call:
            return  # a BYE (or a hang-up) came first
        call.task = asyncio.get_running_loop().create_task(self._stream(call), name=f"gb-stream-{call.call_id}")

    async def _stream(self, call: _Call) -> None:
        counters = self.owner.counters
        counters.streams_started += 1
        before = 0
        try:
            run = asyncio.ensure_future(call.stream.run())
            while not run.done():
                await asyncio.wait({run}, timeout=1.0)
                counters.frames_sent += call.stream.frames_sent - before
                before = call.stream.frames_sent
            run.result()
        except StreamError as exc:
            log.info("gb28181 camera: stream %s failed: %s", call.call_id, exc)
            counters.rejected["stream_failed"] += 1
            await self._bye(call)
        except asyncio.CancelledError:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError, StreamError):
                await run
            counters.frames_sent += call.stream.frames_sent - before
            raise

    def acked(self, request: SipRequest) -> None:
        call = self.calls.get(request.headers.get_first("call-id") or "")
        if call is not None:
            call.acked.set()

    async def bye(self, request: SipRequest) -> None:
        call = self.calls.pop(request.headers.get_first("call-id") or "", None)
        if call is None:
            self.owner.reject(request, 481, "Call/Transaction Does Not Exist", "unknown_dialog")
            return
        self.owner.ua.respond(request, 200, "OK")
        call.acked.set()  # a BYE before the ACK ends the wait
        await cancel_and_wait(call.task)
        call.stream.close()

    async def hang_up(self, call_id: str | None = None) -> int:
        """BYE the call ``call_id`` (all calls when None); how many were ended."""
        ended = 0
        for cid in [call_id] if call_id is not None else list(self.calls):
            call = self.calls.pop(cid, None) if cid is not None else None
            if call is None:
                continue
            await cancel_and_wait(call.task)
            call.stream.close()
            await self._bye(call)
            ended += 1
        return ended

    async def _bye(self, call: _Call) -> None:
        self.calls.pop(call.call_id, None)
        ua = self.owner.ua
        request = ua.build("BYE", uri=call.target, from_=call.local, to=call.remote, call_id=call.call_id)
        try:
            await asyncio.wait_for(ua.request(request), 5.0)
        except (UaError, TimeoutError) as exc:
            log.info("gb28181 camera: BYE of %s unanswered: %s", call.call_id, exc)

    async def stop_all(self) -> None:
        await cancel_and_wait(*self._waiters)
        await self.hang_up()


def _request_user(request: SipRequest) -> str | None:
    try:
        return parse_uri(request.uri).user
    except Exception:
        return None

