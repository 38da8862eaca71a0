"""The hub's commands as JT/T 808 text messages (0x8300), and the commands sent that wait for their 0x0001.

A terminal shows (and speaks) a dispatch order as text; its terminal response to that 0x8300, matched by the
platform serial, is the command's acknowledgment. Video commands (JT/T 1078) and ``ping`` have no text form here.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Final

from devices.payloads import Command
from jt808.header import MAX_BODY
from jt808.messages import TEXT_DISPLAY, TEXT_EMERGENCY, TEXT_TTS, TextMessage

__all__ = ["MAX_TEXT_BYTES", "PendingCommands", "command_text", "fit_text"]

# The body is flags (1 byte), in 2019 a text type (1 byte), then the text: what fits either version.
MAX_TEXT_BYTES: Final = MAX_BODY - 2
_FIELD_CHARS: Final = 300  # one field of the incident, before the whole text is cut to fit


def fit_text(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    """``text`` as GBK can carry it: control characters (NUL among them) as spaces, characters GBK lacks as
    '?', cut to ``limit`` bytes on a character boundary."""
    clean = "".join(" " if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 else c for c in text)
    data = clean.encode("gbk", errors="replace")[:limit]
    return data.decode("gbk", errors="ignore")


def _field(value: Any) -> str:
    return "" if value is None else str(value)[:_FIELD_CHARS]


def _incident_text(incident: Mapping[str, Any]) -> str:
    """Priority, category, address and summary, cut so that the incident id in brackets always ends the text."""
    parts = [f"P{_field(incident.get('priority'))}", _field(incident.get("category")),
             _field(incident.get("address")), _field(incident.get("summary"))]
    text = " ".join(part for part in parts if part and part != "P") or "dispatch"
    tag = fit_text(f" [{_field(incident.get('id'))}]", 200)
    return fit_text(text, MAX_TEXT_BYTES - len(tag.encode("gbk"))) + tag


def command_text(command: Command) -> TextMessage | None:
    """The 0x8300 of a ``dispatch`` or ``cancel``; None for a command type terminals have no text for."""
    if command.type == "dispatch":
        incident = command.body.get("incident")
        incident = incident if isinstance(incident, dict) else {}
        flags = TEXT_DISPLAY | TEXT_TTS
        if incident.get("priority") == 1:
            flags |= TEXT_EMERGENCY
        return TextMessage(flags, _incident_text(incident))
    if command.type == "cancel":
        return TextMessage(TEXT_DISPLAY | TEXT_TTS, fit_text(f"cancelled: {_field(command.body.get('incident_id'))}"))
    return None


class PendingCommands:
    """(device, platform serial) -> cmd_id of the 0x8300 sent, until its 0x0001 or ``ttl_s``; at most
    ``max_pending`` (the oldest forgotten: its ack then counts as an unknown reply, and the hub re-sends)."""

    def __init__(self, *, ttl_s: float = 600.0, max_pending: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.max_pending, self.clock = ttl_s, max_pending, clock
        self._sent: OrderedDict[tuple[str, int], tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sent)

    def add(self, device_id: str, serial: int, cmd_id: str) -> None:
        self._expire()
        self._sent.pop((device_id, serial), None)
        self._sent[(device_id, serial)] = (cmd_id, self.clock())
        while len(self._sent) > self.max_pending:
            self._sent.popitem(last=False)

    def take(self, device_id: str, serial: int) -> str | None:
        """The cmd_id of the 0x8300 this serial answers (forgotten then), or None."""
        self._expire()
        entry = self._sent.pop((device_id, serial), None)
        return None if entry is None else entry[0]

    def forget(self, device_id: str) -> None:
        """Drop a device's entries: its new connection's serials would answer them by mistake."""
        for key in [key for key in self._sent if key[0] == device_id]:
            del self._sent[key]

    def _expire(self) -> None:
        cutoff = self.clock() - self.ttl_s
        while self._sent:
            key, (_, sent) = next(iter(self._sent.items()))
            if sent > cutoff:
                return
            del self._sent[key]
