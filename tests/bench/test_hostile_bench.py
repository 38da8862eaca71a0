"""``fieldhub bench hostile`` for real at a tiny scale, and ``--database-url`` of the benchmarks.

The first test runs all four runs (clean, hostile, clean reference, flood) on the benchmark's own
Mosquitto, PostgreSQL and hub subprocess and holds the benchmark to its own promises: every good fix
counted and its latency measured from the database, every hostile kind sent, the flooding device known to
the hub, the targets checked, the exit code saying what the checks say, nothing left running. It asserts
no performance figure (the ratios of a 3-second run on a shared machine are noise).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import psutil
import psycopg
import pytest

from bench import hostile, ingest
from bench.hostile_payloads import KIND_NAMES
from hub.infra.embedded import EmbeddedPostgres

needs_mosquitto = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto is not installed")

TINY = ["--rate", "300", "--duration", "3", "--devices", "30", "--hostile-every", "10",
        "--others-rate", "200", "--flood-rate", "400", "--warmup", "0.5", "--skip-raw"]


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    hostile.add_arguments(parser)
    return parser.parse_args(argv)


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


@needs_mosquitto
@pytest.mark.timeout(180)
async def test_tiny_hostile_benchmark_counts_every_good_fix_and_every_hostile_message(tmp_path: Path) -> None:
    out = tmp_path / "hostile.json"
    before = _children()

    code = await hostile.main(_args([*TINY, "--out", str(out)]))

    results = json.loads(out.read_text())
    assert "error" not in results
    runs = results["runs"]
    assert list(runs) == ["clean", "hostile", "clean_others", "flood"]
    for name, run in runs.items():
        good = run["good"]
        assert good["published"] == run["scenario"]["rate"] * 3, name
        assert good["lost"] == 0 and good["stored"] == good["published"], name
        assert good["without_commit_ts"] == 0, name
        assert run["generator"]["ts_ahead"] == 0, name  # every good fix's ts is its publish time
        assert run["latency_ms"]["count"] > 0 and 0 <= run["latency_ms"]["p50"] <= run["latency_ms"]["p99"], name
        assert run["drained"], name
        assert "unknown_device" not in run["rejects_counted"], name  # every sender is a registered device
    assert runs["clean"]["rejects_counted"] == runs["clean_others"]["rejects_counted"] == {}
    sent = runs["hostile"]["hostile"]["hostile_by_kind"]
    assert set(sent) == set(KIND_NAMES)  # 90 hostile messages: every one of the kinds at least twice
    assert runs["hostile"]["generator"]["hostile"] == sum(sent.values()) == 90
    counted = sum(runs["hostile"]["rejects_counted"].values())
    assert counted == runs["hostile"]["hostile"]["expected_rejects"]  # each hostile message counted, none dropped
    assert sum(runs["hostile"]["rejects_kept"].values()) == counted
    assert runs["hostile"]["hostile_stored"]["good_elements_lost"] == 0
    assert runs["hostile"]["hostile_stored"]["hostile_fixes_stored"] == 0
    flood = runs["flood"]
    assert flood["flood"]["published"] == 1200
    # Every flood message is stored or counted as a reject (the others send only good fixes): none vanishes.
    assert flood["flood_stored"] + sum(flood["rejects_counted"].values()) == 1200
    checks = {c["check"]: c for c in results["checks"]}
    assert {"hostile / clean: stored rate", "hostile / clean: p99 publish -> commit",
            "flood / clean (others): p99 publish -> commit"} <= set(checks)
    assert code == (0 if all(c["pass"] for c in checks.values()) else 1)
    assert not _children() - before


@needs_mosquitto
@pytest.mark.timeout(120)
async def test_hostile_benchmark_runs_against_an_external_database(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)  # PostgreSQL runs as its own system user when we are root
    pg = EmbeddedPostgres(tmp_path / "external-pg")
    url = pg.start()
    try:
        out = tmp_path / "hostile.json"
        code = await hostile.main(_args([*TINY, "--runs", "clean", "--database-url", url, "--out", str(out)]))
        assert code == 1  # an external server without commit timestamps: refused before any run, with the fix
        assert "track_commit_timestamp = on" in json.loads(out.read_text())["error"]

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
        pg.stop()
        pg.restart()
        await hostile.main(_args([*TINY, "--runs", "clean", "--database-url", url, "--out", str(out)]))
        results = json.loads(out.read_text())
        assert "error" not in results and results["config"]["database_url"] == url
        good = results["runs"]["clean"]["good"]
        assert good["lost"] == 0
        with psycopg.connect(url) as conn:  # the hub wrote into the external database
            row = conn.execute("SELECT count(*) FROM fixes WHERE device_id LIKE 'bench-%'").fetchone()
        assert row is not None and row[0] == good["published"] == 900
    finally:
        pg.close()


@needs_mosquitto
@pytest.mark.timeout(120)
async def test_ingest_benchmark_runs_against_an_external_database(tmp_path: Path, database_url: str) -> None:
    parser = argparse.ArgumentParser()
    ingest.add_arguments(parser)
    out = tmp_path / "ingest.json"
    args = parser.parse_args(["--rate", "200", "--duration", "2", "--devices", "20", "--security", "secure",
                              "--latency-rate", "0", "--skip-raw", "--database-url", database_url, "--out", str(out)])

    assert await ingest.main(args) == 0

    run = json.loads(out.read_text())["ingest"]
    assert run["stored"]["loss"] == 0
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM fixes").fetchone()
    assert row is not None and row[0] == run["generator"]["published"] == 400
