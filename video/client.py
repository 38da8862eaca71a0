"""The device and viewer side of WHIP/WHEP: aiortc peer connections signalled over httpx.

:class:`WhipPublisher` publishes one video track (a body camera, a drone, a simulator);
:class:`WhepViewer` watches a stream and yields its decoded frames. Both gather all their ICE
candidates before sending the offer (aiortc does not trickle), and both are async context managers
whose exit ends the session (``DELETE``) and closes the peer connection.

Over HTTPS the server's certificate is always verified: against ``ca_file`` when given (a hub with its own CA),
else against the default trust store. There is no way to turn verification off.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from os import PathLike
from types import TracebackType
from typing import Any
from urllib.parse import urljoin

import av
import httpx
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from video.errors import (
    BadOffer,
    BadSdpFragment,
    IceRestartUnsupported,
    MediaServerError,
    TooManyViewers,
    UnknownSession,
    UnknownStream,
    Unsupported,
    VideoError,
)
from video.http import SDP

__all__ = ["WhepViewer", "WhipPublisher", "refusal", "tls_verification"]

_BY_CODE: dict[str, type[VideoError]] = {
    cls.code: cls
    for cls in (BadOffer, BadSdpFragment, UnknownStream, UnknownSession, TooManyViewers, Unsupported,
                IceRestartUnsupported, MediaServerError)
}


def refusal(response: httpx.Response) -> VideoError:
    """The server's JSON error as the matching :class:`VideoError` (``status`` set to the HTTP status)."""
    code, message = "http_error", f"HTTP {response.status_code}"
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        pass
    cls = _BY_CODE.get(code, Unsupported if code == "codec_unsupported" else VideoError)
    exc = cls(f"{message} (HTTP {response.status_code})", code=code)
    exc.status = response.status_code
    return exc


def tls_verification(ca_file: str | PathLike[str] | None) -> ssl.SSLContext | bool:
    """httpx's ``verify``: a context trusting exactly ``ca_file`` (PEM), or True (the default trust store).
    A CA file that cannot be read raises ``OSError``/``ssl.SSLError`` here, before any connection."""
    if ca_file is None:
        return True
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class _WhipWhepSession:
    """What publisher and viewer share: offer over POST, answer applied, DELETE to end."""

    def __init__(self, url: str, token: str, http: httpx.AsyncClient | None, codecs: Sequence[str] | None,
                 ca_file: str | PathLike[str] | None = None) -> None:
        if http is not None and ca_file is not None:
            raise ValueError("ca_file applies to the session's own HTTP client: configure the given one instead")
        self.url = url
        self.token = token
        self.codecs = [c.upper() for c in codecs] if codecs else None
        verify = tls_verification(ca_file)  # before the peer connection: a bad CA file leaves nothing to close
        self.pc = RTCPeerConnection()
        self.session_url: str | None = None
        self.stream_id: str | None = None
        self._http = http or httpx.AsyncClient(timeout=10.0, verify=verify)
        self._own_http = http is None

    def _add_video(self, track_or_kind: MediaStreamTrack | str, direction: str) -> None:
        transceiver = self.pc.addTransceiver(track_or_kind, direction=direction)
        if self.codecs is not None:  # offer only these codecs, e.g. ["H264"]
            capabilities = RTCRtpSender.getCapabilities("video").codecs
            chosen = [c for c in capabilities if c.name.upper() in self.codecs]
            if not chosen:
                raise ValueError(f"aiortc has none of the codecs {self.codecs}")
            transceiver.setCodecPreferences(chosen)

    async def _exchange(self) -> str:
        """Send our offer, apply the answer; returns the last segment of the session's Location."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        headers = {"Content-Type": SDP, "Authorization": f"Bearer {self.token}"}
        response = await self._http.post(self.url, content=self.pc.localDescription.sdp, headers=headers)
        if response.status_code != 201:
            raise refusal(response)
        location = response.headers.get("location")
        if not location:
            raise VideoError("the server answered 201 without a Location", code="bad_answer")
        self.session_url = urljoin(str(response.url), location)
        await self.pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
        return self.session_url.rstrip("/").rsplit("/", 1)[-1]

    async def stop(self) -> None:
        """End the session on the server (best effort) and close the peer connection. Idempotent."""
        session_url, self.session_url = self.session_url, None
        try:
            if session_url is not None:
                # Best effort: the server may be gone, and the peer connection closes regardless.
                with contextlib.suppress(httpx.HTTPError):
                    await self._http.delete(session_url, headers={"Authorization": f"Bearer {self.token}"})
            await self.pc.close()
        finally:
            if self._own_http:
                await self._http.aclose()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


class WhipPublisher(_WhipWhepSession):
    """Publish ``track`` to a WHIP endpoint (``url`` = ``.../whip/{device_id}``); ``codecs`` limits the offer;
    ``ca_file`` is the CA an https endpoint is verified against (without ``http``)."""

    def __init__(self, url: str, token: str, track: MediaStreamTrack, *, http: httpx.AsyncClient | None = None,
                 codecs: Sequence[str] | None = None, ca_file: str | PathLike[str] | None = None) -> None:
        super().__init__(url, token, http, codecs, ca_file)
        self.track = track

    async def __aenter__(self) -> WhipPublisher:
        return self

    async def start(self) -> str:
        """Offer, get the answer; returns the stream id. Raises :class:`VideoError` if the server refuses."""
        self._add_video(self.track, "sendonly")
        self.stream_id = await self._exchange()  # the stream id is the publisher's session id
        return self.stream_id


class WhepViewer(_WhipWhepSession):
    """Watch a stream from a WHEP endpoint (``url`` = ``.../whep/{stream_id}``); ``codecs`` limits the offer;
    ``ca_file`` as for :class:`WhipPublisher`."""

    def __init__(self, url: str, token: str, *, http: httpx.AsyncClient | None = None,
                 codecs: Sequence[str] | None = None, ca_file: str | PathLike[str] | None = None) -> None:
        super().__init__(url, token, http, codecs, ca_file)
        self.session_id: str | None = None
        self._track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and not self._track.done():
                self._track.set_result(track)

    async def __aenter__(self) -> WhepViewer:
        return self

    async def start(self) -> None:
        self._add_video("video", "recvonly")
        self.session_id = await self._exchange()
        self.stream_id = self.url.rstrip("/").rsplit("/", 1)[-1]

    async def recv(self) -> av.VideoFrame:
        """The next decoded frame; raises ``aiortc.MediaStreamError`` when the stream ends."""
        if self.session_id is None and not self._track.done():
            raise VideoError("call start() before recv()", code="not_started")
        track = await self._track
        frame = await track.recv()
        if not isinstance(frame, av.VideoFrame):
            raise VideoError(f"expected a video frame, got {type(frame).__name__}", code="bad_frame")
        return frame
