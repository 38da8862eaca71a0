"""What every WHIP/WHEP back end keeps: live streams by id and by device, their viewers, background tasks.

The built-in relay (:class:`video.service.VideoService`) and the Janus proxy
(:class:`video.proxy.ProxyService`) differ in how a session is negotiated and torn down; they share this
bookkeeping, the rules of registering a stream and admitting a viewer, the connect deadline, and the
queries the router and the hub make, so both answer them the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Literal, Protocol, TypeVar

from devices.tasks import cancel_and_wait
from video.errors import IceRestartUnsupported, TooManyViewers, UnknownSession, UnknownStream
from video.sdp import Offer, SdpFragment, parse_sdpfrag

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
    ended: bool

    @property
    def offer(self) -> Offer | None: ...  # None: a publisher that is not a WebRTC peer (frames pushed in)

    @property
    def viewers(self) -> dict[str, Any]: ...

    def info(self) -> StreamInfo: ...


class _ViewerLike(Protocol):
    session_id: str

    @property
    def offer(self) -> Offer | None: ...

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
        # Sessions answered; each back end adds its own counters to these.
        self._totals: dict[str, int] = {"streams_total": 0, "viewers_total": 0}

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
        await cancel_and_wait(*self._tasks)  # `_spawn` lets nothing but their cancellation out

    def _session(self, session_id: str) -> S | V:
        session: S | V | None = self._streams.get(session_id) or self._viewers.get(session_id)
        if session is None:
            raise UnknownSession(f"no session {session_id!r}")
        return session

    def _trickle_fragment(self, session_id: str, sdpfrag: str) -> tuple[S | V, SdpFragment]:
        """A PATCH's session and its candidates (RFC 8840 fragment); an ICE restart is refused."""
        session = self._session(session_id)
        if session.offer is None:
            raise UnknownSession(f"session {session_id!r} is not a WebRTC session: it has no ICE to trickle")
        fragment = parse_sdpfrag(sdpfrag)
        if fragment.ice_ufrag is not None and fragment.ice_ufrag != session.offer.ice_ufrag:
            raise IceRestartUnsupported("new ICE credentials mean an ICE restart, which this hub does not do; "
                                        "end the session and start a new one")
        return session, fragment

    async def _register_stream(self, stream: S) -> None:
        """A publisher was answered: its stream is live, and replaces the device's previous one (ended first)."""
        old = self._by_device.get(stream.device_id)
        if old is not None:
            await self._end_stream(old)
        self._streams[stream.session_id] = self._by_device[stream.device_id] = stream
        self._totals["streams_total"] += 1

    def _stream_to_join(self, stream_id: str, max_viewers: int) -> S:
        """The live stream a new viewer asks for, if it has room."""
        stream = self._streams.get(stream_id)
        if stream is None:
            raise UnknownStream(f"no live stream {stream_id!r}")
        if len(stream.viewers) >= max_viewers:
            raise TooManyViewers(f"stream {stream_id} already has {max_viewers} viewers")
        return stream

    async def _admit_viewer(self, stream: S, viewer: V, negotiate: Callable[[], Awaitable[str]]) -> str:
        """Hold the viewer's place in the stream while ``negotiate()`` answers its offer; the answer's SDP.

        A failed negotiation, or a stream that ended meanwhile, ends the viewer and raises."""
        stream.viewers[viewer.session_id] = self._viewers[viewer.session_id] = viewer
        try:
            sdp = await negotiate()
        except BaseException:
            await self._end_viewer(viewer)
            raise
        if stream.ended:
            await self._end_viewer(viewer)
            raise UnknownStream(f"stream {stream.session_id} ended")
        self._totals["viewers_total"] += 1
        return sdp

    def describe_session(self, session_id: str) -> SessionRef:
        """What a session id is: a publisher (whose stream id is the same) or a viewer of a stream."""
        if stream := self._streams.get(session_id):
            return SessionRef(session_id, "publisher", session_id, stream.device_id)
        if viewer := self._viewers.get(session_id):
            return SessionRef(session_id, "viewer", viewer.stream.session_id, viewer.stream.device_id)
        raise UnknownSession(f"no session {session_id!r}")

    async def end(self, session_id: str) -> None:
        """End a publisher's session (its stream and all its viewers) or one viewer's."""
        if session_id not in self._streams and session_id not in self._viewers:
            raise UnknownSession(f"no session {session_id!r}")
        await self._end_if_live(session_id)

    def streams(self) -> list[StreamInfo]:
        return [s.info() for s in self._streams.values()]

    def stream_of_device(self, device_id: str) -> StreamInfo | None:
        stream = self._by_device.get(device_id)
        return stream.info() if stream is not None else None

    def _forget_stream(self, stream: S) -> bool:
        """Mark the stream ended and drop it from the maps; False if it had ended already."""
        if stream.ended:
            return False
        stream.ended = True
        self._streams.pop(stream.session_id, None)
        if self._by_device.get(stream.device_id) is stream:
            del self._by_device[stream.device_id]
        return True

    def _forget_viewer(self, viewer: V) -> bool:
        """Drop the viewer from the maps; False if it was gone already."""
        known = self._viewers.pop(viewer.session_id, None)
        left = viewer.stream.viewers.pop(viewer.session_id, None)
        return known is not None or left is not None

    async def _end_if_live(self, session_id: str) -> None:
        """End the session (a stream and its viewers, or one viewer) unless it has ended already."""
        if session_id in self._streams:
            await self._end_stream(self._streams[session_id])
        elif session_id in self._viewers:
            await self._end_viewer(self._viewers[session_id])

    def _deadline(self, session_id: str, connected: Callable[[], bool], timeout_s: float) -> None:
        """End the session unless ``connected()`` says so ``timeout_s`` after it was answered."""

        async def deadline() -> None:
            await asyncio.sleep(timeout_s)
            if not connected():
                log.warning("session %s did not connect in %.0f s", session_id, timeout_s)
                await self._end_if_live(session_id)

        self._spawn(deadline())

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
