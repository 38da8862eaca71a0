"""What every WHIP/WHEP back end keeps: live streams by id and by device, their viewers, background tasks.

The built-in relay (:class:`video.service.VideoService`) and the Janus proxy
(:class:`video.proxy.ProxyService`) differ in how a session is negotiated and torn down; they share this
bookkeeping and the queries the router and the hub make, so both answer them the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Literal, Protocol, TypeVar

from video.errors import TooManyViewers, UnknownSession, UnknownStream

__all__ = ["Answer", "SessionRef", "SessionRegistry", "StreamInfo", "now_ms"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    stream_id: str
    device_id: str
    started_ms: int
    codec: str | None
    viewers: int


@dataclass(frozen=True, slots=True)
class Answer:
    session_id: str
    stream_id: str  # for a viewer, the stream it watches
    sdp: str


@dataclass(frozen=True, slots=True)
class SessionRef:
    session_id: str
    kind: Literal["publisher", "viewer"]
    stream_id: str
    device_id: str


def now_ms() -> int:
    return int(time.time() * 1000)


class _StreamLike(Protocol):
    session_id: str
    device_id: str

    @property
    def viewers(self) -> dict[str, Any]: ...

    def info(self) -> StreamInfo: ...


class _ViewerLike(Protocol):
    session_id: str

    @property
    def stream(self) -> Any: ...


S = TypeVar("S", bound=_StreamLike)
V = TypeVar("V", bound=_ViewerLike)


class SessionRegistry(Generic[S, V]):
    """Streams (a publisher's session id is its stream id) and viewers; subclasses end them their way."""

    def __init__(self, on_stream: Callable[[str, StreamInfo], None] | None) -> None:
        self._on_stream = on_stream
        self._streams: dict[str, S] = {}
        self._by_device: dict[str, S] = {}
        self._viewers: dict[str, V] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def _end_stream(self, stream: S) -> None:
        raise NotImplementedError

    async def _end_viewer(self, viewer: V) -> None:
        raise NotImplementedError

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """End every stream (and so every viewer), then stop the background tasks."""
        await asyncio.gather(*(self._end_stream(s) for s in list(self._streams.values())))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _session(self, session_id: str) -> S | V:
        session: S | V | None = self._streams.get(session_id) or self._viewers.get(session_id)
        if session is None:
            raise UnknownSession(f"no session {session_id!r}")
        return session

    def _stream_to_join(self, stream_id: str, max_viewers: int) -> S:
        """The live stream a new viewer asks for, if it has room."""
        stream = self._streams.get(stream_id)
        if stream is None:
            raise UnknownStream(f"no live stream {stream_id!r}")
        if len(stream.viewers) >= max_viewers:
            raise TooManyViewers(f"stream {stream_id} already has {max_viewers} viewers")
        return stream

    def describe_session(self, session_id: str) -> SessionRef:
        """What a session id is: a publisher (whose stream id is the same) or a viewer of a stream."""
        if stream := self._streams.get(session_id):
            return SessionRef(session_id, "publisher", session_id, stream.device_id)
        if viewer := self._viewers.get(session_id):
            return SessionRef(session_id, "viewer", viewer.stream.session_id, viewer.stream.device_id)
        raise UnknownSession(f"no session {session_id!r}")

    async def end(self, session_id: str) -> None:
        """End a publisher's session (its stream and all its viewers) or one viewer's."""
        if session_id in self._streams:
            await self._end_stream(self._streams[session_id])
        elif session_id in self._viewers:
            await self._end_viewer(self._viewers[session_id])
        else:
            raise UnknownSession(f"no session {session_id!r}")

    def streams(self) -> list[StreamInfo]:
        return [s.info() for s in self._streams.values()]

    def stream_of_device(self, device_id: str) -> StreamInfo | None:
        stream = self._by_device.get(device_id)
        return stream.info() if stream is not None else None

    def _forget_stream(self, stream: S) -> None:
        self._streams.pop(stream.session_id, None)
        if self._by_device.get(stream.device_id) is stream:
            del self._by_device[stream.device_id]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background; ``close()`` cancels what is left. A failure is logged, not raised:
        these are ends and deadlines, which may race another end of the same session."""

        async def quietly() -> None:
            try:
                await coro
            except Exception:
                log.debug("background video task failed", exc_info=True)

        task = asyncio.ensure_future(quietly())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _notify(self, event: str, info: StreamInfo) -> None:
        if self._on_stream is None:
            return
        try:
            self._on_stream(event, info)
        except Exception:
            log.exception("on_stream(%s) failed", event)
