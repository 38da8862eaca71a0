"""The gateways benchmark's cost part: hub CPU per stored fix over each way a device can report, next to MQTT.

On the fleet part's hub (same invocation, a stack whose broker takes new logins live), for each path in
:data:`PATHS` the same load is driven from a child process: ``rate`` fixes/s for ``seconds`` s, from
``ceil(rate)`` devices each reporting at most once a second (OwnTracks and JT/T 808 times are whole seconds, and a
device stores one fix per time). Measured per path: the hub's CPU-seconds over the window and until the last fix
is stored, minus the idle hub's CPU over the same wall time (measured first, in the same run), divided by the
fixes stored -> µs of hub CPU per fix; the broker's and PostgreSQL's share alike, and rows in ``fixes`` against
fixes sent. Connections, logins and JT/T 808 registration happen before the window and are not counted.

- ``mqtt``: native devices with their own broker logins, :mod:`bench.loadgen` as ``fieldhub bench ingest`` runs it;
- ``jt808``: :mod:`bench.jt808_terminals`, a 0x0200 per report, heartbeats, no batches;
- ``osmand``: Traccar Client's ``POST /gateway/osmand?id=&lat=&lon=&timestamp=&key=``;
- ``owntracks_http``: ``POST /gateway/owntracks``, Basic authentication, the app's location JSON;
- ``owntracks_mqtt``: the app's JSON on ``owntracks/<device_id>/phone`` with the phone's broker login.

The phone paths run in a child of this module (``python -m bench.gateway_cost --kind ...``) speaking
:mod:`bench.loadgen`'s line protocol, so :class:`bench.loadgen.GeneratorProcess` drives every path but JT/T 808.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.gateways_report import ratios, us_per_fix
from bench.jt808_fleet import phones, provision_terminals, stored_fixes
from bench.jt808_terminals import TerminalProcess
from bench.loadgen import SLICE_S, Generator, GeneratorProcess, build_parser, child_main, read_logins, run_child
from bench.logins import provision_devices
from bench.probes import cpu_seconds, scrape
from bench.publisher import MqttProtocolError, encode_topic
from bench.stack import BenchError, BenchStack

__all__ = ["PATHS", "HttpGenerator", "OwnTracksGenerator", "main", "owntracks_location", "run_cost"]

PATHS = ("mqtt", "jt808", "osmand", "owntracks_http", "owntracks_mqtt")
PREFIXES = {"mqtt": "gwc-mqtt-", "jt808": "gwc-jt", "osmand": "gwc-osm-", "owntracks_http": "gwc-oth-",
            "owntracks_mqtt": "gwc-otm-"}
COST_PHONE = 138_0000_0000
SETTLE_S = 10.0
HTTP_CONNECTIONS = 32
LAT0, LON0 = 34.2610, 117.1859


def _position(d: int, seq: int) -> tuple[float, float]:
    return LAT0 + (d % 100) * 0.002 + (seq % 500) * 1e-5, LON0 + (d // 100 % 100) * 0.002 + (seq % 500) * 1e-5


def owntracks_location(d: int, seq: int, tst: int, trigger: str) -> bytes:
    """The OwnTracks app's location JSON of device ``d``'s report ``seq`` at ``tst`` (epoch s)."""
    lat, lon = _position(d, seq)
    return json.dumps({"_type": "location", "tid": "fh", "lat": round(lat, 6), "lon": round(lon, 6), "tst": tst,
                       "acc": 5, "vel": 30, "cog": seq * 7 % 360, "batt": 80, "t": trigger}).encode()


class OwnTracksGenerator(Generator):
    """OwnTracks' location JSON on ``owntracks/<device_id>/phone``; ``tst`` whole seconds, strictly increasing."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.topics = [encode_topic(f"owntracks/{d}/phone") for d in self.devices]

    def send(self, k: int) -> Any:
        d = k % len(self.devices)
        tst = max(int(time.time()), self.last_ts[d] + 1)
        self.ts_ahead += tst > time.time() + 1
        self.last_ts[d] = tst
        seq = self.seq[d] = self.seq[d] + 1
        payload = owntracks_location(d, seq, tst, "t")
        connection = self.connections[d]
        if not connection.publish(self.topics[d], payload, self.args.qos):
            raise MqttProtocolError("65,535 messages awaiting PUBACK on one connection: the broker stalled")
        return connection


class HttpGenerator(Generator):
    """A phone app's HTTP reports (OsmAnd or OwnTracks) at the exact rate, ``HTTP_CONNECTIONS`` kept alive;
    ``published`` = requests sent, ``acked`` = answered 200."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.sent = 0
        self.answered_ok = 0
        self.statuses: dict[str, int] = {}
        self.secrets: dict[str, str] = {}
        self.client: httpx.AsyncClient | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    @property
    def published(self) -> int:
        return self.sent

    @property
    def acked(self) -> int:
        return self.answered_ok

    async def connect(self) -> None:
        self.secrets = read_logins(self.args.logins)
        missing = [d for d in self.devices if d not in self.secrets]
        if missing:
            raise MqttProtocolError(f"no secret for {len(missing)} devices, e.g. {missing[0]}")
        limits = httpx.Limits(max_connections=HTTP_CONNECTIONS, max_keepalive_connections=HTTP_CONNECTIONS)
        self.client = httpx.AsyncClient(base_url=self.args.hub_url, limits=limits, timeout=30.0)

    def request(self, k: int) -> httpx.Request:
        assert self.client is not None
        d = k % len(self.devices)
        device_id = self.devices[d]
        seq = self.seq[d] = self.seq[d] + 1
        if self.args.kind == "osmand":
            lat, lon = _position(d, seq)
            ts = max(time.time_ns() // 1_000_000, self.last_ts[d] + 1)
            self.last_ts[d] = ts
            params = {"id": device_id, "lat": f"{lat:.6f}", "lon": f"{lon:.6f}", "timestamp": str(ts),
                      "speed": "16.2", "bearing": str(seq * 7 % 360), "altitude": "40", "accuracy": "5",
                      "batt": "80", "key": self.secrets[device_id]}
            return self.client.build_request("POST", "/gateway/osmand", params=params)
        tst = max(int(time.time()), self.last_ts[d] + 1)
        self.last_ts[d] = tst
        basic = base64.b64encode(f"{device_id}:{self.secrets[device_id]}".encode()).decode()
        return self.client.build_request("POST", "/gateway/owntracks", content=owntracks_location(d, seq, tst, "u"),
                                          headers={"authorization": f"Basic {basic}",
                                                   "content-type": "application/json"})

    async def _one(self, request: httpx.Request) -> None:
        assert self.client is not None
        try:
            status = str((await self.client.send(request)).status_code)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.answered_ok += status == "200"

    async def run(self) -> None:
        rate, total = self.args.rate, round(self.args.rate * self.args.duration)
        started = time.monotonic()
        self.t_first = time.time()
        while self.sent < total:
            due = min(total, int(rate * (time.monotonic() - started)) + 1)
            self.slices += 1
            self.max_backlog = max(self.max_backlog, due - self.sent - len(self._inflight))
            for k in range(self.sent, due):
                task = asyncio.create_task(self._one(self.request(k)))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            self.sent = due
            self.t_last = time.time()
            await asyncio.sleep(SLICE_S)
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=30.0)
        assert self.client is not None
        await self.client.aclose()

    def summary(self) -> dict[str, Any]:
        return {"ts_ahead": self.ts_ahead, "statuses": self.statuses}


def _generator(args: argparse.Namespace) -> Generator:
    return OwnTracksGenerator(args) if args.kind == "owntracks_mqtt" else HttpGenerator(args)


async def _provision_phones(stack: BenchStack, api: httpx.AsyncClient, prefix: str, protocol: str,
                            count: int) -> list[str]:
    """A unit per phone, then the phone (``protocol`` owntracks or osmand); its secret into the stack's logins."""
    gate = asyncio.Semaphore(16)
    ids = [f"{prefix}{k:05d}" for k in range(count)]
    secrets: dict[str, str] = {}

    async def one(device_id: str) -> None:
        async with gate:
            unit = f"{device_id}-u"
            r = await api.put(f"/api/v1/units/{unit}", json={"name": unit, "devices": [device_id]})
            if r.status_code >= 300:
                raise BenchError(f"PUT unit {unit}: {r.status_code} {r.text[:200]}")
            r = await api.post("/api/v1/devices", json={"device_id": device_id, "unit_id": unit,
                                                        "protocol": protocol})
            if r.status_code >= 300:
                raise BenchError(f"POST device {device_id}: {r.status_code} {r.text[:200]}")
            secrets[device_id] = str(r.json()["password"])

    await asyncio.gather(*(one(d) for d in ids))
    stack.add_logins(secrets)
    return ids


async def _provision(stack: BenchStack, api: httpx.AsyncClient, path: str, count: int) -> None:
    prefix = PREFIXES[path]
    if path == "mqtt":
        ids = [f"{prefix}{k:05d}" for k in range(count)]
        for d in ids:
            r = await api.put(f"/api/v1/units/{d}-u", json={"name": f"{d}-u", "devices": [d]})
            if r.status_code >= 300:
                raise BenchError(f"PUT unit {d}-u: {r.status_code} {r.text[:200]}")
        await provision_devices(stack, api, [(d, f"{d}-u", "phone") for d in ids])
    elif path == "jt808":
        await provision_terminals(api, prefix, phones(COST_PHONE, count))
    else:
        await _provision_phones(stack, api, prefix, "osmand" if path == "osmand" else "owntracks", count)


class _Procs:
    """The CPU-seconds of the hub, the broker and PostgreSQL (process trees), read together."""

    def __init__(self, stack: BenchStack) -> None:
        self.procs = {"hub": stack.hub_process(), "broker": stack.broker_process(),
                      "postgres": stack.postgres_process()}

    def read(self) -> dict[str, float]:
        return {k: cpu_seconds(p) or 0.0 for k, p in self.procs.items()}


async def _stored(api: httpx.AsyncClient) -> float:
    return (await scrape(api)).get("fieldhub_fixes_stored_total", 0.0)


async def _settled(api: httpx.AsyncClient, target: float) -> float:
    """The stored-fixes counter once it reaches ``target`` or stops moving for 2 s (bounded by SETTLE_S)."""
    deadline, last, still = time.monotonic() + SETTLE_S, await _stored(api), time.monotonic()
    while time.monotonic() < deadline and last < target:
        await asyncio.sleep(0.25)
        now = await _stored(api)
        if now != last:
            last, still = now, time.monotonic()
        elif time.monotonic() - still > 2.0:
            break
    return last


async def _drive(stack: BenchStack, workdir: Path, api: httpx.AsyncClient, path: str, *, rate: float,
                 seconds: float, devices: int) -> tuple[dict[str, Any], float, float]:
    """Run one path's load: (the child's summary, wall time, fixes stored). The child is connected, logged in or
    registered before the window starts."""
    procs = _Procs(stack)
    if path == "jt808":
        child = TerminalProcess(workdir / "cost-jt808.log")
        config = {"host": "127.0.0.1", "port": int(stack.hub_env["FIELDHUB_JT808_PORT"]),
                  "phones": phones(COST_PHONE, devices), "interval_s": devices / rate, "heartbeat_s": 60.0,
                  "batch_share": 0.0, "register_timeout_s": 120.0}
        try:
            ready = await child.start(config, 180.0)
            if ready["authenticated"] < devices:
                raise BenchError(f"cost jt808: {ready['authenticated']} of {devices} terminals authenticated"
                                 f" ({ready['failures']})")
            cpu0, stored0, t0 = procs.read(), await _stored(api), time.monotonic()
            await child.go()
            await asyncio.sleep(seconds)
            summary = await child.stop()
        finally:
            await child.close()
        sent = summary["positions_sent"]
    else:
        url = stack.hub_url if path in ("osmand", "owntracks_http") else stack.device_url
        extra = ["--device-prefix", PREFIXES[path]]
        module = "bench.loadgen" if path == "mqtt" else "bench.gateway_cost"
        if path != "mqtt":
            extra += ["--kind", path, "--hub-url", stack.hub_url]
        gen = GeneratorProcess(url, stack.logins_file, rate=rate, duration=seconds, devices=devices, qos=1,
                               module=module, extra_argv=extra)
        try:
            await gen.start()
            cpu0, stored0, t0 = procs.read(), await _stored(api), time.monotonic()
            gen.go()
            summary = (await gen.finish()).summary
        finally:
            await gen.close()
        sent = summary["published"]
    stored1 = await _settled(api, stored0 + sent)
    wall = time.monotonic() - t0
    cpu1 = procs.read()
    summary["cpu_s"] = {k: round(cpu1[k] - cpu0[k], 3) for k in cpu1}
    return summary, wall, stored1 - stored0


async def run_cost(stack: BenchStack, workdir: Path, *, rate: float, seconds: float,
                   paths: tuple[str, ...] = PATHS) -> dict[str, Any]:
    """The cost part on a started ``stack`` (live broker logins, the gateways on); its figures."""
    devices = max(1, math.ceil(rate))
    out: dict[str, Any] = {"rate": rate, "seconds": seconds, "devices_per_path": devices,
                           "report_interval_s": round(devices / rate, 3), "paths": {}}
    admin = {"authorization": f"Bearer {stack.token}"}
    async with httpx.AsyncClient(base_url=stack.hub_url, headers=admin, timeout=60.0) as api:
        t0 = time.monotonic()
        for path in paths:
            await _provision(stack, api, path, devices)
        out["provision_s"] = round(time.monotonic() - t0, 1)
        await asyncio.sleep(5.0)
        procs = _Procs(stack)
        cpu0, t0 = procs.read(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, wall = procs.read(), time.monotonic() - t0
        idle = {k: (cpu1[k] - cpu0[k]) / wall for k in cpu1}
        out["idle_cores"] = {k: round(v, 4) for k, v in idle.items()}
        for path in paths:
            try:
                summary, wall, stored = await _drive(stack, workdir, api, path, rate=rate, seconds=seconds,
                                                     devices=devices)
            except (BenchError, MqttProtocolError, OSError, TimeoutError) as exc:
                out["paths"][path] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            rows = await stored_fixes(stack.database_url, PREFIXES[path].rstrip("-"))
            sent = summary.get("positions_sent", summary.get("published", 0))
            out["paths"][path] = {
                "wall_s": round(wall, 1), "sent": sent, "fixes_stored": int(stored), "rows": rows,
                "cpu_s": summary["cpu_s"],
                "us_per_fix": {k: us_per_fix(summary["cpu_s"][k], idle[k], wall, stored) for k in idle},
                "child": {k: v for k, v in summary.items() if k != "cpu_s"}}
        out["ratio_to_mqtt"] = ratios({p: v.get("us_per_fix", {}).get("hub") for p, v in out["paths"].items()})
    return out


def main(argv: list[str] | None = None) -> int:
    """The child: a phone path's load (``--kind``) under :mod:`bench.loadgen`'s options and line protocol."""
    parser = build_parser()
    parser.prog = "python -m bench.gateway_cost"
    parser.add_argument("--kind", choices=("osmand", "owntracks_http", "owntracks_mqtt"), required=True)
    parser.add_argument("--hub-url", default="", help="the hub's HTTP base URL (the HTTP kinds)")
    args = parser.parse_args(argv)
    return run_child(lambda a: child_main(a, _generator), args)


if __name__ == "__main__":
    sys.exit(main())
