"""The video benchmark's figures: latency matching, per-viewer fps, CPU in cores, verdicts and the table. Pure."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from bench.report import percentile

__all__ = ["TARGETS", "cores_summary", "fps_of", "fps_summary", "latencies_ms", "markdown", "pairs", "rows",
           "summary", "table", "verdicts", "viewers_per_core"]

# The targets (issue 6, Must show).
TARGETS = {"fps": 28.0, "hub_cores": 1.2, "latency_p95_ms": 200.0, "first_frame_s": 1.5}


def pairs(flat: Sequence[float]) -> list[tuple[float, int]]:
    """``[t0, k0, t1, k1, ...]`` (how the load side stores them) as ``[(t0, k0), (t1, k1), ...]``."""
    return [(flat[i], int(flat[i + 1])) for i in range(0, len(flat) - 1, 2)]


def latencies_ms(sends: Sequence[tuple[float, int]], pictures: Sequence[tuple[float, int]],
                 start: float = float("-inf"), end: float = float("inf")) -> tuple[list[float], int]:
    """Per picture seen within ``[start, end]``: its time minus the latest send of the same loop frame before it.

    Both in seconds on one clock; the loop is far longer than any latency, so the latest earlier send is the
    one that was seen. Returns the latencies in ms and how many pictures had no earlier send (a wrong code).
    """
    sent: dict[int, list[float]] = {}
    for t, k in sorted(sends):
        sent.setdefault(k, []).append(t)
    out: list[float] = []
    unmatched = 0
    for t, k in pictures:
        if not start <= t <= end:
            continue
        times = sent.get(k, [])
        i = bisect_right(times, t)
        if i == 0:
            unmatched += 1
        else:
            out.append((t - times[i - 1]) * 1000)
    return out, unmatched


def fps_of(arrivals: Sequence[float], start: float, end: float) -> dict[str, float]:
    """Frames per second over ``[start, end)`` and in its worst whole second."""
    seconds = int(end - start)
    if seconds < 1:
        return {"mean": 0.0, "worst_1s": 0.0}
    buckets = [0] * seconds
    inside = 0
    for t in arrivals:
        if start <= t < end:
            inside += 1
            b = int(t - start)
            if b < seconds:
                buckets[b] += 1
    return {"mean": round(inside / (end - start), 2), "worst_1s": float(min(buckets))}


def fps_summary(per_viewer: Sequence[dict[str, float]], target: float = TARGETS["fps"]) -> dict[str, Any]:
    if not per_viewer:
        return {"viewers": 0}
    means = sorted(v["mean"] for v in per_viewer)
    return {"viewers": len(means), "min": means[0], "p50": percentile(means, 50), "max": means[-1],
            "below_target": sum(m < target for m in means),
            "worst_1s": min(v["worst_1s"] for v in per_viewer)}


def summary(values: Sequence[float], digits: int = 1) -> dict[str, Any]:
    """Nearest-rank percentiles."""
    if not values:
        return {"count": 0}
    o = sorted(values)
    return {"count": len(o), **{f"p{q}": round(percentile(o, q), digits) for q in (50, 95, 99)},
            "max": round(o[-1], digits), "mean": round(sum(o) / len(o), digits)}


def cores_summary(pct_of_core: Sequence[float]) -> dict[str, Any]:
    """1 s CPU samples in % of one core -> mean and p95 in cores."""
    if not pct_of_core:
        return {"samples": 0}
    o = sorted(pct_of_core)
    return {"samples": len(o), "mean_cores": round(sum(o) / len(o) / 100, 3),
            "p95_cores": round(percentile(o, 95) / 100, 3)}


def viewers_per_core(viewers: int, loaded: dict[str, Any], ingest: dict[str, Any]) -> dict[str, float | None]:
    """What the viewers alone cost the hub: mean cores with them minus mean cores with none (same publishers)."""
    if not viewers or not loaded.get("samples") or not ingest.get("samples"):
        return {"viewer_cores": None, "per_viewer_cores": None, "viewers_per_core": None}
    extra = loaded["mean_cores"] - ingest["mean_cores"]
    return {"viewer_cores": round(extra, 3), "per_viewer_cores": round(extra / viewers, 4),
            "viewers_per_core": round(viewers / extra, 1) if extra > 0 else None}


def verdicts(fps: dict[str, Any], hub_cpu: dict[str, Any], latency: dict[str, Any],
             first_frame: dict[str, Any], first_failed: int = 0) -> dict[str, bool]:
    """PASS/FAIL per target; nothing measured is a FAIL, and so is a new viewer that got no whole picture."""
    return {"fps": bool(fps.get("viewers")) and fps["min"] >= TARGETS["fps"],
            "hub_cores": bool(hub_cpu.get("samples")) and hub_cpu["mean_cores"] <= TARGETS["hub_cores"],
            "latency_p95_ms": bool(latency.get("count")) and latency["p95"] <= TARGETS["latency_p95_ms"],
            "first_frame_s": bool(first_frame.get("count")) and first_frame["max"] <= TARGETS["first_frame_s"]
            and first_failed == 0}


# ---------------------------------------------------------------------------- table
def _pf(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _ms(d: dict[str, Any]) -> str:
    return (f"p50 {d['p50']:.0f}  p95 {d['p95']:.0f}  p99 {d['p99']:.0f}  max {d['max']:.0f} ms (n={d['count']})"
            if d.get("count") else "no samples")


def _cores(c: dict[str, Any]) -> str:
    return f"mean {c['mean_cores']:.2f}  p95 {c['p95_cores']:.2f} cores" if c.get("samples") else "no samples"


def rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """The figures, once, for both the printed table and the markdown block."""
    c, lo, ok, t = r["config"], r["load"], r["verdicts"], TARGETS
    f, lat, ff, vpc, raw = lo["fps"], lo["latency_ms"], r["first_frame_s"], r["viewers_per_core"], r["raw"]
    fps = (f"min {f['min']:.1f}  p50 {f['p50']:.1f}  max {f['max']:.1f}; {f['below_target']} under {t['fps']:g};"
           f" worst single second {f['worst_1s']:g}" if f.get("viewers") else "no viewers")
    first = (f"p50 {ff['p50']:.2f}  max {ff['max']:.2f} s (n={ff['count']}, {r['first_frame_failed']} failed)"
             if ff.get("count") else f"none ({r['first_frame_failed']} failed)")
    relay = lo["relay"]
    return [
        (f"viewer fps, {f.get('viewers', 0)} viewers (target >= {t['fps']:g})", f"{fps} -> {_pf(ok['fps'])}"),
        (f"hub CPU, {c['streams']} streams x {c['viewers_per_stream']} viewers (<= {t['hub_cores']:g})",
         f"{_cores(lo['cpu']['hub'])} -> {_pf(ok['hub_cores'])}"),
        (f"sender->viewer latency, {c['decoders']} decoding viewers (p95 <= {t['latency_p95_ms']:g} ms)",
         f"{_ms(lat)} -> {_pf(ok['latency_p95_ms'])}"),
        (f"first frame, new viewer, POST -> picture (<= {t['first_frame_s']:g} s)",
         f"{first} -> {_pf(ok['first_frame_s'])}"),
        ("hub CPU, same publishers, 0 viewers", _cores(r["ingest_cpu"]["hub"])),
        ("viewers per hub core (viewer cost only)",
         f"{vpc['viewers_per_core']} viewers/core; {vpc['per_viewer_cores']} core per viewer"
         if vpc["viewers_per_core"] else f"not measurable (viewer cores {vpc['viewer_cores']})"),
        ("raw: publisher -> aiortc viewer, no hub, unloaded", _ms(raw["latency_ms"])),
        ("hub / raw latency", f"p50 {r['ratio']['p50']}x, p95 {r['ratio']['p95']}x"),
        ("bench CPU: publishers / decoding viewers / counting viewers",
         " / ".join(_cores(lo["cpu"][k]) for k in ("bench", "decoders", "counters"))),
        ("bench CPU, all three processes", _cores(lo["cpu"]["bench_total"])),
        ("PostgreSQL CPU under load", _cores(lo["cpu"]["postgres"])),
        ("whole machine busy in the load window", f"{lo['machine_busy_cores']:.2f} cores, of which"
                                                   f" {lo['others_cores']:.2f} not this benchmark's processes"),
        ("hub RSS peak under load", f"{lo['hub_rss_mib']} MiB"),
        ("relay during the load window", ", ".join(f"{k} {v}" for k, v in relay.items()) or "not scraped"),
        ("publishers", f"{lo['publisher']['sent']} frames sent, key-frame jumps {lo['publisher']['jumps']},"
                       f" latest send {lo['publisher']['late_max_ms']:.0f} ms behind schedule"),
        ("decoded pictures without a readable code", f"{lat.get('unreadable', 0)} unreadable,"
                                                      f" {lat.get('unmatched', 0)} unmatched"),
    ]


def _header(r: dict[str, Any]) -> list[str]:
    m, c, lp = r["machine"], r["config"], r["loop"]
    return [f"{m['date']}; {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['kernel']}, Python {m['python']};"
            f" load average at start {m['load_average_at_start']}",
            f"{c['streams']} publishers x {c['viewers_per_stream']} viewers, {c['seconds']:g} s load window,"
            f" {c['baseline_s']:g} s ingest-only, recording {'on' if c['recording'] else 'off'}; loop"
            f" {lp['frames']} frames {lp['width']}x{lp['height']} VP8 {lp['kbit_per_s']:.0f} kbit/s, key frame every"
            f" {lp['gop']} frames; `{r['command']}`"]


def table(r: dict[str, Any]) -> str:
    return "\n".join(["fieldhub bench video", *_header(r), "", *(f"  {k:<64} {v}" for k, v in rows(r))])


def markdown(r: dict[str, Any]) -> str:
    c = r["config"]
    title = f"### Live video: {c['streams']} streams x {c['viewers_per_stream']} viewers through the hub"
    return "\n".join([title, "", *_header(r), "",
                      "| measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows(r))])
