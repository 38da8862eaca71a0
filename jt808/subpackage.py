"""Sub-packaged messages put back together.

A long message is sent as packets 1..n with consecutive serial numbers, each header carrying n and its index;
so the serial of packet 1 (serial - index + 1) together with the phone, message id and n names the set. Parts may
come in any order; a duplicate is dropped. The sets waiting are bounded in number (the oldest is evicted) and in
time (:meth:`Reassembler.expire`); what was missing is reported, so a 2019 gateway can ask for it again (0x8003).
Pure: time is passed in.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

from jt808.errors import Jt808Error
from jt808.header import Packet

__all__ = ["Expired", "Reassembler"]

_Key = tuple[str, int, int, int]  # phone, message id, packet count, serial of packet 1


@dataclass(frozen=True, slots=True)
class Expired:
    """A set given up: what the gateway needs to ask for the missing packets again."""

    phone: str
    msg_id: int
    first_serial: int
    missing: tuple[int, ...]  # packet indexes, from 1
    reason: str  # "timeout" or "too_many_pending"


@dataclass(slots=True)
class _Pending:
    parts: dict[int, bytes]
    started: float


class Reassembler:
    """``push`` sub-packages; a whole message comes out when its last part arrives. ``drops`` counts by reason:
    duplicate, too_many_parts (packets); timeout, too_many_pending (sets)."""

    def __init__(self, *, max_pending: int = 64, timeout: float = 30.0, max_parts: int = 256) -> None:
        self.max_pending = max_pending
        self.timeout = timeout
        self.max_parts = max_parts
        self.drops: Counter[str] = Counter()
        self._pending: dict[_Key, _Pending] = {}  # insertion order is age order

    @property
    def pending(self) -> int:
        return len(self._pending)

    def push(self, packet: Packet, now: float) -> tuple[Packet | None, list[Expired]]:
        """A packet in; the reassembled packet (header of part 1 without sub-package fields) when complete,
        and the sets evicted to make room. A packet that is not a sub-package comes straight back.

        Raises :class:`Jt808Error` "duplicate" or "too_many_parts" for a packet that is dropped."""
        header = packet.header
        if header.packet_count is None or header.packet_index is None:
            return packet, []
        count, index = header.packet_count, header.packet_index
        if count > self.max_parts:
            self.drops["too_many_parts"] += 1
            raise Jt808Error("too_many_parts", f"{count} parts, at most {self.max_parts}")
        key = (header.phone, header.msg_id, count, (header.serial - index + 1) & 0xFFFF)
        evicted: list[Expired] = []
        pending = self._pending.get(key)
        if pending is None:
            while len(self._pending) >= self.max_pending:
                evicted.append(self._give_up(next(iter(self._pending)), "too_many_pending"))
            pending = self._pending[key] = _Pending({}, now)
        if index in pending.parts:
            self.drops["duplicate"] += 1
            raise Jt808Error("duplicate", f"packet {index} of {count}, serial {header.serial}")
        pending.parts[index] = packet.body
        if len(pending.parts) < count:
            return None, evicted
        del self._pending[key]
        body = b"".join(pending.parts[i] for i in range(1, count + 1))
        whole = replace(header, serial=key[3], packet_count=None, packet_index=None)
        return Packet(whole, body), evicted

    def expire(self, now: float) -> list[Expired]:
        """Give up on the sets older than ``timeout`` (call it now and then, e.g. once a second)."""
        old = [key for key, pending in self._pending.items() if now - pending.started >= self.timeout]
        return [self._give_up(key, "timeout") for key in old]

    def _give_up(self, key: _Key, reason: str) -> Expired:
        pending = self._pending.pop(key)
        self.drops[reason] += 1
        phone, msg_id, count, first = key
        missing = tuple(i for i in range(1, count + 1) if i not in pending.parts)
        return Expired(phone, msg_id, first, missing, reason)
