"""Exceptions of the hub package."""

from __future__ import annotations


class HubError(Exception):
    """Base of every error raised by :mod:`hub`."""


class StorageUnavailable(HubError):
    """The database cannot be reached right now; the caller keeps its data and retries."""


class ServiceError(HubError):
    """An embedded service (broker, database) could not be started."""
