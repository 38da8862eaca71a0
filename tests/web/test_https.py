"""The one-map, its live feed and WHIP over HTTPS, with a certificate from a fresh CA (hub/infra/tls.py).

Chromium trusts exactly the hub's key (``--ignore-certificate-errors-spki-list`` with the SHA-256 of its public
key), nothing else: the shared browser, without the pin, refuses the same page. Over that page a dispatcher logs
in, sees the simulated units, and the live feed runs over ``wss://``. Plain ``http://`` to the TLS port gets no
answer; an ``https`` client without the CA refuses the hub. A ``video_start`` names an ``https`` WHIP URL, and
the simulated camera publishes to it only when given the CA (``SimCameras(ca_file=...)``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import websockets
from playwright.async_api import Browser
from playwright.async_api import Error as PlaywrightError

from devices.clock import now_ms
from devices.payloads import Command
from hub.config import Settings
from hub.domain.commands import video_start_command
from hub.infra.tls import ensure_ca, issue_server_cert, spki_sha256_b64
from sim.runner import CitySim
from sim.video_devices import SimCameras
from tests.conftest import TOKEN, RunningHub, running_hub, wait_for
from tests.web.conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMING,
    UNITS,
    VIEWPORT,
    WebPage,
    _console,
    _watch_socket,
    all_located,
)
from tests.web.one_map import tid
from video.client import tls_verification

pytestmark = pytest.mark.asyncio(loop_scope="session")


@dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    pki = ensure_ca(tmp_path / "ca")  # a fresh CA of this test: nothing on the machine trusts it
    cert, key = issue_server_cert(pki, tmp_path / "ca", "hub", ["127.0.0.1"])
    return Tls(pki.cert_path, cert, key)


@pytest.fixture
def settings(settings: Settings, tls: Tls) -> Settings:
    return settings.model_copy(update={"tls_cert": tls.cert, "tls_key": tls.key})


def https_hub(settings: Settings, ca: Path) -> AbstractAsyncContextManager[RunningHub]:
    """The hub serving HTTPS on its port; its API client verifies it against ``ca`` (and only it)."""
    return running_hub(settings, verify=tls_verification(ca))


@pytest_asyncio.fixture(loop_scope="session")
async def hub(settings: Settings, tls: Tls) -> AsyncIterator[RunningHub]:
    async with https_hub(settings, tls.ca) as rh:
        yield rh


@pytest_asyncio.fixture(loop_scope="session")
async def pinned(browser: Browser, tls: Tls) -> AsyncIterator[Browser]:
    """A Chromium that trusts exactly the hub certificate's public key (the shared one trusts nothing extra)."""
    pin = f"--ignore-certificate-errors-spki-list={spki_sha256_b64(tls.cert)}"
    b = await browser.browser_type.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, pin])
    try:
        yield b
    finally:
        await b.close()


@pytest_asyncio.fixture(loop_scope="session")
async def https_city(settings: Settings, tls: Tls, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningHub]:
    """The HTTPS hub with the simulated city reporting; every unit located."""
    # The simulator's HTTP clients (unit registration, device provisioning) are httpx with the default trust
    # store: this process's SSL_CERT_FILE points that store at the test's CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))
    async with https_hub(settings, tls.ca) as rh:
        admin = await rh.hub.create_token("admin", "https-sim")  # the sim provisions its devices' MQTT logins
        async with CitySim(rh.base_url, settings.mqtt_url or "", admin, units=UNITS, seed=settings.city_seed,
                           interval_s=(1.0, 1.0), timing=TIMING):
            await wait_for(lambda: all_located(rh.api, UNITS), timeout=30, interval=0.25)
            yield rh


async def test_the_one_map_over_https(https_city: RunningHub, settings: Settings, pinned: Browser,
                                      browser: Browser) -> None:
    url = f"{https_city.base_url}/?token={TOKEN}"
    context = await pinned.new_context(viewport=VIEWPORT, locale="zh-CN")  # type: ignore[arg-type]
    try:
        page = await context.new_page()
        web = WebPage(page, context, https_city.base_url)
        web.expect_console(r"/favicon\.ico\)$")
        feeds: list[str] = []
        page.on("pageerror", lambda exc: web.page_errors.append(f"{exc.name}: {exc.message}"))
        page.on("console", lambda msg: _console(web, msg))
        page.on("websocket", lambda ws: _watch_socket(web, ws))
        page.on("websocket", lambda ws: feeds.append(ws.url))
        page.set_default_timeout(15_000)
        await page.goto(url)
        await web.ready()
        assert await web.js("() => location.protocol") == "https:"
        await page.locator(tid("conn", state="connected")).wait_for()
        await web.until(f"() => window.fieldhub.units.size >= {UNITS} && window.fieldhub.stats.unitsDrawn >= {UNITS}")
        await web.until("() => window.fieldhub.stats.wsMessages > 3", timeout_s=10)  # deltas keep coming
        live = [u for u in feeds if "/api/v1/live" in u]
        assert live and all(u.startswith(f"wss://127.0.0.1:{settings.port}/api/v1/live") for u in live), feeds
        assert any(frames and frames[0] == "snapshot" for frames in web.sockets), web.sockets
        assert not web.page_errors, web.page_errors
        assert not web.unexpected_console(), web.unexpected_console()
    finally:
        await context.close()

    # Without the pin the same page is refused: the flag trusts that key, not "any certificate".
    context = await browser.new_context()
    try:
        page = await context.new_page()
        with pytest.raises(PlaywrightError, match=r"ERR_CERT_AUTHORITY_INVALID"):
            await page.goto(url)
    finally:
        await context.close()


async def test_plain_http_to_the_tls_port_fails(hub: RunningHub, settings: Settings, tls: Tls,
                                                pinned: Browser) -> None:
    assert (await hub.api.get("/healthz")).status_code == 200  # HTTPS, verified against the CA
    port = settings.port
    async with httpx.AsyncClient(timeout=5) as plain:
        with pytest.raises(httpx.TransportError):
            await plain.get(f"http://127.0.0.1:{port}/healthz")
        # https without the CA: the hub's certificate is not trusted by default.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await plain.get(f"https://127.0.0.1:{port}/healthz")
    with pytest.raises((websockets.exceptions.WebSocketException, OSError)):
        async with websockets.connect(f"ws://127.0.0.1:{port}/api/v1/live?token={TOKEN}", open_timeout=5):
            pass
    context = await pinned.new_context()
    try:
        page = await context.new_page()
        with pytest.raises(PlaywrightError, match=r"net::ERR_"):
            await page.goto(f"http://127.0.0.1:{port}/")
    finally:
        await context.close()


class _Camera:
    """The device side a SimCameras needs: an id and an event uplink (here: a list)."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.events: list[tuple[str, dict[str, object]]] = []

    def send_event(self, type: str, ts: int | None = None, **fields: object) -> None:
        self.events.append((type, fields))


async def test_whip_over_https_verifies_the_hub(hub: RunningHub, settings: Settings, tls: Tls) -> None:
    await hub.put_unit("T1", ["t1-body"])
    video = hub.hub.video
    assert video is not None
    camera = _Camera("t1-body")

    async def video_start() -> Command:
        command = video_start_command("t1-body", None, hub.hub.settings.base_url(), now_ms(), 60_000)
        await video.register_token(command, "t1-body", "T1")
        return command

    command = await video_start()
    assert command.body["whip_url"] == f"https://127.0.0.1:{settings.port}/whip/t1-body"

    # Without the CA the camera does not trust the hub: no publish, counted as a failure (never verify=False).
    async with SimCameras(width=320, height=240, fps=5, start_timeout_s=10) as untrusting:
        untrusting.handle(camera, command)
        await untrusting.idle(20)
        assert (untrusting.counters.started, untrusting.counters.failed) == (0, 1)
    assert not camera.events

    async with SimCameras(width=320, height=240, fps=5, start_timeout_s=10, ca_file=tls.ca) as cameras:
        cameras.handle(camera, await video_start())
        await cameras.idle(20)
        assert cameras.counters.started == 1, (cameras.counters, dict(cameras.refusals))
        [(kind, fields)] = camera.events
        assert (kind, fields["state"]) == ("video", "started")

        async def listed() -> bool:
            streams = (await hub.api.get("/api/v1/streams")).json()["streams"]
            return any(s.get("device_id") == "t1-body" for s in streams)

        await wait_for(listed, timeout=10)
    with pytest.raises(ValueError, match="ca_file"):  # a caller's own client: its own verification, not ours
        SimCameras(ca_file=tls.ca, http=hub.api)
