"""Simulated cameras: synthetic moving scenes rendered with OpenCV, as an aiortc video track.

A body camera sees a street scrolling past (buildings, a road, a car driving the other way); a drone
camera looks straight down on a city grid that moves and turns with the drone's position and heading.
Both draw the device id and the UTC time, and burn the frame code of :mod:`sim.framecode` into every
picture so a viewer can measure sender-to-viewer latency. What does not change (the street, the
ground) is rendered once; a frame is a slice or a warp of it plus a few shapes and two lines of text.
Frames are yuv420p, what aiortc's encoders want, so the encoder never converts them again.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from collections.abc import Callable
from typing import Final, Literal

import av
import cv2
import numpy as np
import numpy.typing as npt
from aiortc import VideoStreamTrack
from aiortc.mediastreams import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE, MediaStreamError

from sim.framecode import code_box, draw_code

__all__ = ["DronePosition", "SceneTrack", "View"]

View = Literal["street", "drone"]
DronePosition = Callable[[], tuple[float, float, float]]  # (lat, lon, heading in degrees from north)

_METRES_PER_DEGREE: Final = 111_320.0
_GROUND_TILE: Final = 1024  # px of the drone's ground texture; it repeats, so the drone can fly anywhere
_GROUND_M_PER_PX: Final = 0.25  # texture resolution
_FOOTPRINT_M: Final = 200.0  # ground width the drone camera sees
_FONT: Final = cv2.FONT_HERSHEY_SIMPLEX

Image = npt.NDArray[np.uint8]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _street(width: int, height: int, rng: np.random.Generator) -> Image:
    """One period of the scrolling street, ``width`` wide: sky, buildings with windows, pavement, road."""
    img = np.empty((height, width, 3), np.uint8)
    horizon, kerb = int(height * 0.62), int(height * 0.70)
    sky = np.linspace(235, 170, horizon, dtype=np.float64)
    img[:horizon] = np.stack([sky, sky * 0.85, sky * 0.6], axis=1).astype(np.uint8)[:, None, :]
    img[horizon:kerb] = (150, 155, 160)
    img[kerb:] = (70, 70, 72)
    x = 0
    while x < width:
        w = int(rng.integers(width // 12, width // 5))
        top = int(rng.integers(int(height * 0.12), int(height * 0.45)))
        color = tuple(int(c) for c in rng.integers(60, 200, 3))
        right = min(x + w, width) - 1
        cv2.rectangle(img, (x, top), (right, horizon), color, -1)
        step = max(height // 20, 6)
        for wy in range(top + step // 2, horizon - step, step):
            for wx in range(x + step // 2, right - step // 2, step):
                cv2.rectangle(img, (wx, wy), (wx + step // 2, wy + step // 2), (200, 230, 240), -1)
        x += w + int(rng.integers(2, max(width // 60, 3)))
    dash = max(width // 16, 8)
    lane_y = (kerb + height) // 2
    for dx in range(0, width, 2 * dash):
        cv2.rectangle(img, (dx, lane_y - 2), (dx + dash, lane_y + 2), (240, 240, 240), -1)
    return img


def _ground(rng: np.random.Generator) -> Image:
    """A repeating top-down city texture: blocks of roofs and trees between roads, 4x4 blocks per tile."""
    size, pitch, road = _GROUND_TILE, _GROUND_TILE // 4, 28
    img = np.full((size, size, 3), (70, 120, 80), np.uint8)
    for k in range(4):
        c = k * pitch + pitch // 2  # roads through the middle of each period, so the tile joins seamlessly
        img[:, c - road // 2 : c + road // 2] = (80, 80, 80)
        img[c - road // 2 : c + road // 2, :] = (80, 80, 80)
        for d in range(0, size, 24):
            img[d : d + 12, c - 1 : c + 1] = (230, 230, 230)
            img[c - 1 : c + 1, d : d + 12] = (230, 230, 230)
    for bx in range(4):
        for by in range(4):
            x0, y0 = bx * pitch + pitch // 2 + road // 2 + 6, by * pitch + pitch // 2 + road // 2 + 6
            span = pitch - road - 12
            for _ in range(int(rng.integers(2, 6))):
                w, h = (int(v) for v in rng.integers(span // 5, span // 2, 2))
                x, y = (int(v) for v in rng.integers(0, span - max(w, h), 2))
                color = tuple(int(c) for c in rng.integers(90, 220, 3))
                cv2.rectangle(img, (x0 + x, y0 + y), (x0 + x + w, y0 + y + h), color, -1)
                cv2.rectangle(img, (x0 + x, y0 + y), (x0 + x + w, y0 + y + h), (40, 40, 40), 2)
            for _ in range(int(rng.integers(3, 8))):
                tx, ty = (int(v) for v in rng.integers(8, span - 8, 2))
                cv2.circle(img, (x0 + tx, y0 + ty), int(rng.integers(5, 12)), (40, 100, 40), -1)
    return img


class SceneTrack(VideoStreamTrack):
    """A synthetic camera: ``width`` x ``height`` (even, at least 196x192) at ``fps``.

    ``sent_ms`` maps the last ``keep_frames`` frame numbers to the epoch ms burned into them.
    ``view="drone"`` needs ``position``. Every ``keyframe_interval_ms`` a frame is marked as a
    picture to encode whole, so a relay's new viewers and recorders get a keyframe that often; None
    leaves it to the encoder and to PLIs. aiortc's VP8 encoder honours the mark; its H.264 encoder
    resets every frame's picture type, so with H.264 only PLIs bring keyframes. ``render_in_thread``
    keeps the drawing (1-2 ms at 720p) off the event loop.
    """

    kind = "video"

    def __init__(self, label: str, *, width: int = 1280, height: int = 720, fps: float = 30.0,
                 view: View = "street", position: DronePosition | None = None, keep_frames: int = 900,
                 keyframe_interval_ms: int | None = None, render_in_thread: bool = True, seed: int = 1) -> None:
        super().__init__()
        if width % 2 or height % 2 or code_box(height, width) is None:
            raise ValueError(f"{width}x{height}: a scene needs even sides of at least 196x192")
        if not 0 < fps <= 120:
            raise ValueError(f"fps {fps} out of range")
        if view == "drone" and position is None:
            raise ValueError("a drone view needs a position callable")
        if keep_frames < 1:
            raise ValueError("keep_frames must be at least 1")
        self.label = label
        self.width, self.height, self.fps = width, height, fps
        self.view = view
        self.position = position
        self.keep_frames = keep_frames
        self.keyframe_interval_ms = keyframe_interval_ms
        self.render_in_thread = render_in_thread
        self.sent_ms: dict[int, int] = {}
        self.frames = 0  # frames produced so far; the next frame's number
        self.render_ms = 0.0  # total time spent drawing, to report the cost per frame
        self.pose: tuple[float, float, float] | None = None  # the drone position of the last frame produced
        self._canvas = np.empty((height, width, 3), np.uint8)
        rng = np.random.default_rng(seed)
        self._backdrop = _ground(rng) if view == "drone" else np.concatenate([_street(width, height, rng)] * 2, axis=1)
        self._text_scale = height / 720 * 1.1
        self._last_key_pts: int | None = None
        self._lon_scale: float | None = None  # metres per degree of longitude over those of latitude
        self._t0 = 0.0
        self._pts: int | None = None

    async def next_timestamp(self) -> tuple[int, fractions.Fraction]:
        """aiortc's pacing (wall clock from the first frame) at this track's frame rate, not a fixed 30 fps."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._pts is None:
            self._t0 = time.time()
            self._pts = 0
        else:
            self._pts += int(VIDEO_CLOCK_RATE / self.fps)
            await asyncio.sleep(self._t0 + self._pts / VIDEO_CLOCK_RATE - time.time())
        return self._pts, VIDEO_TIME_BASE

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame_no = self.frames
        self.frames += 1
        pose = self.position() if self.position is not None else (0.0, 0.0, 0.0)  # read on the loop: sim state
        if self.position is not None:
            self.pose = pose
        sent = _now_ms()
        if self.render_in_thread:
            yuv = await asyncio.get_running_loop().run_in_executor(None, self.render, frame_no, sent, pose)
        else:
            yuv = self.render(frame_no, sent, pose)
        self.sent_ms[frame_no] = sent
        self.sent_ms.pop(frame_no - self.keep_frames, None)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts, frame.time_base = pts, time_base
        interval = self.keyframe_interval_ms
        if interval is not None and (self._last_key_pts is None
                                     or (pts - self._last_key_pts) * 1000 >= interval * VIDEO_CLOCK_RATE):
            frame.pict_type = av.video.frame.PictureType.I
            self._last_key_pts = pts
        return frame

    def render(self, frame_no: int, sent_ms: int, pose: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Image:
        """Frame ``frame_no`` as a yuv420p array (``height * 3 / 2`` x ``width``), code included."""
        started = time.perf_counter()
        img = self._canvas
        if self.view == "drone":
            self._draw_ground(img, pose)
        else:
            self._draw_street(img, frame_no)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sent_ms / 1000)) + f".{sent_ms % 1000:03d} UTC"
        lines = [self.label, stamp]
        if self.view == "drone":
            lat, lon, heading = pose
            lines.append(f"{lat:.5f} {lon:.5f} hdg {heading:03.0f}")
        self._draw_text(img, lines)
        draw_code(img, frame_no, sent_ms)
        yuv = np.asarray(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)
        self.render_ms += (time.perf_counter() - started) * 1000
        return yuv

    def _draw_street(self, img: Image, frame_no: int) -> None:
        w, h = self.width, self.height
        seconds = frame_no / self.fps
        offset = int(seconds * w / 8) % w  # the street passes at an eighth of the frame per second
        img[...] = self._backdrop[:, offset : offset + w]
        car_w, car_h = w // 6, h // 10
        x = w - int(seconds * w / 4) % (w + car_w)  # the oncoming car crosses in four seconds
        y = int(h * 0.80)
        cv2.rectangle(img, (x, y - car_h), (x + car_w, y), (40, 40, 200), -1)
        cv2.rectangle(img, (x + car_w // 5, y - car_h - car_h // 2), (x + car_w * 4 // 5, y - car_h), (60, 60, 180), -1)
        for wx in (x + car_w // 5, x + car_w * 4 // 5):
            cv2.circle(img, (wx, y), car_h // 3, (20, 20, 20), -1)

    def _draw_ground(self, img: Image, pose: tuple[float, float, float]) -> None:
        lat, lon, heading = pose
        if self._lon_scale is None:  # fixed at the first position, or flying north would also slide east
            self._lon_scale = math.cos(math.radians(lat))
        # Texture px from the position, north up in the texture; the camera turns with the drone.
        cx = lon * _METRES_PER_DEGREE * self._lon_scale / _GROUND_M_PER_PX
        cy = -lat * _METRES_PER_DEGREE / _GROUND_M_PER_PX
        scale = _FOOTPRINT_M / self.width / _GROUND_M_PER_PX
        a = math.radians(heading)
        cos, sin = math.cos(a) * scale, math.sin(a) * scale
        hw, hh = self.width / 2, self.height / 2
        m = np.array([[cos, -sin, (cx - (cos * hw - sin * hh)) % _GROUND_TILE],
                      [sin, cos, (cy - (sin * hw + cos * hh)) % _GROUND_TILE]])
        cv2.warpAffine(self._backdrop, m, (self.width, self.height), dst=img,
                       flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_WRAP)
        arm = self.height // 20
        center = (self.width // 2, self.height // 2)
        cv2.line(img, (center[0] - arm, center[1]), (center[0] + arm, center[1]), (0, 255, 255), 2)
        cv2.line(img, (center[0], center[1] - arm), (center[0], center[1] + arm), (0, 255, 255), 2)

    def _draw_text(self, img: Image, lines: list[str]) -> None:
        scale = self._text_scale
        thickness = max(int(2 * scale), 1)
        step = int(40 * scale)
        top = self.height - step * len(lines) - step // 4
        width = max(cv2.getTextSize(line, _FONT, scale, thickness)[0][0] for line in lines) + step
        band = img[top:, : min(width, self.width)]
        np.floor_divide(band, 3, out=band)  # a dark band under the text keeps it legible on any scene
        y = top + step * 3 // 4 + step // 8
        for line in lines:
            cv2.putText(img, line, (step // 2, y), _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
            y += step
