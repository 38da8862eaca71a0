"""Crashes and outages lose nothing that was acknowledged."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg

from devices.client import DeviceClient
from devices.clock import now_ms
from devices.payloads import Fix
from hub.config import Settings
from hub.infra.embedded import EmbeddedPostgres, free_port
from tests.conftest import TOKEN, hub_env, running_hub, wait_for


async def count_fixes(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT count(*) FROM fixes")
        row = await cur.fetchone()
        return int(row[0]) if row else 0


def start_hub_process(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = hub_env(settings)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "fieldhub", "serve", "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


async def wait_healthy(port: int, timeout: float = 30) -> None:
    async with httpx.AsyncClient() as client:
        async def up() -> bool:
            try:
                r = await client.get(f"http://127.0.0.1:{port}/healthz")
                return r.status_code == 200 and r.json()["mqtt"]
            except httpx.HTTPError:
                return False

        await wait_for(up, timeout=timeout, interval=0.1)


async def publish_steadily(devices: list[DeviceClient], seconds: float, rate_per_device: float,
                           t0: int) -> int:
    """Each device sends fixes with strictly increasing ts; returns how many were sent."""
    sent = 0
    step = 1.0 / rate_per_device
    ticks = int(seconds / step)
    for i in range(ticks):
        for n, dev in enumerate(devices):
            dev.send_fix(Fix(t0 + i * 100, 34.2 + n * 1e-3, 117.2 + i * 1e-6, acc=5.0))
            sent += 1
        await asyncio.sleep(step)
    return sent


async def test_hub_killed_and_restarted_while_devices_publish_loses_nothing(settings: Settings,
                                                                          tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "hub.log"
    proc = start_hub_process(settings, port, log)
    try:
        await wait_healthy(port)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            ids = [f"k{i}-trk" for i in range(5)]
            for i, dev_id in enumerate(ids):
                r = await api.put(f"/api/v1/units/K{i}", json={"name": f"K{i}", "devices": [dev_id]})
                assert r.status_code == 200, r.text
        devices = [DeviceClient(d, settings.mqtt_url or "", unit_id=d.split("-")[0].upper()) for d in ids]
        for dev in devices:
            await dev.start()
        t0 = now_ms() - 3_600_000
        sender = asyncio.create_task(publish_steadily(devices, 6.0, 40.0, t0))  # 5 devices x 40/s for 6 s
        await asyncio.sleep(2.0)
        proc.send_signal(signal.SIGKILL)  # a crash: no flush, no clean disconnect
        proc.wait(10)
        await asyncio.sleep(1.5)  # devices keep publishing into the broker meanwhile
        proc = start_hub_process(settings, port, log)
        sent = await sender
        await wait_healthy(port)
        await wait_for(lambda: _count_is(settings.database_url or "", sent), timeout=30, interval=0.25)
        assert await count_fixes(settings.database_url or "") == sent
        for dev in devices:
            await dev.stop()
    finally:
        proc.terminate()
        proc.wait(10)


async def _count_is(url: str, expected: int) -> bool:
    return await count_fixes(url) == expected


async def test_database_down_for_30_seconds_is_buffered_and_written_afterwards(
        settings: Settings, tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "outage-pg")
    url = pg.start()
    settings = settings.model_copy(update={"database_url": url})
    try:
        async with running_hub(settings) as hub:
            await hub.put_unit("D1", ["d1-trk", "d1-cam"])
            async with DeviceClient("d1-trk", settings.mqtt_url or "", unit_id="D1") as trk, \
                    DeviceClient("d1-cam", settings.mqtt_url or "", unit_id="D1", kind="bodycam") as cam:
                t0 = now_ms() - 120_000
                sent = await publish_steadily([trk, cam], 1.0, 20.0, t0)
                await wait_for(lambda: hub.count(), timeout=10)
                await asyncio.to_thread(pg.stop)
                outage_start = time.monotonic()
                sent += await publish_steadily([trk, cam], 30.0, 5.0, t0 + 100_000)
                assert hub.hub.writer.available is False
                # The live picture keeps moving while the database is away: the last fix sent shows.
                async def shows_last_fix() -> bool:
                    view = (await hub.api.get("/api/v1/units/D1")).json()
                    return bool(view["position"]["ts"] == t0 + 100_000 + 149 * 100)

                await wait_for(shows_last_fix, timeout=10)
                health = (await hub.api.get("/healthz")).json()
                assert health["database"] is False
                await asyncio.to_thread(pg.restart)
                assert time.monotonic() - outage_start >= 30
                await wait_for(lambda: _count_is(url, sent), timeout=30, interval=0.25)
                assert hub.hub.writer.available is True
                assert hub.hub.writer.failures > 0
    finally:
        pg.close()


async def test_token_cli_creates_a_working_hashed_token(settings: Settings) -> None:
    env = dict(os.environ, FIELDHUB_DATABASE_URL=settings.database_url or "")
    out = subprocess.run([sys.executable, "-m", "fieldhub", "token", "create", "--role", "viewer", "--name", "ops"],
                         env=env, capture_output=True, text=True, timeout=60, check=True)
    secret = out.stdout.strip().splitlines()[-1]
    assert secret.startswith("fh_")
    async with running_hub(settings) as hub:
        assert await hub.count("SELECT count(*) FROM tokens WHERE hash = %s", secret) == 0  # never stored plain
        r = await hub.api.get("/api/v1/units", headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 200
        r = await hub.api.put("/api/v1/units/X1", json={"name": "X"}, headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    bad = subprocess.run([sys.executable, "-m", "fieldhub", "token", "create", "--role", "god", "--name", "x"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown role" in bad.stderr
