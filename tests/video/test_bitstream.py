"""video.bitstream against real libvpx/libx264 output and against broken input (which must never raise)."""

from __future__ import annotations

from fractions import Fraction
from typing import cast

import av
import numpy as np
import pytest
from av.video.codeccontext import VideoCodecContext

from video.bitstream import (
    h264_nal_units,
    h264_parameter_sets,
    h264_size,
    is_keyframe,
    is_well_formed,
    vp8_size,
)


def encode(
    encoder: str, width: int, height: int, count: int, options: dict[str, str], gop: int = 10, noise: bool = False
) -> list[bytes]:
    """``count`` moving frames (30 fps) through a real encoder, a key frame every ``gop``; noise makes them big."""
    context = cast(VideoCodecContext, av.CodecContext.create(encoder, "w"))
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.time_base = Fraction(1, 30)
    context.framerate = Fraction(30)
    context.gop_size = gop
    context.options = options
    out: list[bytes] = []
    ramp = np.arange(width, dtype=np.uint16)
    rng = np.random.default_rng(6)
    for index in range(count):
        row = ((ramp + index * 7) % 256).astype(np.uint8)
        picture = np.repeat(np.repeat(row[None, :, None], height, axis=0), 3, axis=2)
        if noise:
            picture = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        out += [bytes(packet) for packet in context.encode(frame)]
    out += [bytes(packet) for packet in context.encode(None)]
    return out


VP8_OPTIONS = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
X264_FAST = {"preset": "ultrafast", "tune": "zerolatency"}  # constrained baseline
X264_HIGH = {"preset": "veryfast", "tune": "zerolatency", "profile": "high"}  # high profile SPS fields


@pytest.fixture(scope="module")
def vp8_frames() -> list[bytes]:
    return encode("libvpx", 320, 240, 12, VP8_OPTIONS)


@pytest.fixture(scope="module")
def h264_frames() -> list[bytes]:
    return encode("libx264", 320, 240, 12, X264_FAST)


def test_vp8_keyframes_and_size_from_real_encoder(vp8_frames: list[bytes]) -> None:
    assert [is_keyframe("VP8", f) for f in vp8_frames] == [i % 10 == 0 for i in range(12)]
    assert vp8_size(vp8_frames[0]) == (320, 240)
    assert vp8_size(vp8_frames[1]) is None  # inter frames carry no size
    assert all(is_well_formed("VP8", f) for f in vp8_frames)
    assert is_keyframe("vp8", vp8_frames[0])  # codec names as in SDP, any case


def test_h264_keyframes_with_four_and_three_byte_start_codes(h264_frames: list[bytes]) -> None:
    assert [is_keyframe("H264", f) for f in h264_frames] == [i % 10 == 0 for i in range(12)]
    assert h264_frames[0].startswith(b"\x00\x00\x00\x01")
    three_byte = h264_frames[0].replace(b"\x00\x00\x00\x01", b"\x00\x00\x01")
    assert is_keyframe("H264", three_byte)
    assert h264_size(three_byte) == (320, 240)
    assert all(is_well_formed("H264", f) for f in h264_frames)
    params = h264_parameter_sets(h264_frames[0])
    assert params is not None and [nal[0] & 0x1F for nal in h264_nal_units(params)] == [7, 8]
    assert h264_parameter_sets(h264_frames[1]) is None


@pytest.mark.parametrize(
    ("width", "height", "options"),
    [(320, 240, X264_FAST), (200, 150, X264_FAST), (200, 150, X264_HIGH), (1280, 720, X264_HIGH)],
    ids=["baseline", "cropped", "high-cropped", "high-720p"],
)
def test_h264_size_from_sps(width: int, height: int, options: dict[str, str]) -> None:
    first = encode("libx264", width, height, 1, options)[0]
    assert h264_size(first) == (width, height)


VP8_KEY = bytes.fromhex("5003009d012a4001f000") + bytes(40)  # tag (first partition 26 bytes), start code, 320x240


@pytest.mark.parametrize(
    ("codec", "data", "keyframe", "well_formed"),
    [
        ("VP8", VP8_KEY, True, True),
        ("VP8", b"", False, False),
        ("VP8", b"\x50", False, False),
        ("VP8", VP8_KEY[:9], False, False),  # cut inside the key frame header
        ("VP8", VP8_KEY[:3] + b"\x9d\x01\x2b" + VP8_KEY[6:], False, False),  # wrong start code
        ("VP8", b"\x51\x03\x00" + bytes(40), False, True),  # inter frame, first partition fits
        ("VP8", b"\xf1\xff\xff" + bytes(40), False, False),  # inter frame, first partition larger than the frame
        ("H264", b"", False, False),
        ("H264", b"\x00\x00\x01", False, False),  # start code and nothing else
        ("H264", b"\x00\x00\x00\x01\x65\x88", True, True),  # IDR slice
        ("H264", b"\x00\x00\x01\x41\x9a", False, True),  # non-IDR slice
        ("H264", b"\x00\x00\x01\xe5\x88", False, False),  # forbidden_zero_bit set
        ("H264", b"\x00\x00\x01\x67\x42", False, False),  # SPS alone: no picture
        ("H264", b"\x65\x88\x84\x00", False, False),  # no start code (AVCC-style data)
        ("VP9", VP8_KEY, False, False),  # unknown codec
    ],
)
def test_table(codec: str, data: bytes, keyframe: bool, well_formed: bool) -> None:
    assert is_keyframe(codec, data) is keyframe
    assert is_well_formed(codec, data) is well_formed


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x00\x01\x67",  # SPS header only
        b"\x00\x00\x01\x67\x64\x00\x1f",  # cut after profile/level
        b"\x00\x00\x01\x67\x42\x00\x1f" + bytes(30),  # all-zero exp-Golomb: runs off
        bytes.fromhex("000000016742c00dda05"),  # a real SPS cut before its size fields end
        b"\x00\x00\x01\x41\x9a\x00",  # no SPS at all
    ],
)
def test_h264_size_of_broken_sps_is_none(data: bytes) -> None:
    assert h264_size(data) is None


def test_vp8_zero_size_is_none() -> None:
    assert vp8_size(bytes.fromhex("5003009d012a00000000") + bytes(40)) is None


def test_random_bytes_never_raise() -> None:
    rng = np.random.default_rng(6)
    for length in [*range(0, 64), 300, 4096]:
        for _ in range(20):
            data = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
            for codec in ("VP8", "H264", "AV1"):
                is_keyframe(codec, data)
                is_well_formed(codec, data)
            vp8_size(data)
            h264_size(b"\x00\x00\x01\x67" + data)
            h264_parameter_sets(data)
