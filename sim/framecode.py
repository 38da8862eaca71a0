"""A machine-readable code burned into video frames: frame number and send time.

A simulated camera draws the code into each picture before it is encoded; whoever decodes the
stream reads it back and knows which frame it holds and when it was sent, so sender-to-viewer
latency and lost or repeated frames can be measured after any number of lossy hops.

The code is a grid of ``ROWS`` x ``COLS`` square cells at the frame's top-left corner, one bit per
cell, black (0) or white (1). Each row starts with the guard cells white-black and ends with
black-white, which give the reader its black and white levels and reveal a frame that was cropped,
scaled or shifted. The 80 data cells hold the 32-bit frame number, the low 32 bits of the send time
(epoch ms) and a CRC-16 over both. Cells are big (a 24th of the frame's height) and only their
middle is read, so the code survives VP8 at aiortc's bitrates (250 kbit/s to 1.5 Mbit/s) from
320x240 to 1280x720. A misread gives ``None``, never a wrong number: the guards, a minimum contrast,
cells that must be clearly black or white, and the CRC all have to agree.

Pure: numpy only, no I/O.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = ["COLS", "ROWS", "code_box", "draw_code", "elapsed_ms", "read_code"]

ROWS: Final = 4
COLS: Final = 24
_GUARD_HEAD: Final = (1, 0)  # white, black
_GUARD_TAIL: Final = (0, 1)  # black, white
_DATA_COLS: Final = COLS - len(_GUARD_HEAD) - len(_GUARD_TAIL)
_DATA_BITS: Final = ROWS * _DATA_COLS  # 80: 32 frame number + 32 send time + 16 CRC
_MIN_CELL: Final = 8  # px; smaller cells do not survive a 4x4 DCT at low bitrates
_MIN_CONTRAST: Final = 64.0  # white minus black guard level, 0..255; below it the picture holds no code
_MARGIN: Final = 0.25  # a data cell within this share of the contrast around the midpoint is unreadable
_U32: Final = 0xFFFF_FFFF

Image = npt.NDArray[np.uint8]


def code_box(height: int, width: int) -> tuple[int, int, int] | None:
    """Where the code sits in a ``height`` x ``width`` frame: ``(x0, y0, cell)``, or None if it does not fit."""
    cell = height // (ROWS * 6)
    cell -= cell % 2  # even, so cells line up with the 2x2 chroma blocks of yuv420p
    margin = max(cell // 2, 4)
    if cell < _MIN_CELL or margin + COLS * cell > width or margin + ROWS * cell > height:
        return None
    return margin, margin, cell


def _crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _payload(frame_no: int, sent_low: int) -> bytes:
    return frame_no.to_bytes(4, "big") + sent_low.to_bytes(4, "big")


def _bits(frame_no: int, sent_low: int) -> list[int]:
    payload = _payload(frame_no, sent_low)
    value = int.from_bytes(payload + _crc16(payload).to_bytes(2, "big"), "big")
    return [(value >> (_DATA_BITS - 1 - k)) & 1 for k in range(_DATA_BITS)]


def draw_code(img: Image, frame_no: int, sent_ms: int) -> None:
    """Burn ``frame_no`` (0 .. 2**32-1) and the low 32 bits of ``sent_ms`` into ``img`` in place.

    ``img`` is an ``H x W x C`` (BGR, RGB...) or ``H x W`` uint8 array; raises ValueError when the
    frame is too small to hold a readable code (under 196x192).
    """
    if not 0 <= frame_no <= _U32:
        raise ValueError(f"frame number {frame_no} is not a 32-bit unsigned integer")
    box = code_box(img.shape[0], img.shape[1])
    if box is None:
        raise ValueError(f"a {img.shape[1]}x{img.shape[0]} frame is too small for the frame code")
    x0, y0, cell = box
    data = iter(_bits(frame_no, sent_ms & _U32))
    for row in range(ROWS):
        cells = (*_GUARD_HEAD, *(next(data) for _ in range(_DATA_COLS)), *_GUARD_TAIL)
        levels = np.repeat(np.array(cells, dtype=np.uint8) * 255, cell)
        y = y0 + row * cell
        strip = img[y : y + cell, x0 : x0 + COLS * cell]
        strip[...] = levels.reshape((1, -1, 1) if img.ndim == 3 else (1, -1))


def _cell_levels(img: Image, x0: int, y0: int, cell: int) -> npt.NDArray[np.float64]:
    """The mean brightness of the middle half of every cell, ``ROWS x COLS``."""
    grid = img[y0 : y0 + ROWS * cell, x0 : x0 + COLS * cell]
    if grid.ndim == 3:
        grid = grid.mean(axis=2, dtype=np.float64)  # black and white are grey in every channel order
    cells = np.asarray(grid, dtype=np.float64).reshape(ROWS, cell, COLS, cell)
    lo, hi = cell // 4, cell - cell // 4
    levels: npt.NDArray[np.float64] = cells[:, lo:hi, :, lo:hi].mean(axis=(1, 3))
    return levels


def read_code(img: npt.NDArray[Any]) -> tuple[int, int] | None:
    """``(frame_no, sent_ms & 0xFFFFFFFF)`` read from ``img``, or None where no valid code is found.

    Any array is accepted; only an ``H x W`` or ``H x W x C`` uint8 picture can hold a code.
    """
    if img.ndim not in (2, 3) or img.dtype != np.uint8:
        return None
    box = code_box(img.shape[0], img.shape[1])
    if box is None:
        return None
    levels = _cell_levels(img, *box)
    head, tail = len(_GUARD_HEAD), len(_GUARD_TAIL)
    guards = np.concatenate([levels[:, :head], levels[:, COLS - tail :]], axis=1)
    pattern = np.array([*_GUARD_HEAD, *_GUARD_TAIL], dtype=bool)
    white = guards[:, pattern]
    black = guards[:, ~pattern]
    contrast = float(white.min() - black.max())  # every white guard brighter than every black one
    if contrast < _MIN_CONTRAST:
        return None
    mid = (float(white.mean()) + float(black.mean())) / 2
    data = levels[:, head : COLS - tail].ravel()
    if np.any(np.abs(data - mid) < _MARGIN * contrast):
        return None
    value = 0
    for bit in data > mid:
        value = (value << 1) | int(bit)
    raw = value.to_bytes(_DATA_BITS // 8, "big")
    if _crc16(raw[:8]) != int.from_bytes(raw[8:], "big"):
        return None
    return int.from_bytes(raw[:4], "big"), int.from_bytes(raw[4:8], "big")


def elapsed_ms(sent_low: int, now_ms: int) -> int:
    """Milliseconds from a code's send time (its low 32 bits) to ``now_ms``; right for gaps under ~24 days."""
    return ((now_ms & _U32) - sent_low) & _U32
