"""Listening to one vehicle: bounded queues of its messages that match a predicate, and the waits on them.

Commands, the parameter protocol and the mission upload are all request/answer exchanges: listen
*before* sending, so an answer can never arrive in between and be lost, then wait on the queue.
:class:`Target` is what those exchanges need of a vehicle; :class:`~drone.vehicle.Vehicle` is one.
This module knows no link and no vehicle class, so the exchanges depend on it and not on each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Final, Protocol

from drone.errors import LinkLost
from drone.state import VehicleState, text_of

__all__ = ["CLOSED", "TEXT_GRACE_S", "Listeners", "Target", "is_statustext", "next_message", "texts_after_grace"]

log = logging.getLogger(__name__)

# STATUSTEXTs that explain a refusal may trail its ACK by this much (another queue on the autopilot).
TEXT_GRACE_S: Final = 0.2
QUEUE_SIZE: Final = 256
# Put on every queue when the link closes: a waiter gets LinkLost instead of its timeout.
CLOSED: Final = object()

Predicate = Callable[[Any], bool]


class Listeners:
    """The queues waiting for one vehicle's messages. Only the vehicle that owns it offers and closes."""

    def __init__(self, on_dropped: Callable[[], None]) -> None:
        self._entries: list[tuple[Predicate, asyncio.Queue[Any]]] = []
        self._on_dropped = on_dropped  # a full queue: its waiter is too slow, the message is counted and dropped

    def __len__(self) -> int:
        return len(self._entries)

    @contextlib.contextmanager
    def listen(self, predicate: Predicate) -> Iterator[asyncio.Queue[Any]]:
        """A bounded queue of the messages matching ``predicate`` while inside the block."""
        entry: tuple[Predicate, asyncio.Queue[Any]] = (predicate, asyncio.Queue(QUEUE_SIZE))
        self._entries.append(entry)
        try:
            yield entry[1]
        finally:
            self._entries.remove(entry)

    def offer(self, msg: Any) -> None:
        """Queue ``msg`` for every listener whose predicate takes it; a failing predicate is only its own."""
        for predicate, queue in self._entries:
            try:
                matched = predicate(msg)
            except Exception:
                log.exception("listener predicate failed")
                continue
            if matched:
                try:
                    queue.put_nowait(msg)
                except asyncio.QueueFull:
                    self._on_dropped()

    def close(self) -> None:
        """Wake every waiter: its next :func:`next_message` raises LinkLost."""
        for _, queue in self._entries:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(CLOSED)


def is_statustext(msg: Any) -> bool:
    return bool(msg.get_type() == "STATUSTEXT")


async def texts_after_grace(texts: asyncio.Queue[Any]) -> list[tuple[int, str]]:
    """(severity, text) of every STATUSTEXT queued so far and within :data:`TEXT_GRACE_S` from now."""
    await asyncio.sleep(TEXT_GRACE_S)
    found: list[tuple[int, str]] = []
    while not texts.empty():
        msg = texts.get_nowait()
        if msg is not CLOSED:
            found.append((int(msg.severity), text_of(msg.text)))
    return found


async def next_message(queue: asyncio.Queue[Any], timeout_s: float) -> Any | None:
    """The next queued message, None on timeout; LinkLost once the link closed."""
    try:
        msg = await asyncio.wait_for(queue.get(), max(timeout_s, 0.0))
    except TimeoutError:
        return None
    if msg is CLOSED:
        raise LinkLost("link closed")
    return msg


class Target(Protocol):
    """A vehicle as the request/answer exchanges see it: who it is, what it says, how to send to it."""

    @property
    def system_id(self) -> int: ...

    @property
    def component_id(self) -> int: ...

    @property
    def gcs_system_id(self) -> int:
        """Our own system id on its link: answers addressed to it (or to 0) are ours."""
        ...

    @property
    def state(self) -> VehicleState: ...

    def send(self, message: Any) -> None: ...

    def listen(self, predicate: Predicate) -> AbstractContextManager[asyncio.Queue[Any]]: ...

    def listen_texts(self) -> AbstractContextManager[asyncio.Queue[Any]]: ...
