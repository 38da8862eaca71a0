"""The request body limit, applied before routing, authentication or parsing (a pure ASGI middleware).

Starlette's own ``RequestBodyLimitMiddleware`` answers in plain text and, when the declared length is over
the limit, lets the route run (token look-up included) before it swaps the answer; the contract wants the
JSON error and nothing done for a body that is refused, so this one refuses a declared length up front and
counts a streamed (chunked) body as it arrives, never holding more than the limit.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.api.errors import error_body

__all__ = ["BodyLimit", "BodyTooLarge"]


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit: the app's handler answers 413 JSON."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str) -> None:
    await JSONResponse(error_body(code, message), status_code=status)(scope, receive, send)


def _declared_length(scope: Scope) -> int | None:
    """The Content-Length header (the server already refused a malformed one); -1: unreadable."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else -1
    return None


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared < 0:
            await _refuse(scope, receive, send, 400, "bad_request", "unreadable Content-Length")
            return
        if declared is not None and declared > self.max_bytes:
            await _refuse(scope, receive, send, 413, "too_large", str(BodyTooLarge(self.max_bytes).detail))
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as exc:
            # Normally the app's exception handler has answered already; this is for code that let it through.
            if started:
                raise
            await _refuse(scope, receive, send, 413, "too_large", str(exc.detail))
