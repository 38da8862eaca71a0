"""What the MAVLink handlers of a simulated drone need of the drone they answer for.

:mod:`sim.mav_telemetry`, :mod:`sim.mav_commands`, :mod:`sim.mav_mission` and
:mod:`sim.mav_params` each serve one :class:`~sim.drones.SimDrone`, which owns
them; they see it only through :class:`Vehicle`, so the drone depends on its
handlers and never the other way round. :class:`DroneCounters` lives here
because handlers count what they answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sim.copter import Copter
from sim.stations import DroneDock

__all__ = ["DroneCounters", "IntervalSetter", "Vehicle"]


@dataclass(slots=True)
class DroneCounters:
    sent: int = 0
    received: int = 0
    refused: int = 0  # unsigned or wrongly signed while signing is on
    bad: int = 0  # CRC errors and other undecodable data
    dropped: int = 0  # lost to a cut link or a reboot, either way
    failed: int = 0  # messages whose handling raised (logged): a bug in the simulator, never the peer's fault
    ignored: int = 0  # addressed to another system
    commands: int = 0
    unsupported: int = 0


class IntervalSetter(Protocol):
    """The drone's stream rates, as MAV_CMD_SET_MESSAGE_INTERVAL changes them."""

    def set_interval(self, msg_id: int, interval_us: float) -> int: ...


class Vehicle(Protocol):
    """One simulated drone's MAVLink endpoint, as its handlers use it."""

    @property
    def dock(self) -> DroneDock: ...

    @property
    def copter(self) -> Copter: ...

    @property
    def mav(self) -> Any: ...  # pymavlink's MAVLink codec: its encoders are generated, untyped

    @property
    def gcs(self) -> tuple[str, int]: ...

    @property
    def counters(self) -> DroneCounters: ...

    @property
    def rates(self) -> IntervalSetter: ...

    def send(self, msg: Any, to: tuple[str, int] | None = None) -> None:
        """To ``to``, or to the ground station."""

    def send_all(self, msg: Any, also: tuple[str, int] | None = None) -> None:
        """To the ground station and to ``also`` (a requester elsewhere)."""

    def send_by_id(self, msg_id: int, to: tuple[str, int] | None = None) -> bool:
        """The current value of message ``msg_id``; False for one the drone does not send."""

    def flush_events(self, also: tuple[str, int] | None = None) -> None:
        """What the copter has to say (status texts, mission progress), before an answer that follows it."""

    def reboot(self, down_s: float) -> None:
        """Power-cycle the autopilot: silent for ``down_s`` of real time."""
