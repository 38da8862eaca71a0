"""A small async client of the Janus HTTP API (``janus.transport.http``) and its VideoRoom plugin.

Janus speaks JSON over plain HTTP: ``POST {url}`` creates a session, ``POST {url}/{session}`` attaches a
plugin handle, ``POST {url}/{session}/{handle}`` sends the plugin a message. A plugin answers a synchronous
request in the POST's response; an asynchronous one (join, configure, start) is only acknowledged there,
and its result arrives later as an event on the session's long poll (``GET {url}/{session}``), matched by
transaction id. The same long poll carries the core's own events about a handle (``webrtcup``, ``hangup``,
``detached``). Janus expires a session that stays quiet for its ``session_timeout`` (60 s by default), so
:class:`JanusSession` also sends a ``keepalive`` every ``keepalive_s``.

Every failure (transport, Janus core error, plugin ``error_code``) becomes a
:class:`~video.errors.MediaServerError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from video.errors import MediaServerError

__all__ = ["VIDEOROOM", "JanusEvent", "JanusHandle", "JanusSession"]

log = logging.getLogger(__name__)

VIDEOROOM = "janus.plugin.videoroom"
_POLL_TIMEOUT_S = 45.0  # Janus answers an idle long poll after 30 s with a "keepalive"
_NO_SUCH_SESSION = 458


@dataclass(frozen=True, slots=True)
class JanusEvent:
    """What Janus pushed about a handle: a plugin event (``data``, maybe ``jsep``) or a core event."""

    kind: str  # "event" (plugin), "webrtcup", "hangup", "media", "slowlink", "detached", ...
    handle_id: int
    data: dict[str, Any] = field(default_factory=dict)  # plugindata.data of a plugin event
    jsep: dict[str, Any] | None = None
    reason: str | None = None  # of a hangup


def _plugin_data(message: dict[str, Any]) -> dict[str, Any]:
    data = message.get("plugindata", {}).get("data", {})
    if not isinstance(data, dict):
        raise MediaServerError(f"Janus sent plugin data that is not an object: {data!r:.200}")
    if "error_code" in data or "error" in data:
        raise MediaServerError(f"Janus plugin error {data.get('error_code')}: {data.get('error')}")
    return data


class JanusSession:
    """One Janus API session: its handles, their requests and events. An async context manager."""

    def __init__(self, url: str, *, http: httpx.AsyncClient | None = None, api_secret: str | None = None,
                 request_timeout_s: float = 10.0, keepalive_s: float = 25.0,
                 on_lost: Callable[[str], None] | None = None) -> None:
        self.url = url.rstrip("/")
        self.session_id: int | None = None
        self.alive = False
        self.requests = 0
        self.errors = 0
        self._http = http or httpx.AsyncClient(timeout=request_timeout_s)
        self._own_http = http is None
        self._secret = api_secret
        self._timeout = request_timeout_s
        self._keepalive_s = keepalive_s
        self._on_lost = on_lost
        self._waiting: dict[str, asyncio.Future[JanusEvent]] = {}  # by transaction
        self._listeners: dict[int, Callable[[JanusEvent], None]] = {}  # by handle
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> JanusSession:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def open(self) -> None:
        reply = await self._post(self.url, {"janus": "create"})
        self.session_id = int(reply["data"]["id"])
        self.alive = True
        self._tasks = [asyncio.create_task(self._poll(), name=f"janus-poll-{self.session_id}"),
                       asyncio.create_task(self._keepalive(), name=f"janus-keepalive-{self.session_id}")]

    async def close(self) -> None:
        """Destroy the session on Janus (best effort: it may be gone), which also detaches its handles."""
        was_alive, self.alive = self.alive, False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if was_alive:
            with contextlib.suppress(MediaServerError):
                await self._post(self._session_url, {"janus": "destroy"})
        self._fail_waiting(MediaServerError("the Janus session was closed"))
        if self._own_http:
            await self._http.aclose()

    @property
    def _session_url(self) -> str:
        return f"{self.url}/{self.session_id}"

    def _handle_url(self, handle_id: int) -> str:
        return f"{self._session_url}/{handle_id}"

    async def attach(self, plugin: str = VIDEOROOM, on_event: Callable[[JanusEvent], None] | None = None
                     ) -> JanusHandle:
        reply = await self._post(self._session_url, {"janus": "attach", "plugin": plugin})
        handle = JanusHandle(self, int(reply["data"]["id"]))
        if on_event is not None:
            self._listeners[handle.handle_id] = on_event
        return handle

    # -- requests ---------------------------------------------------------------------------------------------

    async def _post(self, url: str, message: dict[str, Any]) -> dict[str, Any]:
        """POST one API message; the reply, or MediaServerError for a transport or Janus core error."""
        message = {**message, "transaction": message.get("transaction") or secrets.token_hex(8)}
        if self._secret is not None:
            message["apisecret"] = self._secret
        self.requests += 1
        try:
            response = await self._http.post(url, json=message, timeout=self._timeout)
            reply = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            self.errors += 1
            raise MediaServerError(f"Janus at {self.url} did not answer {message['janus']!r}: {exc!r}") from exc
        if not isinstance(reply, dict):
            self.errors += 1
            raise MediaServerError(f"Janus answered {message['janus']!r} with {reply!r:.200}")
        if reply.get("janus") == "error":
            self.errors += 1
            error = reply.get("error", {})
            if error.get("code") == _NO_SUCH_SESSION and message["janus"] != "create":
                self._lost(f"Janus no longer knows session {self.session_id}")
            raise MediaServerError(f"Janus error {error.get('code')}: {error.get('reason')}")
        return reply

    async def post_to_handle(self, handle_id: int, message: dict[str, Any]) -> dict[str, Any]:
        """POST one API message (``trickle``, ``detach``) to a handle of this session; the reply."""
        return await self._post(self._handle_url(handle_id), message)

    def unlisten(self, handle_id: int) -> None:
        """No more events of this handle to its listener (it is being detached)."""
        self._listeners.pop(handle_id, None)

    async def plugin_request(self, handle_id: int, body: dict[str, Any], jsep: dict[str, Any] | None
                             ) -> JanusEvent:
        """Send a plugin request; its answer comes in the reply (synchronous) or as an event (asynchronous)."""
        transaction = secrets.token_hex(8)
        message: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            message["jsep"] = jsep
        future: asyncio.Future[JanusEvent] = asyncio.get_running_loop().create_future()
        self._waiting[transaction] = future  # before the POST: the event may come back first
        try:
            reply = await self._post(self._handle_url(handle_id), message)
            if reply.get("janus") == "success":
                event = JanusEvent("event", handle_id, reply.get("plugindata", {}).get("data", {}))
            else:
                event = await asyncio.wait_for(future, self._timeout)
        except TimeoutError as exc:
            self.errors += 1
            raise MediaServerError(f"Janus sent no answer to {body.get('request')!r} in {self._timeout} s") from exc
        finally:
            self._waiting.pop(transaction, None)
        try:
            _plugin_data({"plugindata": {"data": event.data}})
        except MediaServerError:
            self.errors += 1
            raise
        return event

    # -- events -----------------------------------------------------------------------------------------------

    async def _poll(self) -> None:
        while self.alive:
            try:
                response = await self._http.get(self._session_url, params={"maxev": 10}, timeout=_POLL_TIMEOUT_S)
                reply = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("Janus long poll failed: %r; retrying", exc)
                await asyncio.sleep(1.0)
                continue
            for message in reply if isinstance(reply, list) else [reply]:
                if isinstance(message, dict):
                    self._dispatch(message)

    async def _keepalive(self) -> None:
        while self.alive:
            await asyncio.sleep(self._keepalive_s)
            try:
                await self._post(self._session_url, {"janus": "keepalive"})
            except MediaServerError as exc:
                log.warning("Janus keepalive failed: %s", exc)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = str(message.get("janus"))
        if kind == "keepalive":
            return
        if kind == "timeout" or (kind == "error" and message.get("error", {}).get("code") == _NO_SUCH_SESSION):
            self._lost(f"Janus expired session {self.session_id}")
            return
        handle_id = int(message.get("sender") or 0)
        data = message.get("plugindata", {}).get("data", {})
        event = JanusEvent(kind, handle_id, data if isinstance(data, dict) else {}, message.get("jsep"),
                           message.get("reason"))
        future = self._waiting.pop(str(message.get("transaction")), None)
        if future is not None and not future.done():
            future.set_result(event)
            return
        listener = self._listeners.get(handle_id)
        if listener is not None:
            try:
                listener(event)
            except Exception:  # one handle's listener must not stop the session's events
                log.exception("Janus event listener failed on %s", kind)
        if kind == "detached":
            self._listeners.pop(handle_id, None)

    def _lost(self, reason: str) -> None:
        if not self.alive:
            return
        self.alive = False
        log.warning("%s", reason)
        self._fail_waiting(MediaServerError(reason))
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if self._on_lost is not None:
            self._on_lost(reason)

    def _fail_waiting(self, exc: MediaServerError) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(exc)
        self._waiting.clear()


class JanusHandle:
    """One plugin handle (one PeerConnection on Janus's side)."""

    def __init__(self, session: JanusSession, handle_id: int) -> None:
        self.session = session
        self.handle_id = handle_id

    async def request(self, body: dict[str, Any], jsep: dict[str, Any] | None = None) -> JanusEvent:
        """Send the plugin a request and wait for its answer (synchronous reply or event)."""
        return await self.session.plugin_request(self.handle_id, body, jsep)

    async def trickle(self, candidates: list[dict[str, Any]], completed: bool = False) -> None:
        """Hand Janus remote candidates (``{"candidate", "sdpMid", "sdpMLineIndex"}``) and/or their end."""
        if candidates:
            await self.session.post_to_handle(self.handle_id, {"janus": "trickle", "candidates": candidates})
        if completed:
            await self.session.post_to_handle(self.handle_id, {"janus": "trickle", "candidate": {"completed": True}})

    async def detach(self) -> None:
        """Detach the handle (Janus hangs its PeerConnection up); quiet if the session is already gone."""
        self.session.unlisten(self.handle_id)
        if not self.session.alive:
            return
        with contextlib.suppress(MediaServerError):
            await self.session.post_to_handle(self.handle_id, {"janus": "detach"})
