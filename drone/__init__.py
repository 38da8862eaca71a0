"""MAVLink link layer of the hub: an asyncio transport, pymavlink as codec and signer.

``MavlinkLink`` listens or connects, ``Vehicle`` is one drone on it (state, commands,
missions). The package does not import ``hub``: the hub adapts it.
"""

from __future__ import annotations

from drone.errors import (
    CommandRejected,
    CommandTimeout,
    DroneError,
    LinkLost,
    MissionError,
    MissionTimeout,
    SigningError,
    WaitTimeout,
)
from drone.link import MavlinkLink
from drone.mission import MissionItem, patrol_mission
from drone.signing import SigningKey, SigningKeys
from drone.state import VehicleState
from drone.telemetry import fix_of, status_fields, status_of
from drone.vehicle import Vehicle

__all__ = [
    "CommandRejected",
    "CommandTimeout",
    "DroneError",
    "LinkLost",
    "MavlinkLink",
    "MissionError",
    "MissionItem",
    "MissionTimeout",
    "SigningError",
    "SigningKey",
    "SigningKeys",
    "Vehicle",
    "VehicleState",
    "WaitTimeout",
    "fix_of",
    "patrol_mission",
    "status_fields",
    "status_of",
]
