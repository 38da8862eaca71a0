"""What the render benchmark reads from the browser: the page's own numbers and the Chromium processes' CPU.

The page reports itself through ``window.fieldhub.stats`` (web/CONTRACT.md): ``fps`` (frames per
second over the last 2 s, from requestAnimationFrame), ``snapshotMs``, ``wsBytes``, ``wsMessages``,
``unitsDrawn``, ``lastFrameMs``. Beside them the benchmark injects, before the page's own scripts run,
an independent probe (:data:`PROBE_JS`): its own requestAnimationFrame counter (so the page's fps is
checked, not trusted), the longest gap between two frames, and the main thread's long tasks (> 50 ms,
PerformanceObserver) that explain a dropped frame.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Any, Final

import psutil

from bench.probes import cpu_seconds

__all__ = ["CHROMIUM_ARGS", "LOAD_JS", "POSITIONS_JS", "PROBE_JS", "SAMPLE_JS", "ChromiumProcesses"]

# The tests' flags (tests/web/conftest.py). Playwright adds --headless, --disable-background-timer-throttling,
# --disable-renderer-backgrounding and --disable-backgrounding-occluded-windows itself; they are repeated
# here so the run does not depend on that.
CHROMIUM_ARGS: Final = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--no-first-run", "--disable-background-timer-throttling",
                        "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows"]

PROBE_JS: Final = """
(() => {
  const b = window.__bench = {frames: 0, maxGapMs: 0, longTasks: 0, longTaskMs: 0};
  let last = 0;
  const tick = (t) => {
    b.frames++;
    if (last && t - last > b.maxGapMs) b.maxGapMs = t - last;
    last = t;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  // When the live feed's socket was created, opened and brought its first message (the snapshot):
  // the parts of the time to the first snapshot drawn. One extra listener per socket, nothing else.
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      if (b.wsCreated === undefined) {
        b.wsCreated = performance.now();
        this.addEventListener("open", () => { b.wsOpen = performance.now(); }, {once: true});
        this.addEventListener("message", () => { b.wsFirstMessage = performance.now(); }, {once: true});
      }
    }
  };
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) { b.longTasks++; b.longTaskMs += e.duration; }
    }).observe({type: "longtask", buffered: true});
  } catch (e) { b.longTaskError = String(e); }
})();
"""

# One sample: the page's stats, the probe's counters (the longest gap is reset: it is per sample).
SAMPLE_JS: Final = """
(withAges) => {
  const fh = window.fieldhub || {}, s = fh.stats || {}, b = window.__bench || {};
  const out = {now: performance.now(), wall: Date.now(), fps: s.fps, wsBytes: s.wsBytes, wsMessages: s.wsMessages,
               unitsDrawn: s.unitsDrawn, lastFrameMs: s.lastFrameMs, connected: fh.connected,
               drawsPerSecond: s.drawsPerSecond,  // not in the contract: frames in which the page drew units
               frames: b.frames, maxGapMs: b.maxGapMs, longTasks: b.longTasks, longTaskMs: b.longTaskMs,
               heapMiB: performance.memory ? performance.memory.usedJSHeapSize / 1048576 : null,
               units: fh.units ? fh.units.size : null};
  b.maxGapMs = 0;
  if (withAges && fh.units) {
    const ages = [];
    for (const u of fh.units.values()) if (u.position) ages.push(out.wall - u.position.ts);
    ages.sort((x, y) => x - y);
    out.ageP50 = ages.length ? ages[Math.floor(ages.length / 2)] : null;
    out.ageP95 = ages.length ? ages[Math.floor(ages.length * 0.95)] : null;
  }
  return out;
}
"""

# Where the time to the first snapshot drawn went (ms from navigation start).
LOAD_JS: Final = """
() => {
  const b = window.__bench || {}, nav = performance.getEntriesByType("navigation")[0] || {};
  const res = performance.getEntriesByType("resource");
  const end = (pred) => {
    const r = res.filter(pred);
    return r.length ? Math.round(Math.max(...r.map((e) => e.responseEnd))) : null;
  };
  const round = (v) => v === undefined || v === null ? null : Math.round(v);
  return {document: round(nav.responseEnd), domContentLoaded: round(nav.domContentLoadedEventEnd),
          scripts: end((e) => e.name.includes("/static/") && e.name.endsWith(".js")),
          me: end((e) => e.name.includes("/api/v1/me")), baseMap: end((e) => /\\/api\\/v1\\/map(\\?|$)/.test(e.name)),
          wsCreated: round(b.wsCreated), wsOpen: round(b.wsOpen), snapshotReceived: round(b.wsFirstMessage),
          snapshotDrawn: window.fieldhub.stats.snapshotMs, longTasks: b.longTasks, longTaskMs: round(b.longTaskMs),
          transferKiB: Math.round(res.reduce((n, e) => n + (e.transferSize || 0), 0) / 1024)};
}
"""

# Positions of some units, to check that they move on the page.
POSITIONS_JS: Final = """
(ids) => ids.map((id) => {
  const u = window.fieldhub.units.get(id);
  return u && u.position ? [u.position.lat, u.position.lon] : null;
})
"""


@dataclass(frozen=True, slots=True)
class CpuReading:
    browser: float  # every Chromium process (browser, renderers, GPU/compositor, network, ...)
    renderer: float  # the renderer processes (the page's JavaScript, layout, paint)
    gpu: float  # the GPU process (software compositing with --disable-gpu)
    driver: float  # Playwright's node driver (forwards the DevTools protocol)


class ChromiumProcesses:
    """Finds the Chromium that Playwright started (a grandchild of this process) and reads its CPU."""

    def __init__(self) -> None:
        self.root: psutil.Process | None = None
        self.driver: psutil.Process | None = None
        self._find()

    def _find(self) -> None:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(os.getpid()).children(recursive=True):
                name = child.name()
                if name.startswith("node") and self.driver is None:
                    self.driver = child
                elif name in ("chromium", "chrome") and "--type=" not in " ".join(child.cmdline()):
                    self.root = child

    def rss_mib(self) -> float | None:
        if self.root is None:
            return None
        total = 0
        with contextlib.suppress(psutil.Error):
            for proc in [self.root, *self.root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_full_info().uss  # unique memory: shared pages are not counted twice
        return round(total / 2**20, 1)

    def read(self) -> CpuReading:
        renderer = gpu = 0.0
        if self.root is not None:
            with contextlib.suppress(psutil.Error):
                for proc in self.root.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        cmd = " ".join(proc.cmdline())
                        times = proc.cpu_times()
                        if "--type=renderer" in cmd:
                            renderer += times.user + times.system
                        elif "--type=gpu-process" in cmd:
                            gpu += times.user + times.system
        driver = 0.0
        if self.driver is not None:
            with contextlib.suppress(psutil.Error):
                t = self.driver.cpu_times()
                driver = t.user + t.system
        return CpuReading(cpu_seconds(self.root) or 0.0, renderer, gpu, driver)


def share(a: float | None, b: float | None, seconds: float) -> float | None:
    """CPU seconds between two readings as a percentage of one core."""
    if a is None or b is None or seconds <= 0:
        return None
    return round(100.0 * (b - a) / seconds, 1)


def summarise(values: list[float]) -> dict[str, Any]:
    """min, p5, p50, mean, max of per-second samples."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    n = len(ordered)
    return {"count": n, "min": round(ordered[0], 1), "p5": round(ordered[max(0, math.ceil(0.05 * n) - 1)], 1),
            "p50": round(ordered[n // 2], 1), "mean": round(sum(ordered) / n, 1), "max": round(ordered[-1], 1)}
