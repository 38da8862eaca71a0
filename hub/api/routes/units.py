"""Units: the dispatchable resources and their devices."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import Field

from devices.clock import now_ms
from hub.api.deps import Dispatcher, HubDep, Reader
from hub.api.errors import ApiError
from hub.api.inputs import ApiModel, Line
from hub.api.models import Track, Unit, UnitDetail, UnitList
from hub.api.routes.audit import audit

router = APIRouter(prefix="/api/v1/units", tags=["units"])

ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
UnitId = Annotated[str, Path(pattern=ID)]


class Point(ApiModel):
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)


class UnitIn(ApiModel):
    name: Line = Field(min_length=1, max_length=100)
    kind: str = Field(default="patrol", pattern=r"^[a-z_]{1,32}$")
    devices: list[Annotated[str, Field(pattern=ID)]] = Field(default_factory=list, max_length=32)
    home: Point | None = None
    capabilities: list[Annotated[Line, Field(min_length=1, max_length=64)]] = Field(default_factory=list,
                                                                                   max_length=64)


@router.put("/{unit_id}", response_model=Unit)
async def put_unit(unit_id: UnitId, body: UnitIn, hub: HubDep, who: Dispatcher) -> dict[str, Any]:
    if len(set(body.devices)) != len(body.devices):
        raise ApiError(422, "invalid", "devices: the same device is listed twice")
    await hub.put_unit(unit_id, body.model_dump())
    await audit(hub, who, "unit.put", unit_id, body.model_dump())
    return hub.live.unit_view(unit_id, now_ms(), full=True)


@router.get("", response_model=UnitList)
async def list_units(hub: HubDep, who: Reader) -> dict[str, Any]:
    now = now_ms()
    return {"units": [hub.live.unit_view(u, now, full=True) for u in hub.live.units]}


@router.get("/{unit_id}", response_model=UnitDetail)
async def get_unit(unit_id: UnitId, hub: HubDep, who: Reader) -> dict[str, Any]:
    if unit_id not in hub.live.units:
        raise ApiError(404, "not_found", f"unit {unit_id} does not exist")
    view = hub.live.unit_view(unit_id, now_ms(), full=True)
    # A camera the hub can INVITE (GB/T 28181) is opened on demand: the one-map offers it a "Live" button.
    on_demand = hub.camera_video.owns if hub.camera_video is not None else None
    for device in view["devices"]:
        device["video_on_demand"] = on_demand is not None and on_demand(device["device_id"])
    view["incident_id"] = hub.incidents.assigned_to(unit_id) if hub.incidents is not None else None
    return view


MAX_TS = 4_102_444_800_000


@router.get("/{unit_id}/track", response_model=Track)
async def track(
    unit_id: UnitId, hub: HubDep, who: Reader,
    from_ms: Annotated[int | None, Query(alias="from", ge=0, le=MAX_TS)] = None,
    to_ms: Annotated[int | None, Query(alias="to", ge=0, le=MAX_TS)] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> dict[str, Any]:
    unit = hub.live.units.get(unit_id)
    if unit is None:
        raise ApiError(404, "not_found", f"unit {unit_id} does not exist")
    to_ms = to_ms if to_ms is not None else now_ms()
    from_ms = from_ms if from_ms is not None else to_ms - 3_600_000
    if from_ms > to_ms:
        raise ApiError(400, "bad_request", "from must not be after to")
    fixes = await hub.db.track(unit.devices, from_ms, to_ms, limit)
    return {"unit_id": unit_id, "from": from_ms, "to": to_ms, "fixes": fixes}
