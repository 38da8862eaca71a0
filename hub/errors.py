"""Exceptions of the hub package."""

from __future__ import annotations


class HubError(Exception):
    """Base of every error raised by :mod:`hub`."""


class StorageUnavailable(HubError):
    """The database cannot be reached right now; the caller keeps its data and retries."""


class StorageRefused(HubError):
    """The database refused the rows of a write for what they hold (not for being away): retrying the same
    rows fails the same way, so the writer isolates the refused rows instead."""


class ServiceError(HubError):
    """An embedded service (broker, database) could not be started."""


class StorageSetupError(HubError):
    """The database could not be set up at start (connect, migrate, partitioning): the hub cannot start."""


class HubStartError(HubError):
    """The hub could not start; the message is one line naming the part that failed and why."""


class IncidentError(HubError):
    """Base of the service's errors; the API maps each subclass to a 4xx status."""


class IncidentNotFound(IncidentError):
    pass


class IncidentInvalid(IncidentError):
    pass


class IncidentConflict(IncidentError):
    pass


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (server messages carry DETAIL/CONTEXT lines), or its class name."""
    return " ".join(str(exc).split()) or type(exc).__name__
