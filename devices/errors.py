"""Exceptions of the devices package."""

from __future__ import annotations


class DevicesError(Exception):
    """Base of every error raised by :mod:`devices`."""


class PayloadError(DevicesError):
    """A payload broke the contract.

    ``reason`` is a short, stable code (it labels metrics and reject rows);
    ``detail`` says what exactly was wrong, for a human.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
