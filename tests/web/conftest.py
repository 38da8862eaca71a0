"""The one-map page in a real headless Chromium, against a real hub, broker, database and simulated city.

Fixtures:

- ``browser``: one Debian Chromium for the session, driven by Playwright (never ``playwright install``).
- ``open_page``: opens the page logged in with a token (``/?token=``) in a fresh browser context
  (its own localStorage), waits until the first snapshot is drawn, and collects uncaught page
  errors, console errors and Content-Security-Policy violations: a test fails on any, unless it
  declares the console errors it expects (``WebPage.expect_console``: a hub going away makes the
  browser log failed connections). A CSP violation is always a failure.
- ``settings``: the shared settings with auto-dispatch off, so dispatching is the dispatcher's click.
- ``city``: the hub in-process plus a :class:`~sim.runner.CitySim` of ``UNITS`` patrol units (three
  devices each) reporting at 1 Hz, waited for until every unit has a position.

Every test runs in the session's event loop (``pytestmark`` in each module), because the browser
fixture is shared across tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright
from playwright.async_api import Error as PlaywrightError

from hub.config import Settings
from sim.city import build_city
from sim.drone_runner import FLEET_PARAMS, write_keys
from sim.drones import DroneFleetSim, new_keys
from sim.response import Timing
from sim.runner import CitySim
from sim.stations import drone_docks, fleet_entries, police_stations
from tests.conftest import ADMIN_TOKEN, RunningHub, hub_env, running_hub, wait_for

CHROMIUM = Path(os.environ.get("FIELDHUB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
VIEWPORT = {"width": 1600, "height": 900}
UNITS = 15
# Short turnouts and an early contact, so a dispatch plays out within a test's patience.
TIMING = Timing(turnout_s=(4.0, 8.0), contact_after_s=(5.0, 10.0), on_scene_s=(600.0, 900.0))
READY_S = 30.0
ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- browser
@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium (apt-get install chromium)")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        await b.close()


@dataclass
class WebPage:
    """A page of the one-map with what it said: uncaught errors, console errors, WebSocket frames."""

    page: Page
    context: BrowserContext
    base_url: str
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    expected_console: list[re.Pattern[str]] = field(default_factory=list)
    # Every /api/v1/live WebSocket the page opened, with the type of each frame it received, in order.
    sockets: list[list[str]] = field(default_factory=list)
    socket_urls: list[str] = field(default_factory=list)
    # `securitypolicyviolation` events: "directive blocked-uri (source:line)".
    csp_violations: list[str] = field(default_factory=list)

    def expect_console(self, *patterns: str) -> None:
        """Console errors matching one of ``patterns`` (regular expressions) do not fail the test."""
        self.expected_console += [re.compile(p) for p in patterns]

    def unexpected_console(self) -> list[str]:
        return [m for m in self.console_errors if not any(p.search(m) for p in self.expected_console)]

    def by_id(self, test_id: str) -> Any:
        return self.page.get_by_test_id(test_id)

    async def js(self, expression: str, arg: Any = None) -> Any:
        return await self.page.evaluate(expression, arg)

    async def until(self, expression: str, arg: Any = None, timeout_s: float = 20.0) -> Any:
        """Wait until the JavaScript ``expression`` (a function of ``arg``) is truthy in the page; its value."""
        handle = await self.page.wait_for_function(expression, arg=arg, timeout=timeout_s * 1000, polling=100)
        return await handle.json_value()

    async def ready(self, timeout_s: float = READY_S) -> None:
        try:
            await self.until("() => window.fieldhub && window.fieldhub.ready === true", timeout_s=timeout_s)
        except PlaywrightError as exc:
            state = await self.page.evaluate("""() => window.fieldhub ? JSON.stringify({ready: window.fieldhub.ready,
                connected: window.fieldhub.connected, stats: window.fieldhub.stats}) : 'no window.fieldhub'""")
            raise AssertionError(f"the page was not ready within {timeout_s} s ({state}); page errors:"
                                 f" {self.page_errors}; console errors: {self.console_errors}") from exc


OpenPage = Callable[..., Awaitable[WebPage]]


@pytest_asyncio.fixture(loop_scope="session")
async def open_page(browser: Browser) -> AsyncIterator[OpenPage]:
    pages: list[WebPage] = []

    async def open_(base_url: str, token: str | None, *, wait_ready: bool = True,
                    viewport: dict[str, int] | None = None, locale: str = "zh-CN") -> WebPage:
        context = await browser.new_context(viewport=viewport or VIEWPORT, locale=locale)  # type: ignore[arg-type]
        page = await context.new_page()
        web = WebPage(page, context, base_url)
        web.expect_console(r"/favicon\.ico\)$")  # the browser asks for it by itself; the hub has none (a 404)
        pages.append(web)
        page.on("pageerror", lambda exc: web.page_errors.append(f"{exc.name}: {exc.message}\n{exc.stack}"))
        page.on("console", lambda msg: _console(web, msg))
        page.on("websocket", lambda ws: _watch_socket(web, ws))
        await page.expose_function("fieldhubCspViolation", lambda text: web.csp_violations.append(str(text)))
        await page.add_init_script(CSP_WATCH)
        page.set_default_timeout(15_000)
        await page.goto(f"{base_url}/?token={token}" if token is not None else f"{base_url}/")
        if wait_ready:
            await web.ready()
        return web

    yield open_
    problems = []
    for web in pages:
        if web.page_errors:
            problems.append("uncaught page errors:\n" + "\n".join(web.page_errors))
        if web.unexpected_console():
            problems.append("console errors:\n" + "\n".join(web.unexpected_console()))
        if web.csp_violations:
            problems.append("Content-Security-Policy violations:\n" + "\n".join(web.csp_violations))
        with contextlib.suppress(Exception):
            await web.context.close()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


# Before any of the page's scripts: report every violation of the page's policy to the test.
CSP_WATCH = """document.addEventListener("securitypolicyviolation", (e) => window.fieldhubCspViolation(
  `${e.effectiveDirective} ${e.blockedURI || "inline"} (${e.sourceFile}:${e.lineNumber})`));"""


def _console(web: WebPage, msg: ConsoleMessage) -> None:
    if msg.type == "error":
        where = msg.location.get("url", "") if msg.location else ""
        web.console_errors.append(f"{msg.text} ({where})")


def _watch_socket(web: WebPage, ws: Any) -> None:
    if "/api/v1/live" not in ws.url:
        return
    frames: list[str] = []
    web.sockets.append(frames)
    web.socket_urls.append(ws.url)

    def received(payload: str | bytes) -> None:
        text = payload.decode(errors="replace") if isinstance(payload, bytes) else payload
        match = re.match(r'\s*\{\s*"type"\s*:\s*"([a-z_]+)"', text)
        frames.append(match.group(1) if match else "?")

    ws.on("framereceived", received)


# ------------------------------------------------------------------------ hub + sim
@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Dispatching is the dispatcher's click in these tests: no auto-dispatch on creation."""
    return settings.model_copy(update={"auto_dispatch_priority": 0})


@dataclass
class CityRun:
    settings: Settings
    hub: RunningHub
    sim: CitySim

    @property
    def base_url(self) -> str:
        return self.hub.base_url

    async def token(self, role: str, name: str | None = None) -> str:
        return await self.hub.hub.create_token(role, name or f"web-{role}")


def city_sim(settings: Settings, hub_url: str, units: int = UNITS) -> CitySim:
    # The sim's city must be the hub's (same seed): the hub's map and ETAs come from it.
    return CitySim(hub_url, "", ADMIN_TOKEN, units=units, seed=settings.city_seed,
                   interval_s=(1.0, 1.0), timing=TIMING)


async def all_located(api: httpx.AsyncClient, count: int) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        units = (await api.get("/api/v1/units")).json()["units"]
        return len(units) >= count and all(u["position"] is not None and u["online"] for u in units)
    return False


@pytest_asyncio.fixture(loop_scope="session")
async def city(settings: Settings) -> AsyncIterator[CityRun]:
    async with running_hub(settings) as rh, city_sim(settings, rh.base_url) as sim:
        await wait_for(lambda: all_located(rh.api, UNITS), timeout=30, interval=0.25)
        yield CityRun(settings, rh, sim)


@dataclass
class DroneCityRun(CityRun):
    drones: DroneFleetSim
    drone_ids: list[str]

    async def cut_link(self, drone_id: str) -> None:
        self.drones.cut_link(drone_id, 3600.0)


async def all_drones_ready(api: httpx.AsyncClient, ids: list[str]) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        views = {d["drone_id"]: d for d in (await api.get("/api/v1/drones")).json()["drones"]}
        return all(views.get(i, {}).get("link") == "ok" and views[i]["state"] == "ready" and views[i]["position"]
                   for i in ids)
    return False


async def all_drones_heard(api: httpx.AsyncClient, ids: list[str]) -> bool:
    """Every drone linked, located, and past the hub's link set-up (its failsafe parameters read)."""
    with contextlib.suppress(httpx.HTTPError):
        views = {d["drone_id"]: d for d in (await api.get("/api/v1/drones")).json()["drones"]}
        return all(views.get(i, {}).get("link") == "ok" and views[i]["position"] and views[i]["failsafe"]["known"]
                   for i in ids)
    return False


@contextlib.asynccontextmanager
async def drone_city_run(settings: Settings, params: dict[str, float] | None = None) -> AsyncIterator[DroneCityRun]:
    """The hub of ``city`` with two simulated drones docked at two police stations of the same city, on the hub's
    link. The first signs its MAVLink; the second flies unsigned, let in by ``"unsigned": true`` in its fleet entry.

    ``params``: the autopilots' parameters where they differ from a stock ArduCopter's; by default a police
    fleet's (:data:`sim.drone_runner.FLEET_PARAMS`, link failsafe on), and then every drone is waited for until
    ``ready``; with other parameters (``{}``: stock copters, no link failsafe) until linked, located and its
    failsafe read."""
    docks = drone_docks(police_stations(build_city(seed=settings.city_seed), 2))
    keys = new_keys(docks[:1])
    fleet = settings.data_dir / "drones.json"
    fleet.write_text(json.dumps([e if e["drone_id"] in keys else {**e, "unsigned": True}
                                 for e in fleet_entries(docks)]))
    settings = settings.model_copy(update={"mavlink_url": "udpin:127.0.0.1:0", "drones": fleet,
                                           "drone_keys": write_keys(docks, keys, settings.data_dir / "keys.json")})
    police = params is None
    async with running_hub(settings) as rh, city_sim(settings, rh.base_url) as sim:
        assert rh.hub.drones is not None
        gcs = ("127.0.0.1", rh.hub.drones.link.local_address[1])
        async with DroneFleetSim(docks, gcs, keys=keys,
                                 params=dict(FLEET_PARAMS) if params is None else dict(params)) as drones:
            ids = [d.drone_id for d in docks]
            await wait_for(lambda: all_located(rh.api, UNITS), timeout=30, interval=0.25)
            await wait_for(lambda: (all_drones_ready if police else all_drones_heard)(rh.api, ids), timeout=20,
                           interval=0.25)
            yield DroneCityRun(settings, rh, sim, drones, ids)


@pytest_asyncio.fixture(loop_scope="session")
async def drone_city(settings: Settings) -> AsyncIterator[DroneCityRun]:
    """``city`` plus two simulated drones of a police fleet (link failsafe on), every one ``ready``
    (see :func:`drone_city_run`)."""
    async with drone_city_run(settings) as run:
        yield run


# ------------------------------------------------------------- a hub as its own process
class HubProcess:
    """``fieldhub serve`` as a child process on a fixed port: to be stopped and started again."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.port = settings.port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout_s: float = 60.0) -> None:
        env = hub_env(self.settings)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env["FIELDHUB_AUTO_DISPATCH_PRIORITY"] = str(self.settings.auto_dispatch_priority)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fieldhub", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2.0) as client:
            async def healthy() -> bool:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"the hub exited with {self.proc.returncode}:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    health = (await client.get("/healthz")).json()
                    return bool(health.get("mqtt") and health.get("database"))
                return False

            await wait_for(healthy, timeout=timeout_s, interval=0.1)

    async def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int | None:
        """Send ``sig`` and wait for the exit; SIGKILL after ``timeout_s``. The exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                await asyncio.to_thread(proc.wait, timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)
                raise AssertionError(f"the hub did not stop within {timeout_s} s of signal {sig}:\n"
                                     f"{self.log_tail()}") from None
        return proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


@pytest_asyncio.fixture(loop_scope="session")
async def hub_process(settings: Settings, tmp_path: Path) -> AsyncIterator[HubProcess]:
    hub = HubProcess(settings, tmp_path / "hub.log")
    await hub.start()
    try:
        yield hub
    finally:
        with contextlib.suppress(AssertionError):
            await hub.stop(signal.SIGKILL)


# ------------------------------------------------------------------ live video
VIDEO_UNITS = 6
VIDEO_SIZE = (320, 240)  # small pictures: the machine has two cores and other tests run beside these
VIDEO_FPS = 10.0


@pytest_asyncio.fixture(loop_scope="session")
async def video_city(settings: Settings) -> AsyncIterator[CityRun]:
    """``city`` with fewer units whose simulated body cameras publish ``VIDEO_SIZE`` pictures over WHIP when the
    hub sends ``video_start`` (automatic backhaul on arrival): the hub's public URL is its own test port."""
    settings = settings.model_copy(update={"public_base_url": f"http://127.0.0.1:{settings.port}"})
    async with running_hub(settings) as rh, CitySim(
            rh.base_url, "", ADMIN_TOKEN, units=VIDEO_UNITS, seed=settings.city_seed,
            interval_s=(1.0, 1.0), timing=TIMING, camera_size=VIDEO_SIZE, camera_fps=VIDEO_FPS) as sim:
        await wait_for(lambda: all_located(rh.api, VIDEO_UNITS), timeout=30, interval=0.25)
        yield CityRun(settings, rh, sim)
