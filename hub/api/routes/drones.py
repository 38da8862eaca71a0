"""Drones: the fleet, operator commands (goto, RTL, land, return to dock, enable failsafe, mission) and drone
dispatch to an incident (SPEC 3, 6). Refusals (`DroneNotFound`, `DroneCommandFailed` by its code ...) are answered
by `hub.api.errors.ERRORS`."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import Field

from hub.api.deps import DronesDep, HubDep, MaybeDronesDep, Principal, Reader, require
from hub.api.inputs import ApiModel
from hub.api.models import CommandAccepted, Drone, DroneCommandList, DroneList, DroneSent
from hub.api.routes.audit import audit
from hub.api.routes.incidents import ID, IncidentId
from hub.drones.ops import Waypoint
from hub.drones.service import DroneCommandFailed

router = APIRouter(prefix="/api/v1/drones", tags=["drones"])
# Sending a drone is an action on the incident: under its path.
incident_router = APIRouter(prefix="/api/v1/incidents", tags=["drones"])

DroneId = Annotated[str, Path(pattern=ID)]
Operator = Annotated[Principal, require("drone_operator")]
# Sending a drone to an incident is the dispatcher's call as much as the drone operator's.
DroneDispatcher = Annotated[Principal, require("dispatcher", "drone_operator")]


class GotoIn(ApiModel):
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)
    # Metres above the dock; 120 m is the usual legal ceiling for small drones.
    alt: float = Field(default=60.0, ge=10, le=120, allow_inf_nan=False)


class SendIn(ApiModel):
    drone_id: str | None = Field(default=None, pattern=ID)
    # The operator's explicit override: send a drone whose autopilot has no working link failsafe.
    without_failsafe: bool = False


class WaypointIn(ApiModel):
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)
    alt: float = Field(default=60.0, ge=10, le=120, allow_inf_nan=False)
    hold_s: float = Field(default=0.0, ge=0, le=600, allow_inf_nan=False)


class MissionIn(ApiModel):
    waypoints: list[WaypointIn] = Field(min_length=1, max_length=100)
    loiter_s: float = Field(default=0.0, ge=0, le=1800, allow_inf_nan=False)  # a hold at the last waypoint
    rtl: bool = True  # return to launch (the dock) at the end


def _who(p: Principal) -> tuple[str, str]:
    return (p.name, p.role)


async def _audited(hub: HubDep, who: Principal, action: str, drone_id: str, detail: dict[str, object],
                   call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Run a drone command and audit it with its outcome: accepted, or why the drone or its link failed it
    (an unknown drone is not a command and is not audited). The failure itself travels on to the error table."""
    try:
        result = await call
    except DroneCommandFailed as exc:
        await audit(hub, who, action, drone_id, {**detail, "result": exc.code})
        raise
    await audit(hub, who, action, drone_id, {**detail, "result": "accepted"})
    return result


@router.get("", response_model=DroneList)
async def list_drones(who: Reader, drones: MaybeDronesDep) -> dict[str, Any]:
    return {"drones": [] if drones is None else drones.views()}


@router.get("/{drone_id}", response_model=Drone)
async def get_drone(drone_id: DroneId, who: Reader, drones: DronesDep) -> dict[str, Any]:
    return drones.view(drones.record(drone_id))


@router.get("/{drone_id}/commands", response_model=DroneCommandList)
async def drone_commands(drone_id: DroneId, who: Reader, drones: DronesDep,
                         limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    drones.record(drone_id)  # an unknown drone is a 404
    return {"commands": await drones.audit.recent(drone_id, limit)}


@router.post("/{drone_id}/goto", status_code=202, response_model=CommandAccepted)
async def goto(drone_id: DroneId, body: GotoIn, hub: HubDep, who: Operator, drones: DronesDep) -> dict[str, Any]:
    return await _audited(hub, who, "drone.goto", drone_id, body.model_dump(),
                          drones.ops.goto(drone_id, body.lat, body.lon, body.alt, _who(who)))


@router.post("/{drone_id}/rtl", status_code=202, response_model=CommandAccepted)
async def rtl(drone_id: DroneId, hub: HubDep, who: Operator, drones: DronesDep) -> dict[str, Any]:
    return await _audited(hub, who, "drone.rtl", drone_id, {}, drones.ops.rtl(drone_id, _who(who)))


@router.post("/{drone_id}/land", status_code=202, response_model=CommandAccepted)
async def land(drone_id: DroneId, hub: HubDep, who: Operator, drones: DronesDep) -> dict[str, Any]:
    return await _audited(hub, who, "drone.land", drone_id, {}, drones.ops.land(drone_id, _who(who)))


@router.post("/{drone_id}/return", status_code=202, response_model=CommandAccepted)
async def return_to_dock(drone_id: DroneId, hub: HubDep, who: Operator, drones: DronesDep) -> dict[str, Any]:
    """A drone landed away from its dock flies back to it (home set to the dock, take off, RTL)."""
    return await _audited(hub, who, "drone.return", drone_id, {}, drones.ops.return_to_dock(drone_id, _who(who)))


@router.post("/{drone_id}/failsafe", status_code=202, response_model=CommandAccepted)
async def enable_failsafe(drone_id: DroneId, hub: HubDep, who: Operator, drones: DronesDep) -> dict[str, Any]:
    """Set the autopilot's link failsafe: the hub as its ground station, FS_GCS_ENABLE on (RTL)."""
    return await _audited(hub, who, "drone.failsafe", drone_id, {}, drones.ops.enable_failsafe(drone_id, _who(who)))


@router.post("/{drone_id}/mission", status_code=202, response_model=CommandAccepted)
async def mission(drone_id: DroneId, body: MissionIn, hub: HubDep, who: Operator, drones: DronesDep) -> dict[str, Any]:
    """Upload a mission (waypoints, a hold at the last one, RTL) and fly it; progress comes on the live feed."""
    waypoints = [Waypoint(w.lat, w.lon, w.alt, w.hold_s) for w in body.waypoints]
    return await _audited(hub, who, "drone.mission", drone_id, {"waypoints": len(waypoints), "rtl": body.rtl},
                          drones.ops.mission(drone_id, waypoints, _who(who), loiter_s=body.loiter_s, rtl=body.rtl))


@incident_router.post("/{incident_id}/drone", status_code=201, response_model=DroneSent)
async def send_drone(incident_id: IncidentId, hub: HubDep, who: DroneDispatcher, drones: DronesDep,
                     body: SendIn | None = None) -> dict[str, Any]:
    asked = None if body is None else body.drone_id
    override = body is not None and body.without_failsafe
    result = await drones.send_to_incident(incident_id, asked, _who(who), without_failsafe=override)
    await audit(hub, who, "incident.drone", incident_id, {"drone_id": result["drone_id"], "asked_for": asked,
                                                          "eta_s": result["eta_s"],
                                                          "without_failsafe": result["without_failsafe"]})
    return result
