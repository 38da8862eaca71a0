"""Security headers on every HTTP answer of the hub (a pure ASGI middleware).

The one-map runs no inline script and loads nothing from outside the hub, so its Content-Security-Policy
allows scripts, styles and connections from the hub itself only; the configured tile server (if any) is the
one outside origin images may come from. A route that needs another policy (the API docs) sets its own
``Content-Security-Policy``; the others are added only where the answer does not carry them already.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SecurityHeaders", "content_security_policy", "tile_source"]

_SCHEME = re.compile(r"https?", re.ASCII)
_HOST = re.compile(r"(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:[0-9]{1,5})?", re.ASCII)
# A year; no includeSubDomains: the hub cannot speak for other hosts under its domain.
HSTS = b"max-age=31536000"


def tile_source(tile_url: str | None) -> str | None:
    """The CSP source of a Leaflet tile URL template; None when it is the hub's own (relative) or unusable.

    ``https://{s}.tile.example.org/{z}/{x}/{y}.png`` -> ``https://*.tile.example.org``. A placeholder anywhere
    else in the host cannot be a host source: the scheme alone is allowed then (``https:``). Whatever the
    setting holds, nothing but a plain source reaches the header (no ``;`` to add a directive of its own).
    """
    if not tile_url:
        return None
    try:
        parts = urlsplit(tile_url.strip())
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return None
    if not _SCHEME.fullmatch(parts.scheme) or not parts.netloc:
        return None
    host = parts.netloc.rpartition("@")[2]  # never a user:password into a header
    if host.startswith("{s}."):
        host = "*." + host[4:]
    return f"{parts.scheme}://{host}" if _HOST.fullmatch(host) else f"{parts.scheme}:"


def content_security_policy(tile_url: str | None = None) -> str:
    """The one-map's policy: what the page really loads (Leaflet sets styles through the CSSOM, not attributes;
    markers and the dashboard draw on canvases; video comes over WebRTC as MediaStreams)."""
    images = ["'self'", "data:", "blob:"]
    tiles = tile_source(tile_url)
    if tiles:
        images.append(tiles)
    directives = [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        f"img-src {' '.join(images)}",
        "connect-src 'self'",  # fetch and the live WebSocket (same host: 'self' covers ws:/wss:)
        "media-src 'self' blob:",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


class SecurityHeaders:
    def __init__(self, app: ASGIApp, csp: str) -> None:
        self.app = app
        self.headers: list[tuple[bytes, bytes]] = [
            (b"content-security-policy", csp.encode("latin-1")),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        extra = list(self.headers)
        # HSTS over plain HTTP means nothing (and a browser ignores it); behind a proxy uvicorn's
        # --proxy-headers turns X-Forwarded-Proto into the scheme seen here.
        if scope.get("scheme") in ("https", "wss"):
            extra.append((b"strict-transport-security", HSTS))

        async def send_with_headers(message: Message) -> None:
            # A refused WebSocket handshake answers with an HTTP response too.
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
