"""Publish -> WebSocket latency, seen by a live-feed client of ``/api/v1/live``.

The generator stamps every fix with the wall clock at publish (``ts``), so for
each unit position a delta frame carries, ``receive time - position.ts`` is the
whole way: broker, hub ingest, live picture, the feed's frame tick (0.2 s) and
the WebSocket. Only positions newer than the last one seen for that unit count
(a unit can be in a frame for other reasons, e.g. its online flag).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect

from bench.report import distribution

_decoder = msgspec.json.Decoder()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class LiveWatcher:
    """:meth:`start` connects, :meth:`begin` opens the measuring window, :meth:`end` sums it up, :meth:`close`."""

    def __init__(self, hub_url: str, token: str) -> None:
        self.url = hub_url.replace("http://", "ws://", 1) + "/api/v1/live"
        self.headers = {"Authorization": f"Bearer {token}"}  # never the token in the URL (refused)
        self.latencies_ms: list[int] = []
        self.frame_delays_ms: list[int] = []  # receive time - the frame's own ts (feed -> client)
        self.bytes = 0
        self.frames = 0
        self.snapshots = 0
        self._last_ts: dict[str, int] = {}
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._window_start = 0.0
        self._window_end = 0.0

    async def start(self, timeout_s: float = 30.0) -> None:
        self._ws = await connect(self.url, max_size=None, open_timeout=timeout_s, ping_interval=None,
                                 additional_headers=self.headers)
        first = _decoder.decode(await asyncio.wait_for(self._ws.recv(), timeout_s))
        if first.get("type") != "snapshot":
            raise RuntimeError(f"live feed did not start with a snapshot: {first.get('type')}")
        self._take_positions(first, now_ms(), record=False)
        self._task = asyncio.create_task(self._read())

    def begin(self) -> None:
        self.latencies_ms.clear()
        self.frame_delays_ms.clear()
        self.bytes = self.frames = self.snapshots = 0
        self._window_start = time.monotonic()

    def end(self) -> dict[str, Any]:
        """Close the measuring window and sum it up."""
        self._window_end = time.monotonic()
        return self.summary()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 5)

    async def _read(self) -> None:
        assert self._ws is not None
        async for raw in self._ws:
            received = now_ms()
            self.bytes += len(raw)
            self.frames += 1
            frame = _decoder.decode(raw)
            kind = frame.get("type")
            if kind == "unit":
                self.frame_delays_ms.append(received - frame["ts"])
                self._take_positions(frame, received, record=True)
            elif kind == "snapshot":  # resynchronised: the client was too slow
                self.snapshots += 1
                self._take_positions(frame, received, record=False)

    def _take_positions(self, frame: dict[str, Any], received: int, *, record: bool) -> None:
        for unit in frame.get("units", ()):
            position = unit.get("position")
            if not position:
                continue
            ts = position["ts"]
            if ts > self._last_ts.get(unit["unit_id"], 0):
                self._last_ts[unit["unit_id"]] = ts
                if record:
                    self.latencies_ms.append(received - ts)

    def summary(self) -> dict[str, Any]:
        seconds = max(1e-9, self._window_end - self._window_start)
        return {"positions": len(self.latencies_ms), "latency_ms": distribution(self.latencies_ms),
                "frame_to_client_ms": distribution(self.frame_delays_ms), "frames": self.frames,
                "resync_snapshots": self.snapshots, "ws_bytes": self.bytes,
                "ws_bytes_per_s": round(self.bytes / seconds), "window_s": round(seconds, 2)}
