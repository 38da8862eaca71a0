"""The one error table of the API (`hub.api.errors.ERRORS`) and the response models in the OpenAPI description.

Every exception class a service or the video library raises to refuse a request must have an entry (else it
would be a 500); the statuses are those the routes answered before the table existed (SPEC 3, RFC 9725)."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

import hub.access.provisioning
import hub.drones.fleet
import hub.errors
import hub.video.desk
import video.errors
import video.segments
from hub.access.provisioning import ProvisioningError
from hub.access.tokens import InvalidToken
from hub.api.app import create_app
from hub.api.errors import ERRORS, ApiError, answer, lookup
from hub.config import Settings
from hub.drones.service import DroneCommandFailed, DroneNotFound, NoDroneAvailable
from hub.errors import IncidentConflict, IncidentError, IncidentInvalid, IncidentNotFound, StorageUnavailable
from hub.server import Hub
from hub.video.desk import PublishRefused

# Modules whose exceptions reach the routes (the incident service's are in hub.errors); the classes below only
# ever stop a start-up or stay inside the storage writer, never a request; HubError is only their base.
SERVICE_MODULES: tuple[ModuleType, ...] = (hub.errors, hub.drones.fleet, hub.access.provisioning,
                                           hub.video.desk, video.errors, video.segments)
NOT_REQUEST_ERRORS = {hub.drones.fleet.FleetConfigError, hub.errors.HubError, hub.errors.StorageRefused,
                      hub.errors.ServiceError, hub.errors.StorageSetupError, hub.errors.HubStartError}


def _exceptions(module: ModuleType) -> list[type[Exception]]:
    return [cls for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, Exception) and cls.__module__ == module.__name__]


def _instance(cls: type[Exception], code: str = "some_code") -> Exception:
    if issubclass(cls, PublishRefused):
        return cls(403, code, "refused")
    if issubclass(cls, (DroneCommandFailed, ProvisioningError)):
        return cls(code, "failed")
    return cls("refused")


@pytest.mark.parametrize("cls", [c for m in SERVICE_MODULES for c in _exceptions(m) if c not in NOT_REQUEST_ERRORS],
                         ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_every_service_exception_has_an_entry(cls: type[Exception]) -> None:
    assert lookup(_instance(cls)) is not None, f"{cls.__name__} is not in hub.api.errors.ERRORS"
    status, code, message, _ = answer(_instance(cls))
    assert 400 <= status < 600 and status != 500 and code and message


def test_the_service_modules_raise_something() -> None:
    # The coverage test above is only as good as the modules it scans.
    assert all(_exceptions(m) for m in SERVICE_MODULES)


@pytest.mark.parametrize(("exc", "status", "code"), [
    (IncidentNotFound("no incident x"), 404, "not_found"),
    (IncidentInvalid("bad"), 422, "invalid"),
    (IncidentConflict("closed"), 409, "conflict"),
    (IncidentError("other"), 400, "bad_request"),
    (DroneNotFound("no drone d"), 404, "not_found"),
    (NoDroneAvailable("none ready"), 409, "no_drone_available"),
    (ProvisioningError("invalid", "x"), 422, "invalid"),
    (ProvisioningError("unknown_unit", "x"), 404, "unknown_unit"),
    (ProvisioningError("unknown_device", "x"), 404, "unknown_device"),
    (ProvisioningError("exists", "x"), 409, "exists"),
    (ProvisioningError("broker", "x"), 502, "broker"),
    (PublishRefused(401, "unauthorized", "x"), 401, "unauthorized"),
    (PublishRefused(503, "video_unavailable", "x"), 503, "video_unavailable"),
    (ApiError(429, "too_many_failures", "x", {"Retry-After": "3"}), 429, "too_many_failures"),
    (video.errors.BadOffer("x"), 400, "bad_offer"),
    (video.errors.BadSdpFragment("x"), 400, "bad_sdpfrag"),
    (video.errors.UnknownStream("x"), 404, "unknown_stream"),
    (video.errors.UnknownSession("x"), 404, "unknown_session"),
    (video.errors.TooManyViewers("x"), 503, "too_many_viewers"),
    (video.errors.IceRestartUnsupported("x"), 422, "ice_restart_unsupported"),
    (video.errors.Unsupported("x"), 406, "unsupported"),
    (video.errors.Unsupported("x", code="no_h264"), 406, "no_h264"),
    (video.errors.ForwardingUnavailable("x"), 503, "forwarding_unavailable"),
    (video.errors.MediaServerError("x"), 502, "media_server"),
    (video.errors.UnsupportedMediaType("x"), 415, "unsupported_media_type"),
    (video.errors.TooLarge("x"), 413, "too_large"),
    (video.errors.PreconditionRequired("x"), 428, "precondition_required"),
    (video.errors.PreconditionFailed("x"), 412, "precondition_failed"),
    (video.segments.BadStreamId("x"), 400, video.segments.BadStreamId.code),
    (InvalidToken("the name must have 1 to 200 characters"), 422, "invalid"),
])
def test_statuses_and_codes(exc: Exception, status: int, code: str) -> None:
    got_status, got_code, message, _ = answer(exc)
    assert (got_status, got_code, message) == (status, code, str(exc))


# Every code hub/drones/service.py and hub/drones/ops.py raise: 409 (the drone or its link refused), a timeout 504.
@pytest.mark.parametrize(("code", "status"), [
    ("link_lost", 409), ("command_rejected", 409), ("command_failed", 409), ("command_timeout", 504),
    ("signed_no_key", 409), ("refused_unsigned", 409), ("no_position", 409), ("battery", 409), ("not_ready", 409)])
def test_drone_command_failures_map_by_their_code(code: str, status: int) -> None:
    assert answer(DroneCommandFailed(code, "failed")) == (status, code, "failed", None)


def test_fixed_answers_keep_their_message_and_headers() -> None:
    assert answer(StorageUnavailable("connection refused at 10.0.0.3")) == (
        503, "storage_unavailable", "the database is unavailable; retry shortly", {"Retry-After": "5"})
    assert answer(ApiError(429, "too_many_failures", "slow down", {"Retry-After": "3"}))[3] == {"Retry-After": "3"}


def test_a_class_outside_the_table_is_an_internal_error() -> None:
    assert answer(KeyError("x")) == (500, "internal", "internal error", None)


def test_every_key_is_an_exception_class_or_a_class_and_code() -> None:
    for key in ERRORS:
        cls = key[0] if isinstance(key, tuple) else key
        assert isinstance(cls, type) and issubclass(cls, Exception)
        if isinstance(key, tuple):
            assert cls in ERRORS, f"{key}: the class itself needs an entry for its other codes"


def test_openapi_documents_the_main_resources() -> None:
    app = create_app(Hub(Settings()))
    spec = app.openapi()
    schemas = spec["components"]["schemas"]
    for name in ("Unit", "UnitDetail", "UnitList", "Incident", "Assignment", "Dispatched", "Drone", "DroneList",
                 "Stream", "StreamList", "Position"):
        assert name in schemas, name
    assert set(schemas["Assignment"]["required"]) >= {"unit_id", "status", "dispatched", "acknowledged", "departed",
                                                      "contacted", "arrived", "cleared"}

    def ok_schema(path: str, method: str, status: str = "200") -> str:
        content = spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
        return str(content["$ref"]).rsplit("/", 1)[-1]

    assert ok_schema("/api/v1/units", "get") == "UnitList"
    assert ok_schema("/api/v1/units/{unit_id}", "get") == "UnitDetail"
    assert ok_schema("/api/v1/incidents", "post", "201") == "Incident"
    assert ok_schema("/api/v1/incidents/{incident_id}", "get") == "Incident"
    assert ok_schema("/api/v1/incidents/{incident_id}/dispatch", "post") == "Dispatched"
    assert ok_schema("/api/v1/drones", "get") == "DroneList"
    assert ok_schema("/api/v1/drones/{drone_id}", "get") == "Drone"
    assert ok_schema("/api/v1/streams", "get") == "StreamList"
