"""The aiortc adapter: pinned internals, the receiver tap and the encoded track over real loopback peers."""

from __future__ import annotations

import asyncio
import fractions
import threading
from collections.abc import AsyncIterator
from itertools import pairwise

import aiortc
import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, VideoStreamTrack

from video.bitstream import is_keyframe
from video.errors import ForwardingUnavailable
from video.forward import EncodedTrack, ReceiverTap, _NoDecoderThread, check_internals, route_keyframe_requests
from video.frames import EncodedFrame

W, H = 320, 240


class Bars(VideoStreamTrack):
    """A cheap synthetic camera: a white bar sweeping over grey, drawn straight into a YUV 4:2:0 buffer."""

    def __init__(self, width: int = W, height: int = H) -> None:
        super().__init__()
        self.width, self.height, self.count = width, height, 0
        self._buffer = np.full((height * 3 // 2, width), 128, dtype=np.uint8)

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        self._buffer[: self.height] = 60
        x = (self.count * 8) % (self.width - 16)
        self._buffer[: self.height, x : x + 16] = 235
        self.count += 1
        frame = av.VideoFrame.from_ndarray(self._buffer, format="yuv420p")
        frame.pts, frame.time_base = pts, time_base
        return frame


def decoder_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "video-decoder")


async def connect(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> None:
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)


@pytest.fixture
async def peers() -> AsyncIterator[list[RTCPeerConnection]]:
    made: list[RTCPeerConnection] = []
    yield made
    await asyncio.gather(*(pc.close() for pc in made))


def vp8_frames(count: int, gop: int) -> list[bytes]:
    """Real libvpx frames of the synthetic picture, a key frame every ``gop``."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = W, H, "yuv420p"
    codec.time_base = fractions.Fraction(1, 30)
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    codec.gop_size = gop
    out: list[bytes] = []
    buffer = np.full((H * 3 // 2, W), 100, dtype=np.uint8)
    for i in range(count):
        buffer[:H, (i * 8) % 300 : (i * 8) % 300 + 16] = 230
        frame = av.VideoFrame.from_ndarray(buffer, format="yuv420p")
        frame.pts = i
        if i % gop == 0:
            frame.pict_type = av.video.frame.PictureType.I
        out.extend(bytes(p) for p in codec.encode(frame))
    return out


def test_internals_are_where_the_adapter_expects_them() -> None:
    assert aiortc.__version__.startswith("1.16.")
    check_internals()  # raises ForwardingUnavailable if anything moved


@pytest.mark.parametrize(("owner", "name"), [(RTCRtpSender, "_send_keyframe"), (RTCRtpReceiver, "_send_rtcp_pli")])
def test_a_moved_internal_fails_loudly_naming_the_version(
    monkeypatch: pytest.MonkeyPatch, owner: type, name: str
) -> None:
    check_internals.cache_clear()
    monkeypatch.delattr(owner, name)
    try:
        with pytest.raises(ForwardingUnavailable, match=f"aiortc {aiortc.__version__} .*{name}"):
            check_internals()
    finally:
        monkeypatch.undo()
        check_internals.cache_clear()
    check_internals()


def test_another_aiortc_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    check_internals.cache_clear()
    monkeypatch.setattr(aiortc, "__version__", "1.17.0")
    try:
        with pytest.raises(ForwardingUnavailable, match=r"aiortc 1\.17\.0 .*1\.16\.x"):
            check_internals()
    finally:
        monkeypatch.undo()
        check_internals.cache_clear()


async def test_tap_takes_encoded_frames_and_no_decoder_thread_starts(peers: list[RTCPeerConnection]) -> None:
    camera, hub = RTCPeerConnection(), RTCPeerConnection()
    peers += [camera, hub]
    camera.addTransceiver(Bars(), direction="sendonly")
    video = hub.addTransceiver("video", direction="recvonly")
    frames: list[tuple[str, bytes, int]] = []
    ended = asyncio.Event()
    tap = ReceiverTap(video.receiver, lambda c, d, t: frames.append((c, d, t)), ended.set)
    before = decoder_threads()
    await connect(camera, hub)
    async with asyncio.timeout(10):
        while len(frames) < 20:
            await asyncio.sleep(0.02)
    assert decoder_threads() == before  # the hub's receiver started no decoder
    assert isinstance(vars(video.receiver)["_RTCRtpReceiver__decoder_thread"], _NoDecoderThread)
    assert tap.frames == len(frames)
    codecs = {c for c, _, _ in frames}
    assert codecs == {"VP8"}
    assert is_keyframe("VP8", frames[0][1])  # aiortc's encoder opens with a key frame
    assert not any(is_keyframe("VP8", d) for _, d, _ in frames[1:])  # and sends no more unless asked
    stamps = [t for _, _, t in frames]
    assert stamps[0] == 0 and all(b > a for a, b in pairwise(stamps))  # re-based, increasing
    # What the tap gives is whole frames: a plain libvpx decoder makes pictures of them.
    decoder = av.CodecContext.create("libvpx", "r")
    pictures = [p for _, d, _ in frames for p in decoder.decode(av.Packet(d))]
    assert len(pictures) == len(frames) and (pictures[-1].width, pictures[-1].height) == (W, H)

    # A PLI sent through the tap makes the publisher send a key frame.
    seen = len(frames)
    assert tap.request_keyframe()
    async with asyncio.timeout(5):
        while not any(is_keyframe("VP8", d) for _, d, _ in frames[seen:]):
            await asyncio.sleep(0.02)

    await hub.close()
    assert ended.is_set()


def frame_queue(data: list[bytes], start: int, gop: int) -> asyncio.Queue[EncodedFrame | None]:
    queue: asyncio.Queue[EncodedFrame | None] = asyncio.Queue()
    for i, d in enumerate(data):
        queue.put_nowait(EncodedFrame("VP8", d, (start + i * 3000) % 2**32, i % gop == 0, 0))
    queue.put_nowait(None)
    return queue


async def test_encoded_track_rebases_the_publisher_clock_across_its_wrap() -> None:
    data = vp8_frames(6, gop=6)
    track = EncodedTrack(frame_queue(data, 2**32 - 3 * 3000, 6).get)  # the publisher's clock wraps 3 frames in
    packets = [await track.recv() for _ in data]
    assert [p.pts for p in packets] == [i * 3000 for i in range(6)]
    assert [bytes(p) for p in packets] == data and all(p.time_base == fractions.Fraction(1, 90000) for p in packets)
    with pytest.raises(aiortc.mediastreams.MediaStreamError):
        await track.recv()  # None from the source: the stream ended
    assert track.readyState == "ended"


async def test_encoded_track_goes_out_as_is_and_viewer_plis_come_back(peers: list[RTCPeerConnection]) -> None:
    data = vp8_frames(40, gop=20)
    hub, viewer = RTCPeerConnection(), RTCPeerConnection()
    peers += [hub, viewer]
    sender = hub.addTrack(EncodedTrack(frame_queue(data, 1234, 20).get))
    plis = asyncio.Event()
    route_keyframe_requests(sender, plis.set)
    viewer.addTransceiver("video", direction="recvonly")
    received: asyncio.Future[aiortc.MediaStreamTrack] = asyncio.get_running_loop().create_future()
    viewer.on("track", received.set_result)
    before = decoder_threads()
    await connect(viewer, hub)
    remote = await asyncio.wait_for(received, 5)
    pictures: list[av.VideoFrame] = []
    async with asyncio.timeout(10):
        while len(pictures) < 30:
            picture = await remote.recv()
            assert isinstance(picture, av.VideoFrame)
            pictures.append(picture)
    assert (pictures[0].width, pictures[0].height) == (W, H)
    assert decoder_threads() == before + 1  # the viewer's decoder; the hub's sender encodes nothing
    # A PLI from the viewer reaches the callback instead of flagging an encoder.
    await viewer.getReceivers()[0]._send_rtcp_pli(sender._ssrc)
    await asyncio.wait_for(plis.wait(), 5)


async def test_tap_refuses_a_receiver_that_already_runs(peers: list[RTCPeerConnection]) -> None:
    camera, hub = RTCPeerConnection(), RTCPeerConnection()
    peers += [camera, hub]
    camera.addTransceiver(Bars(), direction="sendonly")
    video = hub.addTransceiver("video", direction="recvonly")
    await connect(camera, hub)
    async with asyncio.timeout(10):
        while hub.connectionState != "connected":
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
    with pytest.raises(ForwardingUnavailable):
        ReceiverTap(video.receiver, lambda c, d, t: None, lambda: None)
