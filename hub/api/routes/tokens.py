"""API tokens, for admins: list (never a secret), create (the secret shown once), revoke (refused at once)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import Field

from devices.clock import now_ms
from hub.access.tokens import MAX_LIFETIME_S, MAX_NAME, MIN_LIFETIME_S
from hub.api.access_models import NewToken, Token, TokenList
from hub.api.deps import Admin, HubDep
from hub.api.errors import ApiError
from hub.api.inputs import ApiModel, Line
from hub.api.routes.audit import audit

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])

ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_ID = 2**63 - 1  # bigint: a larger id is a 422, not a database error
TokenId = Annotated[int, Path(ge=1, le=MAX_ID)]


class TokenIn(ApiModel):
    name: Line = Field(min_length=1, max_length=MAX_NAME)
    role: Literal["admin", "dispatcher", "viewer", "drone_operator", "device"]
    # None: never expires.
    expires_in_s: float | None = Field(default=None, ge=MIN_LIFETIME_S, le=MAX_LIFETIME_S, allow_inf_nan=False)
    device_id: str | None = Field(default=None, pattern=ID)


@router.get("", response_model=TokenList)
async def list_tokens(hub: HubDep, who: Admin) -> dict[str, Any]:
    """From the hub's registry: the same answer while the database is away."""
    now = now_ms()
    return {"tokens": [record.view(now) for record in hub.tokens.records()]}


@router.post("", status_code=201, response_model=NewToken)
async def create_token(body: TokenIn, hub: HubDep, who: Admin) -> dict[str, Any]:
    # What the model cannot say (a name of blanks, a format character) is an InvalidToken: a 422 by ERRORS.
    secret, record = await hub.tokens.create(body.name, body.role, expires_in_s=body.expires_in_s,
                                             device_id=body.device_id)
    await audit(hub, who, "token.create", str(record.token_id),
                {"name": record.name, "role": record.role, "expires_at": record.expires_at,
                 "device_id": record.device_id})
    # The only time the secret is shown: the hub keeps its digest alone.
    return {"token": secret, **record.view(now_ms())}


@router.delete("/{token_id}", response_model=Token)
async def revoke_token(token_id: TokenId, hub: HubDep, who: Admin) -> dict[str, Any]:
    before = hub.tokens.by_id(token_id)
    record = await hub.tokens.revoke(token_id)
    if record is None:
        raise ApiError(404, "not_found", f"no token {token_id}")
    if before is None or before.revoked_at is None:  # revoking again changes nothing and is not recorded
        await audit(hub, who, "token.revoke", str(token_id), {"name": record.name, "role": record.role})
    return record.view(now_ms())
