"""The burned-in frame code: clean round trips, real VP8 round trips, and misreads that must give None."""

from __future__ import annotations

import fractions

import av
import cv2
import numpy as np
import pytest
from aiortc.codecs import depayload, get_decoder, get_encoder
from aiortc.codecs.vpx import MIN_BITRATE
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from sim.framecode import COLS, ROWS, code_box, draw_code, elapsed_ms, read_code

U32 = 2**32 - 1
NOW = 1_795_000_000_123


def _canvas(width: int, height: int, fill: str, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width, channels) if channels else (height, width)
    if fill == "noise":
        return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    return np.full(shape, {"black": 0, "white": 255, "grey": 128}[fill], np.uint8)


@pytest.mark.parametrize(("width", "height", "fill", "channels", "frame_no", "sent_ms"), [
    (320, 240, "black", 3, 0, 0),
    (320, 240, "white", 3, 1, NOW),
    (320, 240, "noise", 3, U32, U32),
    (640, 360, "grey", 3, 123_456_789, NOW),
    (1280, 720, "noise", 3, 2**31, 2**40 + 5),  # only the low 32 bits of the time are kept
    (1920, 1080, "white", 3, 77, NOW),
    (196, 192, "noise", 3, 5, NOW),  # the smallest frame that holds a code
    (320, 240, "noise", 0, 42, NOW),  # a grey-scale picture
    (320, 240, "noise", 4, 43, NOW),  # BGRA
])
def test_round_trip_on_clean_frames(width: int, height: int, fill: str, channels: int, frame_no: int,
                                    sent_ms: int) -> None:
    img = _canvas(width, height, fill, channels)
    draw_code(img, frame_no, sent_ms)
    assert read_code(img) == (frame_no, sent_ms & U32)


@pytest.mark.parametrize(("width", "height", "frame_no", "problem"), [
    (160, 120, 1, "too small"),
    (194, 192, 1, "too small"),
    (320, 240, -1, "32-bit"),
    (320, 240, 2**32, "32-bit"),
])
def test_draw_refuses(width: int, height: int, frame_no: int, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        draw_code(_canvas(width, height, "black"), frame_no, NOW)


def _coded(width: int = 320, height: int = 240, frame_no: int = 1234, fill: str = "noise") -> np.ndarray:
    img = _canvas(width, height, fill)
    draw_code(img, frame_no, NOW)
    return img


def _flip_cell(img: np.ndarray, row: int, col: int) -> np.ndarray:
    box = code_box(img.shape[0], img.shape[1])
    assert box is not None
    x0, y0, cell = box
    out = img.copy()
    region = out[y0 + row * cell : y0 + (row + 1) * cell, x0 + col * cell : x0 + (col + 1) * cell]
    region[...] = 255 - region
    return out


def _set_cell(img: np.ndarray, row: int, col: int, level: int) -> np.ndarray:
    box = code_box(img.shape[0], img.shape[1])
    assert box is not None
    x0, y0, cell = box
    out = img.copy()
    out[y0 + row * cell : y0 + (row + 1) * cell, x0 + col * cell : x0 + (col + 1) * cell] = level
    return out


@pytest.mark.parametrize(("name", "img"), [
    ("blank black", _canvas(320, 240, "black")),
    ("blank white", _canvas(320, 240, "white")),
    ("blank grey", _canvas(640, 360, "grey")),
    ("noise", _canvas(320, 240, "noise", seed=3)),
    ("noise 720p", _canvas(1280, 720, "noise", seed=4)),
    ("too small", _canvas(160, 120, "white")),
    ("top rows cropped", _coded()[6:]),
    ("left columns cropped", _coded()[:, 6:]),
    ("shifted half a cell", np.roll(_coded(), 5, axis=1)),
    ("upside down", _coded()[::-1]),
    ("mirrored", _coded()[:, ::-1]),
    ("inverted", 255 - _coded()),
    ("one data cell flipped", _flip_cell(_coded(), 1, 7)),
    ("one guard cell flipped", _flip_cell(_coded(), 2, 0)),
    ("one data cell grey", _set_cell(_coded(), 3, 12, 128)),
    ("float image", _coded().astype(np.float64)),
    ("one-dimensional", np.zeros(320 * 240, np.uint8)),
])
def test_misreads_give_none(name: str, img: np.ndarray) -> None:
    assert read_code(img) is None, name


@pytest.mark.parametrize(("width", "height", "to_width", "to_height"), [
    (640, 480, 320, 240),  # the geometry scales with the frame: read right
    (1280, 720, 640, 360),
    (1280, 720, 1000, 600),
    (640, 360, 600, 340),
    (320, 240, 640, 480),
    (320, 240, 400, 240),
])
def test_scaled_pictures_read_right_or_not_at_all(width: int, height: int, to_width: int, to_height: int) -> None:
    scaled = cv2.resize(_coded(width, height, frame_no=999), (to_width, to_height), interpolation=cv2.INTER_AREA)
    assert read_code(scaled) in (None, (999, NOW & U32))


def test_every_single_cell_error_is_detected() -> None:
    """No single wrong cell anywhere in the grid yields a number, for many codes: the CRC and guards catch it."""
    rng = np.random.default_rng(11)
    for _ in range(20):
        frame_no, sent = int(rng.integers(0, U32)), int(rng.integers(0, 2**41))
        img = np.zeros((240, 320, 3), np.uint8)
        draw_code(img, frame_no, sent)
        assert read_code(img) == (frame_no, sent & U32)
        for row in range(ROWS):
            for col in range(COLS):
                assert read_code(_flip_cell(img, row, col)) is None, (row, col)


@pytest.mark.parametrize(("width", "height", "bitrate"), [
    (320, 240, MIN_BITRATE),
    (320, 240, 500_000),
    (1280, 720, MIN_BITRATE),
    (1280, 720, 1_500_000),
])
def test_survives_vp8_encode_and_decode(width: int, height: int, bitrate: int) -> None:
    """aiortc's own VP8 encoder (CBR at ``bitrate``) and decoder, over a picture of fresh noise every frame:
    the worst case for the encoder, so the code gets the fewest bits it will ever get."""
    codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90_000, payloadType=96)
    encoder, decoder = get_encoder(codec), get_decoder(codec)
    encoder.target_bitrate = bitrate  # type: ignore[attr-defined]
    rng = np.random.default_rng(5)
    read: list[tuple[int, int] | None] = []
    sent: list[tuple[int, int]] = []
    for k in range(24):
        img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        frame_no, sent_ms = 10_000 + k, NOW + 33 * k
        draw_code(img, frame_no, sent_ms)
        sent.append((frame_no, sent_ms & U32))
        frame = av.VideoFrame.from_ndarray(img, format="bgr24")
        frame.pts, frame.time_base = 3000 * k, fractions.Fraction(1, 90_000)
        payloads, timestamp = encoder.encode(frame)
        data = b"".join(depayload(codec, p) for p in payloads)
        for out in decoder.decode(JitterFrame(data=data, timestamp=timestamp)):
            assert isinstance(out, av.VideoFrame)
            assert (out.width, out.height) == (width, height)
            read.append(read_code(out.to_ndarray(format="bgr24")))
    assert read == sent


@pytest.mark.parametrize(("sent_ms", "now_ms", "elapsed"), [
    (NOW, NOW + 80, 80),
    (NOW, NOW, 0),
    (U32 - 10, U32 + 30, 40),  # the low 32 bits wrapped between send and receipt
])
def test_elapsed_ms(sent_ms: int, now_ms: int, elapsed: int) -> None:
    assert elapsed_ms(sent_ms & U32, now_ms) == elapsed
