"""Live video streams, an incident's recordings, and the authorizers of the WHIP/WHEP endpoints.

The rules (which token may publish for which device) live in `hub.video.VideoDesk`; this module only
turns its refusals into the API's JSON errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse

from hub.api.deps import HubDep, Reader, authenticate
from hub.api.errors import ApiError
from hub.incidents import IncidentNotFound
from hub.server import Hub
from hub.video import PublishGrant, PublishRefused, VideoDesk

__all__ = ["publish_authorizer", "router", "session_authorizer", "view_authorizer"]

router = APIRouter(tags=["video"])

ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SEGMENT = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
VIEW_ROLES = frozenset({"viewer", "dispatcher", "admin"})


def _desk(hub: Hub) -> VideoDesk:
    if hub.video is None:
        raise ApiError(503, "video_unavailable", "live video is not running on this hub")
    return hub.video


def publish_authorizer(hub: Hub) -> Callable[[str, str | None], Awaitable[PublishGrant]]:
    """WHIP: the device's `video_start` token (or an admin's API token); see `VideoDesk.authorize_publish`."""

    async def authorize(device_id: str, token: str | None) -> PublishGrant:
        try:
            return await _desk(hub).authorize_publish(device_id, token)
        except PublishRefused as exc:
            raise ApiError(exc.status, exc.code, str(exc)) from exc

    return authorize


def session_authorizer(hub: Hub) -> Callable[[str, str, str | None], Awaitable[None]]:
    """DELETE/PATCH on a WHIP session: the token that opened it; see `VideoDesk.authorize_session`."""

    async def authorize(device_id: str, session_id: str, token: str | None) -> None:
        try:
            await _desk(hub).authorize_session(device_id, session_id, token)
        except PublishRefused as exc:
            raise ApiError(exc.status, exc.code, str(exc)) from exc

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


@router.get("/api/v1/streams")
async def list_streams(hub: HubDep, who: Reader) -> dict[str, Any]:
    return {"streams": _desk(hub).list_streams()}


@router.get("/api/v1/incidents/{incident_id}/recordings")
async def incident_recordings(incident_id: Annotated[str, Path(pattern=ID)], hub: HubDep,
                              who: Reader) -> dict[str, Any]:
    try:
        return await _desk(hub).recordings(incident_id)
    except IncidentNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from exc


@router.get("/api/v1/recordings/{stream_id}/{name}")
async def recording_file(stream_id: Annotated[str, Path(pattern=ID)], name: Annotated[str, Path(pattern=SEGMENT)],
                         hub: HubDep, who: Reader) -> FileResponse:
    """One segment file, as listed by the incident's recordings (`path`)."""
    root = _desk(hub).recordings_dir.resolve()
    path = (root / stream_id / name).resolve()
    if path.parent != root / stream_id or path.suffix not in (".webm", ".mkv") or not path.is_file():
        raise ApiError(404, "not_found", f"no recording {stream_id}/{name}")
    return FileResponse(path, media_type="video/webm" if path.suffix == ".webm" else "video/x-matroska")
