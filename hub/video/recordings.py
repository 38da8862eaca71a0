"""The streams' recordings: a segment recorder per relayed stream, an incident's segments, hourly pruning.

Recorders are opened by the relay (its sink factory) and closed by it when a stream ends; the counts of
those that ended are kept for the metrics. Segment files live under `video_recordings_dir`, one folder a
stream, and are removed after `video_retention_days`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from hub.config import Settings
from hub.ingest.live import LiveState
from hub.storage.video import StreamRecord, VideoStore
from hub.video.ports import Incidents
from video.errors import VideoError
from video.frames import FrameSink
from video.recording import SegmentRecorder, list_segments, prune_recordings
from video.service import StreamInfo

__all__ = ["PRUNE_EVERY_S", "Recordings"]

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0


class Recordings:
    """Each stream's `SegmentRecorder` while it is relayed, and the segments on disk afterwards."""

    def __init__(self, settings: Settings, store: VideoStore, live: LiveState, incidents: Incidents,
                 clock: Callable[[], int]) -> None:
        self.settings = settings
        self.store = store
        self.live = live
        self.incidents = incidents
        self.clock = clock
        self.root: Path = settings.video_recordings_dir or settings.data_dir / "recordings"
        self.recorders: dict[str, SegmentRecorder] = {}  # by stream id, until the relay closes them
        self.recorded: Counter[str] = Counter()  # recorder counters of the streams that ended

    def open(self, info: StreamInfo) -> FrameSink | None:
        """The relay's sink factory: a recorder for a new stream, or None (the stream is relayed unrecorded)."""
        try:
            recorder = SegmentRecorder(self.root, info.stream_id, segment_s=self.settings.video_segment_s)
        except (OSError, VideoError):
            log.exception("stream %s: recorder not opened; the stream is relayed unrecorded", info.stream_id)
            return None
        self.recorders[info.stream_id] = recorder
        return recorder

    def stream_ended(self, stream_id: str) -> None:
        """The relay has closed the stream's recorder: its counts are final."""
        recorder = self.recorders.pop(stream_id, None)
        if recorder is not None:
            self.recorded.update(recorder.stats())

    async def close(self) -> None:
        """Close the recorders the relay did not (closing twice is safe)."""
        for recorder in self.recorders.values():
            await asyncio.to_thread(recorder.close)
        self.recorders.clear()

    async def of_incident(self, incident_id: str) -> dict[str, Any]:
        """Segments of the streams of the incident's units within their dispatched-to-cleared windows, and of
        streams started for the incident itself (an SOS unit's camera, not assigned to its own SOS incident)."""
        incident = await self.incidents.get(incident_id)
        windows: list[tuple[StreamRecord, int, int | None]] = [
            (s, s.started_at, s.ended_at) for s in await self.store.streams_of_incident(incident_id)]
        for a in incident["assignments"]:
            unit = self.live.units.get(a["unit_id"])
            to_ms = a["cleared"] or a["cancelled"] or incident["closed_at"]
            if unit is not None and unit.devices:
                windows += [(replace(s, unit_id=a["unit_id"]), a["dispatched"], to_ms) for s in
                            await self.store.streams_of_devices(list(unit.devices), a["dispatched"], to_ms)]
        found: dict[str, dict[str, Any]] = {}
        for stream, from_ms, to_ms in windows:
            for seg in await asyncio.to_thread(list_segments, self.root, stream.stream_id):
                if seg.end_ms >= from_ms and (to_ms is None or seg.start_ms <= to_ms):
                    found[str(seg.path)] = {
                        "stream_id": stream.stream_id, "device_id": stream.device_id, "unit_id": stream.unit_id,
                        "path": Path(seg.path).relative_to(self.root).as_posix(),
                        "start_ms": seg.start_ms, "end_ms": seg.end_ms, "frames": seg.frames,
                        "complete": seg.complete}
        return {"incident_id": incident_id, "recordings": sorted(found.values(),
                                                                 key=lambda s: (s["start_ms"], s["path"]))}

    async def prune(self, now_ms: int | None = None) -> int:
        """Remove segments older than `video_retention_days`; how many went."""
        removed = await asyncio.to_thread(prune_recordings, self.root, self.settings.video_retention_days * 86_400,
                                          self.clock() if now_ms is None else now_ms)
        if removed:
            log.info("video retention removed %d segment(s)", removed)
        return removed

    async def prune_loop(self) -> None:
        while True:
            try:
                await self.prune()
            except Exception:
                log.exception("recording prune failed; will retry")
            await asyncio.sleep(PRUNE_EVERY_S)
