"""The load generator and the benchmark machinery, for real at a tiny scale.

The end-to-end test runs ``fieldhub bench ingest``'s ``main`` against its own
Mosquitto, PostgreSQL and hub subprocess (the same path as the full benchmark)
and holds it to the benchmark's own promises: the exact rate, every PUBACKed
fix stored exactly once, nothing rejected, a latency measured, nothing left running.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
from pathlib import Path

import psutil
import pytest

from bench import ingest
from bench.loadgen import Generator
from bench.publisher import (
    MqttProtocolError,
    encode_publish,
    encode_remaining_length,
    encode_topic,
    split_packets,
)
from bench.report import commit_lags, time_reaching, value_at

needs_mosquitto = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto is not installed")


# ------------------------------------------------------------------ MQTT wire
@pytest.mark.parametrize(("length", "encoded"), [
    (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16_383, b"\xff\x7f"), (16_384, b"\x80\x80\x01"),
    (268_435_455, b"\xff\xff\xff\x7f"),
])
def test_remaining_length_matches_the_spec_examples(length: int, encoded: bytes) -> None:
    assert encode_remaining_length(length) == encoded


def test_remaining_length_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError):
        encode_remaining_length(268_435_456)


def test_publish_packet_layout() -> None:
    packet = encode_publish(encode_topic("a/b"), b"xyz", 1, 0x0102)
    assert packet == b"\x32\x0a\x00\x03a/b\x01\x02xyz"
    assert encode_publish(encode_topic("a/b"), b"xyz", 0) == b"\x30\x08\x00\x03a/bxyz"


def test_split_packets_takes_whole_packets_and_keeps_the_rest() -> None:
    buffer = bytearray(b"\x20\x02\x00\x00" + b"\x40\x02\x00\x07" + b"\x40\x02\x00")
    assert split_packets(buffer) == [(0x20, b"\x00\x00"), (0x40, b"\x00\x07")]
    assert buffer == bytearray(b"\x40\x02\x00")
    buffer += b"\x08"
    assert split_packets(buffer) == [(0x40, b"\x00\x08")]
    assert buffer == bytearray()


def test_split_packets_waits_for_a_long_header_and_refuses_a_broken_one() -> None:
    buffer = bytearray(b"\x30\x80")  # remaining length continues in the next read
    assert split_packets(buffer) == []
    assert buffer == bytearray(b"\x30\x80")
    with pytest.raises(MqttProtocolError):
        split_packets(bytearray(b"\x30\xff\xff\xff\xff\x01"))


# ------------------------------------------------------------------ generator
class _Recorder:
    """Stands in for a connection in a pure test of the generator's message stream."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    def publish(self, topic: bytes, payload: bytes, qos: int) -> bool:
        self.sent.append((topic, payload))
        return True


def test_each_device_gets_strictly_increasing_ts_even_within_one_millisecond() -> None:
    args = argparse.Namespace(devices=10, device_prefix="bench-", qos=1)
    gen = Generator(args)
    recorders = [_Recorder() for _ in range(args.devices)]
    gen.connections = recorders  # type: ignore[assignment]
    for k in range(200):  # 20 fixes per device, far faster than one per millisecond
        gen.send(k)
    seen: dict[bytes, list[int]] = {}
    for recorder in recorders:
        for topic, payload in recorder.sent:
            seen.setdefault(topic, []).append(json.loads(payload)["ts"])
    assert len(seen) == 10
    for stamps in seen.values():
        assert len(stamps) == 20
        assert all(b > a for a, b in itertools.pairwise(stamps))
    # One connection per device, carrying that device's fixes only (the broker lets a login write only its own).
    assert [len(r.sent) for r in recorders] == [20] * 10
    assert all(len({topic for topic, _ in r.sent}) == 1 for r in recorders)


def test_commit_lag_reads_the_gap_between_two_curves() -> None:
    published = [(0.0, 0.0), (1.0, 100.0), (2.0, 200.0), (3.0, 300.0)]
    stored = [(0.0, 0.0), (1.5, 100.0), (2.5, 200.0), (3.5, 300.0)]
    assert value_at(published, 1.5) == 150.0
    assert time_reaching(stored, 150.0) == 2.0
    assert commit_lags(published, stored, 0.0, 3.0) == [0.5, 0.5, 0.5]


# ---------------------------------------------------------------- end to end
@needs_mosquitto
@pytest.mark.timeout(180)
async def test_tiny_benchmark_stores_every_acknowledged_fix_once(tmp_path: Path) -> None:
    """On the secure stack: every device provisioned through the hub, on its own TLS connection with its login."""
    parser = argparse.ArgumentParser()
    ingest.add_arguments(parser)
    out = tmp_path / "ingest.json"
    args = parser.parse_args(["--rate", "500", "--duration", "3", "--devices", "50", "--security", "secure",
                              "--latency-rate", "200", "--latency-duration", "2", "--skip-raw", "--out", str(out)])
    before = {p.pid for p in psutil.Process().children(recursive=True)}

    assert await ingest.main(args) == 0

    results = json.loads(out.read_text())
    assert results["config"]["security"] == "secure"
    assert results["logins"]["devices"] == results["logins"]["broker_logins"] == 50
    run = results["ingest"]
    assert run["load"]["connections"] == 50
    generator, stored = run["generator"], run["stored"]
    assert generator["published"] == 1500
    assert generator["acked"] == generator["published"]
    assert 490 <= generator["rate"] <= 510
    assert stored["count"] == stored["distinct"] == generator["published"]
    assert stored["loss"] == 0
    assert stored["rejects"] == 0
    assert stored["duplicates"] == 0
    assert run["devices_tracked"] == 50
    assert run["commit_lag_ms"]["count"] >= 2
    assert set(run["cpu"]["seconds"]) == {"hub", "broker", "postgres", "generator", "bench", "others"}
    assert run["hub_time"]["stages_s"] > 0
    latency = results["latency"]
    assert latency["stored"]["loss"] == 0
    assert latency["watcher"]["positions"] > 0
    assert 0 <= latency["watcher"]["latency_ms"]["p50"] < 2000
    assert results["machine"]["cores"] >= 1
    # Nothing the benchmark started is still running.
    left = {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE} - before
    assert not left
