"""The error every phone-app codec (OwnTracks, OsmAnd / Traccar) raises for a message it refuses.

A refusal carries a short, stable ``reason`` (a metric label and the reject row's reason) and a ``detail`` for a
human. The gateways count refusals by reason and go on with the next message: one bad message is only its own.
"""

from __future__ import annotations

from typing import Final

from hub.errors import HubError

__all__ = ["REASONS", "CodecError", "GatewayError"]

# too_large: over the codec's byte limit, refused before parsing. bad_json: not JSON, not UTF-8 or too deep.
# bad_topic / bad_id: an MQTT topic or a device id the gateway does not accept. unknown_type: a message kind the
# codec does not know at all (known kinds it does not use are ignored, not refused). encrypted: OwnTracks
# payload encryption, not supported. invalid_fix: the app itself marked the position invalid. bad_secret: the
# device's credentials did not match. internal: a defect of the codec, never the sender's fault. unknown_device /
# forbidden (the receivers): no live login of that protocol / a token bound to another device.
REASONS: Final = frozenset({
    "too_large", "bad_json", "not_object", "missing_field", "wrong_type", "bad_value", "out_of_range", "bad_time",
    "bad_text", "bad_topic", "bad_id", "unknown_type", "encrypted", "invalid_fix", "bad_secret", "internal",
    "unknown_device", "forbidden",
})


class GatewayError(HubError):
    """Base of the errors of :mod:`hub.gateways`' phone codecs."""


class CodecError(GatewayError):
    """A message refused by a codec, with one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
