"""Devices provisioned elsewhere (``fieldhub device add`` while the hub runs) join the live picture at once.

A connection of its own LISTENs on ``fieldhub_devices`` (migration 006 notifies on every login change); each
notification names a device, whose unit is then re-read from the table. On a connection fault it reconnects with a
backoff and re-reads every unit, since notifications sent meanwhile are lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import psycopg

from devices.tasks import cancel_and_wait

__all__ = ["DeviceSync"]

log = logging.getLogger(__name__)

CHANNEL = "fieldhub_devices"


class DeviceSync:
    def __init__(self, url: str, on_device: Callable[[str], Awaitable[None]],
                 on_reload: Callable[[], Awaitable[None]]) -> None:
        self.url = url
        self.on_device = on_device
        self.on_reload = on_reload
        self.notifications = 0
        self.listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DeviceSync:
        self._task = asyncio.create_task(self._follow(), name="device-sync")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._task)

    async def _follow(self) -> None:
        delay, first = 0.5, True
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if not first:
                        await self.on_reload()
                    first, delay = False, 0.5
                    self.listening.set()
                    async for note in conn.notifies():
                        self.notifications += 1
                        try:
                            await self.on_device(note.payload)
                        except Exception as exc:  # one device's refresh failing must not stop the follower
                            log.warning("device sync: %s not refreshed: %s", note.payload[:80], exc)
            except Exception as exc:  # the database away, or the reload refused: retry; the follower never dies
                self.listening.clear()
                log.warning("device sync: connection lost (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
