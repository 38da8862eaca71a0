"""The TAK gateway: the hub's units, incidents and SOS out as Cursor-on-Target, TAK users' positions in as fixes.

One connection made with pytak (``protocol_factory``, ``TXWorker``, an ``RXWorker`` that notices the end of the
stream): ``tcp://host:8087`` or ``tls://host:8089`` to a TAK server, ``udp://239.2.3.1:6969`` (``udp+wo://`` to only
send) for a LAN's SA multicast. A lost connection is made again with backoff, and everything is sent afresh.

Out, from plain callables the composition root wires to the live state (polled every ``poll_s``, and at once on
:meth:`TakGateway.changed`):

* ``units_source() -> list[dict]``: ``{"unit_id", "name", "kind", "status"?, "station"?, "battery"?, "position":
  {"ts", "lat", "lon", "alt"?, "acc"?, "speed"?, "heading"?} | None}`` (``LiveState.unit_view``'s shape; m/s,
  degrees, percent). Sent on change and at least every ``interval_s``; not without a fix younger than
  ``fix_max_age_s``, nor units of kind "tak" (TAK users, whom the clients have already).
* ``incidents_source() -> list[dict]``: ``{"id" | "incident_id", "category", "priority", "status", "lat", "lon",
  "address"?, "summary"?}``. Sent on change and before it goes stale; once ``"closed"`` (or gone from the list)
  sent a last time stale now, which removes it.
* :meth:`TakGateway.sos` / :meth:`TakGateway.cancel_sos` (a unit dict): the beacon goes out at once, and again every
  interval until cancelled.

In: a TAK user's position report becomes a fix of device ``tak-<uid-safe>-<hash>`` (:func:`.cot.device_id_for`);
before the first, ``on_new_user(device_id, callsign, team)`` (sync or async) lets the composition root register
the device on a unit of kind "tak". A user's emergency beacon becomes an ``sos`` event. Refusals are counted by
reason in :attr:`TakGateway.rejects`, ignored events by CoT type in :attr:`TakGateway.ignored`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from configparser import ConfigParser, SectionProxy
from typing import Any, Final

with warnings.catch_warnings():  # pytak warns at import that aiohttp, for features not used here, is missing
    warnings.filterwarnings("ignore", "The 'aiohttp' package", UserWarning)
    import pytak

from devices import payloads
from devices.clock import now_ms
from devices.payloads import Event
from devices.topics import Channel, device_topic
from hub.gateways.errors import CodecError

from . import cot
from .cot import IncidentReport, UnitReport

__all__ = ["OnNewUser", "Source", "TakGateway", "TakTls", "incident_report", "unit_report"]

log = logging.getLogger(__name__)
Source = Callable[[], Iterable[Mapping[str, Any]]]
OnNewUser = Callable[[str, str, str | None], Awaitable[None] | None]
Submit = Callable[..., "asyncio.Future[None] | None"]  # Pipeline.submit(topic, payload, qos, retained=False)
MAX_USERS: Final = 10_000  # TAK users remembered; a flood of invented uids stops here


@dataclasses.dataclass(frozen=True, slots=True)
class TakTls:
    """The client certificate (PEM or .p12) and CA a ``tls://`` TAK server asks for."""
    cert: str
    key: str | None = None
    cafile: str | None = None  # the CA that signed the server's certificate
    password: str | None = None
    check_hostname: bool = True
    server_hostname: str | None = None  # the name in the server's certificate, when the URL has an address


class _Receiver(pytak.RXWorker):
    """pytak's RXWorker, but the end of a TCP stream ends the connection (pytak's would read nothing forever), an
    over-long event is dropped instead of stopping the reader, and each event goes straight to the gateway."""

    def __init__(self, config: SectionProxy, reader: Any, on_event: Callable[[bytes], Awaitable[None]],
                 on_refused: Callable[[str, str], None]) -> None:
        super().__init__(asyncio.Queue(1), config, reader)
        self.on_event, self.on_refused = on_event, on_refused

    async def readcot(self) -> bytes | None:
        if not hasattr(self.reader, "readuntil"):
            data, _ = await self.reader.recv()
            return bytes(data)
        try:
            return bytes(await self.reader.readuntil(b"</event>"))
        except asyncio.IncompleteReadError:
            raise ConnectionResetError("the TAK server closed the connection") from None
        except asyncio.LimitOverrunError as exc:
            # More than the stream's buffer without an end tag: drop it; its tail is refused as bad XML.
            await self.reader.readexactly(exc.consumed)
            self.on_refused("too_large", f"over {exc.consumed} bytes without </event>")
            return None

    async def run_once(self) -> None:
        data = await self.readcot()
        try:
            if data:
                await self.on_event(data)
        except Exception as exc:  # contained: a defect (the pipeline's, ours) costs this event, not the connection
            log.exception("tak: handling an event failed")
            self.on_refused("internal", f"{type(exc).__name__}: {exc}")


class TakGateway:
    """An async context manager: connects (and reconnects) to ``url`` and runs the feed until closed."""

    def __init__(self, url: str, *, submit: Submit, units_source: Source, incidents_source: Source,
                 interval_s: float = 10.0, on_new_user: OnNewUser | None = None, tls: TakTls | None = None,
                 wall_ms: Callable[[], int] = now_ms, poll_s: float = 1.0, stale_intervals: int = 3,
                 fix_max_age_s: float = 600.0, incident_stale_s: float = 600.0, reconnect_min_s: float = 1.0,
                 reconnect_max_s: float = 30.0, connect_timeout_s: float = 10.0, max_queue: int = 1000) -> None:
        self.url, self.submit, self.wall_ms = url, submit, wall_ms
        self.on_new_user: OnNewUser = on_new_user or (lambda device_id, callsign, team: None)
        self.units_source, self.incidents_source = units_source, incidents_source
        self.interval_ms, self.poll_s = round(interval_s * 1000), poll_s
        self.unit_stale_ms, self.fix_max_age_ms = self.interval_ms * stale_intervals, round(fix_max_age_s * 1000)
        self.incident_stale_ms = max(round(incident_stale_s * 1000), 2 * self.interval_ms)
        self.reconnect_min_s, self.reconnect_max_s = reconnect_min_s, reconnect_max_s
        self.connect_timeout_s, self.max_queue = connect_timeout_s, max_queue
        self.config = _pytak_config(url, tls)
        self.counters: Counter[str] = Counter()  # connects, sent, fixes, sos_out, tx_dropped, store_refused, ...
        self.rejects: Counter[str] = Counter()  # refused TAK events by reason (cot.REASONS, unknown_user, ...)
        self.ignored: Counter[str] = Counter()  # well-formed events of no use to the hub, by CoT type
        self.users: dict[str, str] = {}  # device id -> callsign of the TAK users seen
        self._queue: asyncio.Queue[bytes] | None = None  # the connected session's send queue
        self._wake, self._tasks = asyncio.Event(), list[asyncio.Task[None]]()
        self._units: dict[str, tuple[tuple[Any, ...], int]] = {}  # unit id -> (what was sent, when)
        self._incidents: dict[str, tuple[IncidentReport, int]] = {}  # open incidents sent, and when
        self._sos: dict[str, tuple[UnitReport, int]] = {}  # active beacons, and when last sent

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def __aenter__(self) -> TakGateway:
        self._tasks = [asyncio.create_task(self._connections(), name="tak-connection"),
                       asyncio.create_task(self._feed(), name="tak-feed")]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    @property
    def connected(self) -> bool:
        return self._queue is not None

    # --- out --------------------------------------------------------------------------------------------------

    def changed(self) -> None:
        """Something in the sources changed: look now rather than at the next poll."""
        self._wake.set()

    def sos(self, unit: Mapping[str, Any]) -> None:
        """Raise ``unit``'s emergency beacon now (and keep sending it every interval until cancelled)."""
        report, now = self._checked(unit_report, unit, "bad_unit"), self.wall_ms()
        if report is None:
            self.counters["sos_without_position"] += 1  # ATAK would draw it at 0, 0
            return
        self._sos[report.unit_id] = (report, now)
        self._send(cot.sos_event(report, now_ms=now, stale_ms=now + self.unit_stale_ms), "sos_out")

    def cancel_sos(self, unit: Mapping[str, Any]) -> None:
        held = self._sos.pop(str(unit.get("unit_id")), None)
        report, now = self._checked(unit_report, unit, "bad_unit") or (held[0] if held else None), self.wall_ms()
        if report is not None:
            self._send(cot.sos_event(report, now_ms=now, stale_ms=now + self.unit_stale_ms, cancel=True), "sos_out")

    def _send(self, event: bytes, counter: str = "sent") -> None:
        if (queue := self._queue) is None:
            self.counters["not_connected"] += 1
            return
        if queue.full():  # the oldest position is the one to lose: a newer one of the same unit follows
            queue.get_nowait()
            self.counters["tx_dropped"] += 1
        queue.put_nowait(event)
        self.counters[counter] += 1

    async def _feed(self) -> None:
        while True:
            if self._queue is not None:
                try:
                    self.feed_once()
                except Exception:  # contained: a defect in one round must not end the feed
                    self.counters["feed_failed"] += 1
                    log.exception("tak: the feed round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()

    def feed_once(self) -> None:
        """One round: units that changed or are due, due beacons, incidents that changed, closed or are due."""
        now = self.wall_ms()
        for obj in self.units_source():
            report = self._checked(unit_report, obj, "bad_unit")
            if report is None or report.kind == "tak" or now - report.ts > self.fix_max_age_ms:
                continue  # a TAK user's own unit is not sent back to TAK: the clients have the user already
            key = (report.lat, report.lon, report.ts, report.status, report.name, report.battery)
            last = self._units.get(report.unit_id)
            if last is None or last[0] != key or now - last[1] >= self.interval_ms:
                self._units[report.unit_id] = (key, now)
                self._send(cot.unit_event(report, now_ms=now, stale_ms=now + self.unit_stale_ms))
        for unit_id, (report, sent) in list(self._sos.items()):
            if now - sent >= self.interval_ms:
                self._sos[unit_id] = (report, now)
                self._send(cot.sos_event(report, now_ms=now, stale_ms=now + self.unit_stale_ms), "sos_out")
        listed: set[str] = set()
        for obj in self.incidents_source():
            incident = self._checked(incident_report, obj, "bad_incident")
            if incident is None:
                continue
            listed.add(incident.incident_id)
            held = self._incidents.get(incident.incident_id)
            if incident.status == "closed":
                if held is not None:
                    self._close(incident, now)
            elif held is None or held[0] != incident or now - held[1] >= self.incident_stale_ms // 2:
                self._incidents[incident.incident_id] = (incident, now)
                self._send(cot.incident_event(incident, now_ms=now, stale_ms=now + self.incident_stale_ms))
        for incident_id in [i for i in self._incidents if i not in listed]:
            self._close(dataclasses.replace(self._incidents[incident_id][0], status="closed"), now)

    def _close(self, incident: IncidentReport, now: int) -> None:
        del self._incidents[incident.incident_id]
        self._send(cot.incident_event(incident, now_ms=now, stale_ms=now), "incidents_closed")

    def _checked(self, convert: Callable[[Mapping[str, Any]], Any], obj: Mapping[str, Any], counter: str) -> Any:
        try:
            return convert(obj)
        except (KeyError, TypeError, ValueError) as exc:  # the wiring's defect: counted, the other items go on
            self.counters[counter] += 1
            log.warning("tak: %s skipped: %s: %s", counter, type(exc).__name__, exc)
            return None

    # --- the connection ---------------------------------------------------------------------------------------

    async def _connections(self) -> None:
        delay = self.reconnect_min_s
        while True:
            try:
                reader, writer = await asyncio.wait_for(pytak.protocol_factory(self.config), self.connect_timeout_s)
            except Exception as exc:  # refused, unreachable, TLS handshake, time-out: try again later
                self.counters["connect_failed"] += 1
                log.warning("tak: cannot connect to %s: %s: %s (again in %.0f s)", self.url, type(exc).__name__,
                            exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_s)
                continue
            delay = self.reconnect_min_s
            self.counters["connects"] += 1
            log.info("tak: connected to %s", self.url)
            try:
                await self._session(reader, writer)
            except Exception as exc:  # the connection is lost; the next one starts from scratch
                self.counters["disconnects"] += 1
                log.warning("tak: connection to %s lost: %s: %s", self.url, type(exc).__name__, exc)
            finally:
                self._queue = None
                with contextlib.suppress(Exception):  # a transport that is already gone
                    writer.close()
            await asyncio.sleep(self.reconnect_min_s)

    async def _session(self, reader: Any, writer: Any) -> None:
        queue: asyncio.Queue[bytes] = asyncio.Queue(self.max_queue)
        workers = [pytak.TXWorker(queue, self.config, writer)] if writer is not None else []
        if reader is not None:
            workers.append(_Receiver(self.config, reader, self.on_event, self._refused))
        tasks = [asyncio.create_task(worker.run()) for worker in workers]
        # A new session sends everything again: the server (or a client that just joined) knows nothing yet.
        self._units.clear()
        self._incidents = {i: (report, 0) for i, (report, _) in self._incidents.items()}
        self._sos = {u: (report, 0) for u, (report, _) in self._sos.items()}
        self._queue = queue
        self._wake.set()
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            raise ConnectionError("a worker of the connection stopped")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- in ---------------------------------------------------------------------------------------------------

    async def on_event(self, raw: bytes) -> None:
        """One event from the network; never raises for its content."""
        try:
            message = cot.decode(raw, now_ms=self.wall_ms())
        except CodecError as exc:
            self._refused(exc.reason, exc.detail)
            return
        if isinstance(message, cot.Ignored):
            self.ignored[message.cot_type] += 1
        elif isinstance(message, cot.TakPosition):
            await self._position(message)
        else:
            self._emergency(message)

    def _refused(self, reason: str, detail: str) -> None:
        self.rejects[reason] += 1
        (log.debug if reason == "own_uid" else log.info)("tak: an event refused: %s (%s)", reason, detail)

    async def _position(self, position: cot.TakPosition) -> None:
        device_id = cot.device_id_for(position.uid)
        if device_id not in self.users:
            if len(self.users) >= MAX_USERS:
                self._refused("too_many_users", f"{MAX_USERS} TAK users already known")
                return
            if not await self._new_user(device_id, position):
                return
        self.users[device_id] = position.callsign
        self._submit(device_id, "telemetry", payloads.encode_fixes([position.fix]), "fixes")

    async def _new_user(self, device_id: str, position: cot.TakPosition) -> bool:
        try:
            result = self.on_new_user(device_id, position.callsign, position.team)
            if inspect.isawaitable(result):
                await result
        except Exception:  # contained: the user is tried again with its next report
            self.counters["new_user_failed"] += 1
            log.exception("tak: registering TAK user %s failed", device_id)
            return False
        self.counters["new_users"] += 1
        return True

    def _emergency(self, emergency: cot.TakEmergency) -> None:
        device_id = cot.device_id_for(emergency.user_uid)
        if device_id not in self.users:
            self._refused("unknown_user", "an emergency of a TAK user not seen yet")
            return
        if emergency.cancel:
            self.counters["sos_cancelled_in"] += 1  # the contract has no event for it; the incident side decides
            return
        data = {"lat": emergency.lat, "lon": emergency.lon, "source": "tak", "cot_type": emergency.cot_type,
                "callsign": emergency.callsign or emergency.user_uid}
        self._submit(device_id, "event", payloads.encode_event(Event(emergency.ts, "sos", data)), "sos_in")

    def _submit(self, device_id: str, channel: Channel, payload: bytes, counter: str) -> None:
        future = self.submit(device_topic(device_id, channel), payload, 1)
        if future is None:
            self.counters["store_refused"] += 1
            log.warning("tak: the pipeline refused a %s message of %s (full)", channel, device_id)
            return
        self.counters[counter] += 1
        future.add_done_callback(_consume)


def unit_report(obj: Mapping[str, Any]) -> UnitReport | None:
    """A unit dict (see the module docstring) as the CoT builder takes it; None without a position."""
    pos = obj.get("position")
    if not pos:
        return None
    return UnitReport(unit_id=str(obj["unit_id"]), name=str(obj.get("name") or obj["unit_id"]),
                      kind=str(obj.get("kind") or "unit"), lat=float(pos["lat"]), lon=float(pos["lon"]),
                      ts=int(pos["ts"]), station=_opt_str(obj.get("station")), status=_opt_str(obj.get("status")),
                      alt=_opt_float(pos.get("alt")), acc=_opt_float(pos.get("acc")),
                      speed=_opt_float(pos.get("speed")), heading=_opt_float(pos.get("heading")),
                      battery=_opt_float(obj.get("battery")))


def incident_report(obj: Mapping[str, Any]) -> IncidentReport:
    incident_id = obj.get("id") or obj["incident_id"]
    return IncidentReport(incident_id=str(incident_id), category=str(obj.get("category") or "incident"),
                          priority=str(obj.get("priority", "")), status=str(obj.get("status") or "open"),
                          lat=float(obj["lat"]), lon=float(obj["lon"]), address=_opt_str(obj.get("address")),
                          summary=_opt_str(obj.get("summary")))


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _pytak_config(url: str, tls: TakTls | None) -> SectionProxy:
    parser = ConfigParser(interpolation=None)
    # XML on the wire (TAK_PROTO 0): every TAK server and client reads it; pytak's own hello is not sent.
    values = {"COT_URL": url, "TAK_PROTO": "0", "PYTAK_NO_HELLO": "1"}
    if tls is not None:
        values["PYTAK_TLS_CLIENT_CERT"] = tls.cert
        for key, value in (("PYTAK_TLS_CLIENT_KEY", tls.key), ("PYTAK_TLS_CLIENT_CAFILE", tls.cafile),
                           ("PYTAK_TLS_CLIENT_PASSWORD", tls.password),
                           ("PYTAK_TLS_SERVER_EXPECTED_HOSTNAME", tls.server_hostname)):
            if value:
                values[key] = value
        if not tls.check_hostname:
            values["PYTAK_TLS_DONT_CHECK_HOSTNAME"] = "1"
    parser["fieldhub"] = values
    return parser["fieldhub"]


def _consume(future: asyncio.Future[None]) -> None:
    # Nobody awaits this commit: read its outcome so a failure is not reported as "never retrieved".
    if not future.cancelled():
        future.exception()
