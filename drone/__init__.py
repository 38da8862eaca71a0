"""MAVLink link layer of the hub: an asyncio transport, pymavlink as codec and signer.

``MavlinkLink`` listens or connects, ``Vehicle`` is one drone on it (state, commands,
parameters, home, missions), ``StreamKeeper`` sets its telemetry up like a ground station
and ``ClockSync`` puts its clock on the hub's. The package does not import ``hub``: the
hub adapts it.
"""

from __future__ import annotations

from drone.clock import ClockSync
from drone.errors import (
    CommandRejected,
    CommandTimeout,
    DroneError,
    LinkLost,
    MissionError,
    MissionTimeout,
    ParamError,
    SigningError,
    WaitTimeout,
)
from drone.link import MavlinkLink
from drone.mission import MissionItem, patrol_mission
from drone.signing import SigningKey, SigningKeys
from drone.state import StatusText, VehicleState
from drone.streams import WANTED, StreamKeeper
from drone.telemetry import fix_of, position_age_s, status_fields, status_of
from drone.vehicle import Vehicle

__all__ = [
    "WANTED",
    "ClockSync",
    "CommandRejected",
    "CommandTimeout",
    "DroneError",
    "LinkLost",
    "MavlinkLink",
    "MissionError",
    "MissionItem",
    "MissionTimeout",
    "ParamError",
    "SigningError",
    "SigningKey",
    "SigningKeys",
    "StatusText",
    "StreamKeeper",
    "Vehicle",
    "VehicleState",
    "WaitTimeout",
    "fix_of",
    "patrol_mission",
    "position_age_s",
    "status_fields",
    "status_of",
]
