"""Dependencies of the routes, as ``Annotated`` aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from hub.api.errors import ApiError
from hub.server import Hub


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


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def authenticate(hub: Hub, secret: str | None) -> Principal:
    if not secret:
        raise ApiError(401, "unauthorized", "missing bearer token")
    row = await hub.lookup_token(secret)
    if row is None:
        raise ApiError(401, "unauthorized", "unknown or revoked token")
    return Principal(row["token_id"], row["name"], row["role"], row.get("device_id"))


async def current_principal(request: Request, hub: HubDep) -> Principal:
    return await authenticate(hub, bearer(request.headers.get("authorization")))


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

