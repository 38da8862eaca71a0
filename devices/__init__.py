"""Device contract (topics, payload codecs) and the device-side MQTT client."""

from __future__ import annotations

from devices.errors import DevicesError, PayloadError
from devices.payloads import Command, Event, Fix, Status

__all__ = ["Command", "DevicesError", "Event", "Fix", "PayloadError", "Status"]
