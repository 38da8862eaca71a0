"""The GB/T 28181 benchmark's printed table and markdown block, from its results. Pure."""

from __future__ import annotations

from typing import Any

from bench.report import rows_markdown, rows_table

__all__ = ["markdown", "rows", "table"]


def _cores(c: dict[str, Any] | None) -> str:
    if not c or not c.get("samples"):
        return "no samples"
    return f"{100 * c['mean_cores']:.1f} % of a core (p95 {100 * c['p95_cores']:.1f} %)"


def _ms(d: dict[str, Any]) -> str:
    return (f"p50 {d['p50']:.0f}  p95 {d['p95']:.0f}  p99 {d['p99']:.0f}  max {d['max']:.0f} ms (n={d['count']})"
            if d.get("count") else "no samples")


def fleet_rows(f: dict[str, Any]) -> list[tuple[str, str]]:
    if "error" in f and "steady" not in f:
        return [("fleet part FAILED", str(f["error"]))]
    idle, reg, st, tot = f.get("idle", {}), f.get("registration", {}), f.get("steady", {}), f.get("totals", {})
    n = f["cameras"]
    out = [("cameras provisioned (unit + device each, API)", f"{n} in {f.get('provision_s')} s"),
           ("hub idle, GB/T 28181 on, no camera", f"{_cores(idle.get('cpu', {}).get('hub'))}; RSS"
                                                   f" {idle.get('hub_rss_mib')} MiB; machine busy"
                                                   f" {idle.get('machine_busy_cores')} cores")]
    if reg:
        out += [(f"registration of {n} at once (REGISTER + digest)",
                 f"all registered at the hub in {reg['all_registered_s']} s (cameras' side {reg['camera_side_s']} s),"
                 f" all subscribed and a first position in {reg['all_positioned_s']} s"),
                ("  hub CPU during registration", f"{_cores(reg['cpu'].get('hub'))}; {reg['hub_cpu_seconds']} CPU-s"
                                                  f" in all; machine busy {reg['machine_busy_cores']} cores")]
    if st:
        per_k = 1000 / st["registered_now"] if st.get("registered_now") else 0
        rss = st.get("hub_rss_mib") or 0
        idle_rss = idle.get("hub_rss_mib") or 0
        out += [(f"steady: {st['registered_now']} registered, keepalive 60 s, position every 5 s, {st['seconds']} s",
                 f"hub {_cores(st['cpu'].get('hub'))}; {st['hub_cpu_s_per_1000_per_min']} CPU-s per 1,000 devices"
                 f" per minute"),
                ("  hub RSS", f"{rss} MiB ({st['hub_rss_peak_mib']} peak) vs {idle_rss} MiB idle:"
                              f" +{(rss - idle_rss) * per_k:.0f} MiB per 1,000 devices"),
                ("  PostgreSQL CPU / cameras' CPU", f"{_cores(st['cpu'].get('postgres'))} / " + ", ".join(
                    _cores(v) for k, v in st["cpu"].items() if k.startswith("cameras"))),
                ("  machine busy", f"{st['machine_busy_cores']} cores of 2"),
                ("  positions in the window", f"{st['positions_built']} sent, {st['positions_acked']} answered 200,"
                                              f" {st['fixes_counted']} fixes counted by the hub"
                                              f" ({st['fixes_per_s']}/s)")]
    if tot:
        out += [("whole run: positions sent -> stored",
                 f"{tot['positions_built']} sent, {tot['positions_acked']} answered 200, {tot['fixes_counted']}"
                 f" counted (/metrics fixes), {tot['fixes_in_database']} rows in fixes; loss {tot['loss']}"),
                ("  cameras' requests refused or unanswered", ", ".join(f"{k} {v}" for k, v in
                                                                       tot["camera_refused"].items()) or "none")]
    if "error" in f:
        out.append(("fleet part ERROR", str(f["error"])))
    return out


def _fps(f: dict[str, Any]) -> str:
    if not f.get("viewers"):
        return "no viewers"
    return (f"min {f['min']:.1f}  p50 {f['p50']:.1f}  max {f['max']:.1f} over {f['viewers']} viewers; worst second"
            f" {f['worst_1s']:g}")


def video_rows(v: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for side in ("gb28181", "whip"):
        s = v.get(side)
        if not s:
            continue
        if "fps" not in s:
            out.append((f"{side}: FAILED", str(s.get("error"))))
            continue
        f = s["fps"]
        out += [(f"{side}: {s['label']}", ""),
                ("  viewer fps", _fps(f)),
                *((f"  viewer fps, {group} only", _fps(f[group])) for group in ("decoders", "counters") if group in f),
                ("  viewers disconnected by the window's end", str(f.get("viewers_lost_by_end", "n/a"))),
                ("  sender fps", str(s.get("sender_fps"))),
                ("  latency sender -> decoding viewer", _ms(s["latency_ms"]) + f"; {s['latency_note']}"),
                ("  hub CPU with viewers / streams only", f"{_cores(s['cpu'].get('hub'))} /"
                                                          f" {_cores(s['ingest_cpu'].get('hub'))}"),
                ("  senders / viewers CPU", " / ".join(f"{k} {_cores(c)}" for k, c in s["cpu"].items()
                                                       if k not in ("hub", "postgres"))),
                ("  machine busy", f"{s['machine_busy_cores']} cores of 2"),
                ("  hub RSS peak", f"{s['hub_rss_mib']} MiB")]
        if s.get("calibration_ms"):
            out.append(("  camera draw+encode+mux per frame", str(s["calibration_ms"])))
        if s.get("relay"):
            out.append(("  relay", ", ".join(f"{k} {n}" for k, n in s["relay"].items())))
    if "error" in v:
        out.append(("video part ERROR", str(v["error"])))
    return out


def rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if "fleet" in r:
        out += fleet_rows(r["fleet"])
    if "video" in r:
        out += video_rows(r["video"])
    return out


def table(r: dict[str, Any]) -> str:
    return rows_table("gb28181", r, rows(r), 62)


def markdown(r: dict[str, Any]) -> str:
    return rows_markdown("GB/T 28181 cameras through the hub", r, rows(r))
