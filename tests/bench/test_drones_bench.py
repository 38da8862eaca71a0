"""The drone benchmark's statistics and report, on made-up figures (no stack, no drones)."""

from __future__ import annotations

import os

import pytest

from bench import drones
from bench.drones_report import cpu_summary, link_verdict, markdown, ratio, rows, summary, table


def test_summary_is_nearest_rank_in_ms() -> None:
    # Ties around each rank, so the figures hold for any nearest-rank convention.
    s = summary([9.0, 9.0] + [2.0] * 38 + [1.0] * 60)
    assert s == {"count": 100, "p50": 1.0, "p95": 2.0, "p99": 9.0, "max": 9.0, "mean": 1.54}
    assert summary([3.14159])["p99"] == 3.14
    assert summary([]) == {"count": 0}


def test_cpu_summary_gives_core_and_machine_shares() -> None:
    c = cpu_summary([90.0, 90.0] + [10.0] * 18, cores=2)
    assert c == {"samples": 20, "mean_pct_core": 18.0, "p95_pct_core": 90.0,
                 "mean_pct_machine": 9.0, "p95_pct_machine": 45.0}
    assert cpu_summary([], 2) == {"samples": 0}


def test_ratio_needs_both_sides() -> None:
    assert ratio({"p50": 6.0}, {"p50": 0.5}) == 12.0
    assert ratio({"count": 0}, {"p50": 0.5}) is None
    assert ratio({"p50": 6.0}, {"p50": 0.0}) is None


@pytest.mark.parametrize(("detect", "expected"), [
    ([3.1, 3.9, 4.2], True),
    ([3.1, 5.0], True),  # the limit itself passes
    ([3.1, 5.01], False),
    ([3.1, None], False),  # a cut never seen fails
    ([], False),  # nothing measured proves nothing
])
def test_link_verdict(detect: list[float | None], expected: bool) -> None:
    assert link_verdict(detect) is expected


def _result() -> dict[str, object]:
    cpu = cpu_summary([40.0, 50.0, 60.0], 2)
    return {
        "machine": {"cpu": "Test CPU", "cores": 2, "ram_gib": 4.0, "kernel": "Linux 6", "python": "3.11.2",
                    "date": "2026-12-02 10:00:00 UTC", "load_average_at_start": [0.1, 0.1, 0.1]},
        "command": "fieldhub bench drones", "wall_s": 300.0,
        "config": {"drones": 20, "seconds": 120.0, "interval_s": 2.0, "raw": 200, "link_timeout_s": 3.0},
        "launch_ms": summary([900.0, 1100.0]), "baseline_cpu": {"hub": cpu},
        "load": {"round_trip_ms": summary([5.0, 6.0, 7.0, 40.0]), "failures": {"504": 1}, "rate_per_s": 10.0,
                 "cpu": {"hub": cpu, "postgres": cpu, "bench": cpu}, "hub_rss_mib": 120.5},
        "raw": {"drone": "UAV-01", "reposition_ms": summary([0.4, 0.5]), "pair_ms": summary([0.9, 1.0]),
                "hub_idle_ms": summary([4.0, 5.0])},
        "ratio": {"loaded_vs_raw": 15.0, "idle_vs_pair": 4.4},
        "link_loss": {"cuts": [{"drone_id": "UAV-01", "detect_s": 3.4, "recover_s": 0.6},
                               {"drone_id": "UAV-02", "detect_s": None, "recover_s": None}],
                      "detect_s": summary([3.4]), "recover_s": summary([0.6]), "pass": False},
        "rtl": {"accepted": 20},
    }


def test_table_and_markdown_carry_the_same_figures() -> None:
    r = _result()
    text, md = table(r), markdown(r)
    for label, value in rows(r):
        assert f"{label:<44} {value}" in text
        assert f"| {label} | {value} |" in md
    figures = dict(rows(r))
    assert figures["goto POST -> 202, 20 drones, 10.0/s"] == "p50 6.00  p99 40.00  max 40.00 ms (n=4)"
    assert figures["failed commands (by status)"] == "504: 1"
    assert figures["link loss shown (8 s cuts)"] == "p50 3.40  max 3.40 s (n=1), 1/2 seen -> FAIL (limit 5 s)"
    assert figures["hub / raw, p50"].startswith("15.0x loaded")
    assert "`fieldhub bench drones`" in md and "2 cores" in text


def test_raw_gcs_sends_what_the_hub_sends() -> None:
    gcs = drones.RawGcs(7)
    msg = gcs.reposition(34.25, 117.18)
    assert msg.target_system == 7 and msg.command == drones.M.MAV_CMD_DO_REPOSITION
    assert (msg.x, msg.y, msg.z) == (342_500_000, 1_171_800_000, drones.ALT_M)
    assert gcs.set_mode().param2 == drones.GUIDED
    assert os.environ["MAVLINK20"] == "1"
