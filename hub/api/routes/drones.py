"""Drones: the fleet, operator commands (goto, RTL, land, return to dock, enable failsafe, mission) and drone
dispatch to an incident (SPEC 3, 6)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import Field

from hub.api.deps import HubDep, Principal, Reader, require
from hub.api.errors import ApiError
from hub.api.inputs import ApiModel
from hub.api.routes.audit import audit
from hub.api.routes.incidents import ID, IncidentId, _api_error
from hub.drone_ops import Waypoint
from hub.drones import DroneCommandFailed, DroneNotFound, DroneService, NoDroneAvailable
from hub.incidents import IncidentError

router = APIRouter(tags=["drones"])

DroneId = Annotated[str, Path(pattern=ID)]
Operator = Annotated[Principal, require("drone_operator")]
# Sending a drone to an incident is the dispatcher's call as much as the drone operator's.
DroneDispatcher = Annotated[Principal, require("dispatcher", "drone_operator")]
_STATUS = {"link_lost": 409, "command_rejected": 409, "command_failed": 409, "command_timeout": 504,
           "signed_no_key": 409, "refused_unsigned": 409, "no_position": 409, "battery": 409, "not_ready": 409}


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


def _service(hub: Any) -> DroneService:
    service: DroneService | None = getattr(hub, "drones", None)
    if service is None:
        raise ApiError(503, "unavailable", "no drone link is configured (FIELDHUB_MAVLINK_URL)")
    return service


def _who(p: Principal) -> tuple[str, str]:
    return (p.name, p.role)


async def _run(call: Any) -> dict[str, Any]:
    try:
        result: dict[str, Any] = await call
        return result
    except DroneNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
    except NoDroneAvailable as exc:
        raise ApiError(409, "no_drone_available", str(exc)) from exc
    except DroneCommandFailed as exc:
        raise ApiError(_STATUS.get(exc.code, 409), exc.code, str(exc)) from exc
    except IncidentError as exc:
        raise _api_error(exc) from exc


async def _audited(hub: Any, who: Principal, action: str, drone_id: str, detail: dict[str, object],
                   call: Any) -> dict[str, Any]:
    """Run a drone command and audit it with its outcome: accepted, or why the drone or its link failed it
    (an unknown drone is not a command and is not audited)."""
    try:
        result = await _run(call)
    except ApiError as exc:
        if exc.code in _STATUS:
            await audit(hub, who, action, drone_id, {**detail, "result": exc.code})
        raise
    await audit(hub, who, action, drone_id, {**detail, "result": "accepted"})
    return result


@router.get("/api/v1/drones")
async def list_drones(hub: HubDep, who: Reader) -> dict[str, Any]:
    service = getattr(hub, "drones", None)
    return {"drones": [] if service is None else service.views()}


@router.get("/api/v1/drones/{drone_id}")
async def get_drone(drone_id: DroneId, hub: HubDep, who: Reader) -> dict[str, Any]:
    service = _service(hub)
    return await _run(_view(service, drone_id))


async def _view(service: DroneService, drone_id: str) -> dict[str, Any]:
    return service.view(service.record(drone_id))


@router.get("/api/v1/drones/{drone_id}/commands")
async def drone_commands(drone_id: DroneId, hub: HubDep, who: Reader,
                         limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    service = _service(hub)
    await _run(_view(service, drone_id))
    return {"commands": await service.audit.recent(drone_id, limit)}


@router.post("/api/v1/drones/{drone_id}/goto", status_code=202)
async def goto(drone_id: DroneId, body: GotoIn, hub: HubDep, who: Operator) -> dict[str, Any]:
    return await _audited(hub, who, "drone.goto", drone_id, body.model_dump(),
                          _service(hub).ops.goto(drone_id, body.lat, body.lon, body.alt, _who(who)))


@router.post("/api/v1/drones/{drone_id}/rtl", status_code=202)
async def rtl(drone_id: DroneId, hub: HubDep, who: Operator) -> dict[str, Any]:
    return await _audited(hub, who, "drone.rtl", drone_id, {}, _service(hub).ops.rtl(drone_id, _who(who)))


@router.post("/api/v1/drones/{drone_id}/land", status_code=202)
async def land(drone_id: DroneId, hub: HubDep, who: Operator) -> dict[str, Any]:
    return await _audited(hub, who, "drone.land", drone_id, {}, _service(hub).ops.land(drone_id, _who(who)))


@router.post("/api/v1/drones/{drone_id}/return", status_code=202)
async def return_to_dock(drone_id: DroneId, hub: HubDep, who: Operator) -> dict[str, Any]:
    """A drone landed away from its dock flies back to it (home set to the dock, take off, RTL)."""
    return await _audited(hub, who, "drone.return", drone_id, {}, _service(hub).ops.return_to_dock(drone_id, _who(who)))


@router.post("/api/v1/drones/{drone_id}/failsafe", status_code=202)
async def enable_failsafe(drone_id: DroneId, hub: HubDep, who: Operator) -> dict[str, Any]:
    """Set the autopilot's link failsafe: the hub as its ground station, FS_GCS_ENABLE on (RTL)."""
    return await _audited(hub, who, "drone.failsafe", drone_id, {},
                          _service(hub).ops.enable_failsafe(drone_id, _who(who)))


@router.post("/api/v1/drones/{drone_id}/mission", status_code=202)
async def mission(drone_id: DroneId, body: MissionIn, hub: HubDep, who: Operator) -> dict[str, Any]:
    """Upload a mission (waypoints, a hold at the last one, RTL) and fly it; progress comes on the live feed."""
    waypoints = [Waypoint(w.lat, w.lon, w.alt, w.hold_s) for w in body.waypoints]
    return await _audited(hub, who, "drone.mission", drone_id, {"waypoints": len(waypoints), "rtl": body.rtl},
                          _service(hub).ops.mission(drone_id, waypoints, _who(who), loiter_s=body.loiter_s,
                                                    rtl=body.rtl))


@router.post("/api/v1/incidents/{incident_id}/drone", status_code=201)
async def send_drone(incident_id: IncidentId, hub: HubDep, who: DroneDispatcher,
                     body: SendIn | None = None) -> dict[str, Any]:
    asked = None if body is None else body.drone_id
    override = body is not None and body.without_failsafe
    result = await _run(_service(hub).send_to_incident(incident_id, asked, _who(who), without_failsafe=override))
    await audit(hub, who, "incident.drone", incident_id, {"drone_id": result["drone_id"], "asked_for": asked,
                                                          "eta_s": result["eta_s"],
                                                          "without_failsafe": result["without_failsafe"]})
    return result
