"""The FastAPI application: routers, error handlers, static files."""

from __future__ import annotations

from importlib import resources

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from hub.api import errors
from hub.api.body_limit import BodyLimit
from hub.api.inputs import refuse_unstorable_params
from hub.api.routes import drones, health, incidents, live, one_map, streams, units
from hub.server import Hub
from video.http import video_router


def create_app(hub: Hub) -> FastAPI:
    # Every route, the WHIP/WHEP ones and those added later included, checks its path and query values.
    app = FastAPI(title="fieldhub", version="0.1.0", dependencies=[Depends(refuse_unstorable_params)])
    app.state.hub = hub
    errors.install(app)
    # Outside the routes and their exception handlers: a body over the limit is refused before anything runs.
    app.add_middleware(BodyLimit, max_bytes=hub.settings.http_max_body_bytes)
    app.include_router(health.router)
    app.include_router(units.router)
    app.include_router(incidents.router)
    app.include_router(live.router)
    app.include_router(one_map.router)
    app.include_router(drones.router)
    app.include_router(streams.router)
    if hub.video is not None:  # WHIP/WHEP: the relay runs inside the hub
        app.include_router(video_router(hub.video.service, streams.publish_authorizer(hub),
                                        streams.view_authorizer(hub)))
    static = resources.files("hub") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app
