"""Signals: how a component announces what happened without knowing who listens.

A component owns its signals as attributes (``incidents.released``, ``alerts.sos_raised`` ...) and emits them; the
composition root (:mod:`hub.server`) connects the subscribers, so the wiring of the whole hub reads in one place.
The signature of a signal is the signature of its subscribers (``Signal[[str, str]]`` calls ``handler(a, b)``),
checked by mypy on both sides.

Every subscriber fails alone: an exception is logged with the signal's name and counted in ``failures``, and the
next subscriber and the emitter go on. A signal with no subscriber costs one loop over an empty list.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Generic, ParamSpec

log = logging.getLogger(__name__)

P = ParamSpec("P")


class Signal(Generic[P]):
    """A synchronous announcement: ``emit`` calls every subscriber in the order they were connected."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failures = 0
        self._subscribers: list[Callable[P, object]] = []

    def connect(self, subscriber: Callable[P, object]) -> None:
        self._subscribers.append(subscriber)

    @property
    def subscribers(self) -> tuple[Callable[P, object], ...]:
        return tuple(self._subscribers)

    def emit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(*args, **kwargs)
            except Exception:
                self.failures += 1
                log.exception("signal %s: subscriber %r failed", self.name, subscriber)


class AsyncSignal(Generic[P]):
    """An announcement whose subscribers are coroutines: ``emit`` awaits each in turn, in connection order, so
    the emitter goes on only when every subscriber has done its part (e.g. the video of an incident is stopped
    before the incident's close is recorded)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failures = 0
        self._subscribers: list[Callable[P, Awaitable[object]]] = []

    def connect(self, subscriber: Callable[P, Awaitable[object]]) -> None:
        self._subscribers.append(subscriber)

    @property
    def subscribers(self) -> tuple[Callable[P, Awaitable[object]], ...]:
        return tuple(self._subscribers)

    async def emit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        for subscriber in self._subscribers:
            try:
                await subscriber(*args, **kwargs)
            except Exception:
                self.failures += 1
                log.exception("signal %s: subscriber %r failed", self.name, subscriber)
