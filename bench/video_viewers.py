"""A process of WHEP viewers for the video benchmark, so viewers, decoders and publishers do not share a GIL.

One aiortc process receiving 32 streams while it also publishes 8 and decodes 8 falls behind on its own
(its event loop and decoder threads take turns), and what it measured would be the benchmark, not the
hub. So :mod:`bench.video` runs its viewers in children of this module, one for the decoding viewers and
one for the counting ones. The protocol is three lines of JSON over stdin/stdout:

- stdin: ``{"hub_url", "token", "viewers": [[stream_id, decode], ...]}``; the child starts them one by one;
- stdout: ``{"ready": true}`` once every viewer has had a second of frames (or ``{"error": "..."}``);
- stdin: ``stop``; stdout: ``{"viewers": [{"stream_id", "decode", "arrivals", "pictures", "unreadable"}]}``.

Times are ``time.monotonic()``, one clock for every process on the machine (Linux ``CLOCK_MONOTONIC``),
so they compare with the publishers' send times in the parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import httpx

from bench.children import LineChild
from bench.stack import BenchError
from bench.video_load import FPS, CountingViewer, DecodingViewer

__all__ = ["ViewerProcess", "main"]

READY_S = 90.0


async def serve() -> None:
    config = json.loads(await asyncio.to_thread(sys.stdin.readline))
    viewers: list[DecodingViewer | CountingViewer] = []
    async with httpx.AsyncClient(timeout=30.0) as http:
        try:
            try:
                for stream_id, decode in config["viewers"]:
                    url = f"{config['hub_url']}/whep/{stream_id}"
                    viewer = DecodingViewer(url, config["token"], http) if decode \
                        else CountingViewer(url, config["token"], http)
                    viewers.append(viewer)
                    await viewer.start()
                deadline = time.monotonic() + READY_S
                while not all(len(v.arrivals) > FPS for v in viewers):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"not every viewer had frames within {READY_S:g} s")
                    await asyncio.sleep(0.2)
            except Exception as exc:  # the parent reports it; the child still ends its sessions
                print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
                return
            print(json.dumps({"ready": True}), flush=True)
            await asyncio.to_thread(sys.stdin.readline)  # "stop", or EOF if the parent went away
            result = [{"stream_id": sid, "decode": bool(decode), "arrivals": list(v.arrivals),
                       "pictures": list(v.seen.pictures) if isinstance(v, DecodingViewer) else [],
                       "unreadable": v.seen.unreadable if isinstance(v, DecodingViewer) else 0}
                      for v, (sid, decode) in zip(viewers, config["viewers"], strict=False)]
        finally:
            for v in viewers:
                with contextlib.suppress(Exception):
                    await v.stop()
    print(json.dumps({"viewers": result}), flush=True)


class ViewerProcess(LineChild):
    """The parent's handle on one child of viewers."""

    module = "bench.video_viewers"
    what = "viewer process"
    close_timeout_s = 20.0

    async def start(self, hub_url: str, token: str, viewers: list[tuple[str, bool]]) -> None:
        """Start the child and its viewers; returns once they all receive. Raises :class:`BenchError`."""
        answer = await self.spawn(json.dumps({"hub_url": hub_url, "token": token, "viewers": viewers}),
                                  READY_S + 30, limit=1 << 28)
        if not answer.get("ready"):
            raise BenchError(f"viewer process: {answer.get('error', answer)}")

    async def stop(self) -> list[dict[str, Any]]:
        """End the viewers; what each one saw."""
        return list((await self.finish()).get("viewers", []))


def main() -> int:
    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
