"""Dependencies of the routes, as ``Annotated`` aliases: the hub, its services, the caller's principal.

A service the hub runs only when configured (incidents, drones, live video, provisioning) is a typed
dependency (:data:`IncidentsDep`, :data:`DronesDep` ...) that answers 503 when it is not running, so a route
never looks a service up itself. Declare it after the principal, so that a refused caller learns nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from devices.clock import now_ms
from hub.access.provisioning import Provisioner
from hub.access.tokens import TokenRefused
from hub.api.errors import ApiError
from hub.drones.service import DroneService
from hub.incidents.service import IncidentService
from hub.server import Hub
from hub.video.desk import VideoDesk


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    name: str
    role: str
    device_id: str | None = None


def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


HubDep = Annotated[Hub, Depends(get_hub)]


def get_incidents(hub: HubDep) -> IncidentService:
    if hub.incidents is None:
        raise ApiError(503, "unavailable", "the incident service is not running")
    return hub.incidents


def get_drones_or_none(hub: HubDep) -> DroneService | None:
    return hub.drones


def get_drones(hub: HubDep) -> DroneService:
    if hub.drones is None:
        raise ApiError(503, "unavailable", "no drone link is configured (FIELDHUB_MAVLINK_URL)")
    return hub.drones


def get_video(hub: HubDep) -> VideoDesk:
    if hub.video is None:
        raise ApiError(503, "video_unavailable", "live video is not running on this hub")
    return hub.video


def get_provisioner(hub: HubDep) -> Provisioner:
    if hub.provisioner is None:
        raise ApiError(503, "unavailable", "provisioning is not ready")
    return hub.provisioner


IncidentsDep = Annotated[IncidentService, Depends(get_incidents)]
DronesDep = Annotated[DroneService, Depends(get_drones)]
MaybeDronesDep = Annotated[DroneService | None, Depends(get_drones_or_none)]  # the fleet list: empty without
VideoDep = Annotated[VideoDesk, Depends(get_video)]
ProvisionerDep = Annotated[Provisioner, Depends(get_provisioner)]


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def authenticate(hub: Hub, secret: str | None, client: str | None = None) -> Principal:
    """The principal of a bearer ``secret``, checked in memory (see :mod:`hub.access.tokens`): 401 when it does not
    authenticate, 429 ``too_many_failures`` once ``client`` (its address) has failed too often. A request
    without any token is not a failed guess and is not counted."""
    if not secret:
        raise ApiError(401, "unauthorized", "missing bearer token")
    try:
        token = hub.tokens.check(secret)
    except TokenRefused as exc:
        if client is not None and not hub.auth_failures.failed(client, now_ms()):
            raise ApiError(429, "too_many_failures", "too many failed authentications from this address",
                           headers={"Retry-After": str(hub.auth_failures.retry_after_s)}) from None
        raise ApiError(401, "unauthorized", str(exc)) from None
    return Principal(token.token_id, token.name, token.role, token.device_id)


def client_address(connection: HTTPConnection) -> str | None:
    """The peer's address; behind a proxy on loopback (uvicorn trusts 127.0.0.1 by default: FORWARDED_ALLOW_IPS)
    the client's, from its X-Forwarded-For."""
    return connection.client.host if connection.client is not None else None


async def current_principal(request: Request, hub: HubDep) -> Principal:
    return await authenticate(hub, bearer(request.headers.get("authorization")), client_address(request))


def require(*roles: str) -> object:
    """A dependency that lets only ``roles`` (and admin) through."""
    allowed = set(roles) | {"admin"}

    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role not in allowed:
            raise ApiError(403, "forbidden", f"role {principal.role} may not do this")
        return principal

    return Depends(check)


Reader = Annotated[Principal, require("dispatcher", "viewer", "drone_operator")]
Dispatcher = Annotated[Principal, require("dispatcher")]
Admin = Annotated[Principal, require()]

