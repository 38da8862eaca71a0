"""Response models of the main resources (units, incidents, assignments, drones, streams), for ``/docs``.

They describe the JSON the services already build (``../shared/SPEC.md``); they never reshape it. Every field
is required (a view that lacks one is a bug, answered 500, not a quietly invented ``null``), and a key the
model does not name passes through untouched (``extra="allow"``), so the wire stays exactly what the service
returned. Numbers that may be whole or fractional are :data:`Number`, so a ``5`` is not sent as ``5.0``.
Where a shape is open-ended (a drone's telemetry, an SLA entry, a log entry) the field stays ``dict[str, Any]``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["Assignment", "Dispatched", "Drone", "DroneList", "Incident", "Position", "Stream", "StreamList", "Unit",
           "UnitDetail", "UnitList"]

Number = int | float  # smart union: an int stays an int, a float a float


class View(BaseModel):
    model_config = ConfigDict(extra="allow")


class Position(View):
    """A unit's or a stream's last fix."""

    ts: int
    lat: Number
    lon: Number
    acc: Number | None
    speed: Number | None
    heading: Number | None


class DeviceState(View):
    device_id: str
    kind: str | None
    online: bool
    battery: Number | None
    last_fix_ts: int | None


class Unit(View):
    """A dispatchable unit, live: `status` (SPEC 4) is `offline` while its devices are silent."""

    unit_id: str
    name: str
    kind: str
    status: str
    online: bool
    position: Position | None
    home: dict[str, Number] | None
    capabilities: list[str]
    devices: list[DeviceState]


class UnitDetail(Unit):
    incident_id: str | None  # the incident the unit is assigned to


class UnitList(View):
    units: list[Unit]


class Assignment(View):
    """One dispatched unit of an incident: each milestone time in epoch ms, or null while not reached."""

    unit_id: str
    status: str
    dispatched: int | None
    acknowledged: int | None
    departed: int | None
    contacted: int | None
    arrived: int | None
    cleared: int | None
    cancelled: int | None
    cmd_id: str | None
    sources: dict[str, str]  # milestone -> device, geofence, motion, manual or api
    aerial: bool


class Incident(View):
    """An incident with its milestones, assignments, SLA evaluation and log (SPEC 4)."""

    id: str
    category: str
    priority: int
    lat: Number
    lon: Number
    address: str
    summary: str
    status: str
    policy: str | None
    arrival_radius_m: Number
    received_at: int
    created_at: int
    closed_at: int | None
    diversion: dict[str, Any] | None
    milestones: dict[str, dict[str, Any] | None]  # name -> {ts, source, unit_id} or null
    assignments: list[Assignment]
    sla: list[dict[str, Any]]
    log: list[dict[str, Any]]
    log_size: int


class Dispatched(View):
    """The assignments a dispatch made."""

    incident_id: str
    assignments: list[Assignment]


class Drone(View):
    """A drone of the fleet as the hub sees it; nested telemetry stays open-ended."""

    drone_id: str
    unit_id: str
    name: str
    system_id: int
    link: str
    signing: str  # signed, unsigned or refused
    refused: dict[str, Any]
    armed: bool
    mode: str | None
    landed: str | None
    position: dict[str, Any] | None
    battery_pct: Number | None
    dock: dict[str, Any]
    state: str
    reason: str | None
    actions: list[str]  # what an operator may command now
    mission: dict[str, Any] | None
    failsafe: dict[str, Any]
    telemetry: dict[str, Any]
    prearm: dict[str, Any]
    home: dict[str, Any] | None
    clock: dict[str, Any]
    reboots: int
    texts: list[dict[str, Any]]
    updated_at: int


class DroneList(View):
    drones: list[Drone]


class Stream(View):
    """A live video stream (WHIP publish) with its device, unit, incident and position."""

    stream_id: str
    device_id: str
    unit_id: str | None
    incident_id: str | None
    position: Position | None
    started_at: int
    codec: str | None
    viewers: int


class StreamList(View):
    streams: list[Stream]
