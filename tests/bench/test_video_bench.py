"""The video benchmark's statistics, report and replay logic, on made-up figures (no stack, no network)."""

from __future__ import annotations

import asyncio
from typing import Any

import av
import pytest

from bench.video_load import EncodedLoop, LoopPublisher, encode_loop, frame_number
from bench.video_stats import (
    TARGETS,
    cores_summary,
    fps_of,
    fps_summary,
    latencies_ms,
    markdown,
    pairs,
    summary,
    table,
    verdicts,
    viewers_per_core,
)


def test_pairs_unflattens_time_and_frame() -> None:
    assert pairs([1.5, 7.0, 2.5, 8.0]) == [(1.5, 7), (2.5, 8)]
    assert pairs([]) == []


def test_latency_is_from_the_latest_earlier_send_of_the_same_frame() -> None:
    # Loop frame 5 went out at 10.0 and again a loop later at 20.0; frame 6 only at 10.033.
    sends = [(20.0, 5), (10.0, 5), (10.033, 6)]
    pictures = [(10.08, 5), (10.133, 6), (20.05, 5)]
    ms, unmatched = latencies_ms(sends, pictures)
    assert [round(x, 1) for x in ms] == [80.0, 100.0, 50.0]
    assert unmatched == 0


def test_a_picture_with_no_earlier_send_is_unmatched_not_negative() -> None:
    ms, unmatched = latencies_ms([(10.0, 5)], [(9.9, 5), (10.1, 9)])
    assert ms == [] and unmatched == 2


def test_latency_counts_only_pictures_inside_the_window() -> None:
    sends = [(float(t), t) for t in range(10)]
    pictures = [(t + 0.05, t) for t in range(10)]
    ms, _ = latencies_ms(sends, pictures, start=3.0, end=6.0)
    assert len(ms) == 3  # 3.05, 4.05, 5.05


def test_fps_of_gives_mean_and_worst_whole_second() -> None:
    arrivals = [100 + i / 30 for i in range(30)] + [101 + i / 10 for i in range(10)] \
        + [102 + i / 30 for i in range(30)]
    f = fps_of(arrivals, 100.0, 103.0)
    assert f == {"mean": round(70 / 3, 2), "worst_1s": 10.0}
    assert fps_of([100.5, 99.0, 103.0], 100.0, 103.0)["mean"] == round(1 / 3, 2)  # end is exclusive
    assert fps_of(arrivals, 100.0, 100.5) == {"mean": 0.0, "worst_1s": 0.0}


def test_fps_summary_counts_viewers_under_the_target() -> None:
    s = fps_summary([{"mean": 30.0, "worst_1s": 29.0}, {"mean": 27.9, "worst_1s": 20.0},
                     {"mean": 29.5, "worst_1s": 28.0}])
    assert s == {"viewers": 3, "min": 27.9, "p50": 29.5, "max": 30.0, "below_target": 1, "worst_1s": 20.0}
    assert fps_summary([]) == {"viewers": 0}


def test_summary_and_cores() -> None:
    assert summary([9.0, 9.0] + [2.0] * 38 + [1.0] * 60) == {
        "count": 100, "p50": 1.0, "p95": 2.0, "p99": 9.0, "max": 9.0, "mean": 1.5}
    assert summary([]) == {"count": 0}
    assert cores_summary([150.0, 150.0] + [50.0] * 18) == {"samples": 20, "mean_cores": 0.6, "p95_cores": 1.5}
    assert cores_summary([]) == {"samples": 0}


def test_viewers_per_core_counts_only_what_viewers_add() -> None:
    loaded, ingest = {"samples": 10, "mean_cores": 0.42}, {"samples": 10, "mean_cores": 0.10}
    assert viewers_per_core(32, loaded, ingest) == {"viewer_cores": 0.32, "per_viewer_cores": 0.01,
                                                     "viewers_per_core": 100.0}
    # Noise can make the viewers look free: no figure rather than an infinite one.
    assert viewers_per_core(32, ingest, loaded)["viewers_per_core"] is None
    assert viewers_per_core(32, {"samples": 0}, ingest)["viewer_cores"] is None


def _verdict_inputs(fps_min: float = 29.0, cores: float = 1.0, p95: float = 150.0,
                    first_max: float = 1.0) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    return ({"viewers": 32, "min": fps_min}, {"samples": 60, "mean_cores": cores}, {"count": 100, "p95": p95},
            {"count": 10, "max": first_max})


def test_verdicts_limits_are_inclusive() -> None:
    at_limits = _verdict_inputs(TARGETS["fps"], TARGETS["hub_cores"], TARGETS["latency_p95_ms"],
                                TARGETS["first_frame_s"])
    assert all(verdicts(*at_limits).values())
    assert not any(verdicts(*_verdict_inputs(27.99, 1.21, 200.1, 1.51)).values())


def test_a_new_viewer_without_a_picture_fails_the_first_frame_target() -> None:
    assert verdicts(*_verdict_inputs(), first_failed=0)["first_frame_s"]
    assert not verdicts(*_verdict_inputs(), first_failed=1)["first_frame_s"]


def test_nothing_measured_fails_every_target() -> None:
    assert not any(verdicts({"viewers": 0}, {"samples": 0}, {"count": 0}, {"count": 0}).values())


def _result() -> dict[str, object]:
    fps = fps_summary([{"mean": 30.0, "worst_1s": 29.0}, {"mean": 27.0, "worst_1s": 12.0}])
    hub, ingest = cores_summary([40.0, 50.0]), cores_summary([10.0, 12.0])
    latency = {**summary([70.0, 80.0, 250.0]), "unreadable": 3, "unmatched": 0}
    first = summary([0.2, 0.3], 2)
    return {
        "machine": {"cpu": "Test CPU", "cores": 2, "ram_gib": 4.0, "kernel": "Linux 6", "python": "3.11.2",
                    "date": "2026-12-02 10:00:00 UTC", "load_average_at_start": [0.1, 0.1, 0.1]},
        "command": "fieldhub bench video", "wall_s": 300.0,
        "config": {"streams": 8, "viewers_per_stream": 4, "decoders": 8, "seconds": 180.0, "baseline_s": 30.0,
                   "first": 10, "raw_seconds": 20.0, "recording": True},
        "loop": {"frames": 300, "gop": 60, "width": 1280, "height": 720, "kbit_per_s": 2000, "encode_s": 2.0},
        "ingest_cpu": {"hub": ingest},
        "load": {"window_s": 180.0, "fps": fps, "latency_ms": latency,
                 "cpu": {"hub": hub, "postgres": cores_summary([1.0]), "bench": cores_summary([10.0]),
                         "decoders": cores_summary([60.0]), "counters": cores_summary([20.0]),
                         "bench_total": cores_summary([90.0])},
                 "machine_busy_cores": 1.5, "others_cores": 0.1, "hub_rss_mib": 180.0,
                 "relay": {"frames_in": 100, "dropped_to_slow_viewer": 0},
                 "publisher": {"sent": 1000, "jumps": 2, "late_max_ms": 12.0}},
        "first_frame_s": first, "first_frame_failed": 1,
        "viewers_per_core": viewers_per_core(32, hub, ingest),
        "raw": {"latency_ms": summary([35.0, 36.0]), "sent": 600, "decoded": 599},
        "ratio": {"p50": 2.2, "p95": 6.9},
        "verdicts": verdicts(fps, hub, latency, first, 1),
    }


def test_table_shows_every_target_with_its_verdict() -> None:
    r = _result()
    text = table(r)
    assert text.startswith("fieldhub bench video")
    assert "min 27.0" in text and "1 under 28" in text and "-> FAIL" in text  # one viewer under 28 fps
    assert "mean 0.45  p95 0.50 cores -> PASS" in text
    assert "p95 250" in text  # latency p95 over 200 ms fails
    assert "max 0.30 s (n=2, 1 failed) -> FAIL" in text  # in time, but one viewer got no picture
    assert "94.1 viewers/core" in text
    assert text.count("PASS") == 1 and text.count("FAIL") == 3
    md = markdown(r)
    assert md.startswith("### Live video: 8 streams x 4 viewers through the hub")
    assert md.count("\n| ") == len(text.splitlines()) - 4 + 1  # one row per table line, plus the header row


def test_next_keyframe_wraps_to_the_loop_start() -> None:
    loop = EncodedLoop([b"k", b"p", b"p", b"k", b"p"], [0, 3], 320, 240, 0.0)
    assert [loop.next_keyframe(i) for i in range(5)] == [0, 3, 3, 3, 0]


def test_a_keyframe_request_jumps_the_replay_to_the_next_keyframe() -> None:
    loop = EncodedLoop([b"k0", b"p1", b"p2", b"k3", b"p4", b"p5"], [0, 3], 320, 240, 0.0)

    async def replay() -> list[tuple[bytes, bool, int]]:
        pub = LoopPublisher(loop, 1)  # starts at the key frame at or after index 1
        out = []
        for n in range(5):
            if n in (1, 4):  # at p4: jump over p5 to k0 (wrapping); at k3: already a key frame, no jump
                pub.request_keyframe()
            f = await asyncio.wait_for(pub.next_frame(), 2)
            out.append((f.data, f.keyframe, f.timestamp))
        assert pub.jumps == 1 and pub.skipped == 2 and pub.sent == 5
        assert [int(k) for k in pub.sends[1::2]] == [3, 0, 1, 2, 3]
        return out

    frames = asyncio.run(replay())
    assert [f[:2] for f in frames] == [(b"k3", True), (b"k0", True), (b"p1", False), (b"p2", False), (b"k3", True)]
    assert [f[2] for f in frames] == [3000 * n for n in range(1, 6)]  # 30 fps on the 90 kHz clock, jumps or not


def test_encoded_loop_keeps_frame_numbers_and_keyframes() -> None:
    loop = encode_loop(frames=12, gop=6, kbit_per_s=500, width=320, height=240)
    assert loop.keyframes == [0, 6] and len(loop.frames) == 12
    decoder = av.CodecContext.create("libvpx", "r")
    seen = [frame_number(f) for data in loop.frames for f in decoder.decode(av.Packet(data))]
    assert seen == list(range(12))


@pytest.mark.parametrize("argv", [["--streams", "0"], ["--viewers", "33"], ["--seconds", "1"], ["--kbps", "50"]])
def test_bad_options_are_refused_before_anything_starts(argv: list[str]) -> None:
    from bench.video import main
    assert main(argv) == 2
