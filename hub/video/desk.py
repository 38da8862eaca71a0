"""The hub's video desk: publish tokens, the streams the relay carries, automatic backhaul, recordings.

`VideoDesk` wraps the relay (`video.service.VideoService`) in the hub. It stores every `video_start`
token as a digest before the command goes out and checks it when the camera publishes over WHIP: a token
opens one session and then answers only for that session's resource (DELETE, PATCH), and a device that is
live is never taken over by a second publisher, whatever its token; it
turns the relay's stream starts and ends into `video_streams` rows, `video` messages on the live feed
and incident-log entries; it starts the SOS unit's body cameras on an `sos` and sends `video_stop` to
every camera started for an incident when the incident lets the unit go (cancel, divert, close); and it
gives each stream a segment recorder (`hub.video.recordings`).

The desk subscribes to nothing itself: the composition root (`hub.server`) connects its public handlers
(`on_message`, `on_sos`, `on_release`, `stop_incident_video`, `register_token`, `snapshot_part`) to the
pipeline, the incident service and the live feed.

Database writes and log entries run one at a time on one worker, in the order things happened, so a
stream's end is never written before its start; the relay's callbacks only queue them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from devices.payloads import Command, encode_command
from devices.tasks import cancel_and_wait
from hub.access import auth
from hub.config import Settings
from hub.domain.commands import video_start_command, video_stop_command
from hub.domain.events import Noted
from hub.errors import HubError
from hub.ingest.feed import LiveFeed
from hub.ingest.live import LiveState, camera_devices, position_view
from hub.ingest.pipeline import Message
from hub.storage.video import StreamRecord, VideoStore, VideoToken
from hub.video.ports import Incidents
from hub.video.recordings import Recordings
from video.proxy import ProxyService
from video.service import EncodedPublisher, StreamInfo, VideoService

__all__ = ["PublishGrant", "PublishRefused", "VideoDesk"]

log = logging.getLogger(__name__)

JOB_LIMIT = 10_000  # queued database writes and log entries; a device flooding `video` events cannot grow it
LookupToken = Callable[[str], Awaitable[dict[str, Any] | None]]


class PublishRefused(HubError):
    """A WHIP publish the desk does not allow; `status`/`code` are what the API answers."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(eq=False)
class PublishGrant:
    """A WHIP publish the desk allowed (`video.http.PublishGrant`): the router settles it once, either way."""

    desk: VideoDesk
    device_id: str
    digest: str | None  # the video_start token's; None for an admin's API token
    incident_id: str | None  # what the stream will belong to
    unit_id: str | None
    settled: bool = False

    async def opened(self, session_id: str) -> None:
        await self.desk.publish_settled(self, session_id)

    async def failed(self) -> None:
        await self.desk.publish_settled(self, None)


class VideoDesk:
    """Use as ``async with VideoDesk(...) as desk``; `desk.service` is the running relay."""

    def __init__(self, settings: Settings, store: VideoStore, live: LiveState, feed: LiveFeed,
                 incidents: Incidents, clock: Callable[[], int], lookup_token: LookupToken) -> None:
        self.settings = settings
        self.store = store
        self.live = live
        self.feed = feed
        self.incidents = incidents
        self.clock = clock
        self.lookup_token = lookup_token
        self.archive = Recordings(settings, store, live, incidents, clock)
        self.recordings_dir: Path = self.archive.root
        self.service: VideoService | ProxyService
        if settings.video_media_server:
            kind, _, url = settings.video_media_server.partition(":")
            if kind != "janus" or not url.startswith(("http://", "https://")):
                raise HubError(f"FIELDHUB_VIDEO_MEDIA_SERVER must be janus:<http(s) URL of the Janus API>, not "
                               f"{settings.video_media_server!r}")
            self.service = ProxyService(url, on_stream=self.on_stream,
                                        max_viewers_per_stream=settings.video_max_viewers,
                                        keyframe_interval_s=round(settings.video_keyframe_interval_s),
                                        api_secret=settings.video_media_server_secret)
        else:
            self.service = VideoService(sink_factory=self.archive.open if settings.video_recording else None,
                                        on_stream=self.on_stream, max_viewers_per_stream=settings.video_max_viewers,
                                        keyframe_request_interval_s=settings.video_keyframe_interval_s)
        self.accepting = False
        self.streams: dict[str, StreamRecord] = {}  # live streams by stream id
        self._granted: dict[str, PublishGrant] = {}  # the publish being negotiated: one per device at a time
        self._bound: dict[str, tuple[str, str | None]] = {}  # live session -> (device, digest of its token)
        self._jobs: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue(JOB_LIMIT)
        self.dropped_jobs = 0
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> VideoDesk:
        ended = await self.store.end_dangling(self.clock())
        if ended:
            log.info("%d stream(s) left live by the previous run marked ended", ended)
        await self.service.__aenter__()
        self._tasks = [asyncio.create_task(self._work(), name="video-desk"),
                       asyncio.create_task(self.archive.prune_loop(), name="video-prune")]
        self.accepting = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.accepting = False  # new publishes and viewers are refused from here on
        try:
            await self.service.__aexit__(None, None, None)  # closes every peer connection; ends are queued
        finally:
            try:
                await asyncio.wait_for(self._jobs.join(), 10)
            except TimeoutError:
                log.warning("video desk: %d job(s) not done at shutdown", self._jobs.qsize())
            await cancel_and_wait(*self._tasks)
            await self.archive.close()

    @property
    def recorded(self) -> Counter[str]:
        """Recorder counters of the streams that ended."""
        return self.archive.recorded

    # --------------------------------------------------------------- tokens
    async def register_token(self, command: Command, device_id: str, unit_id: str | None) -> None:
        """Store a `video_start` token (as its digest) before the command goes out."""
        body = command.body
        await self.store.add_token(VideoToken(
            auth.digest(body["token"], self.settings.token_pepper), device_id, unit_id, body.get("incident_id"),
            command.cmd_id, command.ts, int(body["token_expires"])))

    async def authorize_publish(self, device_id: str, secret: str | None) -> PublishGrant:
        """A `video_start` token of this device, not stopped, not expired and never used; or an admin API token
        (any known device). Either way the device must not be live or negotiating: no second publisher takes a
        stream over. The token is marked used here, before the offer is read, so a concurrent replay loses."""
        if not self.accepting:
            raise PublishRefused(503, "shutting_down", "the hub is shutting down")
        digest, token = await self._credential(secret)
        if token is not None:
            self._check_alive(token)  # before anything else, an SDP offer included
        if not self.live.is_known(device_id):
            raise PublishRefused(404, "unknown_device", f"device {device_id} is not known to the hub")
        if token is not None and token.device_id != device_id:
            raise PublishRefused(403, "forbidden", f"this token was issued to another device, not {device_id}")
        if token is not None and token.used_at is not None:
            raise PublishRefused(409, "token_used", "this video_start token has opened its session already; "
                                                    "a new publish needs a new video_start")
        # From here to the reservation nothing awaits: two publishes cannot both pass this check.
        if device_id in self._granted or self.service.stream_of_device(device_id) is not None:
            raise PublishRefused(409, "stream_live", f"device {device_id} is publishing already; end that "
                                                     "session (DELETE) before starting another")
        dev = self.live.devices[device_id]
        if token is None:
            grant = PublishGrant(self, device_id, None, self.incidents.assigned_to(dev.unit_id) if dev.unit_id
                                 else None, dev.unit_id)
        else:
            grant = PublishGrant(self, device_id, digest, token.incident_id, token.unit_id or dev.unit_id)
        self._granted[device_id] = grant
        if token is not None:
            try:
                claimed = await self.store.claim_token(digest, self.clock())
            except BaseException:
                del self._granted[device_id]
                raise
            if not claimed:  # another publish (this hub's or another's) claimed it since the look-up
                del self._granted[device_id]
                raise PublishRefused(409, "token_used", "this video_start token has opened its session already")
        return grant

    async def publish_encoded(self, device_id: str, codec: str = "H264", *,
                              on_keyframe_request: Callable[[], None] | None = None,
                              on_viewers: Callable[[int], None] | None = None) -> EncodedPublisher:
        """A stream whose frames the hub pushes itself (a GB/T 28181 camera's, demuxed by its gateway); it takes
        the device's grant, if one is pending, like a WHIP publish. Only the built-in relay can take one."""
        if not self.accepting:
            raise PublishRefused(503, "shutting_down", "the hub is shutting down")
        if not isinstance(self.service, VideoService):
            raise PublishRefused(501, "unsupported", "video pushed by the hub (GB/T 28181 cameras) needs the "
                                                     "built-in relay, not FIELDHUB_VIDEO_MEDIA_SERVER")
        return await self.service.publish_encoded(device_id, codec, on_keyframe_request=on_keyframe_request,
                                                  on_viewers=on_viewers)

    async def publish_settled(self, grant: PublishGrant, session_id: str | None) -> None:
        """The router's word on a grant: the session it opened, or None (it failed, no session exists)."""
        if grant.settled:
            return
        grant.settled = True
        if self._granted.get(grant.device_id) is grant:  # mostly taken by `on_stream` already
            del self._granted[grant.device_id]
        if grant.digest is None:
            return
        if session_id is None:  # the client went away after the relay had started its session: spent
            session_id = next((s for s, (_, d) in self._bound.items() if d == grant.digest), None)
        try:
            if session_id is None:
                await self.store.release_token(grant.digest)
            else:
                await self.store.bind_token(grant.digest, session_id)
        except Exception:  # the token stays used (the safe side); this run still knows the session's token
            log.exception("video token use of %s not recorded (session %s)", grant.device_id, session_id)

    async def authorize_session(self, device_id: str, session_id: str, secret: str | None) -> None:
        """DELETE/PATCH on a WHIP session: the token that opened that session (stopped or expired too: a
        session outlives its token's TTL and must always be endable by its publisher), or an admin API token."""
        if not self.accepting:
            raise PublishRefused(503, "shutting_down", "the hub is shutting down")
        if secret and self._bound.get(session_id) == (device_id, auth.digest(secret, self.settings.token_pepper)):
            return  # its live session's own token: answered from memory, so it ends even while the database is away
        _, token = await self._credential(secret)
        if token is None:
            return  # an admin's API token
        if token.device_id == device_id and token.session_id == session_id:
            return  # the session it opened, no longer live: the relay answers 404
        if token.device_id != device_id:
            raise PublishRefused(403, "forbidden", f"this token was issued to another device, not {device_id}")
        raise PublishRefused(403, "wrong_session", "this token did not open that session")

    async def _credential(self, secret: str | None) -> tuple[str, VideoToken | None]:
        """The token's digest and its `video_start` row; (digest, None) for an admin API token; else refused."""
        if not secret:
            raise PublishRefused(401, "unauthorized", "missing bearer token")
        digest = auth.digest(secret, self.settings.token_pepper)
        token = await self.store.find_token(digest)
        if token is None:
            row = await self.lookup_token(secret)
            if row is None or row["role"] != "admin":
                raise PublishRefused(401, "unauthorized", "unknown token: publish with the video_start token")
        return digest, token

    def _check_alive(self, token: VideoToken) -> None:
        if token.stopped_at is not None:
            raise PublishRefused(401, "token_stopped", "this token's video was stopped")
        if token.expires_at <= self.clock():
            raise PublishRefused(401, "token_expired", "the video_start token has expired")

    # -------------------------------------------------------------- streams
    def on_stream(self, state: str, info: StreamInfo) -> None:
        """The relay's callback (on the loop): a stream started or ended."""
        if state == "started":
            dev = self.live.devices.get(info.device_id)
            fallback_unit = dev.unit_id if dev is not None else None
            grant = self._granted.pop(info.device_id, None)
            incident_id, unit_id, digest = ((grant.incident_id, grant.unit_id, grant.digest) if grant is not None
                                            else (None, fallback_unit, None))
            self._bound[info.stream_id] = (info.device_id, digest)  # a publisher's session id is its stream id
            record = StreamRecord(info.stream_id, info.device_id, unit_id, incident_id, info.codec, info.started_ms)
            self.streams[info.stream_id] = record
            self._post("started", record, info)
            self._queue(lambda: self._stream_started(record))
            return
        self._bound.pop(info.stream_id, None)
        self.archive.stream_ended(info.stream_id)
        known = self.streams.pop(info.stream_id, None)
        if known is None:
            return
        ended = replace(known, codec=info.codec or known.codec, ended_at=self.clock())
        self._post("ended", ended, info)
        self._queue(lambda: self._stream_ended(ended))

    async def _stream_started(self, r: StreamRecord) -> None:
        await self.store.stream_started(r)
        await self._note(r.incident_id, r.unit_id, f"video started from {r.device_id} (stream {r.stream_id})")

    async def _stream_ended(self, r: StreamRecord) -> None:
        await self.store.stream_ended(r.stream_id, r.ended_at or self.clock(), r.codec)
        await self._note(r.incident_id, r.unit_id, f"video ended from {r.device_id} (stream {r.stream_id})")

    def view(self, r: StreamRecord, info: StreamInfo | None = None) -> dict[str, Any]:
        unit = self.live.units.get(r.unit_id) if r.unit_id else None
        dev = self.live.devices.get(r.device_id)
        fix = unit.fix if unit is not None and unit.fix is not None else dev.fix if dev is not None else None
        return {"stream_id": r.stream_id, "device_id": r.device_id, "unit_id": r.unit_id,
                "incident_id": r.incident_id, "position": position_view(fix), "started_at": r.started_at,
                "codec": info.codec if info is not None and info.codec else r.codec,
                "viewers": info.viewers if info is not None else 0}

    def list_streams(self) -> list[dict[str, Any]]:
        infos = {i.stream_id: i for i in self.service.streams()}
        return [self.view(r, infos.get(sid)) for sid, r in self.streams.items()]

    def _post(self, state: str, r: StreamRecord, info: StreamInfo) -> None:
        message = {"type": "video", "state": state, "ts": self.clock(), **self.view(r, info)}
        if state == "ended":
            message["ended_at"] = r.ended_at
        self.feed.post(message)

    def snapshot_part(self, now_ms: int) -> dict[str, Any]:
        """The live feed's snapshot for a new client: the streams live now."""
        return {"streams": self.list_streams()}

    # ------------------------------------------------------------- backhaul
    async def on_sos(self, device_id: str, unit_id: str | None, incident_id: str | None) -> None:
        """An SOS: the unit's body cameras start too (`sos_video`), under its SOS incident when there is one."""
        if not self.settings.sos_video or unit_id is None:
            return
        if incident_id is not None:
            await self.incidents.follow_up.video_start(incident_id, unit_id, "SOS")
            return
        for camera in camera_devices(self.live, unit_id):
            command = video_start_command(camera, None, self.settings.base_url(), self.clock(),
                                          self.incidents.video_token_ttl_ms)
            await self.register_token(command, camera, unit_id)
            self.incidents.send(command.cmd_id, [camera], encode_command(command))
            log.warning("SOS from %s without an incident: video_start sent to %s", device_id, camera)

    async def stop_incident_video(self, incident_id: str, device_ids: list[str] | None = None) -> None:
        """`video_stop` to each camera (of `device_ids`, None: all) started for the incident, and a log entry."""
        for device_id, unit_id in await self.store.stop_tokens(incident_id, self.clock(), device_ids):
            command = video_stop_command(incident_id, self.clock())
            self.incidents.send(command.cmd_id, [device_id], encode_command(command))
            await self._note(incident_id, unit_id, f"video_stop sent to {device_id} (cmd {command.cmd_id})")

    def on_release(self, incident_id: str, unit_id: str) -> None:
        """The incident let the unit go (cancel, reassign, divert): its cameras stop."""
        unit = self.live.units.get(unit_id)
        if unit is not None and unit.devices:
            devices = list(unit.devices)
            self._queue(lambda: self.stop_incident_video(incident_id, devices))

    def on_message(self, m: Message) -> None:
        """Pipeline listener: a camera's own `video` event (started/stopped) goes into the incident log."""
        if m.event is None or m.event.type != "video":
            return
        device_id, data = m.device_id, m.event.data
        self._queue(lambda: self._camera_said(device_id, data))

    async def _camera_said(self, device_id: str, data: dict[str, Any]) -> None:
        stream_id = data.get("stream_id")
        stream_id = stream_id[:64] if isinstance(stream_id, str) else None
        record = self.streams.get(stream_id) if stream_id else None
        row = await self.store.stream(stream_id) if stream_id and record is None else None  # ended already
        dev = self.live.devices.get(device_id)
        unit_id = record.unit_id if record else row["unit_id"] if row else dev.unit_id if dev else None
        incident_id = record.incident_id if record else row["incident_id"] if row else (
            self.incidents.assigned_to(unit_id) if unit_id else None)
        text = f"camera {device_id} reports video {str(data.get('state'))[:20]}"
        await self._note(incident_id, unit_id, text + (f" (stream {stream_id})" if stream_id else ""), "device")

    async def _note(self, incident_id: str | None, unit_id: str | None, text: str, source: str = "system") -> None:
        if incident_id is None:
            log.info("video: %s", text)
        elif self.incidents.is_open(incident_id):
            await self.incidents.record(incident_id, Noted(ts=self.clock(), source=source, unit_id=unit_id,
                                                           text=text))
        else:
            log.info("video (incident %s no longer open): %s", incident_id, text)

    # ------------------------------------------------------------ recording
    async def recordings(self, incident_id: str) -> dict[str, Any]:
        """The incident's recorded segments (`Recordings.of_incident`)."""
        return await self.archive.of_incident(incident_id)

    async def prune(self, now_ms: int | None = None) -> int:
        """Remove segments older than `video_retention_days`; how many went."""
        return await self.archive.prune(now_ms)

    # -------------------------------------------------------------- workers
    def _queue(self, job: Callable[[], Awaitable[None]]) -> None:
        try:
            self._jobs.put_nowait(job)
        except asyncio.QueueFull:
            self.dropped_jobs += 1
            log.warning("video desk queue full (%d): a stream record or log entry was dropped", JOB_LIMIT)

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                await job()
            except Exception:
                log.exception("video desk job failed")
            finally:
                self._jobs.task_done()
