"""The render benchmark's fleet: N devices driving the city's roads, each reporting once a second.

It runs in its own process (``python -m bench.render_load``), so its CPU is measured apart from the
hub, the browser and the benchmark. Every device is a car on the road graph of
:func:`sim.city.build_city` (the hub's base map, same seed): it drives along an edge at a share of the
road's speed limit, picks a random next road at each junction (no U-turn unless it is a dead end),
and sometimes waits at a junction (a red light) — so positions, speeds and headings change the way
patrol cars' do, and the map has cars standing as well as moving. GPS noise of a few metres is added.

Pacing as in :mod:`bench.loadgen`: at each slice the generator sends what it owes to reach
``devices x rate_hz x elapsed``, message k going to device k mod N, so each device reports every
1/rate_hz seconds, the devices' reports spread evenly over the second. Published with the raw
publisher of :mod:`bench.publisher`, one connection per device with the login the parent provisioned for it
(``--logins``), over TLS for an ``mqtts://`` ``--url``, as deployed devices connect.

Parent protocol (JSON lines): the child prints ``ready`` once connected, waits for ``start`` on stdin,
prints a ``sample`` every second and ``done`` at the end (after ``--duration`` s, or when stdin closes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import device_ids, emit, read_logins, run_child, watch_parent
from bench.publisher import MqttProtocolError, Publisher, connect_devices, encode_topic
from devices.topics import device_topic
from sim.city import City, build_city

SLICE_S = 0.02
SAMPLE_S = 1.0
FIX = b'{"ts":%d,"lat":%.6f,"lon":%.6f,"acc":%.1f,"speed":%.1f,"heading":%d,"seq":%d}'
RED_LIGHT_P = 0.25
RED_LIGHT_S = (5.0, 40.0)
M_PER_DEG = 111_320.0


def unit_id(device_id: str, prefix: str) -> str:
    """``rd-00042`` -> ``R00042``: one unit per device."""
    return "R" + device_id[len(prefix):]


class Car:
    """A point driving the road graph: from node ``a`` towards node ``b``, ``pos`` metres along."""

    __slots__ = ("a", "b", "city", "hold_until", "length", "pace", "pos", "rng", "speed", "t")

    def __init__(self, city: City, rng: random.Random, now: float) -> None:
        self.city = city
        self.rng = rng
        edge = rng.choice(city.edges)
        self.a, self.b = (edge.a, edge.b) if rng.random() < 0.5 else (edge.b, edge.a)
        self.length = edge.length_m
        self.pace = rng.uniform(0.6, 1.0)
        self.speed = edge.speed_mps * self.pace
        self.pos = rng.uniform(0.0, edge.length_m)
        self.hold_until = 0.0
        self.t = now

    def advance(self, now: float) -> None:
        dt, self.t = now - self.t, now
        if now < self.hold_until:
            return
        self.pos += self.speed * dt
        while self.pos >= self.length:
            self.pos -= self.length
            self._next_edge()
            if self.rng.random() < RED_LIGHT_P:
                self.hold_until = now + self.rng.uniform(*RED_LIGHT_S)
                self.pos = 0.0
                return

    def _next_edge(self) -> None:
        came_from, node = self.a, self.b
        choices = [(n, e) for n, e in self.city.neighbours(node) if n != came_from] or self.city.neighbours(node)
        nxt, edge = self.rng.choice(choices)
        self.a, self.b, self.length = node, nxt, edge.length_m
        self.speed = edge.speed_mps * self.pace

    def fix(self, now: float) -> tuple[float, float, float, float]:
        """``(lat, lon, speed m/s, heading deg)`` now."""
        lat_a, lon_a = self.city.nodes[self.a]
        lat_b, lon_b = self.city.nodes[self.b]
        t = self.pos / self.length if self.length else 0.0
        north = (lat_b - lat_a) * M_PER_DEG
        east = (lon_b - lon_a) * M_PER_DEG * math.cos(math.radians(lat_a))
        heading = math.degrees(math.atan2(east, north)) % 360.0
        speed = 0.0 if now < self.hold_until else self.speed
        return lat_a + (lat_b - lat_a) * t, lon_a + (lon_b - lon_a) * t, speed, heading


@dataclass(slots=True)
class Fleet:
    cars: list[Car]
    topics: list[bytes]
    rng: random.Random
    seq: list[int] = field(default_factory=list)
    last_ts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.seq = [0] * len(self.cars)
        self.last_ts = [0] * len(self.cars)

    def payload(self, d: int, now: float) -> bytes:
        car = self.cars[d]
        car.advance(now)
        lat, lon, speed, heading = car.fix(now)
        ts = max(int(now * 1000), self.last_ts[d] + 1)  # (device_id, ts) is the duplicate key
        self.last_ts[d] = ts
        seq = self.seq[d] = self.seq[d] + 1
        acc = 3.0 + 4.0 * self.rng.random()
        noise = acc / M_PER_DEG / 2
        return FIX % (ts, lat + self.rng.gauss(0.0, noise), lon + self.rng.gauss(0.0, noise), acc, speed,
                      round(heading), seq)


def build_fleet(count: int, prefix: str, seed: int, city_seed: int, now: float) -> Fleet:
    city = build_city(city_seed)
    rng = random.Random(seed)
    cars = [Car(city, random.Random(rng.getrandbits(64)), now) for _ in range(count)]
    topics = [encode_topic(device_topic(d, "telemetry")) for d in device_ids(count, prefix)]
    return Fleet(cars, topics, random.Random(seed + 1))


def first_positions(count: int, seed: int, city_seed: int) -> list[tuple[float, float]]:
    """Where each device starts (the parent registers each unit with it as its home)."""
    fleet = build_fleet(count, "x", seed, city_seed, 0.0)
    return [car.fix(0.0)[:2] for car in fleet.cars]


async def child_main(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    fleet = build_fleet(args.devices, args.prefix, args.seed, args.city_seed, time.time())
    connections: list[Publisher] = await connect_devices(args.url, device_ids(args.devices, args.prefix),
                                                         read_logins(args.logins))
    emit("ready", devices=args.devices, connections=len(connections))
    if (await asyncio.wait_for(reader.readline(), 600)).strip() != b"start":
        return 1
    parent = asyncio.create_task(watch_parent(reader))
    rate = args.devices * args.rate_hz
    started = time.monotonic()
    sent = late = 0
    next_sample = started
    error = None
    try:
        while not parent.done() and time.monotonic() - started < args.duration:
            mono = time.monotonic()
            due = int(rate * (mono - started)) + 1
            if due - sent > rate * 0.25:
                late += 1  # more than a quarter second behind
            now = time.time()
            touched = set()
            for k in range(sent, due):
                d = k % args.devices
                connection = connections[d]
                if not connection.publish(fleet.topics[d], fleet.payload(d, now), args.qos):
                    raise MqttProtocolError("65,535 messages awaiting PUBACK on one connection: the broker stalled")
                touched.add(connection)
            for connection in touched:
                connection.flush()
            sent = due
            if mono >= next_sample:
                emit("sample", t=now, published=sum(c.published for c in connections),
                     acked=sum(c.acked for c in connections))
                next_sample += SAMPLE_S
            if any(c.closed.done() for c in connections):
                raise MqttProtocolError("a connection was closed by the broker")
            await asyncio.sleep(SLICE_S)
    except MqttProtocolError as exc:
        error = str(exc)
    parent.cancel()
    await asyncio.sleep(0.5)  # the last PUBACKs
    elapsed = time.monotonic() - started
    emit("done", published=sum(c.published for c in connections), acked=sum(c.acked for c in connections),
         rate=round(sent / elapsed, 1) if elapsed > 0 else None, late_slices=late,
         cpu_s=round(time.process_time(), 3), error=error)
    for c in connections:
        c.disconnect()
    await asyncio.sleep(0.05)
    return 0 if error is None else 1


# ------------------------------------------------------------------ parent side
class FleetProcess:
    """The parent's handle on the fleet child: ``start`` (connected), ``go``, ``close``."""

    def __init__(self, url: str, logins: Path, *, devices: int, prefix: str, duration: float, rate_hz: float = 1.0,
                 qos: int = 1, seed: int = 1, city_seed: int = 7) -> None:
        self.argv = ["--url", url, "--logins", str(logins), "--devices", str(devices), "--prefix", prefix,
                     "--duration", str(duration), "--rate-hz", str(rate_hz), "--qos", str(qos),
                     "--seed", str(seed), "--city-seed", str(city_seed)]
        self.proc: asyncio.subprocess.Process | None = None
        self.samples: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {}
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def published(self) -> int:
        return int(self.samples[-1]["published"]) if self.samples else 0

    async def start(self, timeout_s: float = 300.0) -> None:
        from bench.processes import die_with_parent, python_env

        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.render_load", *self.argv, env=python_env(), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent)
        line = await self._line(timeout_s)
        if line.get("event") != "ready":
            raise MqttProtocolError(f"fleet did not get ready: {line}")

    def go(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"start\n")
        self._reader = asyncio.create_task(self._read())

    async def _line(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if not raw:
            raise MqttProtocolError(f"fleet process exited (code {await self.proc.wait()})")
        message: dict[str, Any] = json.loads(raw)
        if message.get("event") == "error":
            raise MqttProtocolError(f"fleet process failed: {message.get('message')}")
        return message

    async def _read(self) -> None:
        while True:
            message = await self._line(3600)
            if message["event"] == "sample":
                self.samples.append(message)
            elif message["event"] == "done":
                self.summary = message
                return

    async def close(self) -> dict[str, Any]:
        """Ask the child to stop (close its stdin), wait for its summary; then make sure it is gone."""
        proc = self.proc
        if proc is None:
            return self.summary
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, MqttProtocolError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 10)
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if proc.returncode is not None:
                break
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 3)
        return self.summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.render_load", description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="the broker: mqtt://host:port or mqtts://host:port?cafile=...")
    p.add_argument("--logins", type=Path, help="JSON file: device id -> MQTT secret")
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--prefix", default="rd-")
    p.add_argument("--duration", type=float, required=True, help="seconds")
    p.add_argument("--rate-hz", type=float, default=1.0, help="fixes per device per second")
    p.add_argument("--qos", type=int, choices=(0, 1), default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--city-seed", type=int, default=7)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_child(child_main, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
