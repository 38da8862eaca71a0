"""Encoded video frames as the relay passes them on: no decode, no encode.

An :class:`EncodedFrame` is one whole compressed picture (all its RTP payloads reassembled and
depayloaded), as it came from the publisher. The relay hands each one to every viewer of the stream and
to the stream's :class:`FrameSink` s (the recorder). Sinks are called on the event loop and must not
block it: a sink with slow work queues it and does it in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["CLOCK_RATE", "EncodedFrame", "FrameSink"]

CLOCK_RATE = 90_000  # RTP video clock: timestamps below count 1/90,000 s


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One compressed picture of a stream."""

    codec: str  # MIME subtype as in SDP, upper case: "VP8" or "H264"
    data: bytes  # the codec's bitstream for one picture (VP8 frame / H.264 Annex B access unit)
    # RTP timestamp of the picture, CLOCK_RATE units, counted from the stream's first frame (aiortc re-bases
    # it before the relay sees it); wraps at 2**32.
    timestamp: int
    keyframe: bool  # decodable on its own; a new viewer or a new recording segment starts at one
    received_ms: int  # hub wall clock when its last packet arrived, epoch ms


class FrameSink(Protocol):
    """Something that takes a stream's encoded frames (a recorder)."""

    def write(self, frame: EncodedFrame) -> None: ...

    def close(self) -> None: ...
