"""Response models of the hub's state and the reports across incidents: health, map settings, heatmap,
response times, 12345 hand-overs.

Like :mod:`hub.api.models` they describe the JSON the hub already builds and never reshape it: fields in the
order the keys are written, every field required, any other key passed through (``extra="allow"``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from hub.api.models import Number, View

__all__ = ["Handovers", "Health", "HeatCell", "Heatmap", "MapConfig", "ResponseTimes"]


class Health(View):
    """Liveness, and whether the broker and the database are reachable; a degraded storage mode says why."""

    status: str
    mqtt: bool
    database: bool
    storage_mode: str
    storage_mode_reason: str


class MapConfig(View):
    """The one-map's tiles (``tile_url`` null: the vector base layer) and its initial view."""

    tile_url: str | None
    tile_attribution: str
    center: list[Number]  # [lat, lon]
    zoom: Number
    tile_datum: Literal["wgs84", "gcj02"]  # the tiles' datum: "gcj02" makes the page convert positions for display


class HeatCell(View):
    lat: Number
    lon: Number
    count: int


class Heatmap(View):
    """Incidents received in a period counted per grid cell of about ``cell_m`` metres."""

    from_: int = Field(alias="from")
    to: int
    cell_m: Number
    max: int
    cells: list[HeatCell]


class ResponseTimes(View):
    """Per milestone: count, mean, p50, p90 and compliance, overall and per group (SPEC 4)."""

    from_: int = Field(alias="from")
    to: int
    group_by: str
    groups: dict[str, dict[str, Any]]
    overall: dict[str, Any]
    diverted: dict[str, Any]


class Handovers(View):
    """The 12345 hand-over's counters and the diverted incidents not accepted yet."""

    configured: bool
    running: bool
    accepted: int
    attempts: int
    duplicates: int
    failures: dict[str, int]  # by reason class
    pending: list[dict[str, Any]]
