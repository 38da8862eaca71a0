"""A simulated Traccar Client phone (the Android/iOS app, OsmAnd protocol), as strict as the app.

Every ``interval_s`` the app takes a location and reports it as query parameters appended to the server URL it is
configured with (which keeps its own query: the hub's ``?key=<secret>``): ``id``, ``timestamp`` (epoch seconds),
``lat``, ``lon``, ``speed`` (knots), ``bearing``, ``altitude``, ``accuracy``, ``batt`` (percent) and ``charge``
while charging, by POST with an empty body (``method="GET"`` as OsmAnd does). A report is deleted only after a
200; until then it stays in the app's store (its SQLite database) and the reports go oldest first, so while the hub
is unreachable (or answers 5xx) the reports pile up and are sent later, in order, retrying every ``retry_s``.
A 4xx answer (a bad key) is not retried: the app would retry it forever, the simulator counts and drops it.
:func:`report_params` and :func:`report_url` are pure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

from devices.payloads import Fix
from devices.tasks import cancel_and_wait

__all__ = ["KNOTS_PER_MPS", "TraccarConfig", "TraccarPhone", "report_params", "report_url"]

log = logging.getLogger(__name__)

KNOTS_PER_MPS: Final = 3600 / 1852
Position = Callable[[], Fix]


def report_params(device_id: str, fix: Fix, *, charging: bool = False) -> list[tuple[str, str]]:
    """The app's parameters of one location (a reading the phone does not have is left out)."""
    params = [("id", device_id), ("timestamp", str(fix.ts // 1000)), ("lat", f"{fix.lat:.7f}"),
              ("lon", f"{fix.lon:.7f}")]
    if fix.speed is not None:
        params.append(("speed", f"{fix.speed * KNOTS_PER_MPS:.2f}"))
    if fix.heading is not None:
        params.append(("bearing", f"{fix.heading:.1f}"))
    if fix.alt is not None:
        params.append(("altitude", f"{fix.alt:.1f}"))
    if fix.acc is not None:
        params.append(("accuracy", f"{fix.acc:.1f}"))
    if fix.battery is not None:
        params.append(("batt", f"{fix.battery:.1f}"))
    if charging:
        params.append(("charge", "true"))
    return params


def report_url(server_url: str, params: list[tuple[str, str]]) -> str:
    """The server URL with the report's parameters appended after its own query (the hub's ``key``)."""
    parts = urlsplit(server_url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, ""))


@dataclass(frozen=True, slots=True)
class TraccarConfig:
    """The app's settings: ``server_url`` as the hub's provisioning gives it (``.../gateway/osmand?key=...``)."""

    device_id: str  # the app's "device identifier"
    server_url: str
    interval_s: float = 300.0  # the app's default frequency
    retry_s: float = 30.0  # the app's retry delay after a failed send
    method: Literal["POST", "GET"] = "POST"
    store_max: int = 100_000  # the app's database is bounded by the phone's storage; here by a count
    timeout_s: float = 15.0  # the app's connect and read time-out


@dataclass(frozen=True, slots=True)
class _Report:
    ts: int
    url: str


class TraccarPhone:
    """One phone running Traccar Client; :meth:`start`, :meth:`stop`. ``stored``: the reports not yet taken."""

    def __init__(self, config: TraccarConfig, position: Position, *, wall: Callable[[], float] = time.time,
                 charging: Callable[[], bool] = lambda: False,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.position = position
        self.wall = wall
        self.charging = charging
        self.transport = transport
        self.counters: Counter[str] = Counter()  # taken, sent, failed_<why>, dropped_full, refused_<status>
        self.sent: deque[int] = deque(maxlen=10_000)  # device times (ms) of the reports the hub answered 200
        self.stored: deque[_Report] = deque()
        self._http: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=self.config.timeout_s, transport=self.transport)
        self._task = asyncio.create_task(self._run(), name=f"traccar-{self.config.device_id}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def take(self) -> None:
        """Take a location now and store it (the app's tracking loop; also used by tests)."""
        fix = self.position()
        if len(self.stored) >= self.config.store_max:
            self.stored.popleft()
            self.counters["dropped_full"] += 1
        url = report_url(self.config.server_url,
                         report_params(self.config.device_id, fix, charging=self.charging()))
        self.stored.append(_Report(fix.ts, url))
        self.counters["taken"] += 1

    def send_now(self) -> None:
        """Try the stored reports at once (after a retry delay in progress)."""
        self._wake.set()

    async def _run(self) -> None:
        """The app's two loops: tracking takes a location every interval whatever the network does; sending
        empties the store, and after a failure waits ``retry_s`` (or :meth:`send_now`)."""
        sender = asyncio.create_task(self._send_loop())
        try:
            while True:
                self.take()
                self._wake.set()
                await asyncio.sleep(self.config.interval_s)
        finally:
            await cancel_and_wait(sender)

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.stored and not await self.flush():
                await asyncio.sleep(self.config.retry_s)  # a new location does not cut the retry delay short

    async def flush(self) -> bool:
        """Send the stored reports oldest first; False at the first the hub did not take (it stays stored)."""
        http = self._http
        assert http is not None, "start() first"
        while self.stored:
            report = self.stored[0]
            try:
                r = await http.request(self.config.method, report.url)
            except httpx.HTTPError as exc:
                self.counters["failed_unreachable"] += 1
                log.info("%s: the server is unreachable (%s); %d reports kept", self.config.device_id,
                         type(exc).__name__, len(self.stored))
                return False
            if r.status_code >= 500 or r.status_code == 429:
                self.counters[f"failed_{r.status_code}"] += 1
                return False
            self.stored.popleft()
            if r.status_code == 200:
                self.counters["sent"] += 1
                self.sent.append(report.ts)
            else:
                self.counters[f"refused_{r.status_code}"] += 1
                log.warning("%s: the server refused a report: HTTP %d %s", self.config.device_id, r.status_code,
                            r.text[:200])
        return True
