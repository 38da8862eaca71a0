"""The video service: WHIP publishers and WHEP viewers as aiortc peer connections around forwarding relays.

One stream per publishing device; its id is the publisher's session id. The publisher's encoded frames
come off its receiver (:class:`~video.forward.ReceiverTap`) into the stream's :class:`~video.relay.Relay`,
which feeds every viewer's sender (:class:`~video.forward.EncodedTrack`) and the stream's sinks. Nothing
is decoded or encoded on this path. A viewer that cannot take the publisher's codec is served by the
stream's one :class:`~video.transcode.Transcoder` to its codec (decode once, encode once, shared by all such
viewers, stopped when the last leaves), or refused with :class:`~video.errors.Unsupported` when
``transcode=False``.

Audio a publisher or viewer offers is answered ``inactive``: the hub relays video only.

A publisher need not be a WebRTC peer: :meth:`VideoService.publish_encoded` opens a stream whose encoded frames
the caller pushes (a GB/T 28181 camera's H.264, demuxed from MPEG-PS), viewed and recorded like any other.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription

from video.bitstream import is_keyframe
from video.errors import (
    BadOffer,
    Unsupported,
    VideoError,
)
from video.forward import EncodedTrack, ReceiverTap, check_internals, route_keyframe_requests
from video.frames import EncodedFrame, FrameSink
from video.registry import Answer, SessionRef, SessionRegistry, StreamInfo, now_ms
from video.relay import Relay, RelayCounters, ViewerFeed
from video.sdp import Offer, codec_preferences, parse_offer
from video.transcode import Transcoder

# Answer, SessionRef and StreamInfo are video.registry's, re-exported.
__all__ = ["Answer", "EncodedPublisher", "SessionRef", "StreamInfo", "VideoService"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Session:
    session_id: str
    pc: RTCPeerConnection | None  # None: a pushed (non-WebRTC) publisher
    offer: Offer | None


@dataclass(eq=False)
class _Viewer(_Session):
    stream: _Stream
    relay: Relay  # the stream's own, or a transcoder's output
    feed: ViewerFeed


@dataclass(eq=False)
class _Stream(_Session):
    device_id: str
    codec: str
    started_ms: int
    relay: Relay
    viewers: dict[str, _Viewer] = field(default_factory=dict)
    transcoders: dict[str, Transcoder] = field(default_factory=dict)  # by the codec they encode to
    tap: ReceiverTap | None = None
    ended: bool = False
    pushed: EncodedPublisher | None = None  # the stream's pusher when it is not a WebRTC publisher

    def info(self) -> StreamInfo:
        return StreamInfo(self.session_id, self.device_id, self.started_ms, self.codec, len(self.viewers))

    def on_frame(self, codec: str, data: bytes, timestamp: int) -> None:
        self.relay.push(EncodedFrame(codec, data, timestamp, is_keyframe(codec, data), now_ms()))

    def request_keyframe(self) -> bool:
        if self.pushed is not None:
            return self.pushed.keyframe_wanted()
        return self.tap is not None and self.tap.request_keyframe()


class EncodedPublisher:
    """The caller's end of a pushed stream: :meth:`push` whole encoded pictures, :meth:`end` when the source stops.

    Timestamps are the source's 90 kHz clock (e.g. MPEG-PS PTS); they are re-based so the stream starts at 0, as
    aiortc does for WebRTC publishers. ``on_keyframe_request`` is called when a viewer needs a key frame (the
    source may ignore it: a camera's GOP brings one soon); ``on_viewers`` with the stream's viewer count whenever
    a viewer joins or leaves (an on-demand source stops when it falls to 0).
    """

    def __init__(self, service: VideoService, stream_id: str, device_id: str, codec: str,
                 on_keyframe_request: Callable[[], None] | None, on_viewers: Callable[[int], None] | None) -> None:
        self._service = service
        self.stream_id = stream_id
        self.device_id = device_id
        self.codec = codec
        self.on_keyframe_request = on_keyframe_request
        self.on_viewers = on_viewers
        self._base: int | None = None
        self._last: int | None = None
        self.pushed = 0
        self.timestamps_moved = 0  # pictures whose timestamp was not after the previous one's

    def push(self, data: bytes, timestamp_90k: int, keyframe: bool | None = None) -> bool:
        """Hand one picture to the relay; False once the stream has ended."""
        stream = self._service.pushed_stream(self.stream_id)
        if stream is None:
            return False
        if self._base is None:
            self._base = timestamp_90k
        timestamp = (timestamp_90k - self._base) % (1 << 32)
        if (self._last is not None and (timestamp - self._last) % (1 << 32) >= 1 << 31) or timestamp == self._last:
            # Not after the previous picture (a source repeating a PTS): viewers' jitter buffers would merge the
            # two pictures into one and show garbage until the next key frame, so it goes just after it.
            assert self._last is not None
            timestamp = (self._last + 1) % (1 << 32)
            self.timestamps_moved += 1
        self._last = timestamp
        key = is_keyframe(self.codec, data) if keyframe is None else keyframe
        stream.relay.push(EncodedFrame(self.codec, data, timestamp, key, now_ms()))
        self.pushed += 1
        return True

    def keyframe_wanted(self) -> bool:
        if self.on_keyframe_request is None:
            return False
        try:
            self.on_keyframe_request()
        except Exception:
            log.exception("keyframe request to the pushed stream %s failed", self.stream_id)
        return True

    def viewers_changed(self, count: int) -> None:
        if self.on_viewers is not None:
            try:
                self.on_viewers(count)
            except Exception:
                log.exception("viewer callback of the pushed stream %s failed", self.stream_id)

    async def end(self) -> None:
        """End the stream (its viewers and recording with it); idempotent."""
        await self._service.end_pushed(self.stream_id)


class VideoService(SessionRegistry[_Stream, _Viewer]):
    """Publishers in, viewers out. An async context manager: leaving it closes every peer connection."""

    def __init__(self, *, sink_factory: Callable[[StreamInfo], FrameSink | None] | None = None,
                 on_stream: Callable[[str, StreamInfo], None] | None = None, max_viewers_per_stream: int = 32,
                 keyframe_request_interval_s: float = 2.0, max_keyframe_gap_s: float | None = 10.0,
                 viewer_queue_frames: int = 24, connect_timeout_s: float = 30.0, transcode: bool = True) -> None:
        super().__init__(on_stream)
        self._sink_factory = sink_factory
        self._max_viewers = max_viewers_per_stream
        self._relay_options: dict[str, Any] = {"keyframe_request_interval_s": keyframe_request_interval_s,
                               "max_keyframe_gap_s": max_keyframe_gap_s, "viewer_queue_frames": viewer_queue_frames}
        self._transcode = transcode
        self._connect_timeout = connect_timeout_s
        self._ended = RelayCounters()
        self._totals.update(viewers_first_frame_not_keyframe=0, transcoded_frames=0)

    async def __aenter__(self) -> VideoService:
        check_internals()  # fail at start-up, not at the first publish, if aiortc moved
        return self

    # -- publishers -------------------------------------------------------------------------------------------

    async def publish(self, device_id: str, offer_sdp: str) -> Answer:
        """Answer a WHIP offer; a new publish from the same device replaces its old stream."""
        offer = parse_offer(offer_sdp, "publish")
        codec = offer.video_codecs[0]
        pc = RTCPeerConnection()
        video = pc.addTransceiver("video", direction="recvonly")
        video.setCodecPreferences(codec_preferences(codec))
        relay = Relay(lambda: stream.request_keyframe(), **self._relay_options)
        stream = _Stream(uuid.uuid4().hex, pc, offer, device_id, codec, now_ms(), relay)
        try:
            stream.tap = ReceiverTap(video.receiver, stream.on_frame, lambda: self._spawn(self._end_stream(stream)))
        except VideoError:
            await pc.close()
            raise
        sdp = await self._negotiate(pc, offer, video)
        await self._register_stream(stream)
        self._add_sink(stream)
        self._watch(stream)
        self._notify("started", stream.info())
        return Answer(stream.session_id, stream.session_id, sdp)

    async def publish_encoded(self, device_id: str, codec: str = "H264", *,
                              on_keyframe_request: Callable[[], None] | None = None,
                              on_viewers: Callable[[int], None] | None = None) -> EncodedPublisher:
        """A stream fed by the caller instead of a WebRTC peer; replaces the device's old stream, like publish."""
        if codec not in ("H264", "VP8"):
            raise Unsupported(f"a pushed stream carries H264 or VP8, not {codec}", code="codec_unsupported")
        stream_id = uuid.uuid4().hex
        relay = Relay(lambda: stream.request_keyframe(), **self._relay_options)
        stream = _Stream(stream_id, None, None, device_id, codec, now_ms(), relay)
        stream.pushed = EncodedPublisher(self, stream_id, device_id, codec, on_keyframe_request, on_viewers)
        await self._register_stream(stream)
        self._add_sink(stream)
        self._notify("started", stream.info())
        return stream.pushed

    def pushed_stream(self, stream_id: str) -> _Stream | None:
        stream = self._streams.get(stream_id)
        return stream if stream is not None and stream.pushed is not None else None

    async def end_pushed(self, stream_id: str) -> None:
        stream = self.pushed_stream(stream_id)
        if stream is not None:
            await self._end_stream(stream)

    def _add_sink(self, stream: _Stream) -> None:
        try:
            sink = self._sink_factory(stream.info()) if self._sink_factory else None
        except Exception:  # a recorder that cannot start must not stop the live stream
            log.exception("sink factory failed for stream %s", stream.session_id)
            sink = None
        if sink is not None:
            stream.relay.add_sink(sink)

    # -- viewers ----------------------------------------------------------------------------------------------

    async def view(self, stream_id: str, offer_sdp: str) -> Answer:
        """Answer a WHEP offer for a live stream."""
        stream = self._stream_to_join(stream_id, self._max_viewers)
        offer = parse_offer(offer_sdp, "view")
        codec = stream.codec if stream.codec in offer.video_codecs else offer.video_codecs[0]
        if codec == stream.codec:
            relay = stream.relay
        elif self._transcode:
            relay = self._transcoder(stream, codec).output
        else:
            raise Unsupported(f"the stream is {stream.codec} and the viewer offers only "
                              f"{', '.join(offer.video_codecs)}; transcoding is off", code="codec_unsupported")
        pc = RTCPeerConnection()
        feed = relay.add_viewer()
        video = pc.addTransceiver(EncodedTrack(feed.next), direction="sendonly")
        video.setCodecPreferences(codec_preferences(codec))

        def on_viewer_keyframe_request() -> None:
            relay.request_keyframe(from_viewer=True)

        route_keyframe_requests(video.sender, on_viewer_keyframe_request)
        viewer = _Viewer(uuid.uuid4().hex, pc, offer, stream, relay, feed)
        sdp = await self._admit_viewer(stream, viewer, lambda: self._negotiate(pc, offer, video))  # ICE gathers
        self._watch(viewer)
        if stream.pushed is not None:
            stream.pushed.viewers_changed(len(stream.viewers))
        return Answer(viewer.session_id, stream_id, sdp)

    def _transcoder(self, stream: _Stream, codec: str) -> Transcoder:
        """The stream's one transcoder to ``codec``, started for its first viewer."""
        transcoder = stream.transcoders.get(codec)
        if transcoder is None:
            transcoder = Transcoder(codec, stream.relay.request_keyframe, **self._relay_options)
            stream.transcoders[codec] = transcoder
            stream.relay.add_sink(transcoder)
        return transcoder

    def _stop_transcoder(self, stream: _Stream, transcoder: Transcoder) -> None:
        stream.transcoders.pop(transcoder.codec, None)
        stream.relay.remove_sink(transcoder)
        transcoder.close()
        self._add_counters(transcoder.output.counters)
        self._totals["transcoded_frames"] += transcoder.encoded

    # -- sessions ---------------------------------------------------------------------------------------------

    async def patch(self, session_id: str, sdpfrag: str) -> None:
        """Add trickled remote ICE candidates (RFC 8840 fragment); an ICE restart is refused."""
        session, fragment = self._trickle_fragment(session_id, sdpfrag)
        assert session.pc is not None and session.offer is not None  # _trickle_fragment refuses pushed streams
        for candidate in fragment.candidates:
            # Everything is bundled on one transport: hand every candidate to the bundle's first m-line.
            candidate.sdpMid, candidate.sdpMLineIndex = session.offer.primary_mid, None
            await session.pc.addIceCandidate(candidate)
        if fragment.end_of_candidates:
            await session.pc.addIceCandidate(None)

    # -- queries ----------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        totals = asdict(self._ended)
        transcoders = [t for s in self._streams.values() for t in s.transcoders.values()]
        for relay in [s.relay for s in self._streams.values()] + [t.output for t in transcoders]:
            for name, value in asdict(relay.counters).items():
                totals[name] += value
        totals.update(self._totals, streams=len(self._streams), viewers=len(self._viewers),
                      transcoders=len(transcoders))
        totals["viewers_first_frame_not_keyframe"] += sum(
            1 for v in self._viewers.values() if v.feed.first_frame_keyframe is False)
        totals["transcoded_frames"] += sum(t.encoded for t in transcoders)
        return totals

    def _add_counters(self, counters: RelayCounters) -> None:
        for name, value in asdict(counters).items():
            setattr(self._ended, name, getattr(self._ended, name) + value)

    # -- lifecycle --------------------------------------------------------------------------------------------

    async def _negotiate(self, pc: RTCPeerConnection, offer: Offer, video: RTCRtpTransceiver) -> str:
        """Apply the offer and answer it; aiortc gathers all its candidates first, so the answer has them."""
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
            if video.mid is None:
                raise ValueError("the offer's video m-line was not matched")
            for other in pc.getTransceivers():  # audio is declined, so aiortc neither receives nor decodes it
                if other is not video:
                    other.direction = "inactive"
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # aiortc refuses what it cannot negotiate with assorted exceptions
            await pc.close()
            raise BadOffer(f"the offer cannot be negotiated: {exc}") from exc
        return str(pc.localDescription.sdp)

    def _watch(self, session: _Stream | _Viewer) -> None:
        """End a session whose connection fails or closes, or never comes up."""
        pc = session.pc
        assert pc is not None  # only WebRTC sessions are watched

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._spawn(self._end_if_live(session.session_id))

        # closed: it has ended already
        self._deadline(session.session_id, lambda: pc.connectionState in ("connected", "closed"),
                       self._connect_timeout)

    async def _end_stream(self, stream: _Stream) -> None:
        if not self._forget_stream(stream):
            return
        for transcoder in list(stream.transcoders.values()):
            self._stop_transcoder(stream, transcoder)
        stream.relay.close()  # viewers' senders end, sinks close
        self._add_counters(stream.relay.counters)
        await asyncio.gather(*(self._end_viewer(v) for v in list(stream.viewers.values())))
        if stream.pc is not None:
            await stream.pc.close()
        self._notify("ended", stream.info())

    async def _end_viewer(self, viewer: _Viewer) -> None:
        if not self._forget_viewer(viewer):
            return
        if viewer.feed.first_frame_keyframe is False:
            self._totals["viewers_first_frame_not_keyframe"] += 1
        viewer.relay.remove_viewer(viewer.feed)
        transcoder = next((t for t in viewer.stream.transcoders.values() if t.output is viewer.relay), None)
        if transcoder is not None and transcoder.output.viewers == 0:
            self._stop_transcoder(viewer.stream, transcoder)  # its last viewer left: stop the codec work
        if viewer.pc is not None:
            await viewer.pc.close()
        if viewer.stream.pushed is not None and not viewer.stream.ended:
            viewer.stream.pushed.viewers_changed(len(viewer.stream.viewers))
