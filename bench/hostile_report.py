"""The targets of ``fieldhub bench hostile`` (issue 12), checked against the runs, and the printed table.

Targets: with 1 % hostile messages mixed in, **no good fix lost**, the stored rate **within 10 %** of the
clean run's and the publish -> commit **p99 within 1.5x** of the clean run's; with one device flooding,
the other devices' p99 within 1.5x of their clean run's. Beside them: no run loses a good fix (a flood
neither), every good element of a mixed batch is stored, and the hub counts exactly the rejects the
hostile messages owe (each one counted, none silently dropped).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench.report import fmt_number as _n

RATE_RATIO_MIN = 0.90
P99_RATIO_MAX = 1.5
RUNS = ("clean", "hostile", "clean_others", "flood")
TITLES = {"clean": "clean", "hostile": "hostile", "clean_others": "clean (others)", "flood": "flood"}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _check(name: str, value: Any, target: str, ok: Callable[[Any], bool]) -> dict[str, Any]:
    return {"check": name, "value": value, "target": target, "pass": value is not None and ok(value)}


def checks(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = [_check(f"{name}: good fixes lost", r["good"]["lost"], "= 0", lambda v: v == 0)
           for name, r in runs.items()]
    clean, hostile = runs.get("clean"), runs.get("hostile")
    if hostile is not None:
        h = hostile["hostile_stored"]
        out.append(_check("hostile: good elements of mixed batches lost", h["good_elements_lost"], "= 0",
                          lambda v: v == 0))
        counted, owed = sum(hostile["rejects_counted"].values()), hostile["hostile"]["expected_rejects"]
        out.append(_check("hostile: rejects counted - rejects owed", counted - owed, f"= 0 (owed {owed:,})",
                          lambda v: v == 0))
    if clean is not None and hostile is not None:
        out.append(_check("hostile / clean: stored rate", _ratio(hostile["good"]["stored_rate"],
                                                                 clean["good"]["stored_rate"]),
                          f">= {RATE_RATIO_MIN:.2f}", lambda v: v >= RATE_RATIO_MIN))
        out.append(_check("hostile / clean: p99 publish -> commit", _ratio(hostile["latency_ms"].get("p99"),
                                                                           clean["latency_ms"].get("p99")),
                          f"<= {P99_RATIO_MAX:g}", lambda v: v <= P99_RATIO_MAX))
    base, flood = runs.get("clean_others"), runs.get("flood")
    if base is not None and flood is not None:
        out.append(_check("flood / clean (others): p99 publish -> commit", _ratio(flood["latency_ms"].get("p99"),
                                                                                  base["latency_ms"].get("p99")),
                          f"<= {P99_RATIO_MAX:g}", lambda v: v <= P99_RATIO_MAX))
    return out


# ---------------------------------------------------------------------- table


def _row(label: str, cells: Sequence[str]) -> str:
    return f"  {label:<34}" + "".join(f"{c:>16}" for c in cells)


def table(results: dict[str, Any]) -> str:
    m, cfg = results["machine"], results["config"]
    runs: dict[str, dict[str, Any]] = results.get("runs", {})
    names = [n for n in RUNS if n in runs]
    out = [f"fieldhub bench hostile  {m['date']}",
           f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['kernel']}, Python {m['python']};"
           f" load average at start {m['load_average_at_start'][0]}",
           f"{_n(cfg['devices'])} devices, {cfg['connections']} connections, QoS {cfg['qos']}, {cfg['duration']:g} s"
           f" per run; hostile: 1 per {cfg['hostile_every']} good fixes; flood: {_n(cfg['flood_rate'])} msg/s from"
           f" one device, QoS {cfg['flood_qos']}; steady window: after the first"
           f" {min(cfg['warmup'], cfg['duration'] / 4):g} s of each run (rate: commits in it; latency: every good fix"
           " published in it, commit time from PostgreSQL minus publish time)",
           "", _row("", [TITLES[n] for n in names])]

    def row(label: str, get: Callable[[dict[str, Any]], Any], digits: int = 0) -> None:
        out.append(_row(label, [_n(_get(get, runs[n]), digits) for n in names]))

    row("offered good fixes/s", lambda r: r["scenario"]["rate"])
    row("good fixes published", lambda r: r["good"]["published"])
    row("good fixes stored", lambda r: r["good"]["stored"])
    row("good fixes LOST", lambda r: r["good"]["lost"])
    row("stored rate (fixes/s)", lambda r: r["good"]["stored_rate"])
    row("ts ahead of publish (fixes)", lambda r: r["generator"]["ts_ahead"])
    row("publish -> commit p50 (ms)", lambda r: r["latency_ms"]["p50"], 1)
    row("publish -> commit p99 (ms)", lambda r: r["latency_ms"]["p99"], 1)
    row("publish -> commit max (ms)", lambda r: r["latency_ms"]["max"], 1)
    row("hub CPU (cores)", lambda r: r["cpu"]["cores"]["hub"], 2)
    row("broker CPU (cores)", lambda r: r["cpu"]["cores"]["broker"], 2)
    row("PostgreSQL CPU (cores)", lambda r: r["cpu"]["cores"]["postgres"], 2)
    row("generators CPU (cores)", lambda r: sum(v or 0 for k, v in r["cpu"]["cores"].items()
                                                if k.endswith("_generator")), 2)
    row("others on the machine (cores)", lambda r: r["cpu"]["cores"]["others"], 2)
    row("hub peak RSS (MiB)", lambda r: r["hub_rss_mib_peak"])
    row("hostile messages sent", lambda r: r["generator"]["hostile"])
    row("rejects counted (/metrics)", lambda r: sum(r["rejects_counted"].values()))
    row("rejects kept (rejects table)", lambda r: sum(r["rejects_kept"].values()))
    row("flood messages published", lambda r: r["flood"]["published"])
    row("flood fixes stored", lambda r: r["flood_stored"])
    out.append(_row("backlog drained", ["yes" if runs[n]["drained"] else "NO" for n in names]))
    reasons = sorted({k for n in names for k in (*runs[n]["rejects_counted"], *runs[n]["rejects_kept"])})
    if reasons:
        out += ["", "REJECTS BY REASON  counted (/metrics) / kept (rejects table)"]
        for reason in reasons:
            out.append(_row(reason, [f"{runs[n]['rejects_counted'].get(reason, 0):,} /"
                                     f" {runs[n]['rejects_kept'].get(reason, 0):,}" for n in names]))
    hostile = runs.get("hostile")
    if hostile is not None:
        sent = hostile["hostile"]["hostile_by_kind"]
        h = hostile["hostile_stored"]
        out += ["", f"HOSTILE MESSAGES SENT ({_n(sum(sent.values()))}, {len(sent)} kinds; owed rejects"
                    f" {_n(hostile['hostile']['expected_rejects'])}; good elements of mixed batches"
                    f" {_n(h['good_elements'])}, stored {_n(h['good_elements_stored'])}; hostile fixes stored"
                    f" {_n(h['hostile_fixes_stored'])})"]
        items = [f"{k} {v:,}" for k, v in sorted(sent.items())]
        out += ["  " + "   ".join(items[i:i + 4]) for i in range(0, len(items), 4)]
    out += ["", "TARGETS"]
    for c in results.get("checks", []):
        value = c["value"]
        shown = "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else f"{value:,}")
        out.append(f"  {c['check']:<52} {shown:>10}   {c['target']:<22} {'PASS' if c['pass'] else 'FAIL'}")
    raw = results.get("raw")
    if raw:
        out += ["", "RAW LIMITS (same machine, same invocation)" + " " * 14 + "rate     hostile run stored / limit"]
        rate = (hostile or {}).get("good", {}).get("stored_rate") or 0
        for label, key, unit in (("Mosquitto pass-through, C pub -> C sub, QoS 0", "mosquitto", "msg/s"),
                                 ("PostgreSQL binary COPY, 500k rows, PK", "copy", "rows/s"),
                                 ("hub storage path alone (Database.write)", "hub_write", "rows/s")):
            limit = raw.get(key, {}).get("rate")
            ratio = f"{100 * rate / limit:.1f} %" if limit and rate else "-"
            out.append(f"  {label:<50} {_n(limit):>8} {unit:<7} {ratio}")
    return "\n".join(out)


def _get(get: Callable[[dict[str, Any]], Any], run: dict[str, Any]) -> Any:
    """A cell's value, or None where the run has no such figure (a clean run has no flood)."""
    try:
        return get(run)
    except (KeyError, TypeError):
        return None
