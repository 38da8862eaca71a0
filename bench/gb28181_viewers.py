"""A process of WHEP viewers of H.264 streams (GB/T 28181 cameras' and WHIP's), for :mod:`bench.gb28181_video`.

:mod:`bench.video_viewers` offers VP8 only (the video benchmark's codec); these viewers offer aiortc's codecs,
so an H.264 stream reaches them as it is, with no transcoding in the hub. The decoding viewer reads the frame
code of each picture (:mod:`sim.framecode`: the loop index of :func:`bench.video_load.encode_loop`) and reports
``pictures`` as flattened ``(monotonic s, loop index)`` pairs, which the parent matches with the senders' send
times (:func:`bench.video_stats.latencies_ms`); counting viewers report only ``arrivals``. Same three-line
protocol and parent handle as :mod:`bench.video_viewers` (:class:`GbViewerProcess`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from array import array
from typing import Any

import av
import httpx
import numpy as np

from bench.video_viewers import READY_S, ViewerProcess
from sim.framecode import read_code
from video.client import WhepViewer
from video.forward import ReceiverTap

__all__ = ["GbViewerProcess", "main"]

MIN_FRAMES = 25  # a second of frames at 25 fps before the child says it is ready


class _Counting:
    """Counts whole encoded frames (no decode), whatever codec the hub answered with."""

    def __init__(self, url: str, token: str, http: httpx.AsyncClient) -> None:
        self.whep = WhepViewer(url, token, http=http)
        self.arrivals: array[float] = array("d")
        self.pictures: array[float] = array("d")
        self.unreadable = 0
        self.lost_at: float | None = None  # monotonic s when the connection failed or closed before stop()

    async def start(self) -> None:
        await self.whep.start()
        ReceiverTap(self.whep.pc.getTransceivers()[0].receiver, self._frame, lambda: None)
        self._watch()

    def _watch(self) -> None:
        """Note when the session dies under us (e.g. ICE consent expired): a viewer that stops counting because
        it was disconnected must not read as a slow one."""
        pc = self.whep.pc

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and self.lost_at is None:
                self.lost_at = time.monotonic()

    def _frame(self, codec: str, data: bytes, timestamp: int) -> None:
        self.arrivals.append(time.monotonic())

    async def stop(self) -> None:
        await self.whep.stop()


class _Decoding(_Counting):
    """Decodes every picture and reads the loop index burned into it."""

    _task: asyncio.Task[None]

    async def start(self) -> None:
        await self.whep.start()
        self._task = asyncio.create_task(self._decode())
        self._watch()

    async def _decode(self) -> None:
        while True:
            frame = await self.whep.recv()
            now = time.monotonic()
            self.arrivals.append(now)
            code = read_code(_luma(frame))
            if code is None:
                self.unreadable += 1
            else:
                self.pictures.extend((now, float(code[0])))

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.whep.stop()


def _luma(frame: av.VideoFrame) -> Any:
    plane = frame.planes[0]
    return np.frombuffer(memoryview(plane), np.uint8).reshape(frame.height, plane.line_size)[:, : frame.width]


async def serve() -> None:
    config = json.loads(await asyncio.to_thread(sys.stdin.readline))
    viewers: list[_Counting] = []
    result: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=30.0) as http:
        try:
            try:
                for stream_id, decode in config["viewers"]:
                    url = f"{config['hub_url']}/whep/{stream_id}"
                    viewer = (_Decoding if decode else _Counting)(url, config["token"], http)
                    viewers.append(viewer)
                    await viewer.start()
                deadline = time.monotonic() + READY_S
                while not all(len(v.arrivals) > MIN_FRAMES for v in viewers):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"not every viewer had frames within {READY_S:g} s")
                    await asyncio.sleep(0.2)
            except Exception as exc:  # the parent reports it; the child still ends its sessions
                print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
                return
            print(json.dumps({"ready": True}), flush=True)
            await asyncio.to_thread(sys.stdin.readline)  # "stop", or EOF if the parent went away
            result = [{"stream_id": sid, "decode": bool(decode), "arrivals": list(v.arrivals),
                       "pictures": list(v.pictures), "unreadable": v.unreadable, "lost_at": v.lost_at}
                      for v, (sid, decode) in zip(viewers, config["viewers"], strict=False)]
        finally:
            for v in viewers:
                with contextlib.suppress(Exception):
                    await v.stop()
    print(json.dumps({"viewers": result}), flush=True)


class GbViewerProcess(ViewerProcess):
    """:class:`bench.video_viewers.ViewerProcess` running this module instead."""

    module = "bench.gb28181_viewers"


def main() -> int:
    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())

