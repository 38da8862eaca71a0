"""The audit log, read by admins (issue 13 point 7); and how a route records what its caller did."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from hub.api.access_models import AuditPage
from hub.api.deps import HubDep, Principal, require
from hub.api.errors import ApiError
from hub.server import Hub
from hub.storage.audit import MAX_LIMIT

router = APIRouter(tags=["audit"])

Admin = Annotated[Principal, require()]  # no role but admin
MAX_TS = 4_102_444_800_000
MAX_ID = 2**63 - 1


async def audit(hub: Hub, who: Principal, action: str, target: str, detail: dict[str, object] | None = None) -> None:
    """Record ``action`` by the API caller ``who`` (its token's name and role)."""
    await hub.audit.record(who.name, action, target, detail, role=who.role)


@router.get("/api/v1/audit", response_model=AuditPage)
async def list_audit(
    hub: HubDep, who: Admin,
    from_ms: Annotated[int | None, Query(alias="from", ge=0, le=MAX_TS)] = None,
    to_ms: Annotated[int | None, Query(alias="to", ge=0, le=MAX_TS)] = None,
    action: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    actor: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> dict[str, Any]:
    """Newest first; ``from <= at < to`` in epoch ms. Page back with ``before_id`` = the previous page's
    ``next_before_id`` (null when there is nothing older)."""
    if from_ms is not None and to_ms is not None and from_ms > to_ms:
        raise ApiError(400, "bad_request", "from must not be after to")
    entries = await hub.audit.list(since_ms=from_ms, until_ms=to_ms, action=action, actor=actor, limit=limit,
                                   before_id=before_id)
    more = len(entries) == limit and entries[-1]["id"] > 1
    return {"entries": entries, "next_before_id": entries[-1]["id"] if more else None}
