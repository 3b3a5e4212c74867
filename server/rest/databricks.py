"""Databricks Model Serving's REST surface: ``/api/2.0/serving-endpoints`` (control plane, AI Gateway and rate
limits), ``/api/2.0/permissions/serving-endpoints`` (``server/rest/permissions.py``, included in this router) and
``/serving-endpoints/{name}/invocations`` (data plane), thin handlers over ``EndpointService``.

Clients written for Databricks (``databricks-sdk``'s ``WorkspaceClient().serving_endpoints``, MLflow's
``get_deploy_client("databricks")``, curl with ``Authorization: Bearer``) work with only the host and token changed.
The guard (``server/rest/guard.py``) has identified the caller and checked its level on the endpoint of the path
before a handler runs (``CAN_VIEW`` to read, ``CAN_QUERY`` to score, within the rate limits, ``CAN_MANAGE`` to
change). Here: creating needs ``CAN_MANAGE`` on the new name (a token grant on it or ``*``, or admin) and makes the
creator its manager; listing shows only the endpoints the caller may view, each with the caller's
``permission_level``.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from server.databricks.config import check_name
from server.databricks.endpoints import EndpointService
from server.errors import ModelNotFound, PermissionDenied
from server.ops.exposition import databricks_export, workload_concurrency
from server.ops.gate import Gate
from server.ops.identity import Level, Resource
from server.rest import permissions
from server.rest.guard import caller
from server.rest.routes import IGNORED_HEADER, read_body, read_json

router = APIRouter(tags=["databricks serving endpoints"])
router.include_router(permissions.router)

_CONTROL_BODY_LIMIT = 1024 * 1024
_PREFIX = "/api/2.0/serving-endpoints"


def _endpoints(request: Request) -> EndpointService:
    endpoints: EndpointService = request.app.state.endpoints
    return endpoints


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def _level(request: Request, name: str) -> Level:
    """The caller's level on endpoint ``name`` (everything when the app has no gate)."""
    gate: Gate | None = getattr(request.app.state, "gate", None)
    if gate is None:
        return Level.CAN_MANAGE
    principal = caller(request)
    return Level.NONE if principal is None else gate.level(principal, Resource("endpoint", name))


async def _body(request: Request) -> Any:
    return await read_json(request, _CONTROL_BODY_LIMIT)


@router.get("/.well-known/databricks-config", include_in_schema=False)
async def host_metadata() -> Response:
    """Answer the SDK's host discovery probe: no OIDC, plain bearer tokens."""
    return _json({"oidc_endpoint": ""})


_NAME = {"type": "string", "pattern": "^(?!databricks-)[A-Za-z0-9_-]{1,63}$"}
_ENTITY = {
    "type": "object",
    "required": ["entity_name", "entity_version"],
    "properties": {
        "name": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9_-]{1,63}$"},
        "entity_name": {"type": "string", "minLength": 1, "maxLength": 255},
        "entity_version": {"type": ["string", "integer"], "pattern": "^(@?[A-Za-z0-9_-]+)$", "minimum": 0},
        "workload_size": {"type": "string", "enum": ["Small", "Medium", "Large"]},
        "scale_to_zero_enabled": {"type": "boolean"},
    },
}
_CONFIG = {
    "type": "object",
    "required": ["served_entities"],
    "properties": {"served_entities": {"type": "array", "items": _ENTITY, "minItems": 1, "uniqueItems": True}},
}


def _body_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_CREATE_BODY = _body_schema({
    "type": "object",
    "required": ["name", "config"],
    "properties": {"name": _NAME, "config": _CONFIG, "description": {"type": ["string", "null"]}},
})  # fmt: skip


@router.post(_PREFIX, summary="Create a serving endpoint", openapi_extra=_CREATE_BODY)
@router.post(_PREFIX + "/", include_in_schema=False)
async def create_endpoint(request: Request) -> Response:
    """Needs ``CAN_MANAGE`` on the new endpoint's name; the creator gets ``CAN_MANAGE`` on it."""
    body = await _body(request)
    principal = caller(request)
    if isinstance(body, dict):
        name = check_name(body.get("name"))
        if _level(request, name) < Level.CAN_MANAGE:
            who = "the caller" if principal is None else principal.name
            raise PermissionDenied(
                f"{who} may not create endpoint '{name}': this needs CAN_MANAGE on it (an admin token, or a token "
                f"granted '{name}', 'endpoints/{name}' or '*' CAN_MANAGE)",
                field="name",
            )
    return _json(await _endpoints(request).create(body, creator=principal))


@router.get(_PREFIX, summary="List serving endpoints")
@router.get(_PREFIX + "/", include_in_schema=False)
async def list_endpoints(request: Request) -> Response:
    """The endpoints the caller may view (``CAN_VIEW`` or more), each with its ``permission_level``."""
    shown = []
    for ep in _endpoints(request).list():
        level = _level(request, ep["name"])
        if level >= Level.CAN_VIEW:
            shown.append({**ep, "permission_level": level.name})
    return _json({"endpoints": shown})


@router.get(_PREFIX + "/{name}", summary="Get a serving endpoint")
async def get_endpoint(name: str, request: Request) -> Response:
    return _json(_endpoints(request).get(name, _level(request, name).name))


@router.put(
    _PREFIX + "/{name}/config",
    summary="Update a serving endpoint's served entities and traffic",
    openapi_extra=_body_schema(_CONFIG),
)
async def update_config(name: str, request: Request) -> Response:
    return _json(await _endpoints(request).update_config(name, await _body(request)))


@router.delete(_PREFIX + "/{name}", summary="Delete a serving endpoint")
async def delete_endpoint(name: str, request: Request) -> Response:
    await _endpoints(request).delete(name)
    return _json({})


@router.patch(_PREFIX + "/{name}/tags", summary="Add and delete serving endpoint tags")
async def patch_tags(name: str, request: Request) -> Response:
    return _json(_endpoints(request).patch_tags(name, await _body(request)))


@router.put(_PREFIX + "/{name}/ai-gateway", summary="Set a serving endpoint's AI Gateway (rate limits)")
async def put_ai_gateway(name: str, request: Request) -> Response:
    """Replaces the AI Gateway config; its ``rate_limits`` apply to the data plane at once."""
    return _json(_endpoints(request).put_ai_gateway(name, await _body(request)))


@router.put(_PREFIX + "/{name}/rate-limits", summary="Set a serving endpoint's rate limits (legacy)")
async def put_rate_limits(name: str, request: Request) -> Response:
    """Databricks' deprecated rate limits API (``serving_endpoints.put``): the AI Gateway's ``rate_limits``."""
    return _json(_endpoints(request).put_rate_limits(name, await _body(request)))


@router.post("/serving-endpoints/{name}/invocations", tags=["scoring"], summary="Score through an endpoint")
async def invocations(name: str, request: Request) -> Response:
    """MLflow scoring bodies (plus ``client_request_id``), routed by the endpoint's traffic split."""
    return await _invoke(request, name, None)


@router.post(
    "/serving-endpoints/{name}/served-models/{served}/invocations",
    tags=["scoring"],
    summary="Score with one served model of an endpoint (bypasses the traffic split)",
)
async def served_model_invocations(name: str, served: str, request: Request) -> Response:
    return await _invoke(request, name, served)


async def _invoke(request: Request, name: str, served: str | None) -> Response:
    endpoints = _endpoints(request)
    state = request.state
    state.endpoint, state.served_entity = name, served
    body = await read_body(request, endpoints.service.max_body_bytes)
    state.body, state.content_type = body, request.headers.get("content-type")
    if b"client_request_id" in body:
        state.client_request_id = client_request_id(body)
    prediction, served_name = await endpoints.invoke(name, body, state.content_type, served)
    state.model, state.version, state.rows = prediction.name, prediction.version, prediction.rows
    state.batch_rows, state.batch_requests = prediction.batch_rows, prediction.batch_requests
    state.served_entity = served_name
    state.response = prediction.mlflow_json()
    ignored = prediction.ignored_text
    headers = {"served-model-name": served_name} | ({IGNORED_HEADER: ignored} if ignored else {})
    if ignored:
        state.ignored = ignored
    return Response(state.response, media_type="application/json", headers=headers)


@router.get(
    _PREFIX + "/{name}/metrics",
    summary="Export an endpoint's metrics (Prometheus text, Databricks' names)",
    response_class=Response,
    responses={200: {"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def export_metrics(name: str, request: Request) -> Response:
    """``request_count_total`` & co. as Databricks exports them (the ``_total`` ones are per-minute gauges)."""
    endpoint = _endpoints(request).get(name)
    observability = getattr(request.app.state, "observability", None)
    if observability is None:
        raise ModelNotFound("metrics are not enabled on this server", field="name")
    served = (endpoint.get("config") or {}).get("served_entities") or []
    concurrency = workload_concurrency([str(e.get("workload_size", "Small")) for e in served])
    body = databricks_export(observability.metrics, observability.timeline, name, concurrency)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


def client_request_id(body: bytes) -> str | None:
    """The ``client_request_id`` of a Databricks scoring body (kept in the inference table), if it is a string."""
    try:
        value = orjson.loads(body).get("client_request_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value[:256] if isinstance(value, str) else None
