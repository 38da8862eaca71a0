"""The response models leave the JSON on the wire as it was, byte for byte.

FastAPI validates a route's return value into its response model and writes the model: a field declared in
another order than the service writes its keys, an ``int`` field given ``5.0`` or a ``float`` field given ``5``
would change the bytes. Each answer a model writes is compared here with what the same return value gave under
the ``dict[str, Any]`` annotation the routes had before (FastAPI's own serialization, wrapped in the hub's
process), while the tests drive every typed route with the real services behind it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastapi.routing
import pytest
from pydantic import BaseModel, TypeAdapter

from devices.client import DeviceClient
from devices.clock import now_ms
from devices.payloads import Fix
from hub.api.access_models import DeviceLogin
from hub.api.app import create_app
from hub.config import Settings
from hub.infra.embedded import free_port
from hub.server import Hub
from tests.conftest import ADMIN_TOKEN, TOKEN, RunningHub, running_hub, wait_for
from tests.hub.test_drones import BASE, SCENE, drone_stack, ready
from tests.hub.test_video import Pattern
from video.client import WhipPublisher
from video.recording import list_segments

UNTYPED = TypeAdapter(dict[str, Any])


class Wire:
    """Wraps FastAPI's response serialization: every answer a model writes, next to the untyped one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, rh: RunningHub) -> None:
        self.rh = rh
        self.models: set[str] = set()
        self.changed: list[str] = []
        original = fastapi.routing.serialize_response

        async def serialize(**kwargs: Any) -> Any:
            content = await original(**kwargs)
            field = kwargs.get("field")
            model = field.field_info.annotation if field is not None else None
            if isinstance(model, type) and issubclass(model, BaseModel):
                assert kwargs.get("dump_json"), "FastAPI no longer writes JSON straight from the model"
                before = UNTYPED.dump_json(UNTYPED.validate_python(kwargs["response_content"]), by_alias=True)
                self.models.add(model.__name__)
                if content != before:
                    self.changed.append(f"{model.__name__}:\n  before {before[:600]!r}\n  after  {content[:600]!r}")
            return content

        monkeypatch.setattr(fastapi.routing, "serialize_response", serialize)

    async def call(self, method: str, path: str, token: str = TOKEN, **kwargs: Any) -> Any:
        r = await self.rh.api.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        assert not self.changed, "\n".join(self.changed)
        return r.json()


@pytest.fixture
def wire(hub: RunningHub, monkeypatch: pytest.MonkeyPatch) -> Wire:
    return Wire(monkeypatch, hub)


async def test_units_incidents_reports_and_the_map_keep_their_json(hub: RunningHub, wire: Wire) -> None:
    await wire.call("PUT", "/api/v1/units/S1", json={"name": "S1", "devices": ["s1-trk"], "capabilities": ["medic"],
                                                     "home": {"lat": 34.26, "lon": 117}})
    await wire.call("PUT", "/api/v1/units/S2", json={"name": "S2", "devices": ["s2-trk"]})
    t0 = now_ms() - 60_000
    async with DeviceClient("s1-trk", await hub.device_url("s1-trk"), unit_id="S1") as dev:
        for i in range(5):  # whole and fractional numbers, some optional fields absent
            dev.send_fix(Fix(t0 + i * 1000, 34.261 + i * 1e-4, 117.18, acc=5 if i % 2 else 4.5, speed=0.0))
        await wait_for(lambda: _stored(hub, 5))
    await wire.call("GET", "/api/v1/units")
    await wire.call("GET", "/api/v1/units/S1")
    await wire.call("GET", f"/api/v1/units/S1/track?from={t0}&to={t0 + 10_000}")

    created = await wire.call("POST", "/api/v1/incidents", json={
        "category": "theft", "priority": 2, "lat": 34.262, "lon": 117.19, "address": "1 Main St",
        "policy": "rapid_12358"})
    incident = f"/api/v1/incidents/{created['id']}"
    await wire.call("GET", "/api/v1/incidents")
    await wire.call("GET", "/api/v1/incidents?status=open")
    await wire.call("GET", f"{incident}/recommendations?count=2")
    await wire.call("POST", f"{incident}/dispatch", json={"unit_ids": ["S1", "S2"]})
    await wire.call("POST", f"{incident}/events", json={"type": "contacted", "unit_id": "S1"})
    await wire.call("POST", f"{incident}/events", json={"type": "note", "text": "caller waiting outside"})
    await wire.call("POST", f"{incident}/cancel", json={"unit_id": "S2"})
    await wire.call("GET", incident)
    await wire.call("POST", f"{incident}/close", json={"reason": "resolved"})
    diverted = await wire.call("POST", "/api/v1/incidents", json={
        "category": "noise", "priority": 4, "lat": 34.25, "lon": 117.2, "divert": False})
    await wire.call("POST", f"/api/v1/incidents/{diverted['id']}/divert", json={})

    period = f"from={t0 - 60_000}&to={now_ms() + 60_000}"
    await wire.call("GET", "/api/v1/alerts")
    await wire.call("GET", f"/api/v1/reports/heatmap?{period}&cell_m=300")
    for group_by in ("category", "unit", "policy"):
        await wire.call("GET", f"/api/v1/reports/response-times?{period}&group_by={group_by}")
    await wire.call("GET", "/healthz")
    await wire.call("GET", "/api/v1/me")
    await wire.call("GET", "/api/v1/map/config")
    await wire.call("POST", "/api/v1/live/ticket")
    assert wire.models == {"Unit", "UnitList", "UnitDetail", "Track", "Incident", "IncidentList", "Recommendations",
                           "Dispatched", "AlertList", "Heatmap", "ResponseTimes", "Health", "Me", "MapConfig",
                           "LiveTicket"}


async def test_tokens_device_logins_and_the_audit_log_keep_their_json(hub: RunningHub, wire: Wire) -> None:
    await wire.call("PUT", "/api/v1/units/A1", json={"name": "A1", "devices": ["a1-cam"]})
    await wire.call("GET", "/api/v1/tokens", ADMIN_TOKEN)
    new = await wire.call("POST", "/api/v1/tokens", ADMIN_TOKEN, json={"name": "wall screen", "role": "viewer",
                                                                        "expires_in_s": 3600})
    await wire.call("POST", "/api/v1/tokens", ADMIN_TOKEN, json={"name": "cam", "role": "device",
                                                                  "device_id": "a1-cam"})
    await wire.call("DELETE", f"/api/v1/tokens/{new['id']}", ADMIN_TOKEN)
    await wire.call("GET", "/api/v1/tokens", ADMIN_TOKEN)

    # A new or rotated login is answered by a JSONResponse of its own (no-store): its model only documents it.
    for answer in (await wire.call("POST", "/api/v1/devices", ADMIN_TOKEN, json={"device_id": "a1-cam",
                                                                                 "unit_id": "A1", "kind": "bodycam"}),
                   await wire.call("POST", "/api/v1/devices/a1-cam/rotate", ADMIN_TOKEN)):
        assert list(DeviceLogin.model_validate(answer).model_dump()) == list(answer)
    await wire.call("GET", "/api/v1/devices", ADMIN_TOKEN)
    await wire.call("DELETE", "/api/v1/devices/a1-cam", ADMIN_TOKEN)
    await wire.call("GET", "/api/v1/devices", ADMIN_TOKEN)

    page = await wire.call("GET", "/api/v1/audit?limit=3", ADMIN_TOKEN)
    assert page["next_before_id"] is not None
    await wire.call("GET", f"/api/v1/audit?before_id={page['next_before_id']}", ADMIN_TOKEN)
    assert wire.models == {"Unit", "TokenList", "NewToken", "Token", "DeviceLoginList", "DeviceRevoked", "AuditPage"}


async def test_streams_and_recordings_keep_their_json(hub: RunningHub, wire: Wire) -> None:
    await wire.call("PUT", "/api/v1/units/W1", json={"name": "W1", "devices": ["w1-cam"]})
    incident = (await wire.call("POST", "/api/v1/incidents", json={"category": "fight", "priority": 3,
                                                                    "lat": 34.26, "lon": 117.18}))["id"]
    await wire.call("POST", f"/api/v1/incidents/{incident}/dispatch", json={"unit_ids": ["W1"]})
    publisher = WhipPublisher(f"{hub.base_url}/whip/w1-cam", ADMIN_TOKEN, Pattern())  # an admin may publish
    stream_id = await publisher.start()
    video = hub.hub.video
    assert video is not None
    try:
        await wait_for(lambda: _streams(hub))
        assert [s["stream_id"] for s in (await wire.call("GET", "/api/v1/streams"))["streams"]] == [stream_id]
        await wait_for(lambda: list_segments(video.recordings_dir, stream_id), timeout=10)  # frames are recorded
    finally:
        await publisher.stop()
    await wait_for(lambda: [s for s in list_segments(video.recordings_dir, stream_id) if s.complete], timeout=10)
    assert (await wire.call("GET", f"/api/v1/incidents/{incident}/recordings"))["recordings"]
    assert wire.models == {"Unit", "Incident", "Dispatched", "StreamList", "Recordings"}


async def test_handovers_keep_their_json(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # A 12345 hotline that refuses connections: the hand-over stays pending, with its attempts and last error.
    refusing = settings.model_copy(update={"hotline_url": f"http://127.0.0.1:{free_port()}/handover",
                                           "port": free_port()})
    async with running_hub(refusing) as rh:
        wire = Wire(monkeypatch, rh)
        incident = (await wire.call("POST", "/api/v1/incidents", json={"category": "noise", "priority": 4,
                                                                        "lat": 34.25, "lon": 117.2}))["id"]
        await wire.call("POST", f"/api/v1/incidents/{incident}/divert", json={"reason": "neighbour dispute"})
        await wait_for(lambda: rh.hub.incidents is not None and rh.hub.incidents.hotline is not None
                       and rh.hub.incidents.hotline.attempts > 0)
        assert [p["incident_id"] for p in (await wire.call("GET", "/api/v1/handovers"))["pending"]] == [incident]
        assert wire.models == {"Incident", "Handovers"}


async def _streams(hub: RunningHub) -> bool:
    return bool((await hub.api.get("/api/v1/streams")).json()["streams"])


async def test_a_service_not_running_answers_503_before_the_body_is_validated(hub: RunningHub) -> None:
    # No drone link in this hub: a well-formed request with values out of range learns that first; a body that
    # is not JSON at all is refused before anything else, the caller's token included.
    body = {"lat": 91, "lon": 0, "alt": 500}
    r = await hub.api.post("/api/v1/drones/UAV-01/goto", json=body,
                           headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", r.text
    r = await hub.api.post("/api/v1/drones/UAV-01/goto", json=body)  # the dispatcher may not fly drones
    assert r.status_code == 403, r.text
    r = await hub.api.post("/api/v1/drones/UAV-01/goto", content=b"{nope",
                           headers={"Authorization": "", "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid", r.text


async def test_drones_keep_their_json(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with drone_stack(settings, tmp_path) as (rh, _):
        await ready(rh, "UAV-01", "UAV-02")
        operator = await rh.hub.create_token("drone_operator", "operator-1")
        wire = Wire(monkeypatch, rh)
        await wire.call("GET", "/api/v1/drones")
        await wire.call("GET", "/api/v1/drones/UAV-02")
        incident = (await wire.call("POST", "/api/v1/incidents", json={
            "category": "theft", "priority": 2, "lat": SCENE[0], "lon": SCENE[1]}))["id"]
        await wire.call("POST", f"/api/v1/incidents/{incident}/drone", json={"drone_id": "UAV-01"})
        await wire.call("POST", "/api/v1/drones/UAV-02/failsafe", operator)
        await wire.call("POST", "/api/v1/drones/UAV-02/goto", operator,
                        json={"lat": BASE[0] + 0.001, "lon": BASE[1], "alt": 25})
        await wire.call("POST", "/api/v1/drones/UAV-02/rtl", operator)
        await wire.call("GET", "/api/v1/drones/UAV-02/commands?limit=10")
        await wire.call("GET", "/api/v1/drones/UAV-01/commands")
        assert wire.models == {"DroneList", "Drone", "Incident", "DroneSent", "CommandAccepted", "DroneCommandList"}


async def _stored(hub: RunningHub, n: int) -> bool:
    return await hub.count() >= n


def test_every_json_route_of_the_api_has_a_response_model() -> None:
    """Those left without one: a file, the metrics text, GeoJSON (the base map, overlays read from a configured
    file as they are), and the phone apps' receivers (/gateway/...: each answers as its app expects, not as the
    API does). WHIP/WHEP (SDP) are only mounted with live video."""
    spec = create_app(Hub(Settings())).openapi()
    untyped = set()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            ok = next(v for k, v in operation["responses"].items() if k.startswith("2"))
            schema = ok.get("content", {}).get("application/json", {}).get("schema", {})
            if "$ref" not in schema:
                untyped.add(f"{method.upper()} {path}")
    assert untyped == {"GET /metrics", "GET /api/v1/map", "GET /api/v1/map/overlays",
                       "GET /api/v1/recordings/{stream_id}/{name}", "POST /gateway/owntracks", "GET /gateway/osmand",
                       "POST /gateway/osmand", "POST /gateway/traccar"}, sorted(untyped)
    assert json.dumps(spec)
