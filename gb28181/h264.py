"""H.264 Annex B access units out of an elementary stream that arrives in arbitrary pieces.

The PS demuxer hands over PES payloads, and a PES need not begin or end at a picture boundary (FFmpeg's own
muxer packs pictures back to back). The relay wants one whole picture per frame, so the stream is cut where
H.264 (ITU-T H.264 section 7.4.1.2.3) says a new access unit begins. Pure: no PyAV, no threads.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

__all__ = ["AccessUnit", "AccessUnitSplitter", "starts_access_unit"]

_START = b"\x00\x00\x01"
_AU_START_TYPES = frozenset({6, 7, 8, 9, 14, 15, 16, 17, 18})  # SEI, SPS, PPS, AUD, prefix/subset/reserved
_VCL_TYPES = frozenset({1, 2, 3, 4, 5})
_IDR = 5


@dataclass(frozen=True, slots=True)
class AccessUnit:
    data: bytes  # Annex B: every NAL unit behind a 4-byte start code
    pts: int | None  # 90 kHz, of the PES the access unit began in (None: the stream gave none yet)
    keyframe: bool  # holds an IDR slice


def starts_access_unit(nal: bytes, au_has_picture: bool) -> bool:
    """Whether NAL unit ``nal`` (header byte first) opens a new access unit after the current one."""
    if not au_has_picture or not nal:
        return False
    kind = nal[0] & 0x1F
    if kind in _AU_START_TYPES:
        return True
    # A slice whose first_mb_in_slice is 0 (ue(v) coded as a single 1 bit) is the first of a new picture.
    return kind in _VCL_TYPES and len(nal) > 1 and bool(nal[1] & 0x80)


class AccessUnitSplitter:
    """Feed ES bytes with their PES pts; take whole access units. ``flush`` closes the pending one when the
    caller knows the stream paused at a picture boundary. Bytes before the first start code, and access units
    larger than ``max_bytes``, are dropped and counted in ``drops``."""

    def __init__(self, max_bytes: int = 4 << 20) -> None:
        self.max_bytes = max_bytes
        self.drops: Counter[str] = Counter()
        self._buf = bytearray()  # from the start code of the NAL unit not yet complete
        self._scan = 0  # where to look for the next start code in _buf
        self._nals: list[bytes] = []  # complete NAL units of the current access unit
        self._size = 0
        self._has_picture = False
        self._marks: deque[tuple[int, int]] = deque()  # (stream offset, pts) of PES payloads with a pts
        self._offset = 0  # stream offset of _buf[0]
        self._au_offset = 0  # stream offset where the current access unit began
        self._last_pts: int | None = None

    def push(self, data: bytes, pts: int | None) -> list[AccessUnit]:
        if pts is not None:
            self._marks.append((self._offset + len(self._buf), pts))
            while len(self._marks) > 64:
                self._marks.popleft()
        self._buf += data
        out: list[AccessUnit] = []
        while True:
            at = self._buf.find(_START, self._scan)
            if at < 0:
                self._scan = max(0, len(self._buf) - 2)
                break
            if at > 0 and self._starts_with_code():
                self._complete(bytes(self._buf[3:at]).rstrip(b"\x00"), self._offset, out)
            elif self._buf[:at].strip(b"\x00"):
                self.drops["leading_bytes"] += 1
            del self._buf[:at]
            self._offset += at
            self._scan = 3
        if len(self._buf) > self.max_bytes:
            self._oversize()
        return out

    def flush(self) -> list[AccessUnit]:
        """The stream paused at a picture boundary: the pending NAL unit is complete, and so is the unit."""
        out: list[AccessUnit] = []
        if self._starts_with_code() and len(self._buf) > 3:
            self._complete(bytes(self._buf[3:]).rstrip(b"\x00"), self._offset, out)
            self._offset += len(self._buf)
            self._buf.clear()
            self._scan = 0
        unit = self._take()
        if unit is not None:
            out.append(unit)
        return out

    def reset(self) -> None:
        """Forget everything pending (the stream was cut; what is held would decode as garbage)."""
        self._offset += len(self._buf)
        self._buf.clear()
        self._scan = 0
        self._nals.clear()
        self._size = 0
        self._has_picture = False

    def _starts_with_code(self) -> bool:
        return self._buf[:3] == _START

    def _complete(self, nal: bytes, offset: int, out: list[AccessUnit]) -> None:
        if not nal:
            return
        if starts_access_unit(nal, self._has_picture):
            unit = self._take()
            if unit is not None:
                out.append(unit)
        if not self._nals:
            self._au_offset = offset
        self._nals.append(nal)
        self._size += len(nal) + 4
        self._has_picture = self._has_picture or (nal[0] & 0x1F) in _VCL_TYPES
        if self._size > self.max_bytes:
            self._oversize()

    def _oversize(self) -> None:
        self.drops["oversize_au"] += 1
        self.reset()

    def _take(self) -> AccessUnit | None:
        if not self._has_picture:
            return None
        pts = self._pts_for(self._au_offset)
        keyframe = any((nal[0] & 0x1F) == _IDR for nal in self._nals)
        data = b"".join(b"\x00\x00\x00\x01" + nal for nal in self._nals)
        self._nals.clear()
        self._size = 0
        self._has_picture = False
        return AccessUnit(data, pts, keyframe)

    def _pts_for(self, offset: int) -> int | None:
        # MPEG-2 systems: a PES's PTS belongs to the first access unit that begins in it.
        found: int | None = None
        while self._marks and self._marks[0][0] <= offset:
            found = self._marks.popleft()[1]
        if found is not None:
            self._last_pts = found
        return found if found is not None else self._last_pts
