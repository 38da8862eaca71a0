"""The camera's side of a MobilePosition subscription (GB/T 28181-2016 section 9.11, RFC 6665 dialogs).

A SUBSCRIBE with a ``<Query><CmdType>MobilePosition</CmdType>`` body and an ``Interval`` is answered 200 with
its Expires, then a NOTIFY carrying the position goes out at once and every Interval seconds in the
subscription's dialog until it expires or the platform ends it (``Expires: 0``, or a 481 to a NOTIFY). One
subscription per camera: a new one replaces the old, as on real devices.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Final, Protocol

from aiosipua.headers import parse_address, stringify_uri
from aiosipua.utils import generate_tag

from devices.tasks import cancel_and_wait
from gb28181.manscdp import ManscdpError, QueryRequest, parse_body
from gb28181.sip import SipRequest, uri_user
from sim.gb28181_ua import DeviceUa, UaError

__all__ = ["PositionSubscription", "SubscriptionOwner"]

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S: Final = 5
DEFAULT_EXPIRES_S: Final = 3600
MAX_EXPIRES_S: Final = 86_400


class _Counters(Protocol):
    positions_sent: int


class SubscriptionOwner(Protocol):
    """What a subscription needs of its camera."""

    @property
    def ua(self) -> DeviceUa: ...

    @property
    def counters(self) -> _Counters: ...

    def position_body(self) -> bytes: ...

    def addressed_to_me(self, request: SipRequest) -> bool: ...

    def reject(self, request: SipRequest, status: int, reason: str, counter: str) -> None: ...


@dataclass(slots=True)
class _Dialog:
    call_id: str
    local: str  # our From in NOTIFYs: the SUBSCRIBE's To with our tag
    remote: str  # the subscriber: the SUBSCRIBE's From with its tag
    target: str  # where NOTIFYs go: the subscriber's Contact, or the platform
    event: str
    interval_s: float
    expires_at: float


class PositionSubscription:
    def __init__(self, owner: SubscriptionOwner) -> None:
        self.owner = owner
        self.dialog: _Dialog | None = None
        self.notifies = 0
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, request: SipRequest) -> None:
        event = (request.headers.get_first("event") or "").strip()
        if not event:
            self.owner.reject(request, 489, "Bad Event", "subscribe_no_event")  # RFC 6665: Event is mandatory
            return
        try:
            query = parse_body(request.body)
        except ManscdpError as exc:
            self.owner.reject(request, 400, f"Bad Request ({exc.reason})", f"bad_body_{exc.reason}")
            return
        if not isinstance(query, QueryRequest) or query.cmd_type != "MobilePosition":
            self.owner.reject(request, 400, "Bad Request (not a MobilePosition subscription)", "subscribe_not_position")
            return
        if not self.owner.addressed_to_me(request) or query.device_id != uri_user(request.headers.get_first("to")):
            self.owner.reject(request, 404, "Not Found (unknown device)", "unknown_device")
            return
        raw = (request.headers.get_first("expires") or str(DEFAULT_EXPIRES_S)).strip()
        if not raw.isdigit():
            self.owner.reject(request, 400, "Bad Request (Expires)", "subscribe_bad_expires")
            return
        expires = min(int(raw), MAX_EXPIRES_S)
        to = request.headers.get_first("to") or ""
        tag = parse_address(to).tag or generate_tag()
        self.owner.ua.respond(request, 200, "OK", headers={"Expires": str(expires)}, to_tag=tag)
        self._end()
        if expires == 0:
            self.dialog = None
            return
        contact = request.headers.get_first("contact")
        loop = asyncio.get_running_loop()
        self.dialog = _Dialog(
            call_id=request.headers.get_first("call-id") or "",
            local=to if parse_address(to).tag else f"{to};tag={tag}",
            remote=request.headers.get_first("from") or "",
            target=stringify_uri(parse_address(contact).uri) if contact else self.owner.ua.server_uri,
            event=event,
            interval_s=float(query.interval_s or DEFAULT_INTERVAL_S),
            expires_at=loop.time() + expires,
        )
        self._task = loop.create_task(self._notify_loop(self.dialog), name="gb-subscription")

    def _end(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        self.dialog = None

    async def _notify_loop(self, dialog: _Dialog) -> None:
        loop = asyncio.get_running_loop()
        ua = self.owner.ua
        while (left := dialog.expires_at - loop.time()) > 0:
            request = ua.build("NOTIFY", uri=dialog.target, from_=dialog.local, to=dialog.remote,
                               call_id=dialog.call_id, body=self.owner.position_body(),
                               headers={"Event": dialog.event, "Subscription-State": f"active;expires={int(left)}"})
            try:
                response = await ua.request(request)
            except UaError as exc:
                log.info("gb28181 camera: position NOTIFY unanswered: %s", exc)
            else:
                if response.status_code == 200:
                    self.notifies += 1
                    self.owner.counters.positions_sent += 1
                elif response.status_code == 481:
                    break  # the platform no longer knows this subscription
            await asyncio.sleep(dialog.interval_s)
        if self.dialog is dialog:
            self.dialog = None
