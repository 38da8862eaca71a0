"""The one-map's own resources: who is looking, the base layer, the overlays and the map settings."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hub.api.access_models import Me
from hub.api.deps import HubDep, Reader
from hub.api.report_models import MapConfig

router = APIRouter(tags=["map"])


@router.get("/api/v1/me", response_model=Me)
async def me(who: Reader) -> dict[str, Any]:
    """The caller's token name and role: the page shows the dispatcher's actions only to those who may act."""
    return {"name": who.name, "role": who.role, "can_dispatch": who.role in ("dispatcher", "admin")}


@router.get("/api/v1/map")
async def base_map(hub: HubDep) -> dict[str, Any]:
    """The base layer: the road network of the (simulated) city, as GeoJSON."""
    return hub.base_map()


@router.get("/api/v1/map/overlays")
async def overlays(hub: HubDep, who: Reader) -> dict[str, Any]:
    """Duty posts (值守点) and patrol lines (必巡线), GeoJSON."""
    return hub.overlays()


@router.get("/api/v1/map/config", response_model=MapConfig)
async def map_config(hub: HubDep) -> dict[str, Any]:
    """Tile URL (None: the vector base layer), the datum its tiles are drawn in, the initial view.

    ``tile_datum`` "gcj02" (AMap/Gaode-style tiles) makes the page draw every WGS-84 position where those tiles
    put it, and take clicks back to WGS-84; positions in the API stay WGS-84 either way.
    """
    s = hub.settings
    min_lat, min_lon, max_lat, max_lon = hub.city().bounds()
    centre = s.map_center or ((min_lat + max_lat) / 2, (min_lon + max_lon) / 2)
    return {"tile_url": s.map_tile_url, "tile_attribution": s.map_tile_attribution, "center": list(centre),
            "zoom": s.map_zoom, "tile_datum": s.map_tile_datum}
