"""The ONE mapping from serving errors to HTTP: status, MLflow-style body ``{"error_code", "message"}``."""

from __future__ import annotations

import logging
import math

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

from server.errors import (
    Conflict,
    InferenceFailed,
    InferenceTimeout,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServerStopping,
    ServingError,
    Unauthenticated,
    UnsupportedMediaType,
)

log = logging.getLogger(__name__)

_STATUS: tuple[tuple[type[ServingError], int], ...] = (
    (ModelNotFound, 404),
    (PayloadTooLarge, 413),
    (UnsupportedMediaType, 415),
    (InvalidInput, 400),
    (ModelNotReady, 503),
    (Overloaded, 503),
    (ServerStopping, 503),
    (InferenceTimeout, 504),
    (InferenceFailed, 500),
    (Conflict, 409),
    (Unauthenticated, 401),
    (PermissionDenied, 403),
    (RateLimited, 429),
)

_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "ENDPOINT_NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    409: "RESOURCE_CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "REQUEST_LIMIT_EXCEEDED",
    431: "REQUEST_HEADER_FIELDS_TOO_LARGE",
}

CHALLENGE = 'Bearer realm="modelport"'


def headers_of(exc: ServingError) -> dict[str, str] | None:
    """The response headers an error needs: ``Retry-After`` (503 overload, 429), ``WWW-Authenticate`` (401)."""
    if isinstance(exc, Overloaded | RateLimited):
        return {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    if isinstance(exc, Unauthenticated):
        detail = "" if "required" in exc.message else ', error="invalid_token"'
        return {"WWW-Authenticate": CHALLENGE + detail}
    return None


def transport_error(status: int, message: str) -> bytes:
    """The body of an answer the HTTP server gives itself, before any route runs (``protocol.py``: 408 for a head or
    body that did not arrive in time, 431 for headers over the limit): the same ``{"error_code", "message"}``."""
    return orjson.dumps({"error_code": _HTTP_CODES.get(status, "BAD_REQUEST"), "message": message})


def status_of(exc: ServingError) -> int:
    return next((status for cls, status in _STATUS if isinstance(exc, cls)), 500)


def error_response(
    status: int,
    error_code: str,
    message: str,
    request: Request,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, str] = {"error_code": error_code, "message": message}
    if request.url.path.startswith("/v2/"):
        body["error"] = message  # the Open Inference Protocol's field (tritonclient reads it)
    if field:
        body["field"] = field
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


async def serving_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServingError)
    status = status_of(exc)
    request.state.error = exc.message
    headers = headers_of(exc)
    message = exc.message
    if status >= 500 and isinstance(exc, InferenceFailed):
        log.error("inference failed", exc_info=exc.__cause__ or exc, extra={"request_id": request.state.request_id})
        message = f"{exc.message} (request id {request.state.request_id})"
    return error_response(status, exc.error_code, message, request, field=exc.field, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "INTERNAL_ERROR" if exc.status_code >= 500 else "BAD_REQUEST")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # every method any route of this path takes, not only the first route's
        headers["Allow"] = ", ".join(_allowed(request)) or headers.get("Allow", "")
    return error_response(exc.status_code, code, str(exc.detail), request, headers=headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed(request: Request) -> list[str]:
    """The methods some route fully matches at this path (asked of every route, included routers too)."""
    routes = request.app.router.routes
    return [m for m in _METHODS if any(r.matches({**request.scope, "method": m})[0] == Match.FULL for r in routes)]


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(
        400, "BAD_REQUEST", f"{where}: {first.get('msg', 'invalid request')}", request, field=where or None
    )


async def unexpected_error(request: Request, exc: Exception) -> Response:
    request_id = getattr(request.state, "request_id", "-")
    log.error("unhandled error", exc_info=exc, extra={"request_id": request_id})
    return error_response(500, "INTERNAL_ERROR", f"internal error (request id {request_id})", request)


def install(app: FastAPI) -> None:
    """Register the handlers on an app."""
    app.add_exception_handler(ServingError, serving_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)
