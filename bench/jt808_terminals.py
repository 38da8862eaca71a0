"""A process of lean JT/T 808 terminals for the gateways benchmark, apart from the benchmark and the hub.

Thousands of TCP terminals are load the benchmark must not measure as its own, so :mod:`bench.jt808_fleet` and
:mod:`bench.gateway_cost` run them in children of this module. A terminal is an :class:`asyncio.Protocol` built on
the ``jt808`` codec: 0x0100 register -> 0x8100 code -> 0x0102 authenticate -> 0x8001 result 0; then a location
report 0x0200 every ``interval_s`` (phases spread over the interval), a heartbeat 0x0002 every ``heartbeat_s``,
and a ``batch_share`` of the reports sent instead as a 0x0704 blind-area batch of :data:`BATCH_SIZE` positions.
Counters are per process, by message id: sent, answered result 0, answered otherwise; positions sent and answered 0.

Report times are whole seconds (the protocol's BCD time), kept strictly increasing per terminal so that every
position is a row of its own (the hub stores a device's fix once per ``ts``). Protocol, JSON lines:

- stdin: ``{"host", "port", "phones", "first", "interval_s", "heartbeat_s", "batch_share", "register_timeout_s",
  "connect_concurrency"}``; the child connects, registers and authenticates every terminal, then answers
  ``{"authenticated": n, "seconds": s, "failures": {...}}`` (or at the time-out); its terminals send only
  heartbeats until ``go``, so one child's reports do not load the hub while another's terminals still register;
- stdin: ``go`` -> reports start; ``status``; both answered with the counters so far;
- stdin: ``stop`` (or EOF) -> reports stop, the last answers are awaited, connections close, the final counters.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
from collections import Counter
from typing import Any, Final

from bench.children import LineChild
from jt808.codec import decode_message, encode_message
from jt808.errors import Jt808Error
from jt808.frame import Deframer
from jt808.location import STATUS_ACC, STATUS_POSITIONED, BatchLocation, Location
from jt808.messages import (
    MSG_AUTHENTICATION,
    MSG_BATCH_LOCATION,
    MSG_HEARTBEAT,
    MSG_LOCATION,
    RESULT_OK,
    Authentication,
    Body,
    Heartbeat,
    PlatformResponse,
    Registration,
    RegistrationResponse,
)
from sim.city import CENTRE

__all__ = ["BATCH_SIZE", "Tally", "Terminal", "TerminalProcess", "batch_body", "location_at", "main",
           "registration_body"]

BATCH_SIZE: Final = 5
BLIND_AREA: Final = 1  # 0x0704 kind: reports held while out of coverage
MSG_NAMES: Final = {MSG_LOCATION: "0200", MSG_BATCH_LOCATION: "0704", MSG_HEARTBEAT: "0002",
                    MSG_AUTHENTICATION: "0102"}


def registration_body(index: int) -> Registration:
    """The 0x0100 of terminal ``index``: a 2013 body (terminal id at most 7 characters), no plate."""
    return Registration(province=32, city=300, manufacturer="FHBEN", model="FH-T1", terminal_id=f"T{index % 10**6:06d}",
                        plate_color=0, plate="")


def location_at(index: int, ts_s: int, seq: int) -> Location:
    """Terminal ``index``'s position at ``ts_s`` (epoch s): a 200 m circle around its own point near the city
    centre, positioned, ignition on, 30 km/h; ``seq`` moves it along (every report differs)."""
    lat0 = CENTRE[0] + (index % 50 - 25) * 0.002
    lon0 = CENTRE[1] + (index // 50 % 50 - 25) * 0.002
    angle = seq * 0.15
    lat = lat0 + 200.0 * math.sin(angle) / 111_320.0
    lon = lon0 + 200.0 * math.cos(angle) / (111_320.0 * math.cos(math.radians(lat0)))
    return Location(alarm=0, status=STATUS_ACC | STATUS_POSITIONED, lat_e6=round(lat * 1e6), lon_e6=round(lon * 1e6),
                    altitude_m=40, speed_dkmh=300, direction=round(math.degrees(angle)) % 360, ts_ms=ts_s * 1000,
                    satellites=9)


def batch_body(index: int, last_ts_s: int, seq: int) -> BatchLocation:
    """A blind-area 0x0704 of :data:`BATCH_SIZE` positions one second apart, the last at ``last_ts_s``."""
    first = last_ts_s - BATCH_SIZE + 1
    return BatchLocation(BLIND_AREA, tuple(location_at(index, first + k, seq + k) for k in range(BATCH_SIZE)))


class Tally:
    """The counters of every terminal of a process (one object: per-terminal counters would cost memory)."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()  # by message id ("0200", "0704", "0002", "0100", "0102")
        self.ok: Counter[str] = Counter()  # answered result 0 (0x8100 result 0 for "0100")
        self.failed: Counter[str] = Counter()  # answered otherwise, by "<msg>_result_<n>"
        self.failures: Counter[str] = Counter()  # connections and refusals: "connect", "closed", "bad_frame"...
        self.positions_sent = 0
        self.positions_ok = 0

    def snapshot(self) -> dict[str, Any]:
        return {"sent": dict(self.sent), "ok": dict(self.ok), "failed": dict(self.failed),
                "failures": dict(self.failures), "positions_sent": self.positions_sent,
                "positions_ok": self.positions_ok}


class Terminal(asyncio.Protocol):
    """One terminal's connection: registration and authentication, then answers counted per message serial."""

    def __init__(self, index: int, phone: str, tally: Tally) -> None:
        self.index, self.phone, self.tally = index, phone, tally
        self.code = ""
        self.authenticated = asyncio.Event()
        self.lost = asyncio.Event()
        self._transport: asyncio.Transport | None = None
        self._deframer = Deframer()
        self._serial = 0
        self._pending: dict[int, tuple[str, int]] = {}  # serial -> (message, positions in it)
        self.last_ts_s = 0
        self.seq = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass it

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.is_set():
            self.tally.failures["closed" if exc is None else "connection_error"] += 1
        self.lost.set()
        self.authenticated.set()  # wake a waiter; ``lost`` tells it why

    def close(self) -> None:
        self.lost.set()
        if self._transport is not None:
            self._transport.close()

    def send(self, body: Body, name: str, positions: int = 0) -> None:
        if self._transport is None or self.lost.is_set():
            return
        serial, self._serial = self._serial, (self._serial + 1) & 0xFFFF
        self._pending[serial] = (name, positions)
        self.tally.sent[name] += 1
        self.tally.positions_sent += positions
        self._transport.write(encode_message(body, phone=self.phone, serial=serial))

    def register(self) -> None:
        self.send(registration_body(self.index), "0100")

    def report(self, batch: bool) -> None:
        """A location now, or a blind-area batch ending now; times strictly increasing (see the module)."""
        now = int(time.time())
        if batch:
            ts = max(now, self.last_ts_s + BATCH_SIZE)
            self.send(batch_body(self.index, ts, self.seq), "0704", BATCH_SIZE)
            self.seq += BATCH_SIZE
        else:
            ts = max(now, self.last_ts_s + 1)
            self.send(location_at(self.index, ts, self.seq), "0200", 1)
            self.seq += 1
        self.last_ts_s = ts

    def data_received(self, data: bytes) -> None:
        for item in self._deframer.feed(data):
            if isinstance(item, Jt808Error):
                self.tally.failures[f"bad_frame_{item.reason}"] += 1
                continue
            try:
                body = decode_message(item).body
            except Jt808Error as exc:
                self.tally.failures[f"bad_message_{exc.reason}"] += 1
                continue
            if isinstance(body, RegistrationResponse):
                self._registered(body)
            elif isinstance(body, PlatformResponse):
                self._answered(body)
            else:
                self.tally.failures["unexpected_message"] += 1

    def _registered(self, body: RegistrationResponse) -> None:
        self._pending.pop(body.reply_serial, None)
        if body.result != RESULT_OK:
            self.tally.failed[f"0100_result_{body.result}"] += 1
            self.close()
            return
        self.tally.ok["0100"] += 1
        self.code = body.auth_code
        self.send(Authentication(self.code), "0102")

    def _answered(self, body: PlatformResponse) -> None:
        name, positions = self._pending.pop(body.reply_serial, (MSG_NAMES.get(body.reply_id, "unknown"), 0))
        if body.result != RESULT_OK:
            self.tally.failed[f"{name}_result_{body.result}"] += 1
            if body.reply_id == MSG_AUTHENTICATION:
                self.close()
            return
        self.tally.ok[name] += 1
        self.tally.positions_ok += positions
        if body.reply_id == MSG_AUTHENTICATION:
            self.authenticated.set()


def batch_due(rng: random.Random, share: float) -> bool:
    return share > 0 and rng.random() < share


async def run_terminal(terminal: Terminal, config: dict[str, Any], started: asyncio.Event, gate: asyncio.Semaphore,
                       rng: random.Random) -> None:
    """Connect (at most ``connect_concurrency`` at once), register, authenticate; after ``started`` report until
    cancelled."""
    loop = asyncio.get_running_loop()
    try:
        async with gate:
            await loop.create_connection(lambda: terminal, config["host"], config["port"])
    except OSError:
        terminal.tally.failures["connect"] += 1
        terminal.authenticated.set()
        terminal.lost.set()
        return
    terminal.register()
    await terminal.authenticated.wait()
    if terminal.lost.is_set():
        return
    interval, heartbeat = float(config["interval_s"]), float(config["heartbeat_s"])
    next_heartbeat = time.monotonic() + rng.uniform(0, heartbeat)
    while not started.is_set() and not terminal.lost.is_set():  # only heartbeats until the parent says "go"
        try:
            await asyncio.wait_for(started.wait(), max(0.0, next_heartbeat - time.monotonic()))
        except TimeoutError:
            terminal.send(Heartbeat(), "0002")
            next_heartbeat += heartbeat
    t0 = time.monotonic() + rng.uniform(0, interval)
    k = 0
    while not terminal.lost.is_set():
        due = t0 + k * interval
        while next_heartbeat < due:
            await asyncio.sleep(max(0.0, next_heartbeat - time.monotonic()))
            terminal.send(Heartbeat(), "0002")
            next_heartbeat += heartbeat
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        terminal.report(batch_due(rng, float(config.get("batch_share", 0.0))))
        k += 1


def say(answer: dict[str, Any]) -> None:
    print(json.dumps(answer), flush=True)


async def serve() -> None:
    config = json.loads(await asyncio.to_thread(sys.stdin.readline))
    tally = Tally()
    first = int(config.get("first", 0))
    terminals = [Terminal(first + k, phone, tally) for k, phone in enumerate(config["phones"])]
    started = asyncio.Event()
    gate = asyncio.Semaphore(int(config.get("connect_concurrency", 32)))
    rng = random.Random(first)
    t0 = time.monotonic()
    tasks = [asyncio.create_task(run_terminal(t, config, started, gate, random.Random(rng.random())))
             for t in terminals]
    try:
        waits = asyncio.gather(*(t.authenticated.wait() for t in terminals))
        try:
            await asyncio.wait_for(waits, float(config.get("register_timeout_s", 120.0)))
        except TimeoutError:
            tally.failures["register_timeout"] += sum(not t.authenticated.is_set() for t in terminals)
        ready = sum(t.authenticated.is_set() and not t.lost.is_set() for t in terminals)
        say({"authenticated": ready, "seconds": round(time.monotonic() - t0, 2), "failures": dict(tally.failures)})
        while True:
            line = (await asyncio.to_thread(sys.stdin.readline)).strip()
            if line == "go":
                started.set()
            elif line != "status":
                break  # "stop", or EOF: the parent went away
            say({"connected": sum(not t.lost.is_set() for t in terminals), **tally.snapshot()})
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(3.0)  # the answers of the last reports (each after its commit)
    finally:
        for task in tasks:
            task.cancel()
        for t in terminals:
            t.close()
    say({"connected": 0, **tally.snapshot()})


class TerminalProcess(LineChild):
    """The parent's handle on one child of terminals."""

    module = "bench.jt808_terminals"
    what = "terminal process"

    async def start(self, config: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Start the child; its answer once its terminals are authenticated. Raises :class:`BenchError`."""
        return await self.spawn(json.dumps(config), timeout_s)

    async def go(self) -> dict[str, Any]:
        """Reports start (heartbeats run from authentication on); the counters so far."""
        return await self.say("go", 30.0)

    async def status(self) -> dict[str, Any]:
        return await self.say("status", 30.0)

    async def stop(self) -> dict[str, Any]:
        return await self.finish()


def main() -> int:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
