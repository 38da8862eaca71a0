"""What the benchmark watches while the load runs: the hub's /metrics and the processes' CPU and memory.

Two samplers run as tasks in the benchmark's own process (the load generator
lives in another one): the hub's Prometheus counters every ``METRICS_S`` (the
stored-count curve for the publish->commit lag), and psutil every second (CPU
seconds of hub, broker, PostgreSQL with its backends, generator, the benchmark
itself and the whole machine, so what else ran shows up; the hub's RSS).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from devices.tasks import cancel_and_wait

METRICS_S = 0.25
PROCESS_S = 1.0

CpuSource = Callable[[], float | None]


def cpu_seconds(proc: psutil.Process | None) -> float | None:
    """User + system CPU of ``proc`` and its descendants, including those already reaped."""
    if proc is None:
        return None
    try:
        times = proc.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        children = proc.children(recursive=True)
    except psutil.Error:
        return None
    for child in children:
        with contextlib.suppress(psutil.Error):
            ct = child.cpu_times()
            total += ct.user + ct.system
    return total


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, everything but idle and I/O wait)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def find_process(pid: int | None) -> psutil.Process | None:
    if pid is None:
        return None
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid)
    return None


class CpuMeter:
    """CPU seconds of one process tree; keeps the last reading once the process is gone."""

    def __init__(self, find: Callable[[], psutil.Process | None]) -> None:
        self.find = find
        self.proc: psutil.Process | None = None
        self.last: float | None = None

    def __call__(self) -> float | None:
        if self.proc is None:
            self.proc = self.find()
        value = cpu_seconds(self.proc)
        if value is not None:
            self.last = value
        return self.last


def rss_bytes(proc: psutil.Process | None) -> int | None:
    if proc is None:
        return None
    with contextlib.suppress(psutil.Error):
        return int(proc.memory_info().rss)
    return None


def parse_metrics(text: str) -> dict[str, float]:
    """Flatten Prometheus text into ``{"name{label=value}": value}`` (plain ``name`` without labels)."""
    flat: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            flat[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return flat


def metric_sum(metrics: dict[str, float], name: str) -> float:
    """Sum of a family over its labels (``fieldhub_rejects_total`` over every reason)."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    response = await client.get("/metrics", timeout=5.0)
    response.raise_for_status()
    return parse_metrics(response.text)


@dataclass(slots=True)
class Timeline:
    """Samples taken during a run; times are wall clock (comparable with the generator's)."""

    metrics: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    # (wall time, {process name: cpu seconds}, hub rss bytes)
    processes: list[tuple[float, dict[str, float | None], int | None]] = field(default_factory=list)

    def stored(self) -> list[tuple[float, float]]:
        return [(t, m.get("fieldhub_fixes_stored_total", 0.0)) for t, m in self.metrics]


class Sampler:
    """Runs both samplers until :meth:`stop`.

    ``cpu`` maps a process name to a function giving its CPU seconds now (None once it is gone);
    ``hub`` gives the hub's process for its RSS.
    """

    def __init__(self, client: httpx.AsyncClient, cpu: dict[str, CpuSource],
                 hub: Callable[[], psutil.Process | None]) -> None:
        self.client = client
        self.cpu = cpu
        self.hub = hub
        self.timeline = Timeline()
        self._tasks: list[asyncio.Task[None]] = []
        self.scrape_errors = 0

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._metrics()), asyncio.create_task(self._processes())]

    async def stop(self) -> Timeline:
        await cancel_and_wait(*self._tasks)
        await self.sample_once()
        return self.timeline

    async def sample_once(self) -> None:
        """One sample of both kinds now (at the edges of a run)."""
        with contextlib.suppress(httpx.HTTPError):
            self.timeline.metrics.append((time.time(), await scrape(self.client)))
        self._sample_processes()

    async def _metrics(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self.timeline.metrics.append((time.time(), await scrape(self.client)))
            except httpx.HTTPError:
                self.scrape_errors += 1
            await asyncio.sleep(max(0.0, METRICS_S - (time.monotonic() - started)))

    async def _processes(self) -> None:
        while True:
            self._sample_processes()
            await asyncio.sleep(PROCESS_S)

    def _sample_processes(self) -> None:
        cpu = {name: source() for name, source in self.cpu.items()}
        self.timeline.processes.append((time.time(), cpu, rss_bytes(self.hub())))
