"""Incidents: create, dispatch, milestones, close; response-time reports. Rules live in `hub.incidents.service`.

The service's refusals (`IncidentNotFound`, `IncidentConflict` ...) are answered by `hub.api.errors.ERRORS`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import Field, model_validator

from devices.clock import now_ms
from hub.api.deps import Dispatcher, HubDep, IncidentsDep, Reader
from hub.api.errors import ApiError
from hub.api.inputs import ApiModel, Line
from hub.api.models import AlertList, Dispatched, Incident, IncidentList, Recommendations
from hub.api.report_models import Handovers, Heatmap, ResponseTimes
from hub.api.routes.audit import audit

# The incidents themselves, and what is reported across them (alerts, hand-overs, reports).
router = APIRouter(prefix="/api/v1/incidents", tags=["incidents"])
reports_router = APIRouter(prefix="/api/v1", tags=["incidents"])

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


@router.post("", status_code=201, response_model=Incident)
async def create_incident(body: IncidentIn, who: Dispatcher, incidents: IncidentsDep) -> dict[str, Any]:
    if body.received_at is not None and body.received_at > now_ms():
        raise ApiError(422, "invalid", "received_at: must not be in the future")
    return await incidents.create(body.model_dump())


@router.get("", response_model=IncidentList)
async def list_incidents(
    who: Reader, incidents: IncidentsDep,
    status: Annotated[Literal["open", "closed", "diverted"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    return {"incidents": await incidents.list_incidents(status, limit)}


@router.get("/{incident_id}", response_model=Incident)
async def get_incident(incident_id: IncidentId, who: Reader, incidents: IncidentsDep) -> dict[str, Any]:
    return await incidents.get(incident_id)


@router.post("/{incident_id}/dispatch", response_model=Dispatched)
async def dispatch(incident_id: IncidentId, body: DispatchIn, hub: HubDep, who: Dispatcher,
                   incidents: IncidentsDep) -> dict[str, Any]:
    if body.auto:
        result = await incidents.auto_dispatch(incident_id, body.count)
    else:
        assert body.unit_ids is not None
        result = await incidents.dispatch(incident_id, body.unit_ids)
    await audit(hub, who, "incident.dispatch", incident_id, {
        "unit_ids": [a["unit_id"] for a in result["assignments"]], "auto": body.auto,
        "cmd_ids": [a["cmd_id"] for a in result["assignments"]]})
    return result


@router.get("/{incident_id}/recommendations", response_model=Recommendations)
async def recommendations(incident_id: IncidentId, who: Reader, incidents: IncidentsDep,
                          count: Annotated[int, Query(ge=1, le=20)] = 3) -> dict[str, Any]:
    """The available units that would reach the incident first, with their ETA (nothing is dispatched)."""
    return await incidents.recommendations(incident_id, count)


@router.post("/{incident_id}/cancel", response_model=Incident)
async def cancel(incident_id: IncidentId, body: CancelIn, hub: HubDep, who: Dispatcher,
                 incidents: IncidentsDep) -> dict[str, Any]:
    """Withdraw one unit from the incident; the incident stays open."""
    view = await incidents.cancel(incident_id, body.unit_id, body.reason)
    await audit(hub, who, "incident.cancel", incident_id, {"unit_id": body.unit_id, "reason": body.reason})
    return view


@router.post("/{incident_id}/reassign", response_model=Incident)
async def reassign(incident_id: IncidentId, body: ReassignIn, hub: HubDep, who: Dispatcher,
                   incidents: IncidentsDep) -> dict[str, Any]:
    view = await incidents.reassign(incident_id, body.from_unit_id, body.to_unit_id, body.reason)
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


@router.post("/{incident_id}/divert", response_model=Incident)
async def divert(incident_id: IncidentId, hub: HubDep, who: Dispatcher, incidents: IncidentsDep,
                 body: DivertIn | None = None) -> dict[str, Any]:
    """Non-emergency/non-police (双非): hand the incident to the 12345 hotline."""
    reason = body.reason if body else DivertIn().reason
    view = await incidents.divert(incident_id, reason)
    await audit(hub, who, "incident.divert", incident_id, {"reason": reason})
    return view


@router.post("/{incident_id}/events", response_model=Incident)
async def add_event(incident_id: IncidentId, body: EventIn, hub: HubDep, who: Dispatcher,
                    incidents: IncidentsDep) -> dict[str, Any]:
    if body.ts is not None and body.ts > now_ms() + 60_000:
        raise ApiError(422, "invalid", "ts: must not be in the future")
    view = await incidents.add_event(incident_id, body.model_dump())
    await audit(hub, who, "incident.event", incident_id, body.model_dump(exclude_none=True))
    return view


@router.post("/{incident_id}/close", response_model=Incident)
async def close(incident_id: IncidentId, hub: HubDep, who: Dispatcher, incidents: IncidentsDep,
                body: CloseIn | None = None) -> dict[str, Any]:
    reason = body.reason if body else ""
    view = await incidents.close(incident_id, reason)
    await audit(hub, who, "incident.close", incident_id, {"reason": reason})
    return view


@reports_router.get("/alerts", response_model=AlertList)
async def alerts(who: Reader, incidents: IncidentsDep,
                 limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
    """Recent alerts (SOS, unacknowledged dispatches), newest first."""
    return {"alerts": incidents.alerts.list(limit)}


@reports_router.get("/reports/heatmap", response_model=Heatmap)
async def heatmap(
    who: Reader, incidents: IncidentsDep,
    from_ms: Annotated[int | None, Query(alias="from", ge=0, le=MAX_TS)] = None,
    to_ms: Annotated[int | None, Query(alias="to", ge=0, le=MAX_TS)] = None,
    cell_m: Annotated[float, Query(ge=50, le=5000)] = 250.0,
) -> dict[str, Any]:
    """Incidents per grid cell over a period (热力图), for the one-map's heatmap layer."""
    from_ms, to_ms = _period(from_ms, to_ms)
    cells = await incidents.store.heatmap(from_ms, to_ms, cell_m)
    return {"from": from_ms, "to": to_ms, "cell_m": cell_m, "max": max((c["count"] for c in cells), default=0),
            "cells": [{"lat": round(c["lat"], 6), "lon": round(c["lon"], 6), "count": c["count"]} for c in cells]}


def _period(from_ms: int | None, to_ms: int | None) -> tuple[int, int]:
    """Default: the 7 days up to now; a reversed period is a 400."""
    to_ms = to_ms if to_ms is not None else now_ms() + 1
    from_ms = from_ms if from_ms is not None else to_ms - 7 * DAY_MS
    if from_ms > to_ms:
        raise ApiError(400, "bad_request", "from must not be after to")
    return from_ms, to_ms


@reports_router.get("/handovers", response_model=Handovers)
async def handovers(who: Reader, incidents: IncidentsDep) -> dict[str, Any]:
    """The 12345 hand-overs of diverted incidents not accepted yet, with their attempts and last error."""
    hotline = incidents.hotline
    if hotline is None:
        raise ApiError(503, "unavailable", "the 12345 hand-over is not running")
    return hotline.snapshot()


@reports_router.get("/reports/response-times", response_model=ResponseTimes)
async def response_times(
    who: Reader, incidents: IncidentsDep,
    from_ms: Annotated[int | None, Query(alias="from", ge=0, le=MAX_TS)] = None,
    to_ms: Annotated[int | None, Query(alias="to", ge=0, le=MAX_TS)] = None,
    group_by: Annotated[Literal["category", "unit", "policy"], Query()] = "category",
) -> dict[str, Any]:
    from_ms, to_ms = _period(from_ms, to_ms)
    return await incidents.report(from_ms, to_ms, group_by)
