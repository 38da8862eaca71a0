"""Exceptions of the domain core, in one module so that every domain module can import them without a cycle."""

from __future__ import annotations

from hub.errors import HubError

__all__ = ["DomainError", "IllegalTransition", "InvalidEvent"]


class DomainError(HubError):
    """Base of the errors of the domain core; `reason` says what was wrong, for the API's 4xx answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IllegalTransition(DomainError):
    """The event is well-formed but not allowed in the incident's (or unit's) current state."""


class InvalidEvent(DomainError):
    """The event itself is malformed: a missing or mistyped field, a value out of range."""
