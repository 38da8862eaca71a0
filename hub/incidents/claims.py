"""Device claims the hub's rules ignored or corrected: counted by reason, logged, and noted in the incident.

The rules themselves are pure (:mod:`hub.domain.device_claims`); this module turns a verdict into the events
written and keeps the count (`ignored`) the metrics show. Notes from devices are capped per incident
(`DEVICE_NOTE_CAP`): beyond it they are only counted, so a chatty device cannot grow the log.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Sequence

from hub.domain.device_claims import DEVICE_NOTE_CAP, Verdict
from hub.domain.events import Event, Noted
from hub.domain.incident import DEVICE_SOURCES, Incident

__all__ = ["DeviceClaims"]

log = logging.getLogger(__name__)


class DeviceClaims:
    def __init__(self, clock: Callable[[], int]) -> None:
        self.clock = clock
        self.ignored: Counter[str] = Counter()  # device claims ignored or corrected, by reason

    def count(self, reason: str) -> None:
        self.ignored[reason] += 1

    def ignored_note(self, reason: str, incident_id: str, unit_id: str | None, detail: str, *,
                     ts: int | None = None, source: str = "device") -> list[Event]:
        """Count and log a device claim the rules ignored or corrected; the note that says so in the incident."""
        self.count(reason)
        log.info("incident %s: %s (%s)", incident_id, detail, reason)
        return [Noted(ts=self.clock() if ts is None else ts, source=source, unit_id=unit_id,
                      text=f"{detail} [{reason}]")]

    def verdict_events(self, verdict: Verdict, incident: Incident, unit_id: str | None, prefix: str,
                       make: Callable[[int], Event], *, source: str = "device") -> list[Event]:
        """What a checked device claim becomes: its event at the verdict's time (none when ignored), then the
        note that says why it was corrected or ignored (counted and logged by `ignored_note`)."""
        events = [] if verdict.ts is None else [make(verdict.ts)]
        if verdict.reason is not None:
            events += self.ignored_note(verdict.reason, incident.id, unit_id, prefix + verdict.detail,
                                        ts=verdict.ts, source=source)
        return events

    def capped(self, incident: Incident, events: Sequence[Event]) -> list[Event]:
        """`events` without the device notes beyond the incident's cap (counted `device_note_capped`)."""
        used, kept = incident.device_notes, []
        for event in events:
            if isinstance(event, Noted) and event.source in DEVICE_SOURCES:
                if used >= DEVICE_NOTE_CAP:
                    self.count("device_note_capped")
                    log.info("incident %s: device note not written (cap %d): %s", incident.id, DEVICE_NOTE_CAP,
                             event.text[:200])
                    continue
                used += 1
                if used == DEVICE_NOTE_CAP:
                    event = dataclasses.replace(event, text=f"{event.text} (the last device note kept on this "
                                                            "incident: later ones are only counted)")
            kept.append(event)
        return kept
