"""A process of simulated GB/T 28181 cameras for the GB/T 28181 benchmark, apart from the benchmark and the hub.

A thousand cameras keeping alive and notifying positions, or a camera encoding 720p25 H.264 with PyAV, is load
the benchmark must not measure as its own, nor slow the benchmark's own sampling: so :mod:`bench.gb28181` runs
its cameras in children of this module (as :mod:`bench.video` runs its viewers in :mod:`bench.video_viewers`).
The cameras are :class:`sim.gb28181_camera.GbCamera` as the simulator makes them, with the simulator's defaults
(positions only when the hub subscribes), counting how many position bodies they built (a NOTIFY sent, whatever
came back) beside the simulator's ``positions_sent`` (a NOTIFY the hub answered 200). Protocol, JSON lines:

- stdin: ``{"server_id", "host", "port", "password", "device_ids", "keepalive_s", "stream": {...} | null,
  "calibrate": n, "register_timeout_s", "replay": {"path", "start", "phase_s"} | null}``; the child first times
  ``calibrate`` frames of its stream settings (draw + encode + mux, the camera's own share of the latency), then
  starts every camera at once. With ``replay`` the cameras' calls replay the pre-muxed loop in ``path``
  (:mod:`bench.gb28181_replay`, no encoding here) and the final counters carry each stream's ``sends``;
- stdout: ``{"registered": n, "seconds": s, "calibration_ms": {...}}`` when all are registered (or the time-out);
- stdin: ``status`` -> stdout: the counters so far; ``stop`` (or EOF) -> the cameras unregister, then the counters.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from bench.children import LineChild
from bench.gb28181_replay import PsReplayStream, load_loop, replay_factory
from sim.city import CENTRE
from sim.gb28181_camera import GbCamera, GbCameraConfig
from sim.gb28181_stream import H264Encoder, StreamSettings

__all__ = ["CameraProcess", "CountingCamera", "calibrate", "main"]

STARTED_S = 60.0


class CountingCamera(GbCamera):
    """A simulated camera that also counts the position bodies it built: one per NOTIFY or MESSAGE sent."""

    positions_built = 0

    def position_body(self) -> bytes:
        self.positions_built += 1
        return super().position_body()


def walker(k: int, speed_kmh: float = 5.0) -> Any:
    """Camera ``k`` walks a circle of 200 m around its own point near the city centre (every report moves)."""
    lat0 = CENTRE[0] + (k % 40 - 20) * 0.002
    lon0 = CENTRE[1] + (k // 40 - 12) * 0.002
    t0 = time.monotonic()

    def position() -> tuple[float, float, float, float]:
        angle = (time.monotonic() - t0) * speed_kmh / 3.6 / 200.0
        lat = lat0 + 200.0 * math.sin(angle) / 111_320.0
        lon = lon0 + 200.0 * math.cos(angle) / (111_320.0 * math.cos(math.radians(lat0)))
        return lat, lon, speed_kmh, (math.degrees(angle) + 360.0) % 360.0

    return position


def calibrate(settings: StreamSettings, frames: int) -> dict[str, float]:
    """Draw + H.264-encode + PS-mux time per frame at ``settings``, in ms (what the camera adds before sending)."""
    from gb28181.ps import PsMuxer
    from sim.camera import SceneTrack

    scene = SceneTrack("CALIBRATE", width=settings.width, height=settings.height, fps=settings.fps,
                       render_in_thread=False)
    encoder = H264Encoder(settings)
    muxer = PsMuxer(settings.width, settings.height, max(round(settings.fps), 1))
    times: list[float] = []
    for n in range(frames):
        t0 = time.perf_counter()
        for packet in encoder.encode(scene.render(n, 0), int(n * 90_000 / settings.fps)):
            muxer.mux(packet)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    if not times:
        return {}
    return {"frames": len(times), "p50": round(times[len(times) // 2], 1),
            "p95": round(times[min(len(times) - 1, int(len(times) * 0.95))], 1), "max": round(times[-1], 1)}


def totals(cameras: list[CountingCamera]) -> dict[str, Any]:
    out: dict[str, Any] = {"cameras": len(cameras), "registered_now": sum(c.registered.is_set() for c in cameras),
                           "positions_built": sum(c.positions_built for c in cameras),
                           "subscribed": sum(c.subscription.notifies > 0 for c in cameras)}
    for name in ("registered", "keepalives", "positions_sent", "queries_answered", "invites", "streams_started",
                 "frames_sent"):
        out[name] = sum(getattr(c.counters, name) for c in cameras)
    refused: dict[str, int] = {}
    rejected: dict[str, int] = {}
    for c in cameras:
        for key, n in c.counters.refused.items():
            refused[key] = refused.get(key, 0) + n
        for key, n in c.counters.rejected.items():
            rejected[key] = rejected.get(key, 0) + n
    out["refused"], out["rejected"] = refused, rejected
    return out


def say(answer: dict[str, Any]) -> None:
    print(json.dumps(answer), flush=True)


async def serve() -> None:
    config = json.loads(await asyncio.to_thread(sys.stdin.readline))
    stream = StreamSettings(**config["stream"]) if config.get("stream") else StreamSettings()
    calibration = await asyncio.to_thread(calibrate, stream, config.get("calibrate", 0)) \
        if config.get("calibrate") else {}
    replay = config.get("replay")
    made: list[PsReplayStream] = []
    factory = replay_factory(await asyncio.to_thread(load_loop, Path(replay["path"])), replay["start"],
                             replay["phase_s"], made) if replay else None
    cameras = [CountingCamera(GbCameraConfig(device_id, config["password"], config["server_id"], config["host"],
                                             config["port"], keepalive_s=config.get("keepalive_s", 60.0),
                                             stream=stream, stream_factory=factory),
                              position=walker(config.get("first", 0) + k))
               for k, device_id in enumerate(config["device_ids"])]
    t0 = time.monotonic()
    try:
        await asyncio.gather(*(c.start() for c in cameras))
        deadline = t0 + config.get("register_timeout_s", STARTED_S)
        while not all(c.registered.is_set() for c in cameras) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        say({"registered": sum(c.registered.is_set() for c in cameras), "seconds": round(time.monotonic() - t0, 2),
             "calibration_ms": calibration})
        while True:
            line = (await asyncio.to_thread(sys.stdin.readline)).strip()
            if line != "status":
                break  # "stop", or EOF: the parent went away
            say(totals(cameras))
    finally:
        await asyncio.gather(*(c.stop() for c in cameras), return_exceptions=True)
    final = totals(cameras)
    if replay:
        final["sends"] = [list(s.sends) for s in made]
        final["late_max_ms"] = round(1000 * max((s.late_max_s for s in made), default=0.0), 1)
    say(final)


class CameraProcess(LineChild):
    """The parent's handle on one child of cameras."""

    module = "bench.gb28181_cameras"
    what = "camera process"

    async def start(self, config: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Start the child and its cameras; its answer once they are registered. Raises :class:`BenchError`."""
        return await self.spawn(json.dumps(config), timeout_s)

    async def status(self) -> dict[str, Any]:
        return await self.say("status", 30.0)

    async def stop(self) -> dict[str, Any]:
        return await self.finish()


def main() -> int:
    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
