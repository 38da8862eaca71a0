"""The render benchmark's verdict and its printed table, from the results :mod:`bench.render` measured.

Pure: a results dict in, a verdict or a text out.
"""

from __future__ import annotations

from typing import Any

from bench.render_page import CHROMIUM_ARGS

__all__ = ["FPS_TARGET", "SNAPSHOT_LIMIT_MS", "table", "verdict"]

FPS_TARGET = 30.0
SNAPSHOT_LIMIT_MS = 2000.0


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    page = results.get("page") or {}
    fps = page.get("fps", {})
    loads = [x.get("snapshot_ms") for x in page.get("loads", [])]
    fps_ok = bool(fps.get("count")) and fps["p5"] >= FPS_TARGET
    snap_ok = bool(loads) and all(x is not None and x < SNAPSHOT_LIMIT_MS for x in loads)
    return {"fps_p5_at_least_30": fps_ok, "snapshot_under_2s": snap_ok,
            "no_page_errors": not page.get("page_errors"), "pass": fps_ok and snap_ok and not page.get("page_errors")}


def _v(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}"
    return f"{value:,}{unit}" if isinstance(value, int) else f"{value}{unit}"


def _dist(d: dict[str, Any], unit: str = "") -> str:
    if not d.get("count"):
        return "no samples"
    return "  ".join(f"{k} {_v(d[k])}" for k in ("min", "p5", "p50", "mean", "max")) + unit


def _breakdowns(loads: list[dict[str, Any]]) -> list[str]:
    """Where the time went in the first visit and the last reload (ms from navigation start)."""
    picked = [x for x in loads if not x.get("warm")][:1] + [x for x in loads if x.get("warm")][-1:]
    return [f"    {'reload' if x.get('warm') else 'visit '}  "
            + "  ".join(f"{k} {v}" for k, v in x["breakdown_ms"].items()) for x in picked]


def table(results: dict[str, Any]) -> str:
    m, cfg, page = results["machine"], results["config"], results.get("page") or {}
    cpu = page.get("cpu_percent_of_one_core", {})
    v = results.get("verdict", {})
    lines = [
        f"fieldhub bench render  {m['date']}",
        f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['kernel']}, Python {m['python']};"
        f" load average at start {m['load_average_at_start'][0]}",
        f"browser: {results.get('chromium_version', '-')}, headless, {cfg['width']}x{cfg['height']},"
        f" flags {' '.join(CHROMIUM_ARGS)}", "",
        f"LOAD  {cfg['units']:,} units x 1 device, 1 fix/s each (QoS {cfg['qos']}), moving on the city's roads;"
        f" registration {_v(results.get('registration_s'))} s",
        f"  stored by the hub       {_v(page.get('stored_fixes_per_s'))} fixes/s over {_v(page.get('window_s'))} s",
        "",
        "PAGE",
        "  first snapshot drawn    first visits " + ", ".join(
            f"{_v(x.get('snapshot_ms'))}" for x in page.get("loads", []) if not x.get("warm"))
        + " ms; reloads " + ", ".join(f"{_v(x.get('snapshot_ms'))}" for x in page.get("loads", []) if x.get("warm"))
        + " ms",
        *_breakdowns(page.get("loads", [])),
        f"  fps (page's stats.fps)  {_dist(page.get('fps', {}))}",
        f"  fps (bench's rAF probe) {_dist(page.get('probe_fps', {}))}",
        f"  longest frame gap/s     {_dist(page.get('max_frame_gap_ms', {}), ' ms')}",
        f"  unit draw (lastFrameMs) {_dist(page.get('unit_draw_ms', {}), ' ms')}",
        f"  unit draws per second   {_dist(page.get('unit_draws_per_s', {}))}",
        f"  long tasks              {page.get('long_tasks', {}).get('count', '-')} in the window,"
        f" {page.get('long_tasks', {}).get('ms_per_s', '-')} ms/s",
        f"  units drawn / known     {_v(page.get('units_drawn'))} / {_v(page.get('units_known'))};"
        f" moved during the run: {page.get('moved', {}).get('moved', '-')}/{page.get('moved', {}).get('watched', '-')}",
        f"  WebSocket per client    {_v(page.get('ws_bytes_per_s'))} B/s, {_v(page.get('ws_messages_per_s'))} msg/s",
        f"  position age in page    p50 {page.get('position_age_ms', {}).get('p50', [])} ms,"
        f" p95 {page.get('position_age_ms', {}).get('p95', [])} ms (every 5 s: now - fix ts over all units)",
        f"  JS heap                 {_v(page.get('js_heap_mib'))} MiB; Chromium memory (USS)"
        f" {_v(page.get('browser_rss_mib'))} MiB",
        "",
        "CPU (% of one core over the window)",
        f"  hub {_v(cpu.get('hub'))}  broker {_v(cpu.get('broker'))}  postgres {_v(cpu.get('postgres'))}"
        f"  fleet {_v(cpu.get('fleet'))}",
        f"  chromium {_v(cpu.get('browser'))} (renderer {_v(cpu.get('renderer'))}, gpu process {_v(cpu.get('gpu'))})"
        f"  playwright driver {_v(cpu.get('driver'))}  bench {_v(cpu.get('bench'))}",
        f"  whole machine {_v(cpu.get('machine'))} of {m['cores'] * 100}; hub RSS {_v(page.get('hub_rss_mib'))} MiB",
        "  hub HTTP answer time (GET /api/v1/me, 5/s) " + "  ".join(
            f"{k} {_v(page.get('hub_http_ms', {}).get(k))}" for k in ("p50", "p95", "p99", "max")) + " ms",
        "",
        f"VERDICT  fps p5 >= 30: {v.get('fps_p5_at_least_30')}   first snapshot < 2 s: {v.get('snapshot_under_2s')}"
        f"   page errors: {len(page.get('page_errors', []))}   PASS: {v.get('pass')}",
    ]
    if results.get("error"):
        lines.append(f"ERROR  {results['error']}")
    return "\n".join(lines)
