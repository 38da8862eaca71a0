"""Proxy mode: the hub's WHIP/WHEP endpoints hand every stream to a Janus VideoRoom instead of its own relay.

:class:`ProxyService` has the public surface of :class:`~video.service.VideoService` that
:func:`video.http.video_router` calls, so the same endpoints, tokens and ``Location`` URLs work; only the
signalling passes through the hub, and the media flows directly between the clients and Janus. Each
stream is a one-publisher VideoRoom room created for it and destroyed when it ends.

Janus 1.1 cannot take a subscriber's SDP offer; :mod:`video.crossing` answers around it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc.sdp import SessionDescription, candidate_to_sdp

from video.crossing import cross_answers
from video.errors import (
    MediaServerError,
    TooManyViewers,
    UnknownSession,
    UnknownStream,
)
from video.janus import JanusEvent, JanusHandle, JanusSession
from video.registry import Answer, SessionRegistry, StreamInfo, now_ms
from video.sdp import Offer, parse_offer

__all__ = ["JanusPlacement", "ProxyService"]

log = logging.getLogger(__name__)


# -- the service ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class JanusPlacement:
    """Where a hub session lives on Janus (for operators and tests)."""

    room: int
    handle_id: int
    publisher_id: int


@dataclass(eq=False)
class _Peer:
    session_id: str
    handle: JanusHandle
    offer: Offer
    janus_mid: str  # the mid of Janus's bundle m-line: trickled candidates go there
    up: asyncio.Event = field(default_factory=asyncio.Event)  # Janus said "webrtcup"


@dataclass(eq=False, kw_only=True)
class _Stream(_Peer):
    device_id: str
    room: int
    publisher_id: int
    codec: str | None
    started_ms: int
    viewers: dict[str, _Viewer] = field(default_factory=dict)
    ended: bool = False

    def info(self) -> StreamInfo:
        return StreamInfo(self.session_id, self.device_id, self.started_ms, self.codec, len(self.viewers))


@dataclass(eq=False, kw_only=True)
class _Viewer(_Peer):
    stream: _Stream


def _first_mid(sdp: str) -> str:
    media = SessionDescription.parse(sdp).media
    return str(media[0].rtp.muxId) if media and media[0].rtp.muxId is not None else "0"


class ProxyService(SessionRegistry[_Stream, _Viewer]):
    """WHIP/WHEP sessions as Janus VideoRoom publishers and subscribers. An async context manager."""

    def __init__(self, janus_url: str, *, on_stream: Callable[[str, StreamInfo], None] | None = None,
                 max_viewers_per_stream: int = 32, keyframe_interval_s: int = 2, connect_timeout_s: float = 30.0,
                 api_secret: str | None = None, keepalive_s: float = 25.0) -> None:
        super().__init__(on_stream)
        self.janus_url = janus_url
        self._max_viewers = max_viewers_per_stream
        self._fir_freq = max(1, int(keyframe_interval_s))
        self._connect_timeout = connect_timeout_s
        self._feed_wait = min(connect_timeout_s, 10.0)
        self._session_options: dict[str, Any] = {"api_secret": api_secret, "keepalive_s": keepalive_s}
        self.janus: JanusSession | None = None
        self._control: JanusHandle | None = None  # the session's handle for room create/destroy
        self._opening = asyncio.Lock()
        self._totals.update(hangups=0, janus_sessions_lost=0, janus_requests=0, janus_errors=0)

    async def __aenter__(self) -> ProxyService:
        try:
            await self._control_handle()
        except MediaServerError as exc:  # Janus may come up later: the first publish tries again
            log.warning("proxy mode: Janus not reachable yet: %s", exc)
        return self

    async def close(self) -> None:
        await super().close()
        if self.janus is not None:
            self._retire(self.janus)
            await self.janus.close()
            self.janus = self._control = None

    async def _control_handle(self) -> JanusHandle:
        """The live session's control handle; opens a new session if there is none or Janus lost it."""
        async with self._opening:
            if self.janus is None or not self.janus.alive:
                if self.janus is not None:
                    self._retire(self.janus)
                    await self.janus.close()
                self.janus = None
                session = JanusSession(self.janus_url, on_lost=self._on_lost, **self._session_options)
                try:
                    await session.open()
                    self._control = await session.attach()
                except BaseException:
                    self._retire(session)
                    await session.close()
                    raise
                self.janus = session
            assert self._control is not None
            return self._control

    def _retire(self, session: JanusSession) -> None:
        self._totals["janus_requests"] += session.requests
        self._totals["janus_errors"] += session.errors
        session.requests = session.errors = 0

    def _on_lost(self, reason: str) -> None:
        """Janus forgot our session (restart, expiry): every stream on it is gone."""
        self._totals["janus_sessions_lost"] += 1
        for stream in list(self._streams.values()):
            self._spawn(self._end_stream(stream))

    # -- publishers -------------------------------------------------------------------------------------------

    async def publish(self, device_id: str, offer_sdp: str) -> Answer:
        """Answer a WHIP offer with a new room's publisher; a new publish from the device replaces its old one."""
        offer = parse_offer(offer_sdp, "publish")
        control = await self._control_handle()
        stream_id = uuid.uuid4().hex
        created = await control.request({"request": "create", "publishers": 1, "videocodec": "vp8,h264",
                                         "fir_freq": self._fir_freq, "is_private": True,
                                         "description": f"fieldhub {device_id}"[:64]})
        room = int(created.data["room"])
        handle: JanusHandle | None = None
        try:
            handle = await control.session.attach(on_event=lambda event: self._on_event(stream_id, event))
            joined = await handle.request(
                {"request": "joinandconfigure", "ptype": "publisher", "room": room, "display": device_id},
                {"type": "offer", "sdp": offer_sdp})
            if not joined.jsep or joined.jsep.get("type") != "answer":
                raise MediaServerError("Janus joined the publisher but sent no SDP answer")
            answer = str(joined.jsep["sdp"])
        except BaseException:
            await self._destroy_room(room)
            if handle is not None:
                await handle.detach()
            raise
        codec = joined.data.get("video_codec")
        stream = _Stream(stream_id, handle, offer, _first_mid(answer), device_id=device_id, room=room,
                         publisher_id=int(joined.data["id"]), codec=str(codec).upper() if codec else None,
                         started_ms=now_ms())
        await self._register_stream(stream)
        self._deadline(stream_id, stream.up.is_set, self._connect_timeout)
        self._notify("started", stream.info())
        return Answer(stream_id, stream_id, answer)

    # -- viewers ----------------------------------------------------------------------------------------------

    async def view(self, stream_id: str, offer_sdp: str) -> Answer:
        """Answer a WHEP offer with a subscriber of the stream's room (see :func:`cross_answers`)."""
        stream = self._stream_to_join(stream_id, self._max_viewers)
        offer = parse_offer(offer_sdp, "view")
        try:  # Janus has no feed to subscribe to until the publisher's PeerConnection is up
            await asyncio.wait_for(stream.up.wait(), self._feed_wait)
        except TimeoutError as exc:
            raise MediaServerError(f"stream {stream_id} has not reached the media server yet; try again") from exc
        janus = (await self._control_handle()).session
        session_id = uuid.uuid4().hex
        handle = await janus.attach(on_event=lambda event: self._on_event(session_id, event))
        if stream.ended or len(stream.viewers) >= self._max_viewers:  # it changed while we waited
            await handle.detach()
            if stream.ended:
                raise UnknownStream(f"stream {stream_id} ended")
            raise TooManyViewers(f"stream {stream_id} already has {self._max_viewers} viewers")
        viewer = _Viewer(session_id, handle, offer, "0", stream=stream)

        async def negotiate() -> str:
            attached = await handle.request({"request": "join", "ptype": "subscriber", "room": stream.room,
                                             "streams": [{"feed": stream.publisher_id}]})
            if not attached.jsep or attached.jsep.get("type") != "offer":
                raise MediaServerError("Janus attached the subscriber but sent no SDP offer")
            janus_offer = str(attached.jsep["sdp"])
            for_viewer, for_janus = cross_answers(offer_sdp, janus_offer)
            viewer.janus_mid = _first_mid(janus_offer)
            await handle.request({"request": "start"}, {"type": "answer", "sdp": for_janus})
            return for_viewer

        sdp = await self._admit_viewer(stream, viewer, negotiate)
        self._deadline(session_id, viewer.up.is_set, self._connect_timeout)
        return Answer(session_id, stream_id, sdp)

    # -- sessions ---------------------------------------------------------------------------------------------

    def placement(self, session_id: str) -> JanusPlacement:
        """The Janus room, handle and publisher id behind a publisher's or viewer's session."""
        peer = self._session(session_id)
        stream = peer if isinstance(peer, _Stream) else peer.stream if isinstance(peer, _Viewer) else None
        if stream is None:
            raise UnknownSession(f"no session {session_id!r}")
        return JanusPlacement(stream.room, peer.handle.handle_id, stream.publisher_id)

    async def patch(self, session_id: str, sdpfrag: str) -> None:
        """Trickle the client's candidates to its Janus handle; an ICE restart is refused."""
        peer, fragment = self._trickle_fragment(session_id, sdpfrag)
        # Everything is bundled on one transport: every candidate goes to Janus's first m-line.
        candidates = [{"candidate": "candidate:" + candidate_to_sdp(c), "sdpMid": peer.janus_mid,
                       "sdpMLineIndex": 0} for c in fragment.candidates]
        await peer.handle.trickle(candidates, completed=fragment.end_of_candidates)

    # -- queries ----------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        counts = dict(self._totals, streams=len(self._streams), viewers=len(self._viewers))
        if self.janus is not None:
            counts["janus_requests"] += self.janus.requests
            counts["janus_errors"] += self.janus.errors
        return counts

    # -- lifecycle --------------------------------------------------------------------------------------------

    def _on_event(self, session_id: str, event: JanusEvent) -> None:
        peer: _Peer | None = self._streams.get(session_id) or self._viewers.get(session_id)
        if peer is None:
            return
        if event.kind == "webrtcup":
            peer.up.set()
        elif event.kind in ("hangup", "detached") or event.data.get("videoroom") == "destroyed":
            # Janus dropped the PeerConnection (DTLS alert, ICE failure, room gone): the session is over.
            self._totals["hangups"] += event.kind == "hangup"
            log.info("Janus ended session %s: %s %s", session_id, event.kind, event.reason or "")
            self._spawn(self._end_if_live(session_id))

    async def _end_stream(self, stream: _Stream) -> None:
        if not self._forget_stream(stream):
            return
        await asyncio.gather(*(self._end_viewer(v) for v in list(stream.viewers.values())))
        await stream.handle.detach()
        await self._destroy_room(stream.room)
        self._notify("ended", stream.info())

    async def _destroy_room(self, room: int) -> None:
        """Destroy a stream's room (kicking anyone in it), over a new session if Janus lost the old one."""
        try:
            await (await self._control_handle()).request({"request": "destroy", "room": room})
        except MediaServerError as exc:  # after a Janus restart the room is gone anyway
            log.warning("room %s not destroyed: %s", room, exc)

    async def _end_viewer(self, viewer: _Viewer) -> None:
        if not self._forget_viewer(viewer):
            return
        await viewer.handle.detach()
