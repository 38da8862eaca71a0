"""SegmentRecorder with real libvpx/libx264 frames, real PyAV muxing, read back by decoding the files."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription, VideoStreamTrack

from tests.video.test_bitstream import VP8_OPTIONS, X264_FAST, encode
from video.errors import VideoError
from video.frames import EncodedFrame
from video.recording import BadStreamId, SegmentRecorder, list_segments, prune_recordings
from video.service import StreamInfo, VideoService

TICKS = 3000  # one picture at 30 fps on the 90 kHz RTP clock
START_MS = 1_796_206_500_000  # 2026-12-02T10:15:00Z
STREAM = "stream-1"


@pytest.fixture(scope="module")
def vp8_frames() -> list[bytes]:
    return encode("libvpx", 320, 240, 120, VP8_OPTIONS, gop=30)  # key frames at 0, 30, 60, 90


def wrap(data: list[bytes], codec: str = "VP8", first_ts: int = 123_456) -> list[EncodedFrame]:
    return [
        EncodedFrame(codec, frame, (first_ts + i * TICKS) % 2**32, i % 30 == 0, START_MS + i * 1000 // 30)
        for i, frame in enumerate(data)
    ]


@dataclass
class Playback:
    frames: int
    times: list[float]  # presentation time of each decoded picture, s
    keyframes: list[bool]
    size: tuple[int, int]
    duration_s: float


def play(path: Path) -> Playback:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times: list[float] = []
        keys: list[bool] = []
        size = (0, 0)
        for picture in container.decode(stream):
            times.append(float(picture.time or 0.0))
            keys.append(picture.key_frame)
            size = (picture.width, picture.height)
        duration = (container.duration or 0) / av.time_base
    return Playback(len(times), times, keys, size, duration)


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


@pytest.fixture
def recorders() -> Iterator[list[SegmentRecorder]]:
    """Recorders a test opens are closed even when it fails."""
    opened: list[SegmentRecorder] = []
    yield opened
    for recorder in opened:
        recorder.close()


def record(root: Path, frames: list[EncodedFrame], opened: list[SegmentRecorder], **options: float) -> SegmentRecorder:
    recorder = SegmentRecorder(root, STREAM, **options)  # type: ignore[arg-type]
    opened.append(recorder)
    for frame in frames:
        recorder.write(frame)
    recorder.close()
    return recorder


def test_recording_plays_back_with_every_frame_from_the_first_keyframe(
    tmp_path: Path, vp8_frames: list[bytes], recorders: list[SegmentRecorder]
) -> None:
    frames = wrap(vp8_frames[:90])[5:]  # starts mid-GOP: 25 frames before the key frame at 30
    recorder = record(tmp_path, frames, recorders)

    [segment] = list_segments(tmp_path, STREAM)
    assert segment.path == tmp_path / STREAM / "20261202T101501Z-0001.webm"  # named by its first recorded picture
    playback = play(segment.path)
    assert playback.frames == segment.frames == 60
    assert playback.size == (320, 240)
    assert playback.keyframes[0] and playback.keyframes[30]
    assert playback.times[0] == 0.0
    assert playback.times[-1] == pytest.approx(59 / 30, abs=0.002)
    assert all(b - a == pytest.approx(1 / 30, abs=0.002) for a, b in pairwise(playback.times))
    assert playback.duration_s == pytest.approx(2.0, abs=0.01)
    assert (segment.start_ms, segment.end_ms, segment.complete) == (START_MS + 1000, START_MS + 3000, True)
    stats = recorder.stats()
    assert stats["frames_in"] == 85 and stats["frames_written"] == 60
    assert stats["waiting_for_keyframe"] == 25 and stats["segments"] == 1


def test_segments_split_at_the_first_keyframe_after_segment_s(
    tmp_path: Path, vp8_frames: list[bytes], recorders: list[SegmentRecorder]
) -> None:
    # 1.5 s segments with a key frame every 1 s: the key frame at 1 s is too early, the one at 2 s starts segment 2.
    record(tmp_path, wrap(vp8_frames), recorders, segment_s=1.5)

    segments = list_segments(tmp_path, STREAM)
    assert [s.frames for s in segments] == [60, 60]
    assert [s.path.name for s in segments] == ["20261202T101500Z-0001.webm", "20261202T101502Z-0002.webm"]
    assert [s.start_ms - START_MS for s in segments] == [0, 2000]
    assert segments[0].end_ms == segments[1].start_ms  # back to back, no hole in the evidence
    for segment in segments:
        playback = play(segment.path)
        assert playback.frames == 60 and playback.keyframes[0] and playback.times[0] == 0.0
        assert playback.duration_s == pytest.approx(2.0, abs=0.01)


def test_rtp_timestamp_wraparound_keeps_timing(
    tmp_path: Path, vp8_frames: list[bytes], recorders: list[SegmentRecorder]
) -> None:
    frames = wrap(vp8_frames[:60], first_ts=2**32 - 20 * TICKS)  # wraps at the 21st frame
    assert frames[19].timestamp > frames[20].timestamp
    recorder = record(tmp_path, frames, recorders)

    [segment] = list_segments(tmp_path, STREAM)
    playback = play(segment.path)
    assert playback.frames == 60
    assert playback.times[-1] == pytest.approx(59 / 30, abs=0.002)
    assert recorder.stats()["timestamps_fixed"] == 0


def test_garbage_frames_are_counted_and_recording_resumes_at_the_next_keyframe(
    tmp_path: Path, vp8_frames: list[bytes], recorders: list[SegmentRecorder]
) -> None:
    frames = wrap(vp8_frames[:90])
    rng_bytes = bytes(range(7, 250, 3)) * 5
    cut_key = vp8_frames[0][:8]  # key frame cut inside its header
    junk = [
        EncodedFrame("VP8", b"", frames[10].timestamp, False, START_MS),
        EncodedFrame("VP8", b"\xff" + rng_bytes, frames[10].timestamp, False, START_MS),
        EncodedFrame("VP8", cut_key, frames[10].timestamp, True, START_MS),
        EncodedFrame("AV1", vp8_frames[1], frames[10].timestamp, False, START_MS),
    ]
    mixed = [*frames[:10], *junk, *frames[10:]]
    recorder = record(tmp_path, mixed, recorders)

    stats = recorder.stats()
    assert stats["bad_frame"] == 3 and stats["unsupported_codec"] == 1
    # After a bad frame the recorder cannot know what was lost: frames 10-29 wait for the key frame at 30.
    assert stats["waiting_for_keyframe"] == 20
    [segment] = list_segments(tmp_path, STREAM)
    playback = play(segment.path)
    assert playback.frames == segment.frames == 70
    assert playback.times[9] == pytest.approx(9 / 30, abs=0.002)
    assert playback.times[10] == pytest.approx(1.0, abs=0.002)  # a visible freeze over the lost second


def test_full_queue_drops_are_counted_and_recording_restarts_at_a_keyframe(
    tmp_path: Path, vp8_frames: list[bytes], recorders: list[SegmentRecorder]
) -> None:
    frames = wrap(vp8_frames[:90])
    # The first segment's file is a FIFO nobody reads yet: the worker blocks opening it, like a stalled disk.
    fifo = tmp_path / STREAM / "20261202T101500Z-0001.webm"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    recorder = SegmentRecorder(tmp_path, STREAM, queue_size=8)
    recorders.append(recorder)
    queued = recorder._queue  # only to know when the worker has taken frames

    recorder.write(frames[0])  # the key frame opens the FIFO: the worker blocks there
    wait_for(lambda: queued.qsize() == 0)
    started = time.monotonic()
    for frame in frames[1:41]:
        recorder.write(frame)  # 1-8 fit in the queue, 9-40 do not
    assert time.monotonic() - started < 0.5  # write() never waited for the stalled worker
    assert recorder.stats()["queue_full"] == 32

    received = bytearray()
    reader = threading.Thread(target=lambda: received.extend(fifo.read_bytes()), daemon=True)
    reader.start()
    wait_for(lambda: queued.qsize() == 0)
    for frame in frames[41:]:
        recorder.write(frame)
        wait_for(lambda: queued.qsize() == 0)  # keep up, so no more drops than the ones above
    recorder.close()
    reader.join(timeout=5)

    stats = recorder.stats()
    assert stats["queue_full"] == 32 and stats["waiting_for_keyframe"] == 19  # 41-59 wait for the key at 60
    copy = tmp_path / "copy.webm"
    copy.write_bytes(received)
    playback = play(copy)
    assert playback.frames == stats["frames_written"] == 9 + 30
    assert playback.times[8] == pytest.approx(8 / 30, abs=0.002)
    assert playback.times[9] == pytest.approx(2.0, abs=0.002)


def test_a_muxing_error_is_counted_and_the_next_keyframe_starts_a_new_segment(
    tmp_path: Path, vp8_frames: list[bytes], recorders: list[SegmentRecorder]
) -> None:
    frames = wrap(vp8_frames[:90])
    blocker = tmp_path / STREAM
    blocker.write_text("not a directory")  # the segment cannot be created where the stream's directory goes
    recorder = SegmentRecorder(tmp_path, STREAM)
    recorders.append(recorder)
    queued = recorder._queue
    for frame in frames[:30]:
        recorder.write(frame)
    wait_for(lambda: queued.qsize() == 0 and recorder.stats()["waiting_for_keyframe"] == 29)
    blocker.unlink()
    for frame in frames[30:]:
        recorder.write(frame)
    recorder.close()

    stats = recorder.stats()
    assert stats["mux_errors"] == 1 and stats["segments"] == 1
    [segment] = list_segments(tmp_path, STREAM)
    assert segment.complete and segment.start_ms == START_MS + 1000
    assert play(segment.path).frames == 60


def test_a_write_error_mid_segment_closes_it_and_the_next_keyframe_starts_a_new_one(
    tmp_path: Path, vp8_frames: list[bytes], recorders: list[SegmentRecorder]
) -> None:
    # Noise compresses badly: the muxer's buffers fill within a few frames and it writes mid-segment.
    noisy = encode("libvpx", 320, 240, 30, VP8_OPTIONS, gop=30, noise=True)
    frames = wrap(noisy + vp8_frames[30:60])
    # The first segment's file is a FIFO whose reader hangs up: every write to it fails (EPIPE), like a lost disk.
    fifo = tmp_path / STREAM / "20261202T101500Z-0001.webm"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    recorder = SegmentRecorder(tmp_path, STREAM, segment_s=0.5)
    recorders.append(recorder)
    recorder.write(frames[0])
    os.close(os.open(fifo, os.O_RDONLY))  # returns once the worker has opened the FIFO for writing
    for frame in frames[1:]:
        recorder.write(frame)
    recorder.close()

    stats = recorder.stats()
    assert stats["mux_errors"] == 1 and stats["segments"] == 2
    assert 0 < stats["waiting_for_keyframe"] < 29  # the rest of the broken segment, up to the key frame at 30
    broken, good = list_segments(tmp_path, STREAM)
    assert not broken.complete and good.complete
    assert good.start_ms == START_MS + 1000
    assert play(good.path).frames == good.frames == 30


def test_a_repeated_or_earlier_timestamp_is_nudged_forward(
    tmp_path: Path, vp8_frames: list[bytes], recorders: list[SegmentRecorder]
) -> None:
    frames = wrap(vp8_frames[:60], first_ts=2**32 - 15 * TICKS)
    frames[10] = EncodedFrame("VP8", frames[10].data, frames[9].timestamp, False, frames[10].received_ms)
    frames[20] = EncodedFrame("VP8", frames[20].data, frames[18].timestamp, False, frames[20].received_ms)  # wrapped
    recorder = record(tmp_path, frames, recorders)

    assert recorder.stats()["timestamps_fixed"] == 2
    [segment] = list_segments(tmp_path, STREAM)
    playback = play(segment.path)
    assert playback.frames == 60 and playback.times == sorted(playback.times)
    assert playback.times[-1] == pytest.approx(59 / 30, abs=0.002)


@pytest.mark.parametrize("jump_s", [3600, -3600], ids=["forward", "backward"])
def test_a_publisher_clock_jump_ends_the_segment(
    tmp_path: Path, vp8_frames: list[bytes], recorders: list[SegmentRecorder], jump_s: int
) -> None:
    frames = wrap(vp8_frames)
    # After frame 59 the publisher's RTP clock jumps and the hub hears nothing for 10 s.
    later = [
        EncodedFrame("VP8", f.data, (f.timestamp + jump_s * 90_000) % 2**32, f.keyframe, f.received_ms + 10_000)
        for f in frames[60:]
    ]
    record(tmp_path, frames[:60] + later, recorders)

    first, second = list_segments(tmp_path, STREAM)
    assert (first.frames, second.frames) == (60, 60)
    assert first.end_ms == START_MS + 2000
    assert second.start_ms == START_MS + 12_000  # from the hub clock, not the publisher's jump
    assert play(second.path).duration_s == pytest.approx(2.0, abs=0.01)


def test_a_size_change_starts_a_new_segment(
    tmp_path: Path, vp8_frames: list[bytes], recorders: list[SegmentRecorder]
) -> None:
    small = encode("libvpx", 160, 120, 30, VP8_OPTIONS, gop=30)
    record(tmp_path, wrap(vp8_frames[:30] + small), recorders)

    first, second = list_segments(tmp_path, STREAM)
    assert (first.frames, second.frames) == (30, 30)
    assert (play(first.path).size, play(second.path).size) == ((320, 240), (160, 120))


def test_an_open_segment_is_listed_with_its_window_so_far(
    tmp_path: Path, vp8_frames: list[bytes], recorders: list[SegmentRecorder]
) -> None:
    recorder = SegmentRecorder(tmp_path, STREAM)
    recorders.append(recorder)
    for frame in wrap(vp8_frames[:45]):
        recorder.write(frame)
    wait_for(lambda: recorder.stats()["frames_written"] == 44)  # the newest waits for its duration

    [segment] = list_segments(tmp_path, STREAM)  # refreshed at the key frame at 1 s
    assert not segment.complete and segment.frames == 30
    assert START_MS + 1000 <= segment.end_ms <= START_MS + 1100
    recorder.close()
    [segment] = list_segments(tmp_path, STREAM)
    assert segment.complete and segment.frames == 45 and segment.end_ms == START_MS + 1500


def test_close_twice_and_write_after_close(
    tmp_path: Path, vp8_frames: list[bytes], recorders: list[SegmentRecorder]
) -> None:
    frames = wrap(vp8_frames[:10])
    recorder = record(tmp_path, frames[:5], recorders)
    started = time.monotonic()
    recorder.close()
    recorder.write(frames[5])
    assert time.monotonic() - started < 0.1
    assert recorder.stats()["after_close"] == 1
    [segment] = list_segments(tmp_path, STREAM)
    assert play(segment.path).frames == 5


def test_close_does_not_hang_on_a_stalled_disk(
    tmp_path: Path, vp8_frames: list[bytes], recorders: list[SegmentRecorder]
) -> None:
    frames = wrap(vp8_frames[:30])
    fifo = tmp_path / STREAM / "20261202T101500Z-0001.webm"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    recorder = SegmentRecorder(tmp_path, STREAM, close_timeout_s=0.2)
    recorders.append(recorder)
    for frame in frames:
        recorder.write(frame)
    started = time.monotonic()
    recorder.close()
    assert time.monotonic() - started < 1.0

    # The disk comes back: the worker finishes the file by itself.
    received = fifo.read_bytes()
    copy = tmp_path / "copy.webm"
    copy.write_bytes(received)
    assert play(copy).frames == 30
    wait_for(lambda: list_segments(tmp_path, STREAM)[0].complete)


def test_close_with_nothing_recorded_leaves_no_files(tmp_path: Path, recorders: list[SegmentRecorder]) -> None:
    record(tmp_path, [], recorders)
    assert list_segments(tmp_path, STREAM) == []
    assert list(tmp_path.iterdir()) == []


def test_h264_recording_plays_back(tmp_path: Path, recorders: list[SegmentRecorder]) -> None:
    frames = wrap(encode("libx264", 320, 240, 45, X264_FAST, gop=30), codec="H264")
    # A key frame whose SPS/PPS came earlier (as some senders do): the recorder supplies the last ones seen.
    late = frames[30]
    frames[30] = EncodedFrame("H264", _idr_only(late.data), late.timestamp, True, late.received_ms)
    record(tmp_path, frames, recorders, segment_s=0.5)

    segments = list_segments(tmp_path, STREAM)
    assert [s.path.suffix for s in segments] == [".mkv", ".mkv"]
    assert [s.frames for s in segments] == [30, 15]
    for segment, count in zip(segments, (30, 15), strict=True):
        playback = play(segment.path)
        assert playback.frames == count and playback.size == (320, 240) and playback.keyframes[0]
        assert playback.times[-1] == pytest.approx((count - 1) / 30, abs=0.002)


def _idr_only(access_unit: bytes) -> bytes:
    """The access unit from its first slice on (drops SPS, PPS and SEI)."""
    for marker in (b"\x00\x00\x00\x01\x65", b"\x00\x00\x01\x65"):
        index = access_unit.find(marker)
        if index >= 0:
            return access_unit[index:]
    raise AssertionError("no IDR slice")


def test_list_and_prune(tmp_path: Path, vp8_frames: list[bytes], recorders: list[SegmentRecorder]) -> None:
    record(tmp_path, wrap(vp8_frames), recorders, segment_s=1.5)
    first, second = list_segments(tmp_path, STREAM)
    (tmp_path / STREAM / "broken.json").write_text("{not json")
    orphan = tmp_path / STREAM / "20200101T000000Z-0009.webm"
    orphan.write_bytes(b"left by a crash before its sidecar")
    os.utime(orphan, (0, 0))

    assert list_segments(tmp_path, STREAM) == [first, second]  # the broken sidecar is skipped
    now_ms = second.end_ms + 10_000
    assert prune_recordings(tmp_path, max_age_s=60, now_ms=now_ms) == 1  # the orphan only
    assert prune_recordings(tmp_path, max_age_s=(now_ms - first.end_ms) / 1000 - 1, now_ms=now_ms) == 1
    assert not first.path.exists() and second.path.exists()
    assert list_segments(tmp_path, STREAM) == [second]
    (tmp_path / STREAM / "broken.json").unlink()
    assert prune_recordings(tmp_path, max_age_s=0, now_ms=now_ms) == 1
    assert not (tmp_path / STREAM).exists()  # an emptied stream directory goes too
    assert prune_recordings(tmp_path / "missing", max_age_s=0, now_ms=now_ms) == 0


def test_an_incomplete_segment_is_pruned_only_when_its_file_is_old(tmp_path: Path) -> None:
    directory = tmp_path / STREAM
    directory.mkdir()
    media = directory / "a.webm"
    media.write_bytes(b"x")
    meta = {"file": "a.webm", "codec": "VP8", "start_ms": 0, "end_ms": 0, "frames": 0, "complete": False}
    (directory / "a.json").write_text(json.dumps(meta))
    now_ms = int(time.time() * 1000)
    assert prune_recordings(tmp_path, max_age_s=60, now_ms=now_ms) == 0  # still being written, by its mtime
    os.utime(media, (0, 0))
    assert prune_recordings(tmp_path, max_age_s=60, now_ms=now_ms) == 1


@pytest.mark.parametrize("stream_id", ["", "..", ".hidden", "a/b", "a\\b", "x" * 200, "é"])
def test_stream_ids_that_cannot_name_a_directory_are_refused(tmp_path: Path, stream_id: str) -> None:
    with pytest.raises(BadStreamId) as caught:
        SegmentRecorder(tmp_path, stream_id)
    assert isinstance(caught.value, VideoError) and caught.value.code == "bad_stream_id"
    with pytest.raises(BadStreamId):
        list_segments(tmp_path, stream_id)


class MovingBars(VideoStreamTrack):
    """A 320x240 camera for the publisher: a bar that moves every frame, so the encoder makes real inter frames."""

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        picture = np.zeros((240, 320, 3), dtype=np.uint8)
        picture[:, (pts // 3000 * 8) % 320 :][:, :40] = (255, 200, 0)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_a_live_aiortc_stream_through_the_relay_is_recorded(tmp_path: Path, codec: str) -> None:
    opened: list[SegmentRecorder] = []

    def open_recorder(info: StreamInfo) -> SegmentRecorder:
        opened.append(SegmentRecorder(tmp_path, info.stream_id, segment_s=1.0))
        return opened[-1]

    async with VideoService(sink_factory=open_recorder, max_keyframe_gap_s=1.0) as service:
        publisher = RTCPeerConnection()
        try:
            transceiver = publisher.addTransceiver(MovingBars(), direction="sendonly")
            capabilities = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences([c for c in capabilities if c.name == codec])
            await publisher.setLocalDescription(await publisher.createOffer())
            answer = await service.publish("cam-rec", publisher.localDescription.sdp)
            await publisher.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
            async with asyncio.timeout(20):
                while not opened or opened[0].stats()["segments"] < 3:
                    await asyncio.sleep(0.05)
            await service.end(answer.stream_id)  # the relay closes its sinks
        finally:
            await publisher.close()

    [recorder] = opened
    stats = recorder.stats()
    assert stats["bad_frame"] == stats["mux_errors"] == stats["queue_full"] == 0
    segments = list_segments(tmp_path, answer.stream_id)
    assert len(segments) >= 3 and all(s.complete for s in segments)
    assert sum(s.frames for s in segments) == stats["frames_written"]
    suffix = ".webm" if codec == "VP8" else ".mkv"
    for segment, following in pairwise(segments):
        assert abs(following.start_ms - segment.end_ms) < 250  # back to back on the hub clock, give or take jitter
    for segment in segments:
        playback = play(segment.path)
        assert segment.path.suffix == suffix and playback.size == (320, 240) and playback.keyframes[0]
        assert playback.frames == segment.frames
        # aiortc paces its camera at 30 fps: media time and frame count agree.
        assert playback.duration_s == pytest.approx(segment.frames / 30, rel=0.15)
