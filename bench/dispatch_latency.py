"""End-to-end dispatch latency: incident POST -> dispatch command on the wire, with N live units.

Starts the bench stack (private Mosquitto, PostgreSQL, the hub as a subprocess), registers
``--units`` units with one device each, publishes one fix per device at a random point of the
simulated city (``sim.city.build_city`` bounds) and keeps every unit fresh by re-publishing its
fix every ``--refresh`` seconds (spread evenly over that period). Each device has its own connection
with the login the hub issued it (``POST /api/v1/devices``), over TLS, as deployed. A raw MQTT subscriber
listens on ``fieldhub/v1/dev/+/cmd`` with a read-only observer login of its own (no device may read
another's commands). Then ``--incidents`` priority-1 incidents are POSTed one at a time,
``--spacing`` seconds apart, at random points of the city: priority 1 is auto-dispatched on
creation, so the POST itself sends the dispatch command. Per incident the latency is the time from
just before the POST to receipt of the first dispatch command carrying its incident id. One extra
warm-up incident goes first and is reported apart (``first_incident_ms``): the first auto-dispatch
after start-up brings the whole fleet into the recommender. The simulated devices do not ack, so
the hub re-sends and escalates after its ack timeout: ``commands_seen`` counts those too.

Run: ``.venv/bin/python -m bench.dispatch_latency [--units 10000] [--incidents 300]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from gmqtt import Client as MqttClient

from bench.loadgen import FIX
from bench.logins import observer_login, provision_devices
from bench.probes import rss_bytes
from bench.publisher import Publisher, connect_devices, encode_topic
from bench.report import distribution, machine_facts
from bench.stack import BenchStack, add_database_url
from devices.topics import device_topic
from sim.city import build_city

CMD_TOPICS = "fieldhub/v1/dev/+/cmd"
REGISTER_CONCURRENCY = 32


class CommandWatch:
    """Subscribes to every device's cmd topic; records when each incident's dispatch command arrives."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.commands = 0
        self.waiters: dict[str, asyncio.Future[float]] = {}
        self.client: MqttClient | None = None

    async def start(self, port: int, login: tuple[str, str] | None) -> None:
        """On the loopback listener (where the hub is), with ``login`` (None: the anonymous broker)."""
        self.client = MqttClient(login[0] if login else "fieldhub-bench-cmdwatch")
        if login is not None:
            self.client.set_auth_credentials(*login)
        self.client.on_message = self._on_message
        await self.client.connect("127.0.0.1", port)
        self.client.subscribe(CMD_TOPICS, qos=0)
        await asyncio.sleep(0.5)

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        received = time.perf_counter()
        self.commands += 1
        try:
            body = json.loads(payload)
        except ValueError:
            return 0
        if body.get("type") != "dispatch":
            return 0
        incident_id = (body.get("incident") or {}).get("id")
        if isinstance(incident_id, str) and incident_id not in self.first:
            self.first[incident_id] = received
            waiter = self.waiters.pop(incident_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(received)
        return 0

    async def wait(self, incident_id: str, timeout_s: float) -> float | None:
        if incident_id in self.first:
            return self.first[incident_id]
        waiter = self.waiters[incident_id] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            return None

    async def close(self) -> None:
        if self.client is not None:
            await self.client.disconnect()


class Fleet:
    """One device per unit, each at a fixed random point of the city, re-published to stay fresh."""

    def __init__(self, count: int, bounds: tuple[float, float, float, float], rng: random.Random) -> None:
        min_lat, min_lon, max_lat, max_lon = bounds
        self.devices = [f"dl-{i:05d}" for i in range(count)]
        self.points = [(rng.uniform(min_lat, max_lat), rng.uniform(min_lon, max_lon)) for _ in range(count)]
        self.topics = [encode_topic(device_topic(d, "telemetry")) for d in self.devices]
        self.seq = [0] * count
        self.connections: list[Publisher] = []
        self.published = 0

    async def connect(self, url: str, logins: dict[str, str]) -> None:
        self.connections = await connect_devices(url, self.devices, logins)

    def publish(self, indices: range) -> None:
        now = time.time_ns() // 1_000_000
        touched = set()
        for d in indices:
            seq = self.seq[d] = self.seq[d] + 1
            lat, lon = self.points[d]
            connection = self.connections[d]
            connection.publish(self.topics[d], FIX % (now, lat, lon, 0.0, 0, seq), 0)
            touched.add(connection)
        for connection in touched:
            connection.flush()
        self.published += len(indices)

    async def keep_fresh(self, period_s: float) -> None:
        """Every unit re-published once per ``period_s``, in slices of 0.1 s."""
        n = len(self.devices)
        slices = max(1, round(period_s / 0.1))
        k = 0
        while True:
            start = n * k // slices
            end = n * (k + 1) // slices
            self.publish(range(start, end))
            k = (k + 1) % slices
            await asyncio.sleep(0.1)

    def close(self) -> None:
        for c in self.connections:
            c.disconnect()


async def register(api: httpx.AsyncClient, fleet: Fleet) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(fleet.devices)):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            lat, lon = fleet.points[i]
            r = await api.put(f"/api/v1/units/DL{i:05d}", json={
                "name": f"Unit {i}", "kind": "patrol", "devices": [fleet.devices[i]],
                "home": {"lat": lat, "lon": lon}})
            r.raise_for_status()

    await asyncio.gather(*(worker() for _ in range(REGISTER_CONCURRENCY)))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    facts = machine_facts()
    rng = random.Random(args.seed)
    city = build_city()
    bounds = city.bounds()
    fleet = Fleet(args.units, bounds, rng)
    workdir = Path(tempfile.mkdtemp(prefix="fieldhub-dispatch-latency-"))
    stack = BenchStack(workdir, database_url=args.database_url)
    watch = CommandWatch()
    fresh: asyncio.Task[None] | None = None
    try:
        await stack.start()
        hub_proc = stack.hub_process()
        rss_idle = rss_bytes(hub_proc)
        headers = {"authorization": f"Bearer {stack.token}"}
        async with httpx.AsyncClient(base_url=stack.hub_url, headers=headers, timeout=30.0) as api:
            t0 = time.monotonic()
            await register(api, fleet)
            registered_s = time.monotonic() - t0
            await provision_devices(stack, api, [(d, f"DL{i:05d}", "vehicle") for i, d in enumerate(fleet.devices)])
            await watch.start(stack.mqtt_port, await observer_login(stack, CMD_TOPICS))
            await fleet.connect(stack.device_url, stack.logins)
            fleet.publish(range(args.units))  # one fresh fix per device
            fresh = asyncio.create_task(fleet.keep_fresh(args.refresh))
            # Wait until the hub has every unit located.
            deadline = time.monotonic() + 60
            located = 0
            while time.monotonic() < deadline:
                units = (await api.get("/api/v1/units")).json() if args.check_live else None
                if units is None:
                    break
                items = units.get("units", units) if isinstance(units, dict) else units
                located = sum(1 for u in items if u.get("position"))
                if located >= args.units:
                    break
                await asyncio.sleep(1.0)
            await asyncio.sleep(args.warmup)
            rss_loaded = rss_bytes(hub_proc)
            latencies: list[float] = []
            post_ms: list[float] = []
            missing = 0
            min_lat, min_lon, max_lat, max_lon = bounds
            first_ms: float | None = None
            for k in range(args.incidents + 1):
                body = {"category": "robbery", "priority": 1, "lat": rng.uniform(min_lat, max_lat),
                        "lon": rng.uniform(min_lon, max_lon), "summary": "bench"}
                sent = time.perf_counter()
                r = await api.post("/api/v1/incidents", json=body)
                answered = time.perf_counter()
                r.raise_for_status()
                incident_id = r.json()["id"]
                post_ms.append((answered - sent) * 1000)
                received = await watch.wait(incident_id, 5.0)
                if k == 0:  # warm-up, not counted: the first auto-dispatch loads the whole fleet into the recommender
                    first_ms = None if received is None else round((received - sent) * 1000, 2)
                    post_ms.clear()
                elif received is None:
                    missing += 1
                else:
                    latencies.append((received - sent) * 1000)
                await asyncio.sleep(args.spacing)
            rss_end = rss_bytes(hub_proc)
        return {
            "machine": facts, "units": args.units, "incidents": args.incidents, "spacing_s": args.spacing,
            "refresh_s": args.refresh, "fix_rate_per_s": round(args.units / args.refresh, 1),
            "registration_s": round(registered_s, 1), "located_before_run": located if args.check_live else None,
            "post_to_command_ms": {k: round(v, 2) if isinstance(v, float) else v
                                   for k, v in distribution(latencies).items()},
            "post_response_ms": {k: round(v, 2) if isinstance(v, float) else v
                                 for k, v in distribution(post_ms).items()},
            "first_incident_ms": first_ms, "missing_commands": missing, "commands_seen": watch.commands,
            "fixes_published": fleet.published,
            "hub_rss_mib": {"after_start": _mib(rss_idle), "units_live": _mib(rss_loaded), "end": _mib(rss_end)},
            "p99_under_50ms": bool(latencies) and distribution(latencies)["p99"] < 50.0,
        }
    finally:
        if fresh is not None:
            fresh.cancel()
        fleet.close()
        with contextlib.suppress(Exception):
            await watch.close()
        await stack.stop_hub()
        stack.close()


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.dispatch_latency", description=__doc__.splitlines()[0])
    p.add_argument("--units", type=int, default=10_000)
    p.add_argument("--incidents", type=int, default=300)
    p.add_argument("--spacing", type=float, default=0.1, help="seconds between incident POSTs")
    p.add_argument("--refresh", type=float, default=20.0, help="each unit's fix is re-published this often (s)")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-check-live", dest="check_live", action="store_false")
    add_database_url(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    return 0 if result["p99_under_50ms"] else 1


if __name__ == "__main__":
    sys.exit(main())
