"""The one exception of the JT/T 808 codec: every refusal carries a short reason that names a drop counter."""

from __future__ import annotations

from typing import Final

__all__ = ["REASONS", "Jt808Error"]

# Every reason this package raises. A gateway counts drops under these names, so they are part of the API.
REASONS: Final = frozenset({
    "bad_check",  # the XOR check code does not match
    "bad_escape",  # 0x7D followed by anything but 0x01/0x02, or at the end of a frame
    "truncated",  # a field runs past the end of the packet or body
    "oversized",  # a frame longer than the receiver allows
    "bad_bcd",  # a BCD nibble above 9
    "body_length",  # the body length in the header is not the body received
    "unknown_version",  # the 2019 flag with protocol version 0, or the reserved header bit set
    "bad_subpackage",  # a sub-package index of 0 or above the count
    "bad_encryption",  # an encryption method the standard does not define
    "encrypted",  # an RSA-encrypted body (the platform holds no key, it cannot read it)
    "bad_text",  # a string that is not GBK text, or holds a NUL
    "bad_count",  # a batch whose item count is not the items it holds
    "bad_time",  # a location time that is no calendar time (to_fix)
    "no_fix",  # a location the terminal marks as not positioned, or out of range (to_fix)
    "garbage",  # bytes before the first 0x7E of a stream
    "duplicate",  # a sub-package received twice
    "timeout",  # a sub-packaged message whose parts did not all arrive in time
    "too_many_pending",  # a sub-packaged message evicted to keep the pending sets bounded
    "too_many_parts",  # a sub-packaged message of more parts than the receiver allows
})


class Jt808Error(ValueError):
    """A frame, packet or body refused; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
