"""``/api/v1/live``: the live feed over a WebSocket, and the short tickets browsers open it with.

A browser cannot set headers on a WebSocket, and a token in the URL ends up in proxy logs, history and
screenshots. So a browser first asks ``POST /api/v1/live/ticket`` (bearer, any reader role) for a ticket:
random, single-use, bound to the principal, valid 30 s, kept in memory, and opens ``/api/v1/live?ticket=``.
Other clients send ``Authorization: Bearer``. ``?token=`` is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect

from devices.clock import now_ms
from hub.access.auth import READ_ROLES
from hub.api.access_models import LiveTicket
from hub.api.deps import Principal, Reader, authenticate, bearer, client_address
from hub.api.errors import ApiError
from hub.errors import StorageUnavailable
from hub.server import Hub

router = APIRouter(tags=["live"])

TICKET_TTL_S = 30.0
# Issued and not yet used or expired; past this the oldest go first (a reader asking in a loop only evicts itself
# and others' unused tickets, each of which its page simply asks for again).
MAX_TICKETS = 10_000


class LiveTickets:
    """Single-use tickets for the live feed, in memory: a restart forgets them, and a page asks anew."""

    def __init__(self, ttl_s: float = TICKET_TTL_S, clock: Callable[[], float] = time.monotonic,
                 capacity: int = MAX_TICKETS) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self.capacity = capacity
        self._tickets: dict[str, tuple[float, Principal]] = {}  # insertion order = expiry order

    def __len__(self) -> int:
        return len(self._tickets)

    def issue(self, principal: Principal) -> str:
        now = self.clock()
        self._prune(now)
        while len(self._tickets) >= self.capacity:
            del self._tickets[next(iter(self._tickets))]
        ticket = "lt_" + secrets.token_urlsafe(24)
        self._tickets[ticket] = (now + self.ttl_s, principal)
        return ticket

    def redeem(self, ticket: str) -> Principal | None:
        """The principal the ticket was issued to, once; None if unknown, used or expired."""
        entry = self._tickets.pop(ticket, None)
        if entry is None or self.clock() >= entry[0]:
            return None
        return entry[1]

    def _prune(self, now: float) -> None:
        for ticket, (expires, _) in list(self._tickets.items()):
            if expires > now:
                break
            del self._tickets[ticket]


@router.post("/api/v1/live/ticket", response_model=LiveTicket)
async def live_ticket(request: Request, who: Reader) -> dict[str, Any]:
    tickets: LiveTickets = request.app.state.live_tickets
    return {"ticket": tickets.issue(who), "expires_in_s": int(tickets.ttl_s)}


async def _principal(ws: WebSocket, hub: Hub) -> Principal:
    if "token" in ws.query_params:
        raise ApiError(401, "unauthorized", "a token in the URL is refused: send Authorization: Bearer, "
                                            "or ?ticket= from POST /api/v1/live/ticket")
    ticket = ws.query_params.get("ticket")
    if ticket is not None:
        tickets: LiveTickets = ws.app.state.live_tickets
        principal = tickets.redeem(ticket)
        if principal is None:
            raise ApiError(401, "unauthorized", "unknown, used or expired ticket")
        # The token it was issued for must still be good now: a revocation within the ticket's 30 s counts.
        record = hub.tokens.by_id(principal.token_id)
        if record is None or record.state(now_ms()) != "valid":
            raise ApiError(401, "unauthorized", "the ticket's token was revoked or has expired")
        return principal
    return await authenticate(hub, bearer(ws.headers.get("authorization")), client_address(ws))


@router.websocket("/api/v1/live")
async def live(ws: WebSocket) -> None:
    hub: Hub = ws.app.state.hub
    # Accept first and refuse with a close code: a browser sees close codes, not handshake statuses.
    await ws.accept()
    try:
        principal = await _principal(ws, hub)
    except ApiError as exc:
        await ws.close(code=4429 if exc.status == 429 else 4401, reason=exc.message)  # 4429: too many failures
        return
    except StorageUnavailable:
        await ws.close(code=1013, reason="database unavailable, try again later")
        return
    if principal.role not in READ_ROLES:
        await ws.close(code=4403, reason="role may not read the live feed")
        return
    client = hub.feed.subscribe()
    reader = asyncio.create_task(_drain_incoming(ws))
    try:
        while not reader.done():
            getter = asyncio.create_task(client.queue.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            frame = getter.result()
            await ws.send_text(frame.decode())
            hub.feed.bytes_sent += len(frame)
    except (WebSocketDisconnect, RuntimeError, ConnectionError):
        pass
    finally:
        hub.feed.unsubscribe(client)
        reader.cancel()
        with contextlib.suppress(Exception):
            await ws.close()


async def _drain_incoming(ws: WebSocket) -> None:
    """Read (and ignore) what the client sends, text or binary, to notice when it goes away."""
    # Not `receive_text()`: a binary frame has no "text" and would end the reader with a KeyError.
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass
