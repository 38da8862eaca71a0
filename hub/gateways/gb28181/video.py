"""Live video from GB/T 28181 cameras into the hub's relay: the gateway plays the camera's WHIP client.

A camera of this kind cannot take the contract's ``video_start`` (it has no WHIP client): the hub's commands
to it come here instead of to the broker (:class:`hub.gateways.commands.CommandRouter`). ``video_start`` is
authorised with its token exactly as a WHIP publish is (so the stream belongs to the command's incident and
the token opens one session only); then the hub offers a receive port in an ``INVITE`` (``PS/90000``, the
standard's SSRC), the camera answers and sends RTP carrying MPEG-PS, :class:`gb28181.media.MediaReceiver`
demuxes it (FFmpeg's ``mpeg`` demuxer) and every H.264 access unit is pushed into the relay as it is: no
decode, no encode. Viewers (WHEP) and the recorder take it like any other stream.

The camera's answer is its signature: the contract's ``ack`` of the command is submitted for it once its 200 to
the INVITE came (no answer: no ack, and the hub's ack watch re-sends, which INVITEs again), then its ``video``
event ``started``; ``video_stop`` is a ``BYE``. A stream also ends - ``BYE`` sent when the camera is still
there - when the camera hangs up, goes offline, sends no media for ``no_media_timeout_s``, or (opened on demand
by a viewer, :meth:`CameraVideo.open`) when its last viewer has been gone ``idle_s``.

Other commands (``dispatch``: GB/T 28181 has no message a camera could show or sign) are counted as
``command_unsupported`` and logged; no ``ack`` is made up for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from devices import payloads
from devices.payloads import Command, Event
from devices.tasks import cancel_and_wait
from devices.topics import device_topic
from gb28181.calls import Call, CallRefused, Calls
from gb28181.media import MediaReceiver
from gb28181.registrar import Registrar
from gb28181.sdp import SdpError, build_offer, make_ssrc, parse_answer, ssrc_number
from gb28181.sip import SipError
from hub.gateways.gb28181.gateway import Submit
from video.service import EncodedPublisher

__all__ = ["CameraVideo", "Grant", "Publishing", "VideoRefused"]

log = logging.getLogger(__name__)


class VideoRefused(Exception):
    """A camera's video could not be started: ``code`` says why (offline, refused, timeout, no_media, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Grant(Protocol):
    """A publish the video desk allowed; settled once."""

    async def opened(self, session_id: str) -> None: ...

    async def failed(self) -> None: ...


class Publishing(Protocol):
    """What the bridge needs of the hub's video desk."""

    async def authorize_publish(self, device_id: str, secret: str | None) -> Grant: ...

    async def publish_encoded(self, device_id: str, codec: str = "H264", *,
                              on_keyframe_request: Callable[[], None] | None = None,
                              on_viewers: Callable[[int], None] | None = None) -> EncodedPublisher: ...


@dataclass(eq=False)
class _Session:
    device_id: str
    receiver: MediaReceiver
    on_demand: bool
    call: Call | None = None
    publisher: EncodedPublisher | None = None
    started: float = field(default_factory=time.monotonic)
    viewers_seen: bool = False
    idle_since: float | None = None
    ended: bool = False


class CameraVideo:
    """INVITE/BYE sessions of one registrar's cameras; an async context manager (leaving it hangs up all)."""

    def __init__(self, registrar: Registrar, *, submit: Submit, publishing: Publishing,
                 owns: Callable[[str], bool], channel_of: Callable[[str], str], media_host: str, announce_host: str,
                 transport: Literal["udp", "tcp"] = "udp", wall_ms: Callable[[], int],
                 invite_timeout_s: float = 10.0, no_media_timeout_s: float = 10.0, idle_s: float = 15.0,
                 check_interval_s: float = 1.0) -> None:
        self.registrar = registrar
        self.owns = owns  # is this device one of the gateway's (a provisioned GB/T 28181 device)?
        self.submit = submit
        self.publishing = publishing
        self.channel_of = channel_of
        self.media_host = media_host
        self.announce_host = announce_host
        self.transport: Literal["udp", "tcp"] = transport
        self.wall_ms = wall_ms
        self.invite_timeout_s = invite_timeout_s
        self.no_media_timeout_s = no_media_timeout_s
        self.idle_s = idle_s
        self.check_interval_s = check_interval_s
        self.counters: Counter[str] = Counter()
        self.calls = Calls(registrar, on_remote_bye=self._remote_bye, on_ended=self._call_ended)
        self._sessions: dict[str, _Session] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._ssrc_seq = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._checker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CameraVideo:
        self._checker = asyncio.create_task(self._check_loop(), name="gb28181-video-check")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._checker)
        await asyncio.gather(*(self._end(s, "shutdown") for s in list(self._sessions.values())))
        await self.calls.close()
        await cancel_and_wait(*self._tasks)

    # --- queries ------------------------------------------------------------------------------------------

    def stream_of(self, device_id: str) -> str | None:
        session = self._sessions.get(device_id)
        return session.publisher.stream_id if session is not None and session.publisher is not None else None

    @property
    def live(self) -> int:
        return len(self._sessions)

    def media_counters(self) -> Counter[str]:
        """The RTP/PS counters of the live sessions (packets, frames, drops by reason)."""
        total: Counter[str] = Counter()
        for session in self._sessions.values():
            total += session.receiver.counters
        return total

    # --- commands (CommandRouter) -------------------------------------------------------------------------

    def can_sign(self, device_id: str) -> bool:
        return False  # GB/T 28181 has no message that shows a dispatch order or signs for it

    def command(self, device_id: str, raw: bytes) -> None:
        """A contract command addressed to a GB/T 28181 camera; handled in the background, never raising."""
        task = asyncio.get_running_loop().create_task(self._command(device_id, raw))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _command(self, device_id: str, raw: bytes) -> None:
        try:
            command = payloads.decode_command(raw)
        except Exception as exc:  # the hub's own command: a bug, but one camera's
            self.counters["command_bad"] += 1
            log.error("gb28181: an unreadable command for %s: %s", device_id, exc)
            return
        if command.type == "video_start":
            await self._video_start(device_id, command)
        elif command.type == "video_stop":
            await self._video_stop(device_id, command)
        else:
            self.counters["command_unsupported"] += 1
            log.warning("gb28181: %s cannot take a %s command (GB/T 28181 has no such message); not acknowledged",
                        device_id, command.type)

    async def _video_start(self, device_id: str, command: Command) -> None:
        token = command.body.get("token")
        try:
            grant = await self.publishing.authorize_publish(device_id, token if isinstance(token, str) else None)
        except Exception as exc:  # PublishRefused (token used, stream live, ...): the desk said why
            self.counters["video_start_refused"] += 1
            log.warning("gb28181: video_start %s for %s refused by the video desk: %s", command.cmd_id, device_id,
                        exc)
            return
        try:
            stream_id = await self._start(device_id, on_demand=False, grant=grant)
        except VideoRefused as exc:
            self.counters[f"video_start_{exc.code}"] += 1
            log.warning("gb28181: video_start %s for %s failed: %s", command.cmd_id, device_id, exc)
            return
        await self._event(device_id, "ack", {"cmd_id": command.cmd_id})
        await self._event(device_id, "video", {"state": "started", "stream_id": stream_id})

    async def _video_stop(self, device_id: str, command: Command) -> None:
        await self._event(device_id, "ack", {"cmd_id": command.cmd_id})
        session = self._sessions.get(device_id)
        if session is not None and not session.on_demand:
            await self._end(session, "video_stop")

    # --- on demand ----------------------------------------------------------------------------------------

    async def open(self, device_id: str) -> str:
        """A viewer wants the camera: its live stream id (started now when it has none). VideoRefused."""
        existing = self.stream_of(device_id)
        if existing is not None:
            return existing
        return await self._start(device_id, on_demand=True, grant=None)

    # --- sessions -----------------------------------------------------------------------------------------

    async def _start(self, device_id: str, *, on_demand: bool, grant: Grant | None) -> str:
        lock = self._locks.setdefault(device_id, asyncio.Lock())
        async with lock:
            old = self._sessions.get(device_id)
            if old is not None:
                if on_demand and old.publisher is not None:
                    return old.publisher.stream_id
                await self._end(old, "restarted")
            try:
                return await self._call(device_id, on_demand, grant)
            except BaseException:
                if grant is not None:
                    await grant.failed()
                raise

    async def _call(self, device_id: str, on_demand: bool, grant: Grant | None) -> str:
        if self.registrar.presence.get(device_id) is None:
            raise VideoRefused("offline", f"camera {device_id} is not registered")
        ssrc = make_ssrc(self.registrar.config.server_id, next(self._ssrc_seq))
        session = _Session(device_id, MediaReceiver(host=self.media_host, transport=self.transport,
                                                    ssrc=ssrc_number(ssrc), on_frame=lambda *a: None),
                           on_demand)
        port = await session.receiver.start()
        self._sessions[device_id] = session
        self.counters["invites"] += 1
        offer = build_offer(server_id=self.registrar.config.server_id, host=self.announce_host, port=port,
                            transport=self.transport, ssrc=ssrc)
        try:
            session.call = await self.calls.invite(device_id, self.channel_of(device_id), offer, ssrc=ssrc,
                                                   timeout_s=self.invite_timeout_s)
            answer = parse_answer(session.call.answer_sdp)
            if answer.ssrc is not None and answer.ssrc != ssrc:
                # Some cameras answer with their own SSRC: the stream is then taken with that one.
                session.receiver.ssrc = ssrc_number(answer.ssrc)
            session.publisher = await self.publishing.publish_encoded(
                device_id, "H264", on_viewers=lambda count: self._viewers(session, count))
        except CallRefused as exc:
            await self._end(session, "refused")
            raise VideoRefused("refused", f"camera {device_id} refused the INVITE: {exc}") from exc
        except SdpError as exc:
            await self._end(session, "bad_answer")
            raise VideoRefused("bad_answer", f"camera {device_id} answered an unusable SDP: {exc}") from exc
        except (SipError, ValueError) as exc:
            await self._end(session, "no_answer")
            raise VideoRefused("no_answer", f"camera {device_id}: {exc}") from exc
        except BaseException:
            await self._end(session, "failed")
            raise
        publisher = session.publisher
        session.receiver.on_frame = lambda data, pts, key: self._frame(session, publisher, data, pts, key)
        session.started = time.monotonic()
        if grant is not None:
            await grant.opened(publisher.stream_id)
        self.counters["streams"] += 1
        log.info("gb28181: video of %s live as stream %s (%s, port %d)", device_id, publisher.stream_id,
                 self.transport, port)
        return publisher.stream_id

    def _frame(self, session: _Session, publisher: EncodedPublisher, data: bytes, pts: int, key: bool) -> None:
        if not publisher.push(data, pts, key) and not session.ended:
            self._spawn(self._end(session, "stream_ended"))

    def _viewers(self, session: _Session, count: int) -> None:
        if count > 0:
            session.viewers_seen, session.idle_since = True, None
        elif session.idle_since is None:
            session.idle_since = time.monotonic()

    async def _end(self, session: _Session, why: str) -> None:
        if session.ended:
            return
        session.ended = True
        if self._sessions.get(session.device_id) is session:
            del self._sessions[session.device_id]
        self.counters[f"ended_{why}"] += 1
        if session.call is not None and why not in ("remote_bye", "offline"):
            await self.calls.bye(session.call)
        await session.receiver.stop()
        if session.publisher is not None:
            stream_id = session.publisher.stream_id
            await session.publisher.end()
            if why != "shutdown":
                await self._event(session.device_id, "video", {"state": "stopped", "stream_id": stream_id,
                                                               "reason": why})

    def _remote_bye(self, call_id: str) -> None:
        self._end_call(call_id, "remote_bye")

    def _call_ended(self, call_id: str, reason: str) -> None:
        self._end_call(call_id, "offline")

    def _end_call(self, call_id: str, why: str) -> None:
        for session in list(self._sessions.values()):
            if session.call is not None and session.call.call_id == call_id:
                self._spawn(self._end(session, why))

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval_s)
            now = time.monotonic()
            for session in list(self._sessions.values()):
                if session.publisher is None:
                    continue  # still being called
                heard = session.receiver.last_packet_at or session.started
                if now - heard > self.no_media_timeout_s:
                    await self._end(session, "no_media")
                elif session.on_demand and self._idle(session, now):
                    await self._end(session, "idle")

    def _idle(self, session: _Session, now: float) -> bool:
        """An on-demand stream nobody watches: its last viewer left ``idle_s`` ago, or none came in twice that."""
        if session.idle_since is not None:
            return now - session.idle_since > self.idle_s
        return not session.viewers_seen and now - session.started > 2 * self.idle_s

    # --- helpers ------------------------------------------------------------------------------------------

    async def _event(self, device_id: str, kind: str, data: dict[str, Any]) -> None:
        raw = payloads.encode_event(Event(ts=self.wall_ms(), type=kind, data=data))
        future = self.submit(device_topic(device_id, "event"), raw, 1)
        if future is None:
            self.counters["event_refused"] += 1
            log.warning("gb28181: the pipeline refused the %s event of %s", kind, device_id)
            return
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(future), 5.0)

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("gb28181: ending a video session failed")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
