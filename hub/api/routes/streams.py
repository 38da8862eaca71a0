"""Live video streams, an incident's recordings, and the authorizers of the WHIP/WHEP endpoints.

The rules (which token may publish for which device) live in `hub.video.desk.VideoDesk`; its refusals
(`PublishRefused`, with their status) and the video library's errors are answered by `hub.api.errors.ERRORS`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse

from hub.api.deps import HubDep, Reader, VideoDep, authenticate, get_video
from hub.api.errors import ApiError
from hub.api.models import CameraLive, Recordings, StreamList
from hub.gateways.gb28181.video import VideoRefused
from hub.server import Hub
from hub.video.desk import PublishGrant

__all__ = ["publish_authorizer", "router", "session_authorizer", "view_authorizer"]

router = APIRouter(tags=["video"])

ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SEGMENT = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
VIEW_ROLES = frozenset({"viewer", "dispatcher", "admin"})


def publish_authorizer(hub: Hub) -> Callable[[str, str | None], Awaitable[PublishGrant]]:
    """WHIP: the device's `video_start` token (or an admin's API token); see `VideoDesk.authorize_publish`."""

    async def authorize(device_id: str, token: str | None) -> PublishGrant:
        return await get_video(hub).authorize_publish(device_id, token)

    return authorize


def session_authorizer(hub: Hub) -> Callable[[str, str, str | None], Awaitable[None]]:
    """DELETE/PATCH on a WHIP session: the token that opened it; see `VideoDesk.authorize_session`."""

    async def authorize(device_id: str, session_id: str, token: str | None) -> None:
        await get_video(hub).authorize_session(device_id, session_id, token)

    return authorize


def view_authorizer(hub: Hub) -> Callable[[str | None], Awaitable[None]]:
    """WHEP: an API token of role viewer, dispatcher or admin (not a device's)."""

    async def authorize(token: str | None) -> None:
        principal = await authenticate(hub, token)
        if principal.role not in VIEW_ROLES:
            raise ApiError(403, "forbidden", f"role {principal.role} may not watch video")
        if hub.video is None or not hub.video.accepting:
            raise ApiError(503, "shutting_down", "live video is not accepting viewers")

    return authorize


@router.get("/api/v1/streams", response_model=StreamList)
async def list_streams(who: Reader, video: VideoDep) -> dict[str, Any]:
    return {"streams": video.list_streams()}


# A camera that did not answer is the gateway's upstream failing (502/504); one that is not registered, a conflict.
_CAMERA_STATUS = {"offline": 409, "refused": 502, "bad_answer": 502, "no_answer": 504}


@router.post("/api/v1/cameras/{device_id}/live", response_model=CameraLive)
async def open_camera(device_id: Annotated[str, Path(pattern=ID)], who: Reader, hub: HubDep) -> dict[str, Any]:
    """A viewer opens a camera that streams on demand (a GB/T 28181 camera: the hub INVITEs it): the live stream's
    id to watch over WHEP. The stream ends when its last viewer has left for a while (FIELDHUB_GB28181_IDLE_S).
    Other cameras stream when the hub sends them `video_start` (arrival, SOS): their live streams are listed."""
    video = hub.camera_video
    if video is None or not video.owns(device_id):
        raise ApiError(404, "not_on_demand", f"{device_id} is not a camera this hub can open on demand "
                                             "(GB/T 28181 cameras can, with FIELDHUB_GB28181 on)")
    try:
        stream_id = await video.open(device_id)
    except VideoRefused as exc:
        raise ApiError(_CAMERA_STATUS.get(exc.code, 502), f"camera_{exc.code}", str(exc)) from exc
    return {"device_id": device_id, "stream_id": stream_id}


@router.get("/api/v1/incidents/{incident_id}/recordings", response_model=Recordings)
async def incident_recordings(incident_id: Annotated[str, Path(pattern=ID)], who: Reader,
                              video: VideoDep) -> dict[str, Any]:
    return await video.recordings(incident_id)


@router.get("/api/v1/recordings/{stream_id}/{name}")
async def recording_file(stream_id: Annotated[str, Path(pattern=ID)], name: Annotated[str, Path(pattern=SEGMENT)],
                         who: Reader, video: VideoDep) -> FileResponse:
    """One segment file, as listed by the incident's recordings (`path`)."""
    root = video.recordings_dir.resolve()
    path = (root / stream_id / name).resolve()
    if path.parent != root / stream_id or path.suffix not in (".webm", ".mkv") or not path.is_file():
        raise ApiError(404, "not_found", f"no recording {stream_id}/{name}")
    return FileResponse(path, media_type="video/webm" if path.suffix == ".webm" else "video/x-matroska")
