"""Liveness, metrics and the one-map page."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from hub.api.deps import HubDep, Reader
from hub.api.report_models import Health
from hub.metrics import render

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz(hub: HubDep) -> dict[str, Any]:
    return {
        "status": "ok",
        "mqtt": hub.bridge is not None and hub.bridge.connected.is_set(),
        "database": hub.writer.available,
        "storage_mode": hub.db.mode,
        # Why this mode (e.g. TimescaleDB present but unusable, or without compression): a degraded mode is visible.
        "storage_mode_reason": hub.db.mode_reason,
    }


@router.get("/metrics")
async def metrics(hub: HubDep, _: Reader) -> Response:
    """Behind a reader's token: the counters tell who is online, how busy and what was refused (Prometheus:
    ``authorization: {type: Bearer, credentials_file: ...}`` in the scrape config)."""
    return Response(render(hub.registry), media_type="text/plain; version=0.0.4")


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> Response:
    """Browsers ask for it whatever the page says; the page's own icon is /static/favicon.svg."""
    icon = resources.files("hub.web") / "static" / "favicon.svg"
    return Response(icon.read_bytes(), media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


@router.get("/", include_in_schema=False)
async def index() -> HTMLResponse:
    page = resources.files("hub.web") / "static" / "index.html"
    return HTMLResponse(page.read_text(encoding="utf-8"))
