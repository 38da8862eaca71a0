"""The simulator's cameras on the wire: SPEC 2's ``video_start`` / ``video_stop`` played by body cameras.

On ``video_start`` (``whip_url``, ``token``, optional ``keyframe_interval_ms``) a camera renders a
:class:`~sim.camera.SceneTrack` and publishes it over WHIP (:class:`video.client.WhipPublisher`), then
sends its ``video`` event ``{"state": "started", "stream_id"}``; ``video_stop`` ends the publication and
sends ``{"state": "stopped", ...}``. A new ``video_start`` while publishing restarts with the new token;
a re-sent command (same ``cmd_id``) is not acted on twice. A hub that refuses the publish is logged with
its error code and counted, never raised into the caller's loop. Each command runs as its own task,
one at a time per device, and :meth:`SimCameras.close` ends them all within a bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import zlib
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Final, Protocol

import httpx

from devices.payloads import Command
from sim.camera import DronePosition, SceneTrack, View
from video.client import WhipPublisher, tls_verification
from video.errors import VideoError

__all__ = ["VIDEO_COMMANDS", "CameraCounters", "CameraDevice", "Feed", "SimCameras", "camera_for"]

log = logging.getLogger(__name__)

VIDEO_COMMANDS: Final = frozenset({"video_start", "video_stop"})
CAMERA_KINDS: Final = frozenset({"bodycam", "camera", "drone"})
_SEEN_COMMANDS: Final = 1024  # cmd_ids remembered to ignore the hub's re-sends


class CameraDevice(Protocol):
    """What a camera needs of its device: an id and the device's event uplink (a DeviceClient)."""

    device_id: str

    def send_event(self, type: str, ts: int | None = None, **fields: Any) -> None: ...


class _KindedDevice(Protocol):
    device_id: str
    kind: str

    @property
    def client(self) -> CameraDevice: ...


@dataclass(slots=True)
class CameraCounters:
    started: int = 0
    stopped: int = 0
    refused: int = 0  # the hub answered the WHIP POST with an error (4xx): see SimCameras.refusals
    failed: int = 0  # no answer: hub unreachable, timed out, ICE never connected
    lost: int = 0  # the peer connection failed or the hub ended the stream while publishing
    over_limit: int = 0  # video_start refused because max_feeds cameras were publishing already
    bad_commands: int = 0


@dataclass(eq=False)
class Feed:
    """One device's live publication."""

    device: CameraDevice
    cmd_id: str
    stream_id: str
    track: SceneTrack
    publisher: WhipPublisher
    started_ms: int
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def camera_for(devices: Iterable[_KindedDevice], command: Command) -> CameraDevice | None:
    """The device a video command is for: the one named by the WHIP URL's last segment, else the first camera."""
    devices = list(devices)
    url = command.body.get("whip_url")
    if isinstance(url, str):
        named = url.rstrip("/").rsplit("/", 1)[-1]
        for device in devices:
            if device.device_id == named:
                return device.client
    return next((d.client for d in devices if d.kind in CAMERA_KINDS), None)


class SimCameras:
    """Every simulated camera of a simulator; an async context manager (``close`` on exit).

    Cameras render ``width`` x ``height`` at ``fps``. ``refusals`` counts the hub's error codes. At most
    ``max_feeds`` publish at once: each encodes its own VP8 (about 5 ms a frame at 640x360), and a
    simulator of hundreds of units on a small machine must not turn every arrival into a stream.
    ``ca_file`` is the CA an https WHIP URL is verified against (a hub with its own CA); without it the default
    trust store. Verification is never off.
    """

    def __init__(self, *, width: int = 640, height: int = 360, fps: float = 15.0, start_timeout_s: float = 15.0,
                 stop_timeout_s: float = 5.0, close_grace_s: float = 3.0, max_feeds: int = 8,
                 http: httpx.AsyncClient | None = None, ca_file: str | PathLike[str] | None = None) -> None:
        if http is not None and ca_file is not None:
            raise ValueError("ca_file applies to the cameras' own HTTP client: configure the given one instead")
        self.width, self.height, self.fps = width, height, fps
        self._verify = tls_verification(ca_file)  # a CA file that cannot be read fails here, not at the first start
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.close_grace_s = close_grace_s
        self.max_feeds = max_feeds
        self.feeds: dict[str, Feed] = {}  # device_id -> its publication
        self.counters = CameraCounters()
        self.refusals: Counter[str] = Counter()
        self._http = http
        self._own_http = http is None
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._teardowns: set[asyncio.Future[None]] = set()
        self._seen: deque[str] = deque(maxlen=_SEEN_COMMANDS)
        self._starting = 0  # publishes under way, counted against max_feeds with the running ones
        self._closed = False

    async def __aenter__(self) -> SimCameras:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------- commands
    def handle(self, device: CameraDevice, command: Command, *, label: str | None = None, view: View = "street",
               position: DronePosition | None = None) -> bool:
        """Act on ``command`` if it is a video command (in the background); False for any other command."""
        if command.type not in VIDEO_COMMANDS:
            return False
        if command.cmd_id in self._seen:
            return True  # the hub re-sent it because our ack was late; it is being carried out already
        self._seen.append(command.cmd_id)
        if self._closed:
            log.warning("%s: %s after shutdown, ignored", device.device_id, command.type)
            return True
        if command.type == "video_stop":
            self._spawn(device.device_id, functools.partial(self._end, device.device_id))
            return True
        body = command.body
        url, token, keyframe_ms = body.get("whip_url"), body.get("token"), body.get("keyframe_interval_ms")
        if not (isinstance(url, str) and url.startswith(("http://", "https://")) and isinstance(token, str)
                and (keyframe_ms is None or (type(keyframe_ms) is int and keyframe_ms > 0))):
            self.counters.bad_commands += 1
            log.warning("%s: unusable video_start %s: %r", device.device_id, command.cmd_id, body)
            return True
        track = SceneTrack(label or device.device_id, width=self.width, height=self.height, fps=self.fps, view=view,
                           position=position, keyframe_interval_ms=keyframe_ms,
                           seed=zlib.crc32(device.device_id.encode()))
        self._spawn(device.device_id, functools.partial(self._start, device, command.cmd_id, url, token, track))
        return True

    def _spawn(self, device_id: str, work: Callable[[], Awaitable[None]]) -> None:
        lock = self._locks.setdefault(device_id, asyncio.Lock())

        async def in_turn() -> None:
            async with lock:  # FIFO: a device's commands are carried out in the order they came
                await work()

        task = asyncio.create_task(in_turn(), name=f"camera-{device_id}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("camera task %s failed", task.get_name(), exc_info=task.exception())

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait until every command received so far has been carried out."""
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.wait(set(self._tasks))

    # ------------------------------------------------------------ publishing
    async def _start(self, device: CameraDevice, cmd_id: str, url: str, token: str, track: SceneTrack) -> None:
        device_id = device.device_id
        await self._end(device_id)  # a second video_start replaces the running publication
        if self._closed:  # queued before the shutdown
            return
        if len(self.feeds) + self._starting >= self.max_feeds:
            self.counters.over_limit += 1
            log.warning("%s: video_start ignored, %d cameras publish already", device_id, self.max_feeds)
            track.stop()
            return
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.start_timeout_s, verify=self._verify)
        publisher = WhipPublisher(url, token, track, http=self._http)
        feed: Feed | None = None
        self._starting += 1
        try:
            async with asyncio.timeout(self.start_timeout_s):
                stream_id = await publisher.start()
            feed = Feed(device, cmd_id, stream_id, track, publisher, time.time_ns() // 1_000_000)
        except VideoError as exc:
            self.counters.refused += 1
            self.refusals[exc.code] += 1
            log.warning("%s: WHIP publish to %s refused: %s (%s)", device_id, url, exc.code, exc)
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            self.counters.failed += 1
            log.warning("%s: WHIP publish to %s failed: %s: %s", device_id, url, type(exc).__name__, exc)
        except Exception:
            self.counters.failed += 1
            log.exception("%s: WHIP publish to %s failed", device_id, url)
        finally:
            self._starting -= 1
            if feed is None:  # refused, failed or cancelled by shutdown: leave nothing running
                await self._discard(publisher, track)
        if feed is None:
            return
        self.feeds[device_id] = feed
        self.counters.started += 1
        device.send_event("video", state="started", stream_id=feed.stream_id)
        log.info("%s: publishing stream %s", device_id, feed.stream_id)

        @publisher.pc.on("connectionstatechange")
        def _state() -> None:
            if publisher.pc.connectionState in ("failed", "closed") and self.feeds.get(device_id) is feed:
                task = asyncio.ensure_future(self._lose(feed))
                feed.tasks.add(task)  # held, so the task is not collected before it runs
                task.add_done_callback(feed.tasks.discard)

    async def _lose(self, feed: Feed) -> None:
        device_id = feed.device.device_id
        async with self._locks[device_id]:
            if self.feeds.get(device_id) is feed:
                self.counters.lost += 1
                log.warning("%s: stream %s lost its connection", device_id, feed.stream_id)
                await self._end(device_id)

    async def _end(self, device_id: str) -> None:
        feed = self.feeds.pop(device_id, None)
        if feed is None:
            return
        task = asyncio.ensure_future(self._teardown(feed))
        self._teardowns.add(task)
        task.add_done_callback(self._teardowns.discard)
        await asyncio.shield(task)  # a cancelled command must not leave a stream half-ended at the hub

    async def _teardown(self, feed: Feed) -> None:
        device_id = feed.device.device_id
        await self._discard(feed.publisher, feed.track)
        self.counters.stopped += 1
        with contextlib.suppress(Exception):  # a device already disconnected keeps the event for later
            feed.device.send_event("video", state="stopped", stream_id=feed.stream_id)
        log.info("%s: stream %s stopped", device_id, feed.stream_id)

    async def _discard(self, publisher: WhipPublisher, track: SceneTrack) -> None:
        track.stop()
        try:
            async with asyncio.timeout(self.stop_timeout_s):
                await publisher.stop()
        except Exception as exc:  # the hub may be gone: the session then ends on its side by itself
            log.info("WHIP stop of %s: %s: %s", publisher.session_url, type(exc).__name__, exc)

    # -------------------------------------------------------------- shutdown
    async def close(self) -> None:
        """Stop every publication (each says ``stopped``) and every pending command; never hangs.

        Commands in progress get ``close_grace_s`` to finish (a publish half-done would leave the hub a
        stream nobody ends); what is still running then is cancelled.
        """
        self._closed = True
        if self._tasks:
            _, running = await asyncio.wait(set(self._tasks), timeout=self.close_grace_s)
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running, timeout=self.stop_timeout_s)
        for task in [t for f in self.feeds.values() for t in f.tasks]:
            task.cancel()
        await asyncio.gather(*(self._end(device_id) for device_id in list(self.feeds)), return_exceptions=True)
        if self._teardowns:
            await asyncio.wait(set(self._teardowns), timeout=self.stop_timeout_s + 1)
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None
