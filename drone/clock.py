"""The autopilot's boot clock on the hub's clock (pure).

MAVLink telemetry is stamped with ``time_boot_ms``, the autopilot's milliseconds since boot.
Every message that carries it is one sample ``recv_wall_ms - time_boot_ms``: the hub time of the
autopilot's boot, plus the link latency of that message. Latency only ever adds, so the smallest
sample of a sliding window is the best estimate of the boot instant; the window (30 s by default)
lets the estimate follow the slow drift between the two crystals and forget an old outlier.

SYSTEM_TIME also carries the autopilot's own wall clock (``time_unix_usec``, GPS or RTC time).
Both of its fields are stamped at the same instant on the autopilot, so ``unix - boot`` is exact
per message; all the noise sits in the latency, already smoothed by the window minimum. The
autopilot's clock minus the hub's is therefore ``(unix - boot) - estimate`` (SITL ran 2.65 s
behind its host: -2650).

A boot clock that goes back by more than a second is a reboot: the estimate restarts from the
sample that showed it.
"""

from __future__ import annotations

from collections import deque
from typing import Final

__all__ = ["REBOOT_JUMP_MS", "WINDOW_MS", "ClockSync"]

WINDOW_MS: Final = 30_000
# A boot clock that goes back by more than this means the autopilot rebooted
# (UDP may reorder two messages a few milliseconds apart, never by a second).
REBOOT_JUMP_MS: Final = 1000


class ClockSync:
    """Boot-time -> hub-time estimate of one autopilot; feed it with :meth:`observe`."""

    def __init__(self, window_ms: int = WINDOW_MS) -> None:
        if window_ms <= 0:
            raise ValueError(f"window_ms must be > 0, got {window_ms}")
        self.window_ms = window_ms
        self.samples = 0  # since the last reboot
        self.last_boot_ms: int | None = None
        # Sliding-window minimum: (recv_wall_ms, offset) with strictly increasing offsets, so
        # the front is the window's minimum and each sample is pushed and popped once.
        self._window: deque[tuple[int, int]] = deque()
        self._unix_minus_boot: int | None = None  # from the latest SYSTEM_TIME with a wall clock

    def __repr__(self) -> str:
        return f"<ClockSync offset={self.offset_ms} drone_offset={self.drone_offset_ms} samples={self.samples}>"

    def observe(self, time_boot_ms: int, recv_wall_ms: int, unix_ms: int | None = None) -> bool:
        """One sample; True when it shows a reboot (the boot clock went back by more than a second)."""
        rebooted = self.last_boot_ms is not None and time_boot_ms + REBOOT_JUMP_MS < self.last_boot_ms
        if rebooted:
            self.reset()
        self.last_boot_ms = time_boot_ms
        self.samples += 1
        offset = recv_wall_ms - time_boot_ms
        window = self._window
        while window and window[-1][1] >= offset:
            window.pop()  # never the minimum again: newer and not larger
        window.append((recv_wall_ms, offset))
        while window[0][0] < recv_wall_ms - self.window_ms:
            window.popleft()  # the newest sample is never popped here: the loop ends
        if unix_ms is not None:
            self._unix_minus_boot = unix_ms - time_boot_ms
        return rebooted

    def reset(self) -> None:
        """Forget everything (the autopilot rebooted: its boot clock restarted)."""
        self._window.clear()
        self._unix_minus_boot = None
        self.last_boot_ms = None
        self.samples = 0

    @property
    def offset_ms(self) -> int | None:
        """Hub wall time of the autopilot's boot (ms), None before any sample."""
        return self._window[0][1] if self._window else None

    def hub_ms(self, time_boot_ms: int) -> int | None:
        """``time_boot_ms`` on the hub's wall clock (ms), None before any sample."""
        offset = self.offset_ms
        return None if offset is None else time_boot_ms + offset

    @property
    def drone_offset_ms(self) -> int | None:
        """The autopilot's wall clock minus the hub's (ms); None until SYSTEM_TIME carried one."""
        offset = self.offset_ms
        if offset is None or self._unix_minus_boot is None:
            return None
        return self._unix_minus_boot - offset
