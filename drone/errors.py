"""Exceptions of the drone link layer.

Everything the package raises derives from :class:`DroneError`; pymavlink and
socket errors are converted at the boundary so callers never catch library types.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CommandRejected",
    "CommandTimeout",
    "DroneError",
    "LinkLost",
    "MissionError",
    "MissionTimeout",
    "ParamError",
    "SigningError",
    "WaitTimeout",
    "most_relevant",
    "result_name",
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


# MAV_SEVERITY_WARNING: texts at this level or worse (lower) explain a refusal; INFO and below are chatter.
_RELEVANT_SEVERITY = 4


def result_name(result: int) -> str:
    """``MAV_RESULT_FAILED`` for 4; the number for a value outside the enum."""
    return f"MAV_RESULT_{_RESULT_NAMES.get(result, str(result))}"


def most_relevant(texts: Sequence[tuple[int, str]]) -> str | None:
    """Of (severity, text) pairs in arrival order: the last warning or worse, else the last; None if empty."""
    for severity, text in reversed(texts):
        if severity <= _RELEVANT_SEVERITY:
            return text
    return texts[-1][1] if texts else None


class DroneError(Exception):
    """Base of every error raised by :mod:`drone`."""


class CommandRejected(DroneError):
    """The vehicle answered a command with a final result other than ACCEPTED.

    ArduPilot says *why* only in STATUSTEXT ("Arm: Gyros inconsistent"): ``texts`` are the
    texts it sent while the command was pending, ``reason`` the most relevant of them.
    """

    def __init__(self, result: int, command: int, texts: Sequence[tuple[int, str]] = ()) -> None:
        self.result = result
        self.command = command
        self.texts: list[str] = [text for _, text in texts]
        self.reason: str | None = most_relevant(texts)
        why = f": {self.reason}" if self.reason else ""
        super().__init__(f"command {command} rejected: {result_name(result)}{why}")


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


class ParamError(DroneError):
    """A parameter could not be read or set; ``name`` says which."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(message)


class LinkLost(DroneError):
    """The link is closed or the vehicle has no known route."""


class SigningError(DroneError):
    """A signing key file or key is unusable (never includes the secret)."""


class WaitTimeout(DroneError, TimeoutError):
    """A wait for a vehicle or a state change ran out of time (also a builtin TimeoutError)."""
