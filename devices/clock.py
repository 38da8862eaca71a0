"""Wall-clock time in the contract's unit: Unix epoch milliseconds, UTC."""

from __future__ import annotations

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000
