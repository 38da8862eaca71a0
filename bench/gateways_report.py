"""The gateways benchmark's maths (per 1,000 terminals, µs per fix, ratios to MQTT) and its printed table. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.report import rows_markdown, rows_table

__all__ = ["cpu_s_per_1000_per_min", "differences", "markdown", "merge_tallies", "ratios", "rows", "rss_mib_per_1000",
           "table", "us_per_fix"]

COUNTERS = ("sent", "ok", "failed", "failures")
TOTALS = ("connected", "positions_sent", "positions_ok")
HUB_FIXES = "jt808_events_total{event=fixes}"  # the gateway's own count, as /metrics names it
PATH_LABELS = {"mqtt": "MQTT, native device", "jt808": "JT/T 808 over TCP", "osmand": "OsmAnd HTTP",
               "owntracks_http": "OwnTracks HTTP", "owntracks_mqtt": "OwnTracks MQTT"}


def cpu_s_per_1000_per_min(mean_cores: float, terminals: int) -> float:
    """Mean cores busy -> CPU-seconds per minute per 1,000 terminals (0 without a terminal)."""
    if terminals <= 0:
        return 0.0
    return round(mean_cores * 60 * 1000 / terminals, 2)


def rss_mib_per_1000(rss_mib: float | None, idle_rss_mib: float | None, terminals: int) -> float | None:
    """The RSS the terminals added over the idle hub, per 1,000 of them; None when a reading is missing."""
    if rss_mib is None or idle_rss_mib is None or terminals <= 0:
        return None
    return round((rss_mib - idle_rss_mib) * 1000 / terminals, 1)


def merge_tallies(answers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The terminal processes' counters added up: counter maps key by key, totals as numbers."""
    out: dict[str, Any] = {name: {} for name in COUNTERS}
    for name in TOTALS:
        out[name] = 0
    for answer in answers:
        for name in COUNTERS:
            for key, n in answer.get(name, {}).items():
                out[name][key] = out[name].get(key, 0) + n
        for name in TOTALS:
            out[name] += answer.get(name, 0)
    return out


def us_per_fix(cpu_s: float, idle_cores: float, wall_s: float, fixes: float) -> float | None:
    """µs of CPU per stored fix: what the window cost beyond the idle process over the same wall time.

    None without a fix stored. A result below zero (the load cost less than the noise of the idle reading) is
    reported as it is, not hidden."""
    if fixes <= 0:
        return None
    return round((cpu_s - idle_cores * wall_s) / fixes * 1e6, 1)


def ratios(per_fix: Mapping[str, float | None], base: str = "mqtt") -> dict[str, float | None]:
    """Each path's cost over the ``base`` path's (None when either is missing or the base is not positive)."""
    reference = per_fix.get(base)
    return {path: (round(value / reference, 2) if value is not None and reference is not None and reference > 0
                   else None) for path, value in per_fix.items()}


def _cores(c: dict[str, Any] | None) -> str:
    if not c or not c.get("samples"):
        return "no samples"
    return f"{100 * c['mean_cores']:.1f} % of a core (p95 {100 * c['p95_cores']:.1f} %)"


def _int(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _counts(d: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"


def differences(tot: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A row saying where positions went missing between sent, answered 0 and stored, when they do not agree."""
    sent, ok, rows_ = tot["positions_sent"], tot["positions_ok"], tot["fixes_in_database"]
    if sent == ok == rows_:
        return []
    return [("  what differs", f"sent - answered 0 = {sent - ok} (answered otherwise: {_counts(tot['failed'])});"
                               f" answered 0 - rows = {ok - rows_}")]


def fleet_rows(f: dict[str, Any]) -> list[tuple[str, str]]:
    if "error" in f and "steady" not in f:
        return [("fleet part FAILED", str(f["error"]))]
    idle, reg, st, tot = f.get("idle", {}), f.get("registration", {}), f.get("steady", {}), f.get("totals", {})
    n = f.get("terminals", 0)
    out = [("terminals provisioned (unit + device each, API)", f"{n} in {f.get('provision_s')} s"),
           ("hub idle, gateways on, no terminal", f"{_cores(idle.get('cpu', {}).get('hub'))}; RSS"
                                                 f" {idle.get('hub_rss_mib')} MiB")]
    if reg:
        out += [(f"registration burst of {n} (0x0100 + 0x0102)",
                 f"{reg['authenticated']} authenticated {reg['terminal_side_s']} s after the first connect"
                 f" ({reg['all_authenticated_s']} s with the processes' start); failures:"
                 f" {_counts(reg.get('failures', {}))}"),
                ("  hub CPU during registration", f"{_cores(reg['cpu'].get('hub'))}; {reg['hub_cpu_seconds']} CPU-s"
                                                  f" in all; machine busy {reg['machine_busy_cores']} cores")]
    if st:
        out += [(f"steady: {st['connected']} connected, 0x0200 every 10 s, heartbeat 60 s, {st['seconds']} s",
                 f"hub {_cores(st['cpu'].get('hub'))}; {st['hub_cpu_s_per_1000_per_min']} CPU-s per 1,000"
                 f" terminals per minute"),
                ("  hub RSS", f"{st['hub_rss_mib']} MiB ({st['hub_rss_peak_mib']} peak) vs {idle.get('hub_rss_mib')}"
                              f" MiB idle: {st['hub_rss_mib_per_1000']} MiB per 1,000 terminals"),
                ("  PostgreSQL CPU / terminals' CPU", f"{_cores(st['cpu'].get('postgres'))} / " + ", ".join(
                    _cores(v) for k, v in st["cpu"].items() if k.startswith("terminals"))),
                ("  machine busy", f"{st['machine_busy_cores']} cores"),
                ("  positions in the window", f"{st['positions_sent']} sent, {st['positions_ok']} answered 0,"
                                              f" {st['fixes_stored']} fixes stored ({st['fixes_per_s']}/s)")]
    if tot:
        out += [("whole run: positions sent -> stored",
                 f"{tot['positions_sent']} sent, {tot['positions_ok']} answered 0,"
                 f" {_int(tot['hub'].get(HUB_FIXES))} counted by the gateway, {tot['fixes_in_database']} rows"
                 f" in fixes; loss {tot['loss']}"),
                *differences(tot),
                ("  messages sent / answered 0", f"{_counts(tot['sent'])} / {_counts(tot['ok'])}"),
                ("  answered otherwise; terminal failures", f"{_counts(tot['failed'])}; {_counts(tot['failures'])}")]
    if "error" in f:
        out.append(("fleet part ERROR", str(f["error"])))
    return out


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} µs"


def _answers(child: Mapping[str, Any]) -> str:
    """What a path's load child was answered: HTTP statuses, JT/T 808 results, or MQTT PUBACKs."""
    if "statuses" in child:
        return "HTTP " + _counts(child["statuses"])
    if "ok" in child:
        return (f"answered 0: {_counts(child['ok'])}; otherwise: {_counts(child.get('failed', {}))}; failures:"
                f" {_counts(child.get('failures', {}))}")
    return f"{child.get('acked', '-')} PUBACKs of {child.get('published', '-')}; error {child.get('error')}"


def cost_rows(c: dict[str, Any]) -> list[tuple[str, str]]:
    if "paths" not in c:
        return [("cost part FAILED", str(c.get("error")))]
    idle = c.get("idle_cores", {})
    out = [(f"per-fix cost: {c['rate']} fixes/s for {c['seconds']} s, {c['devices_per_path']} devices per path",
            f"idle subtracted: hub {100 * idle.get('hub', 0):.1f} %, broker {100 * idle.get('broker', 0):.1f} %,"
            f" PostgreSQL {100 * idle.get('postgres', 0):.1f} % of a core")]
    ratio = c.get("ratio_to_mqtt", {})
    for path, p in c["paths"].items():
        label = PATH_LABELS.get(path, path)
        if "error" in p:
            out.append((f"  {label}", f"FAILED: {p['error']}"))
            continue
        us = p["us_per_fix"]
        r = ratio.get(path)
        out.append((f"  {label}", f"hub {_us(us.get('hub'))} per fix ({'-' if r is None else f'{r:g}'} x MQTT);"
                                  f" broker {_us(us.get('broker'))}, PostgreSQL {_us(us.get('postgres'))};"
                                  f" {p['sent']} sent, {p['fixes_stored']} stored, {p['rows']} rows"))
        if p["fixes_stored"] < p["sent"]:
            out.append(("    answers", _answers(p.get("child", {}))))
    if "error" in c:
        out.append(("cost part ERROR", str(c["error"])))
    return out


def rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if "fleet" in r:
        out += fleet_rows(r["fleet"])
    if "cost" in r:
        out += cost_rows(r["cost"])
    return out


def table(r: dict[str, Any]) -> str:
    return rows_table("gateways", r, rows(r), 66)


def markdown(r: dict[str, Any]) -> str:
    return rows_markdown("Device gateways through the hub: a JT/T 808 fleet, and hub CPU per fix by path", r, rows(r))
