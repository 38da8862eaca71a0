"""Where the hub's device commands go: to the broker, or to the gateway of a device that does not speak MQTT.

The incident service and the video desk send every command as the contract's MQTT message (topic, JSON). A device
behind a gateway (a GB/T 28181 camera) never reads that topic, so :class:`CommandRouter` hands the same bytes to
the gateway that owns the device, which turns them into its protocol (an INVITE for ``video_start``) and submits
the device's acknowledgment back into the pipeline as the contract's ``ack``. Devices nobody claims go to MQTT.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from devices.topics import parse_device_topic

__all__ = ["CommandRouter", "DeviceCommands"]


class DeviceCommands(Protocol):
    """A gateway's side: which devices it owns, and a command for one of them (handled in the background)."""

    def owns(self, device_id: str) -> bool: ...

    def can_sign(self, device_id: str) -> bool: ...  # its protocol has a way to acknowledge a dispatch order

    def command(self, device_id: str, raw: bytes) -> None: ...


class CommandRouter:
    def __init__(self, mqtt: Callable[[str, bytes], object]) -> None:
        # mqtt: the bridge's publish (its result is not needed: a command's delivery is watched by its ack)
        self.mqtt = mqtt
        self.gateways: list[DeviceCommands] = []
        self.routed = 0

    def can_sign(self, device_id: str) -> bool:
        """Whether the device can acknowledge a dispatch: every MQTT device can; a gateway's says."""
        return next((g.can_sign(device_id) for g in self.gateways if g.owns(device_id)), True)

    def publish(self, topic: str, payload: bytes) -> None:
        parsed = parse_device_topic(topic)
        if parsed is not None and parsed[1] == "cmd":
            for gateway in self.gateways:
                if gateway.owns(parsed[0]):
                    self.routed += 1
                    gateway.command(parsed[0], payload)
                    return
        self.mqtt(topic, payload)
