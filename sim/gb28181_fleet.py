"""Many simulated GB/T 28181 cameras at once, for the demo and the 1,000-camera benchmark.

Each camera is one UDP socket (or TCP connection) and a few idle tasks, no thread, so a thousand cost little
while not streaming. Cameras start spread over ``start_spread_s``: a real fleet does not power on in one
millisecond, and a registrar should not be benchmarked on a burst no deployment produces.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sim.gb28181_camera import GbCamera, GbCameraConfig, GbCounters, PositionSource

__all__ = ["GbCameraFleet", "device_ids"]


def device_ids(prefix: str, count: int, *, type_code: str = "132", first: int = 1) -> list[str]:
    """``count`` 20-digit ids: the 10-digit domain ``prefix``, the type code, network 0, serials from ``first``."""
    if len(prefix) != 10 or not prefix.isdigit() or len(type_code) != 3 or not type_code.isdigit():
        raise ValueError("a 10-digit prefix and a 3-digit type code make a device id")
    if first + count > 10**6:
        raise ValueError("serials are 6 digits")
    return [f"{prefix}{type_code}0{first + k:06d}" for k in range(count)]


class GbCameraFleet:
    """Cameras from ``configs`` (positions by index, None: the camera's default); an async context manager."""

    def __init__(self, configs: Sequence[GbCameraConfig], *, positions: Sequence[PositionSource | None] = (),
                 start_spread_s: float = 0.0) -> None:
        self.cameras = [GbCamera(config, position=positions[k] if k < len(positions) else None)
                        for k, config in enumerate(configs)]
        self.start_spread_s = start_spread_s

    async def __aenter__(self) -> GbCameraFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        step = self.start_spread_s / max(len(self.cameras), 1)
        for camera in self.cameras:
            await camera.start()
            if step:
                await asyncio.sleep(step)

    async def stop(self) -> None:
        await asyncio.gather(*(camera.stop() for camera in self.cameras), return_exceptions=True)

    @property
    def registered(self) -> int:
        """Cameras registered right now."""
        return sum(1 for camera in self.cameras if camera.registered.is_set())

    def totals(self) -> GbCounters:
        """The counters of all cameras added up."""
        total = GbCounters()
        for camera in self.cameras:
            c = camera.counters
            for name in ("registered", "keepalives", "positions_sent", "alarms", "alarm_acks", "queries_answered",
                         "invites", "streams_started", "frames_sent"):
                setattr(total, name, getattr(total, name) + getattr(c, name))
            total.refused.update(c.refused)
            total.rejected.update(c.rejected)
        return total
