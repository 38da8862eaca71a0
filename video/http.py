"""WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep) endpoints over a :class:`~video.service.VideoService`.

- ``POST /whip/{device_id}`` (``application/sdp``) -> ``201`` SDP answer, ``Location`` of the session,
  ``ETag`` of its ICE session; ``DELETE`` on the session ends the stream; ``PATCH`` trickles candidates.
- ``POST /whep/{stream_id}`` -> ``201`` likewise for one viewer; ``DELETE``/``PATCH`` on its session.
- ``OPTIONS`` on either endpoint answers what it accepts (CORS pre-flight, RFC 9725 4.2).

The authorizers run first, before any SDP is read. A publish authorizer may hand back a
:class:`PublishGrant`: the router tells it the session the publish opened, or that it failed (so a
single-use token is spent only on a session that exists). ``DELETE``/``PATCH`` on a WHIP session go to
``authorize_session`` with the session id, so the token that opened one session cannot act on another.
Refusals are :mod:`video.errors` exceptions (each with its ``code``); the application that includes the router
maps them to HTTP statuses and its JSON errors (the hub: ``hub.api.errors``). This module imports nothing of it.
PATCH follows RFC 9725 4.3.1: trickle ICE is supported and ICE restarts are not, so a restart gets
``422``; ``If-Match`` is required (``428``) and must name the session's entity tag (``412``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal, Protocol

from fastapi import APIRouter, Path, Request, Response

from devices.topics import ID_PATTERN
from video.errors import (
    BadOffer,
    BadSdpFragment,
    IceRestartUnsupported,
    PreconditionFailed,
    PreconditionRequired,
    TooLarge,
    UnknownSession,
    UnsupportedMediaType,
)
from video.registry import Answer, SessionRef
from video.sdp import MAX_SDP_BYTES

__all__ = ["SDP", "SDPFRAG", "PublishAuthorizer", "PublishGrant", "SessionAuthorizer", "video_router"]

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
# Device, stream and session ids (SPEC 1; session ids are hex): anything else is a 422 before a lookup.
Id = Annotated[str, Path(pattern=ID_PATTERN.pattern)]
# SDP text has no NUL or control characters (RFC 8866 5): C0/C1 controls other than tab, CR and LF, DEL, and
# lone surrogates are refused (the same rule as the hub's `hub.api.inputs.unstorable`).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


class PublishGrant(Protocol):
    """A publish the authorizer allowed, still to be settled: exactly one of these is awaited, once."""

    async def opened(self, session_id: str) -> None: ...

    async def failed(self) -> None: ...


# (device_id, bearer token) -> a grant, or None when there is nothing to settle; raises to refuse (the exception
# is the application's to answer, e.g. its 401/403).
PublishAuthorizer = Callable[[str, str | None], Awaitable[PublishGrant | None]]
# (device_id, session_id, bearer token) for DELETE/PATCH on a WHIP session; raises to refuse.
SessionAuthorizer = Callable[[str, str, str | None], Awaitable[None]]


class WhipWhepService(Protocol):
    """What the routes call: the built-in relay (`video.service.VideoService`) or `video.proxy.ProxyService`."""

    async def publish(self, device_id: str, offer_sdp: str) -> Answer: ...

    async def view(self, stream_id: str, offer_sdp: str) -> Answer: ...

    async def end(self, session_id: str) -> None: ...

    async def patch(self, session_id: str, sdpfrag: str) -> None: ...

    def describe_session(self, session_id: str) -> SessionRef: ...


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _etag(session_id: str) -> str:
    # One ICE session per resource (no restarts), so the session id names it for its whole life.
    return f'"{session_id}"'


async def _text_body(request: Request, media_type: str) -> str:
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != media_type:
        given = content_type or "none"
        raise UnsupportedMediaType(f"Content-Type must be {media_type}, not {given}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_SDP_BYTES:
        raise TooLarge(f"the body is larger than {MAX_SDP_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SDP_BYTES:
            raise TooLarge(f"the body is larger than {MAX_SDP_BYTES} bytes")
    refused = BadOffer if media_type == SDP else BadSdpFragment
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise refused("the body is not UTF-8 text") from exc
    # None may reach a peer connection or a log.
    found = _CONTROL.search(text)
    if found is not None:
        raise refused(f"the body contains {_describe(found.group())}")
    return text


def _describe(char: str) -> str:
    if char == "\x00":
        return "a NUL character"
    kind = "a lone surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
    return f"{kind} (U+{ord(char):04X})"


def _created(request: Request, session_id: str, sdp: str) -> Response:
    location = f"{request.url.path.rstrip('/')}/{session_id}"
    return Response(sdp, status_code=201, media_type=SDP, headers={"Location": location, "ETag": _etag(session_id)})


def _options(methods: str) -> Response:
    return Response(status_code=204, headers={"Allow": methods, "Accept-Post": SDP, "Accept-Patch": SDPFRAG})


def video_router(service: WhipWhepService, authorize_publish: PublishAuthorizer,
                 authorize_view: Callable[[str | None], Awaitable[None]],
                 authorize_session: SessionAuthorizer | None = None) -> APIRouter:
    """The WHIP/WHEP routes; ``authorize_*`` raise to refuse (bearer token may be None); the routes raise
    :mod:`video.errors` exceptions, for the including application's exception handlers to answer.

    Without ``authorize_session``, DELETE/PATCH on a WHIP session ask ``authorize_publish`` (and settle any
    grant as failed at once): enough for a fixed set of trusted publishers, not for single-use tokens."""
    router = APIRouter(tags=["video"])

    async def may_act_on(device_id: str, session_id: str, token: str | None) -> None:
        if authorize_session is not None:
            await authorize_session(device_id, session_id, token)
            return
        grant = await authorize_publish(device_id, token)
        if grant is not None:
            await grant.failed()

    def session_of(kind: Literal["publisher", "viewer"], owner: str, session_id: str) -> None:
        ref = service.describe_session(session_id)
        if ref.kind != kind or owner != (ref.device_id if kind == "publisher" else ref.stream_id):
            raise UnknownSession(f"no session {session_id!r} here")

    async def patch(request: Request, session_id: str) -> Response:
        fragment = await _text_body(request, SDPFRAG)
        if_match = request.headers.get("if-match")
        if if_match is None:
            raise PreconditionRequired("PATCH needs If-Match with the session's ETag")
        if if_match.strip() != "*" and _etag(session_id) not in [t.strip() for t in if_match.split(",")]:
            raise PreconditionFailed("If-Match does not name this session's ICE session")
        if if_match.strip() == "*":
            # RFC 9725 4.3.2: If-Match: * marks an ICE restart.
            raise IceRestartUnsupported("ICE restarts are not supported; start a new session")
        await service.patch(session_id, fragment)
        return Response(status_code=204)

    async def end(session_id: str) -> Response:
        await service.end(session_id)
        return Response(status_code=200)

    @router.options("/whip/{device_id}")
    async def whip_options(device_id: Id) -> Response:
        return _options("OPTIONS, POST")

    @router.post("/whip/{device_id}")
    async def whip_publish(device_id: Id, request: Request) -> Response:
        grant = await authorize_publish(device_id, _bearer(request))
        try:
            offer = await _text_body(request, SDP)
            answer = await service.publish(device_id, offer)
        except BaseException:  # a bad body, a bad offer, a client gone: no session, nothing spent
            if grant is not None:
                await grant.failed()
            raise
        if grant is not None:
            await grant.opened(answer.session_id)
        return _created(request, answer.session_id, answer.sdp)

    @router.patch("/whip/{device_id}/{session_id}")
    async def whip_patch(device_id: Id, session_id: Id, request: Request) -> Response:
        await may_act_on(device_id, session_id, _bearer(request))
        session_of("publisher", device_id, session_id)
        return await patch(request, session_id)

    @router.delete("/whip/{device_id}/{session_id}")
    async def whip_delete(device_id: Id, session_id: Id, request: Request) -> Response:
        await may_act_on(device_id, session_id, _bearer(request))
        session_of("publisher", device_id, session_id)
        return await end(session_id)

    @router.options("/whep/{stream_id}")
    async def whep_options(stream_id: Id) -> Response:
        return _options("OPTIONS, POST")

    @router.post("/whep/{stream_id}")
    async def whep_view(stream_id: Id, request: Request) -> Response:
        await authorize_view(_bearer(request))
        offer = await _text_body(request, SDP)
        answer = await service.view(stream_id, offer)
        return _created(request, answer.session_id, answer.sdp)

    @router.patch("/whep/{stream_id}/{session_id}")
    async def whep_patch(stream_id: Id, session_id: Id, request: Request) -> Response:
        await authorize_view(_bearer(request))
        session_of("viewer", stream_id, session_id)
        return await patch(request, session_id)

    @router.delete("/whep/{stream_id}/{session_id}")
    async def whep_delete(stream_id: Id, session_id: Id, request: Request) -> Response:
        await authorize_view(_bearer(request))
        session_of("viewer", stream_id, session_id)
        return await end(session_id)

    return router
