"""Exceptions of the drone link layer.

Everything the package raises derives from :class:`DroneError`; pymavlink and
socket errors are converted at the boundary so callers never catch library types.
"""

from __future__ import annotations

__all__ = [
    "CommandRejected",
    "CommandTimeout",
    "DroneError",
    "LinkLost",
    "MissionError",
    "MissionTimeout",
    "SigningError",
    "WaitTimeout",
]

# MAV_RESULT names, kept here so an error message can say what the vehicle answered
# without importing pymavlink in this module.
_RESULT_NAMES = {
    0: "ACCEPTED",
    1: "TEMPORARILY_REJECTED",
    2: "DENIED",
    3: "UNSUPPORTED",
    4: "FAILED",
    5: "IN_PROGRESS",
    6: "CANCELLED",
    7: "COMMAND_LONG_ONLY",
    8: "COMMAND_INT_ONLY",
}


class DroneError(Exception):
    """Base of every error raised by :mod:`drone`."""


class CommandRejected(DroneError):
    """The vehicle answered a command with a final result other than ACCEPTED."""

    def __init__(self, result: int, command: int) -> None:
        self.result = result
        self.command = command
        name = _RESULT_NAMES.get(result, str(result))
        super().__init__(f"command {command} rejected: MAV_RESULT_{name}")


class CommandTimeout(DroneError):
    """No final answer to a command after all retries."""


class MissionError(DroneError):
    """The mission protocol failed; ``result`` is the MAV_MISSION_RESULT when the vehicle sent one."""

    def __init__(self, result: int | None, message: str | None = None) -> None:
        self.result = result
        super().__init__(message or f"mission upload refused: MAV_MISSION_RESULT {result}")


class MissionTimeout(MissionError):
    """The vehicle stopped answering during a mission transfer."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class LinkLost(DroneError):
    """The link is closed or the vehicle has no known route."""


class SigningError(DroneError):
    """A signing key file or key is unusable (never includes the secret)."""


class WaitTimeout(DroneError, TimeoutError):
    """A wait for a vehicle or a state change ran out of time (also a builtin TimeoutError)."""
