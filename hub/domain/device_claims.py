"""What a device's report may change in an incident: the hub's rules for milestones and SOS positions.

A device tells the hub when it acknowledged a dispatch, when it made contact, where it pressed SOS; the
detectors tell when it left and arrived, on the device's clock. A wrong clock, a replayed message or a
hostile device must not rewrite the record, so each claim is checked here before it becomes an event:

- an ``ack`` is timed between its dispatch and the moment the hub received it; a device time outside
  that (a clock behind, or ahead beyond a small tolerance) is replaced by the hub's receive time, so a
  unit that did acknowledge is never escalated and no time before the dispatch is ever recorded;
- a ``contact`` before the call was received or before the unit's dispatch is refused, and a second
  contact never moves the first (the first one the officer pressed stands);
- a detected departure or arrival may move an existing one earlier (a late store-and-forward batch)
  by at most ``max_shift_ms``; a larger move is refused, and nothing detected lies before the dispatch;
- an SOS position farther than ``max_distance_m`` from the device's fresh last fix is replaced by it, and
  an SOS dated after its receipt, or more than ``max_shift_ms`` before it, is timed at its receipt.

Every function returns a `Verdict` (the time to record, or None to ignore, and the reason) and
changes nothing: the caller counts, logs and notes it. Times are epoch milliseconds, passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from devices.payloads import Fix
from geo.geodesy import haversine_m
from hub.domain.incident import Assignment, Incident

__all__ = ["ACK_AHEAD_TOLERANCE_MS", "DEVICE_NOTE_CAP", "Coalescer", "SosPlace", "Verdict", "ack_verdict",
           "contact_verdict", "detected_verdict", "sos_place", "sos_received_verdict"]

# A device clock a little ahead of the hub's is normal (NTP, radio latency); beyond this the ack is
# timed by the hub. Small enough not to move an SLA, large enough not to flag every device.
ACK_AHEAD_TOLERANCE_MS: Final = 2_000
# Log entries a device (or a detector reading its fixes) may cause in one incident: past it, further
# ones are counted and logged by the hub, not written into the incident's record.
DEVICE_NOTE_CAP: Final = 50


@dataclass(frozen=True)
class Verdict:
    """`ts`: the time to record (None: ignore the claim); `reason`: why it was corrected or ignored."""

    ts: int | None
    reason: str | None = None
    detail: str = ""

    @property
    def corrected(self) -> bool:
        return self.ts is not None and self.reason is not None


def ack_verdict(dispatched_ms: int, device_ms: int, received_ms: int) -> Verdict:
    """The time of an acknowledgment: the device's, when it lies between the dispatch and the hub's receipt."""
    at_receipt = max(received_ms, dispatched_ms)
    if device_ms < dispatched_ms:
        return Verdict(at_receipt, "ack_ts_before_dispatch",
                       f"the device dated its ack {device_ms}, {dispatched_ms - device_ms} ms before the dispatch "
                       f"at {dispatched_ms}: recorded at the hub's receipt {at_receipt}")
    if device_ms > received_ms + ACK_AHEAD_TOLERANCE_MS:
        return Verdict(at_receipt, "ack_ts_after_receipt",
                       f"the device dated its ack {device_ms}, {device_ms - received_ms} ms after the hub received "
                       f"it: recorded at the hub's receipt {at_receipt}")
    return Verdict(device_ms)


def contact_verdict(incident: Incident, unit_id: str, device_ms: int) -> Verdict:
    """A unit's `contact`: not before the call, not before its dispatch, and never moving the first one."""
    received = incident.received
    if device_ms < received:
        return Verdict(None, "contact_ts_before_received",
                       f"contact dated {device_ms}, {received - device_ms} ms before the call was received "
                       f"at {received}: ignored")
    a = incident.assignment(unit_id)
    if a is None:
        return Verdict(device_ms)  # the state machine refuses it with its own reason
    dispatched = a.marks["dispatched"].ts
    if device_ms < dispatched:
        return Verdict(None, "contact_ts_before_dispatch",
                       f"contact dated {device_ms}, before the unit's dispatch at {dispatched}: ignored")
    first = a.marks.get("contacted")
    if first is not None and device_ms < first.ts:
        return Verdict(None, "contact_would_move",
                       f"a second contact dated {device_ms} would move the first at {first.ts}: ignored")
    return Verdict(device_ms)


def detected_verdict(assignment: Assignment | None, milestone: str, ts: int, max_shift_ms: int) -> Verdict:
    """A detected `departed`/`arrived`: not before the dispatch; an earlier one moves the mark by at most the bound."""
    if assignment is None:
        return Verdict(ts)  # the state machine refuses it
    dispatched = assignment.marks["dispatched"].ts
    if ts < dispatched:
        return Verdict(None, "milestone_before_dispatch",
                       f"{milestone} detected at {ts}, before the dispatch at {dispatched}: ignored")
    mark = assignment.marks.get(milestone)
    if mark is not None and mark.ts - ts > max_shift_ms:
        return Verdict(None, "milestone_shift_too_large",
                       f"{milestone} detected at {ts} would move the recorded {mark.ts} earlier by "
                       f"{(mark.ts - ts) / 1000:g} s (at most {max_shift_ms / 1000:g} s): ignored")
    return Verdict(ts)


@dataclass(frozen=True)
class SosPlace:
    """Where an SOS is placed: `replaced` when the device's own position was refused (`distance_m` off)."""

    lat: float | None
    lon: float | None
    replaced: bool = False
    distance_m: float = 0.0


def sos_place(lat: float | None, lon: float | None, last_fix: Fix | None, now_ms: int, stale_after_ms: int,
              max_distance_m: float) -> SosPlace:
    """The SOS position: the event's own unless a fresh last fix lies farther than `max_distance_m` from it.

    Without its own position the SOS takes the last fix, fresh or not (better than none)."""
    if lat is None or lon is None:
        return SosPlace(last_fix.lat, last_fix.lon) if last_fix is not None else SosPlace(None, None)
    if last_fix is None or now_ms - last_fix.ts > stale_after_ms:
        return SosPlace(lat, lon)
    distance = haversine_m(lat, lon, last_fix.lat, last_fix.lon)
    if distance > max_distance_m:
        return SosPlace(last_fix.lat, last_fix.lon, True, distance)
    return SosPlace(lat, lon)


def sos_received_verdict(device_ms: int, received_ms: int, max_shift_ms: int) -> Verdict:
    """When the SOS call was received: when its button was pressed, unless the device dates it after the hub's
    receipt or more than `max_shift_ms` before it; then at the receipt (only a backdated one is flagged)."""
    if received_ms - max_shift_ms <= device_ms <= received_ms:
        return Verdict(device_ms)
    if device_ms < received_ms - max_shift_ms:
        return Verdict(received_ms, "sos_ts_backdated",
                       f"the device dated it {device_ms}, received at {received_ms}: timed at its receipt")
    return Verdict(received_ms)


class Coalescer:
    """At most one report per key per `window_ms`; the reports held back are counted into the next one."""

    def __init__(self, window_ms: int, max_keys: int = 10_000) -> None:
        self.window_ms = window_ms
        self.max_keys = max_keys
        self._last: dict[str, int] = {}  # key -> time of its last report
        self._held: dict[str, int] = {}  # key -> reports held back since

    def offer(self, key: str, now_ms: int) -> int | None:
        """None: hold this one back; else report it now, with the number held back since the last report."""
        last = self._last.get(key)
        if last is not None and now_ms - last < self.window_ms:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if last is None and len(self._last) >= self.max_keys:
            self._forget(now_ms)
        self._last[key] = now_ms
        return self._held.pop(key, 0)

    def held(self, key: str) -> int:
        return self._held.get(key, 0)

    def forget(self, key: str) -> None:
        """Start `key` over: its next offer is reported at once."""
        self._last.pop(key, None)
        self._held.pop(key, None)

    def due(self, now_ms: int) -> list[tuple[str, int]]:
        """Keys whose held-back reports wait past their window (the flood stopped): report them now."""
        found = [(k, n) for k, n in self._held.items() if now_ms - self._last.get(k, now_ms) >= self.window_ms]
        for key, _ in found:
            del self._held[key]
            self._last[key] = now_ms
        return found

    def _forget(self, now_ms: int) -> None:
        """Keys quiet for a window hold nothing worth keeping (their held-back count was reported or is stale)."""
        for key in [k for k, t in self._last.items() if now_ms - t >= self.window_ms]:
            del self._last[key]
            self._held.pop(key, None)
        while len(self._last) >= self.max_keys:  # all recent: forget the oldest
            key = next(iter(self._last))
            del self._last[key]
            self._held.pop(key, None)
