"""Recorded segments on disk: where they live, how they are listed and pruned.

Each media file under ``root/{stream_id}/`` has a JSON sidecar (written by :mod:`video.recording`) with the
segment's hub-clock window and frame count; that is what links a recording to an incident's
dispatched-to-cleared window, since the media files' own timestamps start at 0.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from video.errors import VideoError

__all__ = ["CONTAINERS", "BadStreamId", "Segment", "list_segments", "prune_recordings", "stream_dir"]

log = logging.getLogger(__name__)

# codec -> (PyAV codec name, container format, file suffix)
CONTAINERS = {"VP8": ("vp8", "webm", ".webm"), "H264": ("h264", "matroska", ".mkv")}
MEDIA_SUFFIXES = {suffix for _, _, suffix in CONTAINERS.values()}
# Stream ids become directory names: no separators, no "." / "..".
_STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

class BadStreamId(VideoError):
    """A stream id that cannot safely name a recording directory."""

    code = "bad_stream_id"


@dataclass(frozen=True, slots=True)
class Segment:
    """One recorded file and the hub-clock window it covers."""

    path: Path
    start_ms: int  # hub wall clock of its first picture, epoch ms
    end_ms: int  # start_ms + media duration
    frames: int
    codec: str
    complete: bool  # False: still recording, or cut short by a crash or a muxing error


def stream_dir(root: Path | str, stream_id: str) -> Path:
    if not _STREAM_ID.fullmatch(stream_id):
        raise BadStreamId(f"stream id {stream_id[:40]!r} cannot name a recording directory")
    return Path(root) / stream_id


def list_segments(root: Path | str, stream_id: str) -> list[Segment]:
    """The recorded segments of a stream, oldest first; unreadable sidecars are skipped."""
    directory = stream_dir(root, stream_id)
    if not directory.is_dir():
        return []
    segments = [s for s in map(_read_sidecar, directory.glob("*.json")) if s is not None]
    return sorted(segments, key=lambda s: (s.start_ms, s.path.name))


def _read_sidecar(path: Path) -> Segment | None:
    try:
        meta = json.loads(path.read_text())
        return Segment(path.with_name(str(meta["file"])), int(meta["start_ms"]), int(meta["end_ms"]),
                       int(meta["frames"]), str(meta["codec"]), bool(meta["complete"]))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("recording sidecar %s unreadable: %s", path, exc)
        return None


def prune_recordings(root: Path | str, max_age_s: float, now_ms: int) -> int:
    """Delete segments that ended more than ``max_age_s`` before ``now_ms``; returns how many were removed.

    An incomplete segment also needs an old file time, so the one being written right now is never taken.
    Media files without a sidecar (a crash between creating the file and its sidecar) go by file time.
    """
    cutoff_ms = now_ms - int(max_age_s * 1000)
    root = Path(root)
    removed = 0
    if not root.is_dir():
        return 0
    for directory in (d for d in root.iterdir() if d.is_dir() and _STREAM_ID.fullmatch(d.name)):
        described: set[Path] = set()
        for sidecar in directory.glob("*.json"):
            segment = _read_sidecar(sidecar)
            if segment is None:
                continue
            described.add(segment.path)
            if segment.end_ms < cutoff_ms and (segment.complete or _mtime_ms(segment.path) < cutoff_ms):
                with contextlib.suppress(FileNotFoundError):
                    segment.path.unlink()
                sidecar.unlink(missing_ok=True)
                removed += 1
        for media in directory.iterdir():
            if media.suffix in MEDIA_SUFFIXES and media not in described and _mtime_ms(media) < cutoff_ms:
                media.unlink(missing_ok=True)
                removed += 1
        with contextlib.suppress(OSError):  # not empty (or already gone): keep it
            directory.rmdir()
    return removed


def _mtime_ms(path: Path) -> int:
    try:
        return int(path.stat().st_mtime * 1000)
    except FileNotFoundError:
        return 0
