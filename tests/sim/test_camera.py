"""The simulated camera track: size, pacing, frame codes, kept send times, drone view, keyframes, cost."""

from __future__ import annotations

import asyncio
import time

import av
import cv2
import numpy as np
import pytest
from aiortc.codecs import depayload, get_decoder, get_encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import VIDEO_TIME_BASE, MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from sim.camera import SceneTrack
from sim.framecode import read_code

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90_000, payloadType=96)
HERE = (34.26101, 117.18592, 0.0)


def _bgr(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="bgr24")


@pytest.mark.parametrize("view", ["street", "drone"])
async def test_frames_have_size_pts_and_increasing_codes(view: str) -> None:
    track = SceneTrack("P001-cam", width=320, height=240, fps=30, view=view,  # type: ignore[arg-type]
                       position=lambda: HERE, keep_frames=5)
    frames = [await asyncio.wait_for(track.recv(), 2) for _ in range(12)]
    track.stop()
    assert all((f.width, f.height, f.format.name) == (320, 240, "yuv420p") for f in frames)
    assert all(f.time_base == VIDEO_TIME_BASE for f in frames)
    assert [f.pts for f in frames] == [3000 * k for k in range(12)]  # 90 kHz / 30 fps
    codes = [read_code(_bgr(f)) for f in frames]
    assert [c[0] if c else None for c in codes] == list(range(12))
    # Only the last keep_frames send times are kept, and they are the times in the pictures.
    assert sorted(track.sent_ms) == [7, 8, 9, 10, 11]
    assert all(codes[k] == (k, track.sent_ms[k] & 0xFFFF_FFFF) for k in range(7, 12))
    assert track.frames == 12


async def test_paced_at_its_frame_rate() -> None:
    track = SceneTrack("P001-cam", width=320, height=240, fps=20)
    started = time.monotonic()
    for _ in range(11):
        await asyncio.wait_for(track.recv(), 2)
    elapsed = time.monotonic() - started
    track.stop()
    assert 0.45 <= elapsed < 0.9  # ten frame periods of 50 ms after the first frame
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(track.recv(), 2)


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"width": 321, "height": 240}, "even"),
    ({"width": 160, "height": 120}, "at least"),
    ({"fps": 0}, "fps"),
    ({"view": "drone"}, "position"),
    ({"keep_frames": 0}, "keep_frames"),
])
def test_refuses_bad_settings(kwargs: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        SceneTrack("x", **kwargs)  # type: ignore[arg-type]


def _middle(img: np.ndarray, rows: slice) -> np.ndarray:
    """A band of rows of the middle columns, away from the code, the text and the crosshair."""
    return img[rows, img.shape[1] // 2 + 40 :].astype(np.int16)


@pytest.mark.parametrize(("heading", "dlat", "dlon"), [
    (0.0, 10.0, 0.0),  # flying north: the ground slides down the picture
    (90.0, 0.0, 10.0),  # flying east with the camera turned east: the same
    (180.0, -10.0, 0.0),
])
def test_drone_view_follows_position_and_heading(heading: float, dlat: float, dlon: float) -> None:
    lat, lon, _ = HERE
    metres_per_degree = 111_320.0
    track = SceneTrack("D01", width=320, height=240, view="drone", position=lambda: HERE)
    before = cv2.cvtColor(track.render(0, 0, (lat, lon, heading)), cv2.COLOR_YUV2BGR_I420)
    after = cv2.cvtColor(track.render(1, 0, (lat + dlat / metres_per_degree,
                                             lon + dlon / (metres_per_degree * np.cos(np.radians(lat))), heading)),
                         cv2.COLOR_YUV2BGR_I420)
    shift = round(10.0 / 200.0 * 320)  # 10 m of a 200 m wide view, in pixels
    rows = slice(90, 150)
    moved = np.abs(_middle(after, slice(rows.start + shift, rows.stop + shift)) - _middle(before, rows)).mean()
    unmoved = np.abs(_middle(after, rows) - _middle(before, rows)).mean()
    assert moved < 2.0 < unmoved
    turned = cv2.cvtColor(track.render(2, 0, (lat, lon, heading + 90.0)), cv2.COLOR_YUV2BGR_I420)
    assert np.abs(_middle(turned, rows) - _middle(before, rows)).mean() > 10.0


def _encode_all(frames: list[av.VideoFrame]) -> list[tuple[bool, tuple[int, int] | None]]:
    """Each frame through aiortc's VP8 encoder and decoder: (was it a keyframe, the code read back)."""
    encoder, decoder = get_encoder(VP8), get_decoder(VP8)
    out = []
    for frame in frames:
        payloads, timestamp = encoder.encode(frame)
        data = b"".join(depayload(VP8, p) for p in payloads)
        keyframe = not data[0] & 1  # VP8 frame tag: bit 0 clear on a key frame (RFC 6386 9.1)
        decoded = [f for f in decoder.decode(JitterFrame(data=data, timestamp=timestamp))
                   if isinstance(f, av.VideoFrame)]
        out.append((keyframe, read_code(_bgr(decoded[-1])) if decoded else None))
    return out


@pytest.mark.parametrize(("interval_ms", "keyframes"), [
    (200, [0, 6, 12]),  # at 30 fps, every sixth frame
    (None, [0]),  # the encoder's own choice: only the first
])
async def test_keyframe_interval_reaches_the_encoder(interval_ms: int | None, keyframes: list[int]) -> None:
    track = SceneTrack("P001-cam", width=320, height=240, fps=30, keyframe_interval_ms=interval_ms)
    frames = [await asyncio.wait_for(track.recv(), 2) for _ in range(16)]
    track.stop()
    results = _encode_all(frames)
    assert [k for k, (key, _) in enumerate(results) if key] == keyframes
    assert [code[0] if code else None for _, code in results] == list(range(16))


@pytest.mark.parametrize(("width", "height", "budget_ms"), [(1280, 720, 12.0), (640, 360, 5.0)])
@pytest.mark.parametrize("view", ["street", "drone"])
def test_render_cost(width: int, height: int, budget_ms: float, view: str) -> None:
    """Drawing one frame is cheap next to encoding it (VP8 720p ~9 ms): report the figure, fail on a regression."""
    track = SceneTrack("P001-cam", width=width, height=height, view=view,  # type: ignore[arg-type]
                       position=lambda: HERE)
    for k in range(3):
        track.render(k, 0, HERE)
    track.render_ms = 0.0
    n = 30
    for k in range(n):
        track.render(k, 1_795_000_000_000 + 33 * k, (HERE[0] + k * 1e-5, HERE[1], k * 3.0))
    per_frame = track.render_ms / n
    print(f"\nSceneTrack {view} {width}x{height}: {per_frame:.2f} ms/frame")
    assert per_frame < budget_ms
