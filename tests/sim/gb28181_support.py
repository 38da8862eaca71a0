"""What the GB/T 28181 camera tests share: a REAL registrar on free ports (fixtures), its callbacks, camera configs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from gb28181.manscdp import parse_body
from gb28181.registrar import Registrar, RegistrarConfig
from sim.gb28181_camera import GbCameraConfig
from sim.gb28181_stream import StreamSettings

SERVER = "34020000002000000001"
DEV = "34020000001320000001"
CHANNEL = "34020000001310000001"
UNKNOWN = "34020000001320000099"
PASSWORDS = {DEV: "s3cret"}
BEIJING = timezone(timedelta(hours=8))
POSITION = (31.2304, 121.4737, 36.0, 90.0)


class Platform:
    """The registrar's callbacks: every MESSAGE/NOTIFY body parsed, presence changes logged."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.offline: list[tuple[str, str]] = []
        self.passwords = dict(PASSWORDS)

    async def password_of(self, device_id: str) -> str | None:
        return self.passwords.get(device_id)

    def message(self, device_id: str, body: bytes, content_type: str) -> None:
        self.bodies.append(parse_body(body))

    def of(self, kind: type) -> list[Any]:
        return [b for b in self.bodies if isinstance(b, kind)]


@pytest.fixture
async def platform() -> Platform:
    return Platform()


def registrar_for(platform: Platform, **options: Any) -> Registrar:
    config = RegistrarConfig(server_id=SERVER, host="127.0.0.1", udp_port=0, tcp_port=0, check_interval_s=0.1,
                             **options)
    return Registrar(config, password_of=platform.password_of, on_message=platform.message,
                     on_offline=lambda d, r: platform.offline.append((d, r)),
                     wall=lambda: datetime.now(BEIJING).replace(tzinfo=None))


@pytest.fixture
async def registrar(platform: Platform) -> AsyncIterator[Registrar]:
    async with registrar_for(platform) as reg:
        yield reg


def config(reg: Registrar, transport: str = "udp", **options: Any) -> GbCameraConfig:
    port = reg.udp_port if transport == "udp" else reg.tcp_port
    base = GbCameraConfig(device_id=DEV, password="s3cret", server_id=SERVER, server_host="127.0.0.1",
                          server_port=port, transport=transport,  # type: ignore[arg-type]
                          keepalive_s=0.3, request_timeout_s=2.0, register_retry_s=0.4, register_retry_max_s=0.8,
                          stream=StreamSettings(width=320, height=240, fps=10.0))
    return replace(base, **options)


async def eventually(condition: Callable[[], object], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


class FastClock:
    """A device's wall clock (epoch seconds) that runs ``speed`` times faster from the moment it is set, never
    backwards: a camera's minute standing on scene passes in a fraction of it."""

    def __init__(self) -> None:
        self.base_real = self.base = time.time()
        self.speed = 1.0

    def __call__(self) -> float:
        return self.base + (time.time() - self.base_real) * self.speed

    def set_speed(self, speed: float) -> None:
        self.base, self.base_real = self(), time.time()
        self.speed = speed
