"""Thin REST handlers over InferenceService: MLflow scoring, model listing, health."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from server.errors import InvalidInput, ModelNotFound, PayloadTooLarge, UnsupportedMediaType
from server.ops.gate import Gate
from server.ops.identity import Level, Resource
from server.prediction import Prediction
from server.rest.guard import caller
from server.service import InferenceService
from server.tensors import ARROW_STREAM

router = APIRouter()


def _service(request: Request) -> InferenceService:
    service: InferenceService = request.app.state.service
    return service


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes before reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}", field="body")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes", field="body")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int) -> Any:
    """A JSON control-plane body (``{}`` when empty); ``InvalidInput`` naming the body when it is not JSON."""
    raw = await read_body(request, limit)
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}", field="body") from None


IGNORED_HEADER = "X-Modelport-Ignored"


def note_prediction(state: dict[str, Any], prediction: Prediction) -> dict[str, str]:
    """Put what the access log reports about a prediction into the request state; returns the response headers
    it needs (``X-Modelport-Ignored`` naming the columns and params that were ignored, as MLflow ignores them)."""
    state["model"], state["version"], state["rows"] = prediction.name, prediction.version, prediction.rows
    state["batch_rows"], state["batch_requests"] = prediction.batch_rows, prediction.batch_requests
    ignored = prediction.ignored_text
    if ignored is None:
        return {}
    state["ignored"] = ignored
    return {IGNORED_HEADER: ignored}


def media_type(content_type: str | None) -> str:
    return (content_type or "application/json").split(";", 1)[0].strip().lower()


async def score(
    service: InferenceService, name: str, version_or_alias: str | None, body: bytes, content_type: str | None
) -> Prediction:
    """One MLflow scoring request: JSON and CSV bodies through ``predict_body``, Arrow IPC streams as columns."""
    media = media_type(content_type)
    if media == ARROW_STREAM:
        return await service.predict_arrow(name, version_or_alias, body)
    if media not in _SCORING_TYPES:
        raise UnsupportedMediaType(
            f"content type '{media}' is not supported; use application/json, text/csv or {ARROW_STREAM}",
            field="Content-Type",
        )
    return await service.predict_body(name, version_or_alias, body, content_type)


def single_model(service: InferenceService) -> tuple[str, str]:
    """(name, version) of the only served model, for ``/invocations``; ``ModelNotFound`` otherwise."""
    served = service.list()
    if len(served) != 1:
        paths = [
            f"/model/{d.name}/{d.ref.rsplit('@', 1)[-1] if '@' in d.ref else d.version}/invocations" for d in served
        ]
        raise ModelNotFound(
            f"/invocations needs exactly one served model; {len(served)} are served. Use one of {paths}", field="path"
        )
    return served[0].name, served[0].version


_SCORING_TYPES = frozenset({"application/json", "application/*+json", "", "text/csv", "application/csv"})
_SCORING_BODY = {
    "requestBody": {
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/csv": {"schema": {"type": "string"}},
            ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}},
        }
    }
}


def _respond(request: Request, prediction: Prediction) -> Response:
    headers = note_prediction(request.scope.setdefault("state", {}), prediction)
    return Response(prediction.mlflow_json(), media_type="application/json", headers=headers)


@router.post(
    "/model/{name}/{version_or_alias}/invocations",
    tags=["scoring"],
    summary="Score rows with a model",
    openapi_extra=_SCORING_BODY,
)
async def invocations(name: str, version_or_alias: str, request: Request) -> Response:
    """MLflow scoring protocol (every MLflow body, CSV, ``{"data": [[...]]}``, Arrow IPC) for one version or alias."""
    service = _service(request)
    request.state.model, request.state.version = name, version_or_alias
    body = await read_body(request, service.max_body_bytes)
    prediction = await score(service, name, version_or_alias, body, request.headers.get("content-type"))
    return _respond(request, prediction)


@router.post(
    "/invocations",
    tags=["scoring"],
    summary="Score rows (single-model server, like mlflow models serve)",
    openapi_extra=_SCORING_BODY,
)
async def single_invocations(request: Request) -> Response:
    service = _service(request)
    name, version = single_model(service)
    body = await read_body(request, service.max_body_bytes)
    prediction = await score(service, name, version, body, request.headers.get("content-type"))
    return _respond(request, prediction)


@router.get(
    "/ping",
    tags=["health"],
    response_class=Response,
    responses={200: {"description": "Alive", "content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def ping() -> Response:
    """Liveness, like ``mlflow models serve``'s (its body is a newline; we say it is text)."""
    return Response("\n", media_type="text/plain")


@router.get("/health", tags=["health"])
async def health(request: Request) -> Response:
    """Readiness; with auth on, the deployments' names only for an authenticated caller (probes see the status)."""
    service = _service(request)
    ready = [d.key for d in service.list() if d.state == "READY"]
    failed = service.failures()
    status = 200 if ready or not failed else 503
    body: dict[str, Any] = {"status": "ok" if status == 200 else "unavailable"}
    gate = getattr(request.app.state, "gate", None)
    if gate is None or not gate.enabled or caller(request) is not None:
        body |= {"ready": ready, "failed": failed}
    return _json(body, status)


@router.get("/version", tags=["health"])
async def version_info() -> Response:
    return _json(
        {
            "modelport": _version("modelport"),
            "mlflow": _version("mlflow", "mlflow-skinny"),
            "onnxruntime": _version("onnxruntime-gpu", "onnxruntime"),
        }
    )


@router.get("/models", tags=["models"], summary="Every served model the caller may view")
async def list_models(request: Request) -> Response:
    service = _service(request)
    visible = viewable(request)
    failed = [
        {"key": key, "state": "FAILED", "reason": reason}
        for key, reason in service.failures().items()
        if visible(key.split("@", 1)[0].split("/", 1)[0])
    ]
    return _json({"models": [d.summary() for d in service.list() if visible(d.name)] + failed})


def viewable(request: Request) -> Callable[[str], bool]:
    """Whether the caller may view a model (by registered model name): everything when auth is off."""
    gate: Gate | None = getattr(request.app.state, "gate", None)
    principal = caller(request)
    if gate is None or not gate.enabled or (principal is not None and principal.admin):
        return lambda _: True
    if principal is None:
        return lambda _: False
    return lambda name: gate.can(principal, Resource("model", name), Level.CAN_VIEW)


@router.get("/models/{name}", tags=["models"], summary="Deployments of one model")
async def get_model(name: str, request: Request) -> Response:
    deps = [d.summary() for d in _service(request).list() if d.name == name]
    if not deps:
        _service(request).describe(name)  # raises ModelNotFound with the served names
    return _json({"name": name, "deployments": deps})


@router.get("/models/{name}/{version_or_alias}", tags=["models"], summary="One deployment, with its schemas")
async def get_deployment(name: str, version_or_alias: str, request: Request) -> Response:
    info = _service(request).describe(name, version_or_alias)
    return _json(
        info.summary() | {"request_schema": info.schema.rest_request, "input_example": info.model.input_example}
    )


def _version(*dists: str) -> str | None:
    for dist in dists:
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None
