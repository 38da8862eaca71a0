"""The page through a hub restart: offline while the hub is away, then live again from a fresh snapshot.

The hub runs as its own process (``fieldhub serve``) so that stopping it is what an operator sees:
the process ends, its port closes, the WebSocket drops. The broker and the database stay up, and the
simulated units keep reporting through the outage.
"""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from hub.config import Settings
from tests.conftest import TOKEN, wait_for
from tests.web.conftest import UNITS, HubProcess, OpenPage, all_located, city_sim
from tests.web.one_map import tid

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_page_recovers_after_the_hub_restarts(settings: Settings, hub_process: HubProcess,
                                                        open_page: OpenPage) -> None:
    async with city_sim(settings, hub_process.base_url) as _sim, httpx.AsyncClient(
            base_url=hub_process.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as api:
        await wait_for(lambda: all_located(api, UNITS), timeout=30, interval=0.25)
        web = await open_page(hub_process.base_url, TOKEN)
        # While the hub is away the browser logs the connections it could not make.
        web.expect_console(r"WebSocket connection to .* failed", r"ERR_CONNECTION_REFUSED", r"ERR_CONNECTION_RESET",
                           r"ERR_EMPTY_RESPONSE")
        await web.page.locator(tid("conn", state="connected")).wait_for()
        assert len(web.sockets) == 1 and web.sockets[0][:1] == ["snapshot"]
        r = await api.post("/api/v1/incidents", json={"category": "theft", "priority": 3, "lat": 34.2610,
                                                       "lon": 117.1859, "summary": "open across the restart"})
        assert r.status_code == 201, r.text
        incident = web.page.locator(tid("incident-item", incident_id=r.json()["id"]))
        await incident.wait_for()

        await hub_process.stop(signal.SIGTERM)
        await web.page.locator(f'{tid("conn", state="offline")}, {tid("conn", state="connecting")}').wait_for(
            timeout=15_000)
        assert await web.js("() => window.fieldhub.connected") is False
        await asyncio.sleep(3.0)  # a few reconnection attempts against a closed port
        restarted_ms = time.time() * 1000
        await hub_process.start()

        await web.page.locator(tid("conn", state="connected")).wait_for(timeout=30_000)
        assert await web.js("() => window.fieldhub.connected") is True
        assert len(web.sockets) >= 2 and web.sockets[-1][:1] == ["snapshot"], web.sockets
        # Each (re)connect with a fresh single-use ticket, never the token in the URL.
        assert all("?ticket=lt_" in url for url in web.socket_urls), web.socket_urls
        assert len(set(web.socket_urls)) == len(web.socket_urls), web.socket_urls
        # Fresh data flows again: every unit gets a position newer than the restart.
        await web.until(f"""() => [...window.fieldhub.units.values()]
            .filter((u) => u.position && u.position.ts > {restarted_ms}).length >= {UNITS}""", timeout_s=20)
        assert await web.js("() => window.fieldhub.units.size") == UNITS
        # The page's state is the new snapshot's (it replaces everything): the open incident is in it.
        await incident.wait_for()
        assert await web.page.locator(tid("incident-item")).count() == 1
