"""Response models of the main resources (units, incidents, assignments, drones, streams), for ``/docs``.

They describe the JSON the services already build (``../shared/SPEC.md``); they never reshape it. Every field
is required (a view that lacks one is a bug, answered 500, not a quietly invented ``null``), and a key the
model does not name passes through untouched (``extra="allow"``), so the wire stays exactly what the service
returned. Numbers that may be whole or fractional are :data:`Number`, so a ``5`` is not sent as ``5.0``.
Where a shape is open-ended (a drone's telemetry, an SLA entry, a log entry) the field stays ``dict[str, Any]``.
A model declares its fields in the order the service writes the keys: pydantic writes declared fields first, so
another order would reorder the JSON on the wire.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AlertList", "Assignment", "CommandAccepted", "DeviceDetail", "Dispatched", "Drone", "DroneCommand",
           "DroneCommandList", "DroneList", "DroneSent", "Fix", "Incident", "IncidentList", "IncidentSummary",
           "Number", "Position", "Recommendations", "Recording", "Recordings", "Stream", "StreamList", "Track",
           "Unit", "UnitDetail", "UnitList", "View"]

Number = int | float  # smart union: an int stays an int, a float a float


class View(BaseModel):
    model_config = ConfigDict(extra="allow")


class Fix(View):
    """A stored fix, as a unit's track lists it."""

    device_id: str
    ts: int
    lat: Number
    lon: Number
    alt: Number | None
    acc: Number | None
    speed: Number | None
    heading: Number | None
    battery: Number | None


class Track(View):
    """A unit's stored fixes from ``from`` to ``to`` (epoch ms)."""

    unit_id: str
    from_: int = Field(alias="from")
    to: int
    fixes: list[Fix]


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


class DeviceDetail(DeviceState):
    """A device as one unit's detail shows it: ``video_on_demand`` when a viewer may open its camera
    (``POST /api/v1/cameras/{device_id}/live``; a GB/T 28181 camera the hub INVITEs)."""

    video_on_demand: bool


class UnitDetail(Unit):
    devices: list[DeviceDetail]  # type: ignore[assignment]  # a narrower entry than the list's
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


class IncidentSummary(View):
    """An incident in a listing: no milestones, assignments or log (see :class:`Incident`)."""

    id: str
    category: str
    priority: int
    status: str
    policy: str | None
    lat: Number
    lon: Number
    received_at: int
    closed_at: int | None


class IncidentList(View):
    incidents: list[IncidentSummary]


class Recommendations(View):
    """The available units that would reach the incident first, each with its ETA."""

    incident_id: str
    recommendations: list[dict[str, Any]]


class AlertList(View):
    alerts: list[dict[str, Any]]  # SOS, unacknowledged dispatches, missed targets: each type its own keys


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


class DroneCommand(View):
    """One recorded drone command and how it ended."""

    ts: int
    drone_id: str
    command: str
    params: dict[str, Any]
    principal: str  # the token's name, or "system"
    role: str
    incident_id: str | None
    result: str  # accepted, rejected, timeout, link_lost, failed
    detail: str
    done_at: int


class DroneCommandList(View):
    commands: list[DroneCommand]


class CommandAccepted(View):
    """A drone command the autopilot accepted; some commands add keys (``set``, ``failsafe``, ``items``)."""

    drone_id: str
    command: str
    result: str


class DroneSent(View):
    """The drone sent to an incident, and why the others were not."""

    drone_id: str
    incident_id: str
    distance_m: Number
    eta_s: Number
    refused: dict[str, Any]  # drone id -> why it was not chosen
    failsafe: str
    without_failsafe: bool


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


class CameraLive(View):
    """A camera opened on demand: its live stream, to watch over WHEP (``/whep/{stream_id}``)."""

    device_id: str
    stream_id: str


class Recording(View):
    """One recorded segment file of a stream; ``path`` is the file's place under ``/api/v1/recordings/``."""

    stream_id: str
    device_id: str
    unit_id: str | None
    path: str
    start_ms: int
    end_ms: int
    frames: int
    complete: bool


class Recordings(View):
    incident_id: str
    recordings: list[Recording]
