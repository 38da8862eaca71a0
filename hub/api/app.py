"""The FastAPI application: routers, error handlers, static files, security headers; `serve` runs it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from importlib import resources

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp

from hub.api import errors
from hub.api.body_limit import BodyLimit
from hub.api.deps import Reader
from hub.api.inputs import refuse_unstorable_params
from hub.api.routes import audit, devices, drones, gateways, health, incidents, live, one_map, streams, tokens, units
from hub.api.security_headers import SecurityHeaders, content_security_policy
from hub.server import Hub
from video.http import video_router

OPENAPI_URL = "/openapi.json"


class HubApp(FastAPI):
    """FastAPI with the security headers outside everything, Starlette's error middleware included: a 500
    (a bug) carries them too, which ``add_middleware`` (inside that middleware) could not give."""

    csp = content_security_policy()

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack(), self.csp)


def create_app(hub: Hub) -> FastAPI:
    # Every route, the WHIP/WHEP ones and those added later included, checks its path and query values.
    # FastAPI's own docs routes take no dependencies: they are off, and served behind a token below.
    app = HubApp(title="fieldhub", version="0.1.0", dependencies=[Depends(refuse_unstorable_params)],
                 docs_url=None, redoc_url=None, openapi_url=None)
    app.csp = content_security_policy(hub.settings.map_tile_url)
    app.state.hub = hub
    app.state.live_tickets = live.LiveTickets()
    errors.install(app)
    # Outside the routes and their exception handlers: a body over the limit is refused before anything runs.
    app.add_middleware(BodyLimit, max_bytes=hub.settings.http_max_body_bytes)
    app.include_router(health.router)
    app.include_router(docs_router(app.title))
    app.include_router(units.router)
    app.include_router(devices.router)
    app.include_router(incidents.router)
    app.include_router(incidents.reports_router)
    app.include_router(live.router)
    app.include_router(one_map.router)
    app.include_router(drones.router)
    app.include_router(drones.incident_router)
    app.include_router(streams.router)
    app.include_router(audit.router)
    app.include_router(tokens.router)
    app.include_router(gateways.router)
    if hub.video is not None:  # WHIP/WHEP: the relay runs inside the hub
        app.include_router(video_router(hub.video.service, streams.publish_authorizer(hub),
                                        streams.view_authorizer(hub), streams.session_authorizer(hub)))
    static = resources.files("hub.web") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app


async def serve(hub: Hub, host: str | None = None, port: int | None = None,
                started: asyncio.Event | None = None) -> None:
    """Serve the hub's HTTP API until cancelled or interrupted; `started` is set once it listens."""
    import uvicorn

    https = hub.https
    # log_config=None: uvicorn's records go to the root handlers, through their redacting filter (hub/logsafe.py).
    config = uvicorn.Config(create_app(hub), host=host or hub.settings.host, port=port or hub.settings.port,
                            log_level="warning", log_config=None, lifespan="off", ws_max_size=1 << 20,
                            ssl_context_factory=(lambda _config, _default: https) if https else None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if started is not None:
        started.set()
    try:
        await task
    finally:
        server.should_exit = True


def _docs_page(page: HTMLResponse) -> tuple[bytes, dict[str, str]]:
    """FastAPI's docs page with a policy of its own: Swagger UI and ReDoc come from their CDN, style themselves
    inline, and Swagger UI starts from one inline script, allowed by its hash (never 'unsafe-inline')."""
    body = bytes(page.body)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
                      for script in re.findall(rb"<script>(.*?)</script>", body, re.S))
    csp = ("default-src 'self'; "
           f"script-src 'self' https://cdn.jsdelivr.net {hashes}; "
           "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
           "font-src 'self' https://fonts.gstatic.com; img-src 'self' data: https:; worker-src 'self' blob:; "
           "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
    return body, {"Content-Security-Policy": csp, "Cache-Control": "no-store"}


def docs_router(title: str) -> APIRouter:
    """The OpenAPI description and its two viewers, for readers only: the schema maps every route to attack."""
    router = APIRouter(include_in_schema=False)
    swagger = _docs_page(get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{title} - Swagger UI"))
    redoc = _docs_page(get_redoc_html(openapi_url=OPENAPI_URL, title=f"{title} - ReDoc"))

    @router.get(OPENAPI_URL)
    async def openapi(request: Request, _: Reader) -> JSONResponse:
        return JSONResponse(request.app.openapi(), headers={"Cache-Control": "no-store"})

    @router.get("/docs")
    async def swagger_ui(_: Reader) -> HTMLResponse:
        return HTMLResponse(swagger[0], headers=swagger[1])

    @router.get("/redoc")
    async def redoc_ui(_: Reader) -> HTMLResponse:
        return HTMLResponse(redoc[0], headers=redoc[1])

    return router
