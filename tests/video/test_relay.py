"""The relay on its own (pure asyncio), then VideoService with real aiortc publishers and viewers on loopback."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from itertools import pairwise

import av
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from tests.video.test_forward import Bars, decoder_threads
from video.errors import BadOffer, TooManyViewers, UnknownSession, UnknownStream, Unsupported
from video.forward import _NoDecoderThread
from video.frames import EncodedFrame
from video.relay import Relay
from video.service import StreamInfo, VideoService

# -- the relay alone ---------------------------------------------------------------------------------------------


def frame(i: int, key: bool = False) -> EncodedFrame:
    return EncodedFrame("VP8", bytes([i % 256]), i * 3000, key, 0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def relay_with_requests(**options: object) -> tuple[Relay, list[float], Clock]:
    clock = Clock()
    sent: list[float] = []

    def upstream() -> bool:
        sent.append(clock.now)
        return True

    return Relay(upstream, clock=clock, **options), sent, clock  # type: ignore[arg-type]


async def test_new_viewer_waits_for_a_keyframe_and_asks_for_one_once() -> None:
    relay, sent, clock = relay_with_requests(max_keyframe_gap_s=None)
    feeds = [relay.add_viewer() for _ in range(5)]
    waiting = [asyncio.ensure_future(f.next()) for f in feeds]
    await asyncio.sleep(0)
    assert sent == [100.0]  # five viewers joining cost one request
    for i in range(1, 4):
        relay.push(frame(i))
    assert not any(w.done() for w in waiting) and relay.counters.gated == 15
    relay.push(frame(4, key=True))
    relay.push(frame(5))
    firsts = await asyncio.gather(*waiting)
    assert all(f is not None and f.keyframe and f.timestamp == 4 * 3000 for f in firsts)
    assert [f.timestamp for f in [await feeds[0].next()] if f] == [5 * 3000]
    clock.now += 0.6
    assert relay.request_keyframe()  # answered by the key frame: a new request may go after the floor
    assert not relay.request_keyframe()  # but not twice in a row
    assert relay.counters.keyframe_requests_suppressed >= 1


async def test_outstanding_request_is_retried_after_the_interval() -> None:
    relay, sent, clock = relay_with_requests(keyframe_request_interval_s=2.0, max_keyframe_gap_s=None)
    assert relay.request_keyframe()
    clock.now += 1.0
    assert not relay.request_keyframe()
    clock.now += 1.1
    assert relay.request_keyframe()
    assert sent == [100.0, 102.1]


async def test_stalled_viewer_drops_until_keyframe_without_touching_the_other() -> None:
    relay, _, _ = relay_with_requests(viewer_queue_frames=4, max_keyframe_gap_s=None)
    stalled, reader = relay.add_viewer(), relay.add_viewer()
    stalled.active = True  # its sender read once and then stopped
    got: list[int] = []

    async def read() -> None:
        while (f := await reader.next()) is not None:
            got.append(f.timestamp // 3000)

    task = asyncio.ensure_future(read())
    await asyncio.sleep(0)
    relay.push(frame(0, key=True))
    for i in range(1, 20):
        relay.push(frame(i))
        await asyncio.sleep(0)
    assert got == list(range(20))  # the reader missed nothing
    assert relay.counters.dropped_to_slow_viewer == stalled.dropped == 5 and stalled.waiting_for_keyframe
    relay.push(frame(20, key=True))  # the stalled one restarts cleanly at the next key frame
    assert (await stalled.next()) == frame(20, key=True)
    relay.close()
    await asyncio.wait_for(task, 1)
    assert await stalled.next() is None


async def test_sinks_get_every_frame_and_are_closed_and_a_failing_sink_is_dropped() -> None:
    @dataclass
    class Sink:
        frames: list[EncodedFrame] = field(default_factory=list)
        closed: int = 0
        fail: bool = False

        def write(self, f: EncodedFrame) -> None:
            if self.fail:
                raise RuntimeError("disk full")
            self.frames.append(f)

        def close(self) -> None:
            self.closed += 1

    good, bad = Sink(), Sink(fail=True)
    relay, _, _ = relay_with_requests(sinks=[good, bad])
    pushed = [frame(i, key=i == 0) for i in range(10)]
    for f in pushed:
        relay.push(f)
    relay.close()
    relay.close()
    assert good.frames == pushed and good.closed == 1 and bad.closed == 0 and relay.counters.sink_errors == 1


async def test_publisher_is_asked_for_a_keyframe_when_none_came_for_too_long() -> None:
    relay, sent, clock = relay_with_requests(max_keyframe_gap_s=10.0)
    relay.push(frame(0, key=True))
    clock.now += 9
    relay.push(frame(1))
    assert sent == []
    clock.now += 2
    relay.push(frame(2))
    assert sent == [111.0]


# -- the service with real peers ---------------------------------------------------------------------------------


@dataclass
class Viewer:
    pc: RTCPeerConnection
    track: MediaStreamTrack
    session_id: str

    async def picture(self, timeout: float = 5.0) -> av.VideoFrame:
        f = await asyncio.wait_for(self.track.recv(), timeout)
        assert isinstance(f, av.VideoFrame)
        return f


class Rig:
    """A service plus the client peers a test made; everything is closed at the end."""

    def __init__(self, service: VideoService) -> None:
        self.service = service
        self.events: list[tuple[str, StreamInfo]] = []
        self.pcs: list[RTCPeerConnection] = []

    async def publish(self, device: str = "cam-1", codec: str | None = None, size: tuple[int, int] = (320, 240)) -> str:
        pc = RTCPeerConnection()
        self.pcs.append(pc)
        transceiver = pc.addTransceiver(Bars(*size), direction="sendonly")
        if codec:
            caps = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences([c for c in caps if c.name == codec])
        await pc.setLocalDescription(await pc.createOffer())
        answer = await self.service.publish(device, pc.localDescription.sdp)
        assert answer.session_id == answer.stream_id and "a=candidate:" in answer.sdp
        await pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
        return answer.stream_id

    async def view(self, stream_id: str, codec: str | None = None) -> Viewer:
        pc = RTCPeerConnection()
        self.pcs.append(pc)
        transceiver = pc.addTransceiver("video", direction="recvonly")
        if codec:
            caps = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences([c for c in caps if c.name == codec])
        track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        pc.on("track", track.set_result)
        await pc.setLocalDescription(await pc.createOffer())
        answer = await self.service.view(stream_id, pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
        return Viewer(pc, await asyncio.wait_for(track, 5), answer.session_id)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    rig: Rig
    async with VideoService(on_stream=lambda e, i: rig.events.append((e, i))) as service:
        rig = Rig(service)
        yield rig
    await asyncio.gather(*(pc.close() for pc in rig.pcs))


async def ended(viewer: Viewer, timeout: float = 5.0) -> bool:
    try:
        async with asyncio.timeout(timeout):
            while True:
                await viewer.track.recv()
    except MediaStreamError:
        return True
    return False


async def test_two_viewers_get_the_publishers_pictures_and_the_relay_decodes_nothing(rig: Rig) -> None:
    threads_before = decoder_threads()
    stream_id = await rig.publish()
    viewers = [await rig.view(stream_id), await rig.view(stream_id)]
    for v in viewers:
        for _ in range(10):
            picture = await v.picture()
            assert (picture.width, picture.height) == (320, 240)
    # Two decoder threads: the two viewers'. The hub's publisher receiver has none.
    assert decoder_threads() == threads_before + 2
    hub_pc = rig.service._streams[stream_id].pc
    assert all(isinstance(vars(r)["_RTCRtpReceiver__decoder_thread"], _NoDecoderThread | None)
               for r in hub_pc.getReceivers())
    assert any(t.name == "video-decoder" for t in threading.enumerate())
    stats = rig.service.stats()
    assert stats["frames_in"] >= 10 and stats["frames_out"] >= 20 and stats["viewers_first_frame_not_keyframe"] == 0
    assert rig.service.streams() == [StreamInfo(stream_id, "cam-1", rig.events[0][1].started_ms, "VP8", 2)]


async def test_late_viewer_starts_at_a_keyframe_within_1_5_s(rig: Rig) -> None:
    stream_id = await rig.publish()
    first = await rig.view(stream_id)
    await first.picture()
    await asyncio.sleep(1.0)  # mid-GOP: aiortc publishers send key frames only when asked
    requests = rig.service.stats()["keyframe_requests"]
    start = time.monotonic()
    late = await rig.view(stream_id)
    picture = await late.picture(timeout=1.5)
    assert time.monotonic() - start <= 1.5 and picture.width == 320
    stats = rig.service.stats()
    assert stats["keyframe_requests"] > requests and stats["viewers_first_frame_not_keyframe"] == 0


async def test_a_viewer_that_stops_reading_or_leaves_does_not_disturb_the_other(rig: Rig) -> None:
    stream_id = await rig.publish()
    idle, reader = await rig.view(stream_id), await rig.view(stream_id)
    await idle.picture()  # then never reads again
    for _ in range(30):
        await reader.picture(timeout=1.0)
    await rig.service.end(idle.session_id)
    assert await ended(idle)
    for _ in range(15):
        await reader.picture(timeout=1.0)
    info = rig.service.stream_of_device("cam-1")
    assert info is not None and (info.stream_id, info.viewers) == (stream_id, 1)
    with pytest.raises(UnknownSession):
        await rig.service.end(idle.session_id)


async def test_publisher_end_ends_viewers_and_reports_ended(rig: Rig) -> None:
    stream_id = await rig.publish()
    viewers = [await rig.view(stream_id), await rig.view(stream_id)]
    await viewers[0].picture()
    await rig.service.end(stream_id)
    assert all([await ended(v) for v in viewers])
    assert [e for e, _ in rig.events] == ["started", "ended"] and rig.events[1][1].stream_id == stream_id
    assert rig.service.streams() == [] and rig.service.stats()["viewers"] == 0
    with pytest.raises(UnknownStream):
        await rig.view(stream_id)


async def test_a_new_publish_from_the_same_device_replaces_its_stream(rig: Rig) -> None:
    old = await rig.publish("cam-7")
    viewer = await rig.view(old)
    await viewer.picture()
    new = await rig.publish("cam-7")
    assert new != old and await ended(viewer)
    assert [(e, i.stream_id) for e, i in rig.events] == [("started", old), ("ended", old), ("started", new)]
    info = rig.service.stream_of_device("cam-7")
    assert info is not None and info.stream_id == new
    await (await rig.view(new)).picture()


async def test_sink_gets_every_frame_with_the_keyframe_flag_right() -> None:
    frames: list[EncodedFrame] = []
    closed = asyncio.Event()

    class Sink:
        def write(self, f: EncodedFrame) -> None:
            frames.append(f)

        def close(self) -> None:
            closed.set()

    async with VideoService(sink_factory=lambda info: Sink(), max_keyframe_gap_s=0.5) as service:
        rig = Rig(service)
        stream_id = await rig.publish()
        async with asyncio.timeout(10):
            while sum(f.keyframe for f in frames) < 3:  # the periodic request brings key frames
                await asyncio.sleep(0.05)
        await service.end(stream_id)
        stats = service.stats()
        await asyncio.gather(*(pc.close() for pc in rig.pcs))
    assert closed.is_set() and len(frames) == stats["frames_in"]
    assert stats["keyframes_in"] == sum(f.keyframe for f in frames)
    # Checked independently of bitstream.is_keyframe: FFmpeg's own VP8 decoder says which pictures are key
    # frames (the libvpx wrapper does not report it).
    decoder = av.CodecContext.create("vp8", "r")
    for f in frames:
        pictures = decoder.decode(av.Packet(f.data))
        assert [p.key_frame for p in pictures] == [f.keyframe]
    assert frames[0].keyframe and all(b.timestamp > a.timestamp for a, b in pairwise(frames))


def transcoder_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("transcode-")]


async def test_h264_forwarded_to_h264_viewers_and_transcoded_once_for_vp8_ones(rig: Rig) -> None:
    stream_id = await rig.publish("cam-h264", codec="H264")
    assert rig.service.streams()[0].codec == "H264"
    h264 = await rig.view(stream_id, codec="H264")
    vp8 = [await rig.view(stream_id, codec="VP8"), await rig.view(stream_id, codec="VP8")]
    for viewer in [h264, *vp8]:
        for _ in range(5):
            picture = await viewer.picture(timeout=8)
            assert (picture.width, picture.height) == (320, 240)
    assert transcoder_threads() == ["transcode-VP8"]  # one decode + one encode for both VP8 viewers
    stats = rig.service.stats()
    assert stats["transcoders"] == 1 and stats["transcoded_frames"] >= 5
    await rig.service.end(vp8[0].session_id)
    assert rig.service.stats()["transcoders"] == 1
    await vp8[1].picture()
    await rig.service.end(vp8[1].session_id)  # the last VP8 viewer left: the codec work stops
    assert rig.service.stats()["transcoders"] == 0
    async with asyncio.timeout(5):
        while transcoder_threads():
            await asyncio.sleep(0.02)
    await h264.picture()


async def test_vp8_stream_transcoded_for_an_h264_viewer_or_refused_when_transcoding_is_off(rig: Rig) -> None:
    stream_id = await rig.publish()
    picture = await (await rig.view(stream_id, codec="H264")).picture(timeout=8)
    assert (picture.width, picture.height) == (320, 240)
    async with VideoService(transcode=False) as service:
        strict = Rig(service)
        other = await strict.publish()
        with pytest.raises(Unsupported) as refused:
            await strict.view(other, codec="H264")
        assert refused.value.code == "codec_unsupported" and service.streams()[0].viewers == 0
        await asyncio.gather(*(pc.close() for pc in strict.pcs))


async def test_bad_offers_and_unknown_ids_are_refused(rig: Rig) -> None:
    service = rig.service
    for junk in ["", "hello", "v=0\r\nm=video what\r\n", "v=0\r\n" + "a=x\r\n" * 20000]:
        with pytest.raises(BadOffer):
            await service.publish("cam-1", junk)
    audio_only = RTCPeerConnection()
    rig.pcs.append(audio_only)
    audio_only.addTransceiver("audio", direction="sendonly")
    await audio_only.setLocalDescription(await audio_only.createOffer())
    with pytest.raises(BadOffer, match="no video"):
        await service.publish("cam-1", audio_only.localDescription.sdp)
    viewer_offer = RTCPeerConnection()
    rig.pcs.append(viewer_offer)
    viewer_offer.addTransceiver("video", direction="recvonly")
    await viewer_offer.setLocalDescription(await viewer_offer.createOffer())
    recvonly = viewer_offer.localDescription.sdp
    with pytest.raises(BadOffer, match="recvonly"):
        await service.publish("cam-1", recvonly)
    no_codec = recvonly.replace("VP8/90000", "VP9/90000").replace("H264/90000", "AV1/90000")
    stream_id = await rig.publish()
    with pytest.raises(BadOffer, match="codec"):
        await service.view(stream_id, no_codec)
    with pytest.raises(UnknownStream):
        await service.view("no-such-stream", recvonly)
    with pytest.raises(UnknownSession):
        await service.patch("no-such-session", "a=end-of-candidates\r\n")
    assert [e for e, _ in rig.events] == ["started"] and service.stats()["streams"] == 1


async def test_too_many_viewers() -> None:
    async with VideoService(max_viewers_per_stream=1) as service:
        rig = Rig(service)
        stream_id = await rig.publish()
        await rig.view(stream_id)
        with pytest.raises(TooManyViewers):
            await rig.view(stream_id)
        await asyncio.gather(*(pc.close() for pc in rig.pcs))
