"""The drones benchmark's numbers and its report: summaries, the link-loss verdict, the table and markdown.

Pure: :mod:`bench.drones` measures and hands its result here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.report import percentile

__all__ = ["CUT_S", "LINK_LIMIT_S", "cpu_summary", "link_verdict", "markdown", "ratio", "rows", "summary", "table"]

CUT_S = 8.0  # each radio cut of the link-loss test lasts this long
LINK_LIMIT_S = 5.0  # the one numeric target: a lost link shown within 5 s


# ------------------------------------------------------------------ statistics
def summary(values_ms: Sequence[float]) -> dict[str, Any]:
    """Nearest-rank percentiles in ms, two decimals: loopback round trips are a few ms."""
    if not values_ms:
        return {"count": 0}
    o = sorted(values_ms)
    return {"count": len(o), **{f"p{q}": round(percentile(o, q), 2) for q in (50, 95, 99)},
            "max": round(o[-1], 2), "mean": round(sum(o) / len(o), 2)}


def cpu_summary(pct_of_core: Sequence[float], cores: int) -> dict[str, Any]:
    """1 s samples in % of one core -> mean and p95, also as a share of the whole machine."""
    if not pct_of_core:
        return {"samples": 0}
    o = sorted(pct_of_core)
    mean, p95 = sum(o) / len(o), percentile(o, 95)
    return {"samples": len(o), "mean_pct_core": round(mean, 1), "p95_pct_core": round(p95, 1),
            "mean_pct_machine": round(mean / cores, 1), "p95_pct_machine": round(p95 / cores, 1)}


def ratio(a: dict[str, Any], b: dict[str, Any], key: str = "p50") -> float | None:
    return round(a[key] / b[key], 1) if a.get(key) and b.get(key) else None


def link_verdict(detect_s: Sequence[float | None], limit_s: float = LINK_LIMIT_S) -> bool:
    """PASS only if every cut was detected, each within the limit."""
    return bool(detect_s) and all(d is not None and d <= limit_s for d in detect_s)


def _ms(d: dict[str, Any]) -> str:
    return f"p50 {d['p50']:.2f}  p99 {d['p99']:.2f}  max {d['max']:.2f} ms (n={d['count']})" if d.get("count") \
        else "no samples"


def _cpu(c: dict[str, Any]) -> str:
    return (f"mean {c['mean_pct_core']:.1f} %  p95 {c['p95_pct_core']:.1f} % of a core = {c['mean_pct_machine']:.1f} %"
            f" / {c['p95_pct_machine']:.1f} % of the machine") if c.get("samples") else "no samples"


def _s(d: dict[str, Any]) -> str:
    return f"p50 {d['p50']:.2f}  max {d['max']:.2f} s (n={d['count']})" if d.get("count") else "none seen"


def rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """The figures, once, for both the printed table and the markdown block."""
    c, lo, raw, link = r["config"], r["load"], r["raw"], r["link_loss"]
    seen = sum(x["detect_s"] is not None for x in link["cuts"])
    return [
        (f"goto POST -> 202, {c['drones']} drones, {lo['rate_per_s']:.1f}/s", _ms(lo["round_trip_ms"])),
        ("failed commands (by status)", ", ".join(f"{k}: {v}" for k, v in lo["failures"].items()) or "none"),
        ("launch goto (home, GUIDED, arm, takeoff)", _ms(r["launch_ms"])),
        (f"raw DO_REPOSITION -> ACK ({raw['drone']})", _ms(raw["reposition_ms"])),
        ("raw DO_SET_MODE + DO_REPOSITION", _ms(raw["pair_ms"])),
        (f"hub goto, {raw['drone']} alone, no load", _ms(raw["hub_idle_ms"])),
        ("hub / raw, p50", f"{r['ratio']['loaded_vs_raw']}x loaded vs DO_REPOSITION;"
                           f" {r['ratio']['idle_vs_pair']}x unloaded vs the pair"),
        ("hub CPU under load", _cpu(lo["cpu"]["hub"])),
        ("hub CPU, drones flying, no commands", _cpu(r["baseline_cpu"]["hub"])),
        ("hub RSS peak under load", f"{lo['hub_rss_mib']} MiB"),
        ("PostgreSQL CPU under load", _cpu(lo["cpu"]["postgres"])),
        ("bench process CPU (simulator + clients)", _cpu(lo["cpu"]["bench"])),
        (f"link loss shown ({CUT_S:g} s cuts)", f"{_s(link['detect_s'])}, {seen}/{len(link['cuts'])} seen ->"
                                               f" {'PASS' if link['pass'] else 'FAIL'} (limit {LINK_LIMIT_S:g} s)"),
        ("link ok again after the cut", _s(link["recover_s"])),
        ("RTL accepted", f"{r['rtl']['accepted']}/{c['drones']}"),
    ]


def _header(r: dict[str, Any]) -> list[str]:
    m, c = r["machine"], r["config"]
    return [f"{m['date']}; {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['kernel']}, Python {m['python']}",
            f"{c['drones']} drones; gotos every {c['interval_s']:g} s each for {c['seconds']:g} s; raw series of"
            f" {c['raw']}; hub link watchdog {c['link_timeout_s']:g} s, link polled every 50 ms; `{r['command']}`"]


def table(r: dict[str, Any]) -> str:
    return "\n".join(["fieldhub bench drones", *_header(r), "", *(f"  {k:<44} {v}" for k, v in rows(r))])


def markdown(r: dict[str, Any]) -> str:
    return "\n".join(["### Drones: API -> COMMAND_ACK, N drones at once, link loss", "", *_header(r), "",
                      "| measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows(r))])
