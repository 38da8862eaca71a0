"""``/api/v1/live``: the live feed over a WebSocket."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from hub.api.deps import authenticate, bearer
from hub.api.errors import ApiError
from hub.auth import READ_ROLES
from hub.errors import StorageUnavailable
from hub.server import Hub

router = APIRouter(tags=["live"])


@router.websocket("/api/v1/live")
async def live(ws: WebSocket) -> None:
    hub: Hub = ws.app.state.hub
    # Browsers cannot set headers on a WebSocket: accept ?token= as well.
    secret = bearer(ws.headers.get("authorization")) or ws.query_params.get("token")
    # Accept first and refuse with a close code: a browser sees close codes, not handshake statuses.
    await ws.accept()
    try:
        principal = await authenticate(hub, secret)
    except ApiError as exc:
        await ws.close(code=4401, reason=exc.message)
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
