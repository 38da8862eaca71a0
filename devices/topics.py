"""MQTT topic layout of the contract (SPEC section 2). Every topic string lives here."""

from __future__ import annotations

import re
from typing import Final, Literal

ROOT: Final = "fieldhub/v1"
ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Channel = Literal["telemetry", "status", "event", "cmd"]
CHANNELS: Final[frozenset[str]] = frozenset({"telemetry", "status", "event", "cmd"})

# The channels devices publish on ("cmd" is the hub's), and what the hub subscribes to: all of them.
DEVICE_CHANNELS: Final = ("telemetry", "status", "event")
HUB_SUBSCRIPTIONS: Final = tuple(f"{ROOT}/dev/+/{channel}" for channel in DEVICE_CHANNELS)


def is_valid_id(value: str) -> bool:
    """True when ``value`` is a legal device/unit/drone id."""
    return ID_PATTERN.fullmatch(value) is not None


def device_topic(device_id: str, channel: Channel) -> str:
    """The topic of one device's channel, e.g. ``fieldhub/v1/dev/cam-1/telemetry``."""
    return f"{ROOT}/dev/{device_id}/{channel}"


def parse_device_topic(topic: str) -> tuple[str, str] | None:
    """Split a device topic into ``(device_id, channel)``; None if it is not one.

    The id is returned even when it is not a legal id, so the caller can
    reject the message with a precise reason.
    """
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != "fieldhub" or parts[1] != "v1" or parts[2] != "dev":
        return None
    if parts[4] not in CHANNELS:
        return None
    return parts[3], parts[4]
