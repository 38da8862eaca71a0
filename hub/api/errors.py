"""JSON errors of the contract, ``{"error": {"code": ..., "message": ...}}``, and the one table that answers them.

Services and libraries raise their own exceptions (``IncidentNotFound``, ``DroneCommandFailed``, ``UnknownStream``
...); :data:`ERRORS` says, per exception class, which HTTP status and error code the API answers with, and
:func:`install` makes every entry a FastAPI exception handler. Routes therefore never catch to translate: they
call the service and let its exception travel. The message is the exception's own text unless the entry fixes one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.access.provisioning import ProvisioningError
from hub.access.tokens import InvalidToken
from hub.drones.service import DroneCommandFailed, DroneNotFound, NoDroneAvailable
from hub.errors import IncidentConflict, IncidentError, IncidentInvalid, IncidentNotFound, StorageUnavailable
from hub.video.desk import PublishRefused
from video.errors import (
    BadOffer,
    BadSdpFragment,
    ForwardingUnavailable,
    IceRestartUnsupported,
    MediaServerError,
    PreconditionFailed,
    PreconditionRequired,
    TooLarge,
    TooManyViewers,
    UnknownSession,
    UnknownStream,
    Unsupported,
    UnsupportedMediaType,
    VideoError,
)

__all__ = ["ERRORS", "Answer", "ApiError", "answer", "error_body", "install"]

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer decided in the API layer itself (a refused token, a bad period): status and code given here."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers  # e.g. Retry-After of a 429


@dataclass(frozen=True, slots=True)
class Answer:
    """What the API answers for one exception class.

    ``status`` None: the exception's own ``status`` attribute; ``code`` None: its own ``code`` attribute;
    ``message`` None: ``str(exc)``."""

    status: int | None
    code: str | None = None
    message: str | None = None
    headers: Mapping[str, str] | None = None


# A key is an exception class, or (class, code) for an exception that carries its ``code`` (a drone command's
# failure, a provisioning refusal): that entry wins over the class's own. The most specific class matches first.
ErrorKey = type[Exception] | tuple[type[Exception], str]

ERRORS: Mapping[ErrorKey, Answer] = {
    ApiError: Answer(None),
    StorageUnavailable: Answer(503, "storage_unavailable", "the database is unavailable; retry shortly",
                               {"Retry-After": "5"}),
    # Incidents (hub.incidents)
    IncidentNotFound: Answer(404, "not_found"),
    IncidentInvalid: Answer(422, "invalid"),
    IncidentConflict: Answer(409, "conflict"),
    IncidentError: Answer(400, "bad_request"),
    # Drones (hub.drones): a command the drone or its link failed is a 409, a command unanswered a 504.
    DroneNotFound: Answer(404, "not_found"),
    NoDroneAvailable: Answer(409, "no_drone_available"),
    DroneCommandFailed: Answer(409),
    (DroneCommandFailed, "command_timeout"): Answer(504),
    # API tokens (hub.access.tokens): what the request model cannot say (a name of blanks, a format character)
    InvalidToken: Answer(422, "invalid"),
    # Device logins (hub.provisioning)
    ProvisioningError: Answer(409),
    (ProvisioningError, "invalid"): Answer(422),
    (ProvisioningError, "unknown_unit"): Answer(404),
    (ProvisioningError, "unknown_device"): Answer(404),
    (ProvisioningError, "broker"): Answer(502),
    # Video: the desk's publish refusals carry their status; the video library's errors their code.
    PublishRefused: Answer(None),
    BadOffer: Answer(400),
    BadSdpFragment: Answer(400),
    UnknownStream: Answer(404),
    UnknownSession: Answer(404),
    TooManyViewers: Answer(503),
    IceRestartUnsupported: Answer(422),
    Unsupported: Answer(406),  # RFC 9725 6.x: an offer the server cannot take as a whole is 406 Not Acceptable
    ForwardingUnavailable: Answer(503),
    MediaServerError: Answer(502),
    UnsupportedMediaType: Answer(415),
    TooLarge: Answer(413),
    PreconditionRequired: Answer(428),
    PreconditionFailed: Answer(412),
    VideoError: Answer(400),
}


def _printable(text: str) -> str:
    """A message that may quote a client's input is written with its unencodable characters escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": _printable(message)}
    if details is not None:
        error["details"] = details
    return {"error": error}


def lookup(exc: BaseException) -> Answer | None:
    """The table's entry for ``exc``: its most specific class, a (class, code) entry before the class's own."""
    code = getattr(exc, "code", None)
    for cls in type(exc).__mro__:
        if isinstance(code, str) and (cls, code) in ERRORS:
            return ERRORS[(cls, code)]
        if cls in ERRORS:
            return ERRORS[cls]
    return None


def answer(exc: Exception) -> tuple[int, str, str, dict[str, str] | None]:
    """(status, code, message, headers) the API answers ``exc`` with; a class outside the table is a 500."""
    found = lookup(exc)
    if found is None:
        return 500, "internal", "internal error", None
    status = found.status if found.status is not None else int(getattr(exc, "status", 500))
    code = found.code if found.code is not None else str(getattr(exc, "code", "error"))
    message = found.message if found.message is not None else str(exc)
    headers = dict(found.headers) if found.headers is not None else getattr(exc, "headers", None)
    return status, code, message, headers


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid", 429: "too_many_requests"}


async def _mapped(request: Request, exc: Exception) -> JSONResponse:
    status, code, message, headers = answer(exc)
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Every class of :data:`ERRORS` as an exception handler, plus validation, HTTP and unexpected errors."""
    for key in ERRORS:
        if isinstance(key, type):
            app.add_exception_handler(key, _mapped)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": [p if isinstance(p, int) else _printable(str(p)) for p in e.get("loc", ())],
                    "msg": _printable(str(e.get("msg", "")))} for e in exc.errors()]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        message = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        return JSONResponse(error_body("invalid", message, details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: log it whole, answer JSON, never a bare traceback.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal", "internal error"), status_code=500)
