"""RTP packets of one PS stream back into whole PS chunks (one per RTP timestamp), in order.

UDP may reorder, duplicate and lose packets. A small reorder buffer (bounded in packets and in waiting time)
puts them back in sequence; a packet that never comes is given up, and the chunks it belonged to are dropped
rather than handed to the demuxer half-filled. After a loss the stream resumes at the next chunk that begins
with a pack header. Pure: time is passed in, no sockets.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .ps_pipe import PACK_START
from .rtp import RtpPacket

__all__ = ["FrameAssembler", "PsChunk"]

_BEHIND_LATE = 3000  # further behind than this is not a late packet but a sender that restarted
_AHEAD_MAX = 3000  # further ahead than this is a jump (a restart or a forged packet), not a loss
_WARM_UP_PACKETS = 16  # held at the start to put a reordered beginning right


@dataclass(frozen=True, slots=True)
class PsChunk:
    timestamp: int  # RTP timestamp shared by the chunk's packets
    data: bytes


class FrameAssembler:
    """``push`` packets in any order; take complete chunks in sequence order. ``drops`` counts by reason:
    late, duplicate, seq_jump (packets); lost (packets never received); incomplete_frame, oversize_frame
    (chunks)."""

    def __init__(self, *, reorder_packets: int = 64, reorder_delay: float = 0.08,
                 max_frame_bytes: int = 4 << 20) -> None:
        self.reorder_packets = reorder_packets
        self.reorder_delay = reorder_delay
        self.max_frame_bytes = max_frame_bytes
        self.drops: Counter[str] = Counter()
        self.restarts = 0
        self._expected: int | None = None
        self._warm_until: float | None = None
        self._pending: dict[int, tuple[RtpPacket, float]] = {}
        self._probe: int | None = None
        self._ts: int | None = None
        self._parts: list[bytes] = []
        self._size = 0
        self._broken = False
        self._lost = False

    def push(self, packet: RtpPacket, now: float) -> list[PsChunk]:
        out: list[PsChunk] = []
        if self._expected is None:
            self._expected = packet.sequence
            self._warm_until = now + self.reorder_delay
        if self._warm_until is not None:
            self._warm_up(packet, now, out)
            return out
        ahead = (packet.sequence - self._expected) & 0xFFFF
        if ahead == 0:
            self._in_order(packet, out)
        elif ahead < _AHEAD_MAX:
            if packet.sequence in self._pending:
                self.drops["duplicate"] += 1
            else:
                self._pending[packet.sequence] = (packet, now)
        elif 0x10000 - ahead <= _BEHIND_LATE:
            self.drops["late"] += 1  # or a duplicate of one already delivered: the same to us
        else:
            self._jump(packet, out)
        self._drain(out)
        self._give_up(now, out, force=len(self._pending) > self.reorder_packets)
        return out

    def expire(self, now: float) -> list[PsChunk]:
        """Give up on missing packets waited for longer than ``reorder_delay`` (call it when idle)."""
        out: list[PsChunk] = []
        if self._warm_until is not None and now >= self._warm_until:
            self._warm_until = None
            self._drain(out)
        self._give_up(now, out, force=False)
        return out

    def pending_sequences(self) -> list[int]:
        """Sequence numbers held for reordering (for tests and diagnostics)."""
        return sorted(self._pending)

    def _warm_up(self, packet: RtpPacket, now: float, out: list[PsChunk]) -> None:
        # The first packet to arrive need not be the first sent: hold the first few, start from the lowest.
        assert self._expected is not None
        behind = (self._expected - packet.sequence) & 0xFFFF
        if behind >= _BEHIND_LATE and 0x10000 - behind >= _AHEAD_MAX:
            self.drops["seq_jump"] += 1  # the first packet decides which sender this is
        elif packet.sequence in self._pending:
            self.drops["duplicate"] += 1
        else:
            self._pending[packet.sequence] = (packet, now)
            if 0 < behind < _BEHIND_LATE:
                self._expected = packet.sequence
        if len(self._pending) >= _WARM_UP_PACKETS or now >= (self._warm_until or now):
            self._warm_until = None
            self._drain(out)
            self._give_up(now, out, force=len(self._pending) > self.reorder_packets)

    def _jump(self, packet: RtpPacket, out: list[PsChunk]) -> None:
        # RFC 3550 A.1: believe a jump only when the next packet continues from it.
        if self._probe == packet.sequence:
            self.restarts += 1
            self._pending.clear()
            self._close_frame(out, lost=True)
            self._lost = True
            self._expected = packet.sequence
            self._probe = None
            self._in_order(packet, out)
        else:
            self.drops["seq_jump"] += 1
            self._probe = (packet.sequence + 1) & 0xFFFF

    def _drain(self, out: list[PsChunk]) -> None:
        while self._expected in self._pending:
            packet, _ = self._pending.pop(self._expected)
            self._in_order(packet, out)

    def _give_up(self, now: float, out: list[PsChunk], *, force: bool) -> None:
        while self._pending and self._expected is not None:
            expected = self._expected
            oldest = min(arrived for _, arrived in self._pending.values())
            if not force and now - oldest < self.reorder_delay:
                return
            nearest = min(self._pending, key=lambda seq: (seq - expected) & 0xFFFF)
            self.drops["lost"] += (nearest - expected) & 0xFFFF
            self._broken = self._ts is not None  # the chunk in progress misses packets; it is counted at its end
            self._lost = True
            self._expected = nearest
            self._drain(out)
            force = len(self._pending) > self.reorder_packets

    def _in_order(self, packet: RtpPacket, out: list[PsChunk]) -> None:
        self._expected = (packet.sequence + 1) & 0xFFFF
        if self._ts is not None and packet.timestamp != self._ts:
            self._close_frame(out, lost=False)
        if self._ts is None:
            self._ts = packet.timestamp
            self._broken = self._lost and not packet.payload.startswith(PACK_START)
            if not self._broken:
                self._lost = False
        if not self._broken:
            self._parts.append(packet.payload)
            self._size += len(packet.payload)
            if self._size > self.max_frame_bytes:
                self.drops["oversize_frame"] += 1
                self._broken = True
                self._lost = True
                self._parts.clear()
        if packet.marker:
            self._close_frame(out, lost=False)

    def _close_frame(self, out: list[PsChunk], *, lost: bool) -> None:
        if self._ts is None:
            return
        if lost or self._broken:
            self.drops["incomplete_frame"] += 1
        else:
            out.append(PsChunk(self._ts, b"".join(self._parts)))
        self._ts = None
        self._parts = []
        self._size = 0
        self._broken = False
