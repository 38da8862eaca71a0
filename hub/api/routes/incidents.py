"""Incidents: create, dispatch, milestones, close; response-time reports. Rules live in `hub.incidents`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import Field, model_validator

from devices.clock import now_ms
from hub.api.deps import Dispatcher, HubDep, Reader
from hub.api.errors import ApiError
from hub.api.inputs import ApiModel, Line
from hub.api.routes.audit import audit
from hub.incidents import IncidentConflict, IncidentError, IncidentInvalid, IncidentNotFound, IncidentService

router = APIRouter(tags=["incidents"])

ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
IncidentId = Annotated[str, Path(pattern=ID)]
MAX_TS = 4_102_444_800_000
DAY_MS = 86_400_000


class IncidentIn(ApiModel):
    category: Line = Field(min_length=1, max_length=64)
    priority: int = Field(ge=1, le=4, strict=True)
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)
    address: str = Field(default="", max_length=500)
    summary: str = Field(default="", max_length=4000)
    received_at: int | None = Field(default=None, ge=0, le=MAX_TS)
    policy: Line | None = Field(default=None, min_length=1, max_length=64)
    # Overrides the arrival zone radius the category rules give (SPEC default 100 m).
    arrival_radius_m: float | None = Field(default=None, ge=10, le=5000, allow_inf_nan=False)
    # True: divert to the 12345 hotline at once; False: never by rule; null: by the category rules.
    divert: bool | None = None


class DispatchIn(ApiModel):
    unit_ids: list[Annotated[str, Field(pattern=ID)]] | None = Field(default=None, min_length=1, max_length=50)
    auto: bool = False
    count: int = Field(default=1, ge=1, le=20)

    @model_validator(mode="after")
    def _one_way(self) -> DispatchIn:
        if self.auto == (self.unit_ids is not None):
            raise ValueError('give either "unit_ids" or "auto": true')
        return self


class EventIn(ApiModel):
    type: Literal["contacted", "supported", "arrived", "note"]
    ts: int | None = Field(default=None, ge=0, le=MAX_TS)
    unit_id: str | None = Field(default=None, pattern=ID)
    text: str | None = Field(default=None, max_length=4000)

    @model_validator(mode="after")
    def _note_text(self) -> EventIn:
        if self.type == "note" and not self.text:
            raise ValueError("a note needs a text")
        return self


class CancelIn(ApiModel):
    unit_id: str = Field(pattern=ID)
    reason: Line = Field(default="cancelled by the dispatcher", min_length=1, max_length=500)


class ReassignIn(ApiModel):
    from_unit_id: str = Field(pattern=ID)
    to_unit_id: str | None = Field(default=None, pattern=ID)  # null: the best available unit
    reason: Line = Field(default="reassigned by the dispatcher", min_length=1, max_length=500)


class DivertIn(ApiModel):
    reason: Line = Field(default="non-emergency/non-police (dispatcher)", min_length=1, max_length=500)


class CloseIn(ApiModel):
    reason: Line = Field(default="", max_length=500)


def _service(hub: Any) -> IncidentService:
    service: IncidentService | None = getattr(hub, "incidents", None)
    if service is None:
        raise ApiError(503, "unavailable", "the incident service is not running")
    return service


def _api_error(exc: IncidentError) -> ApiError:
    if isinstance(exc, IncidentNotFound):
        return ApiError(404, "not_found", str(exc))
    if isinstance(exc, IncidentInvalid):
        return ApiError(422, "invalid", str(exc))
    if isinstance(exc, IncidentConflict):
        return ApiError(409, "conflict", str(exc))
    return ApiError(400, "bad_request", str(exc))


@router.post("/api/v1/incidents", status_code=201)
async def create_incident(body: IncidentIn, hub: HubDep, who: Dispatcher) -> dict[str, Any]:
    if body.received_at is not None and body.received_at > now_ms():
        raise ApiError(422, "invalid", "received_at: must not be in the future")
    try:
        return await _service(hub).create(body.model_dump())
    except IncidentError as exc:
        raise _api_error(exc) from exc


@router.get("/api/v1/incidents")
async def list_incidents(
    hub: HubDep, who: Reader,
    status: Annotated[Literal["open", "closed", "diverted"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    return {"incidents": await _service(hub).list_incidents(status, limit)}


@router.get("/api/v1/incidents/{incident_id}")
async def get_incident(incident_id: IncidentId, hub: HubDep, who: Reader) -> dict[str, Any]:
    try:
        return await _service(hub).get(incident_id)
    except IncidentError as exc:
        raise _api_error(exc) from exc


@router.post("/api/v1/incidents/{incident_id}/dispatch")
async def dispatch(incident_id: IncidentId, body: DispatchIn, hub: HubDep, who: Dispatcher) -> dict[str, Any]:
    service = _service(hub)
    try:
        if body.auto:
            result = await service.auto_dispatch(incident_id, body.count)
        else:
            assert body.unit_ids is not None
            result = await service.dispatch(incident_id, body.unit_ids)
    except IncidentError as exc:
        raise _api_error(exc) from exc
    await audit(hub, who, "incident.dispatch", incident_id, {
        "unit_ids": [a["unit_id"] for a in result["assignments"]], "auto": body.auto,
        "cmd_ids": [a["cmd_id"] for a in result["assignments"]]})
    return result


@router.get("/api/v1/incidents/{incident_id}/recommendations")
async def recommendations(incident_id: IncidentId, hub: HubDep, who: Reader,
                          count: Annotated[int, Query(ge=1, le=20)] = 3) -> dict[str, Any]:
    """The available units that would reach the incident first, with their ETA (nothing is dispatched)."""
    try:
        return await _service(hub).recommendations(incident_id, count)
    except IncidentError as exc:
        raise _api_error(exc) from exc


@router.post("/api/v1/incidents/{incident_id}/cancel")
async def cancel(incident_id: IncidentId, body: CancelIn, hub: HubDep, who: Dispatcher) -> dict[str, Any]:
    """Withdraw one unit from the incident; the incident stays open."""
    try:
        view = await _service(hub).cancel(incident_id, body.unit_id, body.reason)
    except IncidentError as exc:
        raise _api_error(exc) from exc
    await audit(hub, who, "incident.cancel", incident_id, {"unit_id": body.unit_id, "reason": body.reason})
    return view


@router.post("/api/v1/incidents/{incident_id}/reassign")
async def reassign(incident_id: IncidentId, body: ReassignIn, hub: HubDep, who: Dispatcher) -> dict[str, Any]:
    try:
        view = await _service(hub).reassign(incident_id, body.from_unit_id, body.to_unit_id, body.reason)
    except IncidentError as exc:
        raise _api_error(exc) from exc
    # A reassignment is a cancel and, when a unit could take over, a dispatch: audited as both.
    to_unit = _dispatched_after_reassign(view)
    await audit(hub, who, "incident.cancel", incident_id, {"unit_id": body.from_unit_id, "reason": body.reason,
                                                           "to_unit_id": to_unit})
    if to_unit is not None:
        await audit(hub, who, "incident.dispatch", incident_id, {"unit_ids": [to_unit], "auto": body.to_unit_id is None,
                                                                 "reassigned_from": body.from_unit_id})
    return view


def _dispatched_after_reassign(view: dict[str, Any]) -> str | None:
    """The unit dispatched after the last reassignment in the incident's log, if its dispatch went through."""
    found = None
    for entry in view.get("log", []):
        if entry.get("type") == "reassigned":
            found = None
        elif entry.get("type") == "dispatched":
            found = entry.get("unit_id")
    return found


@router.post("/api/v1/incidents/{incident_id}/divert")
async def divert(incident_id: IncidentId, hub: HubDep, who: Dispatcher, body: DivertIn | None = None
                 ) -> dict[str, Any]:
    """Non-emergency/non-police (双非): hand the incident to the 12345 hotline."""
    reason = body.reason if body else DivertIn().reason
    try:
        view = await _service(hub).divert(incident_id, reason)
    except IncidentError as exc:
        raise _api_error(exc) from exc
    await audit(hub, who, "incident.divert", incident_id, {"reason": reason})
    return view


@router.post("/api/v1/incidents/{incident_id}/events")
async def add_event(incident_id: IncidentId, body: EventIn, hub: HubDep, who: Dispatcher) -> dict[str, Any]:
    if body.ts is not None and body.ts > now_ms() + 60_000:
        raise ApiError(422, "invalid", "ts: must not be in the future")
    try:
        view = await _service(hub).add_event(incident_id, body.model_dump())
    except IncidentError as exc:
        raise _api_error(exc) from exc
    await audit(hub, who, "incident.event", incident_id, body.model_dump(exclude_none=True))
    return view


@router.post("/api/v1/incidents/{incident_id}/close")
async def close(incident_id: IncidentId, hub: HubDep, who: Dispatcher, body: CloseIn | None = None) -> dict[str, Any]:
    reason = body.reason if body else ""
    try:
        view = await _service(hub).close(incident_id, reason)
    except IncidentError as exc:
        raise _api_error(exc) from exc
    await audit(hub, who, "incident.close", incident_id, {"reason": reason})
    return view


@router.get("/api/v1/alerts")
async def alerts(hub: HubDep, who: Reader, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
    """Recent alerts (SOS, unacknowledged dispatches), newest first."""
    return {"alerts": _service(hub).alerts.list(limit)}


@router.get("/api/v1/reports/heatmap")
async def heatmap(
    hub: HubDep, who: Reader,
    from_ms: Annotated[int | None, Query(alias="from", ge=0, le=MAX_TS)] = None,
    to_ms: Annotated[int | None, Query(alias="to", ge=0, le=MAX_TS)] = None,
    cell_m: Annotated[float, Query(ge=50, le=5000)] = 250.0,
) -> dict[str, Any]:
    """Incidents per grid cell over a period (热力图), for the one-map's heatmap layer."""
    from_ms, to_ms = _period(from_ms, to_ms)
    cells = await _service(hub).store.heatmap(from_ms, to_ms, cell_m)
    return {"from": from_ms, "to": to_ms, "cell_m": cell_m, "max": max((c["count"] for c in cells), default=0),
            "cells": [{"lat": round(c["lat"], 6), "lon": round(c["lon"], 6), "count": c["count"]} for c in cells]}


def _period(from_ms: int | None, to_ms: int | None) -> tuple[int, int]:
    """Default: the 7 days up to now; a reversed period is a 400."""
    to_ms = to_ms if to_ms is not None else now_ms() + 1
    from_ms = from_ms if from_ms is not None else to_ms - 7 * DAY_MS
    if from_ms > to_ms:
        raise ApiError(400, "bad_request", "from must not be after to")
    return from_ms, to_ms


@router.get("/api/v1/handovers")
async def handovers(hub: HubDep, who: Reader) -> dict[str, Any]:
    """The 12345 hand-overs of diverted incidents not accepted yet, with their attempts and last error."""
    hotline = _service(hub).hotline
    if hotline is None:
        raise ApiError(503, "unavailable", "the 12345 hand-over is not running")
    return hotline.snapshot()


@router.get("/api/v1/reports/response-times")
async def response_times(
    hub: HubDep, who: Reader,
    from_ms: Annotated[int | None, Query(alias="from", ge=0, le=MAX_TS)] = None,
    to_ms: Annotated[int | None, Query(alias="to", ge=0, le=MAX_TS)] = None,
    group_by: Annotated[Literal["category", "unit", "policy"], Query()] = "category",
) -> dict[str, Any]:
    from_ms, to_ms = _period(from_ms, to_ms)
    return await _service(hub).report(from_ms, to_ms, group_by)
