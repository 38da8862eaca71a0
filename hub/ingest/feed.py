"""The live feed behind ``/api/v1/live``: a snapshot, then coalesced deltas.

Every ``interval_s`` the feed takes the units changed since the last frame,
encodes ONE frame and hands the same bytes to every client (a client sees at
most 1/interval_s frames per second and only what changed). Each client has a
small bounded queue; a client too slow to keep up is not allowed to hold the
others back: its queue is cleared and it gets a fresh snapshot instead.

Other messages (incidents, alerts, drones) wait for the next frame; an incident's
goes in once per frame however often it changed (`post_latest`: the view is
built when the frame is), and if more than `extra_limit` messages pile up within
one frame they are dropped (`extras_dropped`) and every client gets a snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from devices.payloads import encode_json
from devices.tasks import cancel_and_wait
from hub.ingest.live import LiveState

log = logging.getLogger(__name__)


class FeedClient:
    def __init__(self, limit: int) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=limit)
        self.resyncs = 0


class LiveFeed:
    def __init__(self, live: LiveState, clock: Callable[[], int], *, interval_s: float = 0.2,
                 client_queue: int = 32, sweep_every_s: float = 5.0, extra_limit: int = 2000) -> None:
        self.live = live
        self.clock = clock
        self.interval_s = interval_s
        self.client_queue = client_queue
        self.sweep_every = max(1, round(sweep_every_s / interval_s))
        self.clients: set[FeedClient] = set()
        self.frames = 0
        self.bytes_sent = 0
        self.extra_limit = extra_limit
        self.extras_dropped = 0
        # Messages for the next frame: a dict, or a key whose latest view is built with the frame.
        self._extra: list[dict[str, Any] | str] = []
        self._latest: dict[str, Callable[[], dict[str, Any]]] = {}
        self._overflow = False
        # Other parts of the snapshot (open incidents, recent alerts, video, drones): each returns {key: value} to
        # merge in, in the order the composition root (hub.server) added them.
        self.snapshot_parts: list[Callable[[int], dict[str, Any]]] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def client_count(self) -> int:
        return len(self.clients)

    async def __aenter__(self) -> LiveFeed:
        self._task = asyncio.create_task(self._run(), name="live-feed")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._task)

    def snapshot_frame(self) -> bytes:
        now = self.clock()
        frame: dict[str, Any] = {"type": "snapshot", "ts": now, "units": self.live.snapshot(now)}
        for part in self.snapshot_parts:
            frame.update(part(now))
        return encode_json(frame)

    def subscribe(self) -> FeedClient:
        client = FeedClient(self.client_queue)
        client.queue.put_nowait(self.snapshot_frame())
        self.clients.add(client)
        return client

    def unsubscribe(self, client: FeedClient) -> None:
        self.clients.discard(client)

    def post(self, message: dict[str, Any]) -> None:
        """Queue a non-unit message (incident, alert, ...) for the next frame."""
        if self._room():
            self._extra.append(message)

    def post_latest(self, key: str, build: Callable[[], dict[str, Any]]) -> None:
        """Queue the message `build` makes, once per frame for `key` (a later post replaces it)."""
        if key not in self._latest:
            if not self._room():
                return
            self._extra.append(key)
        self._latest[key] = build

    def _room(self) -> bool:
        if len(self._extra) < self.extra_limit:
            return True
        if not self._overflow:
            log.warning("live feed: more than %d messages within one frame: clients get a snapshot instead",
                        self.extra_limit)
        self._overflow = True
        self.extras_dropped += 1
        return False

    async def _run(self) -> None:
        tick = 0
        while True:
            await asyncio.sleep(self.interval_s)
            tick += 1
            if tick % self.sweep_every == 0:
                self.live.sweep(self.clock())
            try:
                self.broadcast()
            except Exception:
                log.exception("live feed frame failed")

    def broadcast(self) -> None:
        now = self.clock()
        extras, latest, overflow = self._extra, self._latest, self._overflow
        self._extra, self._latest, self._overflow = [], {}, False
        if not self.clients:  # nobody watching: forget the changes without building views
            self.live.take_changes(now, views=False)
            return
        if overflow:  # messages were dropped: what the clients hold is incomplete
            self.live.take_changes(now, views=False)
            self._resync_all()
            return
        changes = self.live.take_changes(now)
        frames = []
        if changes:
            frames.append(encode_json({"type": "unit", "ts": now, "units": changes}))
        for extra in extras:
            frames.append(encode_json(latest[extra]() if isinstance(extra, str) else extra))
        if not frames:
            return
        snapshot: bytes | None = None  # built once per frame, however many clients fell behind
        for client in list(self.clients):
            for frame in frames:
                if client.queue.full():
                    # Too slow: drop its backlog and start it over from a snapshot.
                    snapshot = snapshot or self.snapshot_frame()
                    _restart(client, snapshot)
                    break
                client.queue.put_nowait(frame)
        self.frames += len(frames)

    def _resync_all(self) -> None:
        frame = self.snapshot_frame()
        for client in list(self.clients):
            _restart(client, frame)
        self.frames += 1


def _restart(client: FeedClient, snapshot: bytes) -> None:
    """Drop the client's backlog and start it over from `snapshot`."""
    while not client.queue.empty():
        client.queue.get_nowait()
    client.queue.put_nowait(snapshot)
    client.resyncs += 1
