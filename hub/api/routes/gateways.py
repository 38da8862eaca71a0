"""The phone apps' HTTP receivers: OwnTracks (HTTP mode), OsmAnd / Traccar Client, and Traccar's position forwarding.

The apps authenticate as devices, with their own secret (OwnTracks: Basic user = device id, password = secret;
OsmAnd / Traccar Client: ``key`` in the server URL), not with an API token; the gateways check it
(:mod:`hub.gateways.phones`). Traccar's forwarding authenticates the Traccar server with an API token in its
``forward.header`` (``Authorization: Bearer ...``) of role ``device`` or ``admin``. Give a Traccar server a
``device`` token (``fieldhub token create --role device --name traccar``): it passes none of the API's reader,
dispatcher or admin checks, so the Traccar configuration holds no power over incidents, units or tokens. A ``device``
token bound to one device may forward that device's positions only (403 for another's).

The gateways are the running hub's (``hub.owntracks``, ``hub.osmand``; None when the gateway is off: 404).
Every answer to device input is the gateway's :class:`~hub.gateways.phones.Outcome`; a refusal
is the API's JSON error. Bodies are within the API's body limit (:mod:`hub.api.body_limit`) before a route runs,
and within the codecs' own limit (64 KiB) before they are parsed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from hub.api.deps import Principal, client_address, require
from hub.api.errors import ApiError, error_body
from hub.gateways.osmand.gateway import OsmAndGateway
from hub.gateways.owntracks.gateway import OwnTracksGateway
from hub.gateways.phones import Outcome

__all__ = ["router"]

router = APIRouter(prefix="/gateway", tags=["gateways"])


def _gateway(request: Request, name: str) -> Any:
    # The app's own (a test app's), else the running hub's.
    state = request.app.state
    return getattr(state, name, None) or getattr(getattr(state, "hub", None), name, None)


def get_owntracks(request: Request) -> OwnTracksGateway:
    gateway: OwnTracksGateway | None = _gateway(request, "owntracks")
    if gateway is None:
        raise ApiError(404, "not_found", "the OwnTracks gateway is off on this hub (FIELDHUB_OWNTRACKS)")
    return gateway


def get_osmand(request: Request) -> OsmAndGateway:
    gateway: OsmAndGateway | None = _gateway(request, "osmand")
    if gateway is None:
        raise ApiError(404, "not_found", "the OsmAnd / Traccar gateway is off on this hub (FIELDHUB_OSMAND)")
    return gateway


OwnTracksDep = Annotated[OwnTracksGateway, Depends(get_owntracks)]
OsmAndDep = Annotated[OsmAndGateway, Depends(get_osmand)]
Forwarder = Annotated[Principal, require("device")]  # and admin


def _answer(outcome: Outcome) -> Response:
    if outcome.status == 200:
        if outcome.body is None:
            return Response(status_code=200)
        return JSONResponse(outcome.body, headers=outcome.headers)
    return JSONResponse(error_body(outcome.reason, outcome.detail or outcome.reason), status_code=outcome.status,
                        headers=outcome.headers)


@router.post("/owntracks")
async def owntracks(request: Request, gateway: OwnTracksDep) -> Response:
    """OwnTracks' HTTP mode: the app's JSON message; 200 ``[]`` (or a ``reportLocation`` command) once stored."""
    body = await request.body()
    return _answer(await gateway.http(request.headers.get("authorization"), body, client_address(request)))


@router.get("/osmand", operation_id="osmand_report_get")
@router.post("/osmand", operation_id="osmand_report_post")
async def osmand(request: Request, gateway: OsmAndDep) -> Response:
    """OsmAnd / Traccar Client: ``?id=...&lat=...&lon=...&timestamp=...&key=<secret>``, or the same as a form body,
    or Traccar Client 9's JSON body; 200 once stored."""
    body = await request.body()
    outcome = await gateway.report(request.url.query, body, request.headers.get("content-type"),
                                   client_address(request))
    return _answer(outcome)


@router.post("/traccar")
async def traccar(request: Request, who: Forwarder, gateway: OsmAndDep) -> Response:
    """Traccar's JSON position forwarding: 200 ``{"stored": 1}``, or ``{"stored": 0, "refused": "unknown_device"}``
    for a device that is not an OsmAnd phone of this hub."""
    body = await request.body()
    bound = who.device_id if who.role == "device" else None
    return _answer(await gateway.forward(body, bound))
