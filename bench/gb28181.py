"""GB/T 28181 body cameras through the hub: a registered fleet's cost, and live video next to WHIP.

Run: ``fieldhub bench gb28181 [--cameras 1000] [--seconds 180] [--streams 8] [--viewers 4] [--video-seconds 60]``.
Two parts, each on a fresh bench stack (:mod:`bench.stack`: the hub as its own process, FIELDHUB_GB28181 on):

1. the fleet (:mod:`bench.gb28181_fleet`): ``--cameras`` simulated cameras registered with digest, keeping alive
   and reporting a position every 5 s: hub CPU and RSS per 1,000 devices against the hub idle with none, the
   registration phase, and the positions sent against the fixes stored;
2. video (:mod:`bench.gb28181_video`): ``--streams`` cameras opened on demand, H.264 in MPEG-PS over RTP, each
   watched by ``--viewers`` WHEP viewers: fps per viewer, sender-to-viewer latency, hub CPU; then the same
   load over WHIP (the video benchmark's publishers and viewers), side by side.

``--part`` runs one of them. Cameras, publishers and viewers run in child processes; CPU is sampled per process
and for the whole machine so contention shows. JSON in ``bench/results/gb28181-<UTC date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.gb28181_fleet import hub_env, run_fleet
from bench.gb28181_report import markdown, table
from bench.report import machine_facts
from bench.stack import BenchStack, run_bench

__all__ = ["build_parser", "main", "run"]

log = logging.getLogger(__name__)


async def _part(name: str, results: dict[str, Any], body: Any, record: bool = True, keep: bool = False) -> None:
    """Run one part on its own stack, stopped whatever happens; its figures (or its error) in ``results[name]``.

    Not :func:`bench.stack.run_on_stack`: ``fieldhub bench`` runs this in a worker thread, where uvloop refuses
    its SIGTERM handler (ValueError); Ctrl-C and the kernel's parent-death signal still stop the children."""
    workdir = Path(tempfile.mkdtemp(prefix=f"fieldhub-bench-gb28181-{name}-"))
    env = hub_env()
    if not record:
        env["FIELDHUB_VIDEO_RECORDING"] = "false"
    stack = BenchStack(workdir, hub_env=env)
    part: dict[str, Any] = {}
    results[name] = part
    failed = True
    try:
        await stack.start()
        part.update(await body(stack, workdir))
        failed = False
    except Exception as exc:  # still clean up; what was measured stays, the error says why the rest is missing
        part["error"] = f"{type(exc).__name__}: {exc}"
        log.exception("part %s failed", name)
    finally:
        await asyncio.to_thread(stack.close)
        if failed or keep:
            log.warning("kept %s for inspection (hub.log, camera and viewer logs)", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


async def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine_facts(), "command": command,
                               "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    if args.part in ("all", "fleet"):
        await _part("fleet", results, lambda stack, workdir: run_fleet(
            stack, workdir, cameras=args.cameras, seconds=args.seconds, idle=args.idle, procs=args.camera_procs),
            keep=args.keep)
    if args.part in ("all", "video"):
        from bench.gb28181_video import run_video

        await _part("video", results, lambda stack, workdir: run_video(stack, workdir, args), record=args.record,
                    keep=args.keep)
    return results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fieldhub bench gb28181", description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("all", "fleet", "video"), default="all")
    p.add_argument("--cameras", type=int, default=1000, help="simulated cameras of the fleet part")
    p.add_argument("--seconds", type=float, default=180.0, help="steady window of the fleet part")
    p.add_argument("--idle", type=float, default=30.0, help="seconds of the idle hub (no camera) before the fleet")
    p.add_argument("--camera-procs", type=int, default=2, help="child processes the fleet's cameras run in")
    p.add_argument("--streams", type=int, default=8, help="camera streams (and WHIP publishers) of the video part")
    p.add_argument("--viewers", type=int, default=4, help="WHEP viewers per stream (one of them decodes)")
    p.add_argument("--video-seconds", type=float, default=60.0, help="load window of each video side")
    p.add_argument("--baseline", type=float, default=15.0, help="seconds of streams with no viewer, each side")
    p.add_argument("--width", type=int, default=1280, help="the cameras' picture width (and the WHIP loop's)")
    p.add_argument("--height", type=int, default=720, help="the cameras' picture height (and the WHIP loop's)")
    p.add_argument("--kbps", type=int, default=2000, help="bitrate of the cameras' H.264 and the WHIP VP8 loop")
    p.add_argument("--no-whip", dest="whip", action="store_false", help="skip the WHIP side of the video part")
    p.add_argument("--no-record", dest="record", action="store_false", help="turn the hub's recording off")
    p.add_argument("--keep", action="store_true", help="keep each part's directory (hub.log, children's logs)")
    p.add_argument("--out", type=Path, help="JSON results (default bench/results/gb28181-<UTC date>.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for noisy in ("aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not 0 < args.cameras <= 100_000 or args.seconds < 10 or args.idle < 2 or not 0 < args.camera_procs <= 16 \
            or not 0 < args.streams <= 32 or not 0 < args.viewers <= 32 or args.video_seconds < 5 \
            or args.baseline < 2:
        print("--cameras 1-100000, --seconds >= 10, --idle >= 2, --camera-procs 1-16, --streams and --viewers 1-32,"
              " --video-seconds >= 5, --baseline >= 2", file=sys.stderr)
        return 2
    return run_bench("gb28181", lambda command: run(args, command), argv, args.out,
                     lambda result: (table(result), markdown(result)))


if __name__ == "__main__":
    sys.exit(main())
