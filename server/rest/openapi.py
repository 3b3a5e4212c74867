"""The OpenAPI document: FastAPI's, one documented path per served model, and what FastAPI cannot know.

Every operation lists the statuses modelport really answers (the error table in ``errors.py``, the guard in
``guard.py``) with the one error body ``{"error_code", "message", "field", "request_id"}``; FastAPI's 422 is
dropped (validation errors are 400 here); routes that need a credential carry the bearer scheme when auth is on.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from server.rest.guard import RULES
from server.service import InferenceService
from server.tensors import ARROW_STREAM

ERROR = {
    "type": "object",
    "required": ["error_code", "message"],
    "properties": {
        "error_code": {"type": "string"},
        "message": {"type": "string"},
        "field": {"type": "string"},
        "request_id": {"type": "string"},
        "error": {"type": "string", "description": "Open Inference Protocol v2 routes: the message again"},
    },
}
_DESCRIPTIONS = {
    "400": "Invalid request (error_code, message, field)",
    "401": "Missing or invalid credentials (WWW-Authenticate)",
    "403": "The caller lacks the permission level this needs",
    "404": "Unknown model, version, alias or endpoint",
    "405": "Method not allowed (Allow)",
    "409": "Conflict (an update in progress, a name in use)",
    "413": "Body or rows over the limit",
    "415": "Unsupported content type",
    "429": "Rate limit exceeded (Retry-After)",
    "500": "Model or server failure (request id)",
    "501": "Not enabled on this server",
    "503": "Overloaded, not ready or stopping (Retry-After)",
    "504": "Deadline exceeded",
}
_SCORING = ("400", "404", "409", "413", "415", "429", "500", "503", "504")
_READING = ("400", "403", "404")
_MANAGING = ("400", "403", "404", "409", "501")
_RETRY = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}


def complete(spec: dict[str, Any], *, auth: bool) -> None:
    """Add the statuses, error bodies and security every operation of ``spec`` has (in place)."""
    components = spec.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "modelport access token or OAuth JWT"}
    }
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            responses.pop("422", None)
            template = _template(path)
            rule = RULES.get((method.upper(), template))
            scoring = method == "post" and template.endswith(("/invocations", "/infer"))
            writing = method in ("put", "patch", "delete", "post")
            codes = list(_SCORING if scoring else _MANAGING if writing else _READING)
            public = rule is not None and rule.access in ("public", "optional")
            if auth and not public:
                codes += ["401", "403"]
                operation["security"] = [{"bearer": []}]
            elif auth and rule is not None and rule.access == "optional":
                operation["security"] = [{}, {"bearer": []}]
            if public and template in ("/ping", "/v2/health/live", "/docs", "/docs/assets/{asset}"):
                codes = []
            if template in ("/health", "/v2/health/ready"):
                codes = ["503"]
            if template == "/webhooks/mlflow":
                codes = ["400", "401", "403", "413"]
            for code in codes:
                if code not in responses:
                    responses[code] = _error(code)


def _error(code: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": _DESCRIPTIONS[code],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if code in ("429", "503"):
        out["headers"] = _RETRY
    return out


def _template(path: str) -> str:
    """A per-model path (``/model/churn/3/invocations``) as its route's template."""
    parts = path.split("/")
    if len(parts) == 5 and parts[1] == "model" and "{" not in parts[2]:
        return "/model/{name}/{version_or_alias}/invocations"
    return path


def build_openapi(app: FastAPI, service: InferenceService) -> dict[str, Any]:
    """Base OpenAPI plus one documented path per served deployment (rebuilt when deployments change), with every
    status a route answers, the error body, and the bearer scheme on the routes that need it."""
    keys = tuple((d.key, d.version) for d in service.list())
    cached: tuple[tuple[Any, ...], dict[str, Any]] | None = getattr(app.state, "openapi_cache", None)
    if cached is not None and cached[0] == keys:
        return cached[1]
    spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    for info in service.list():
        segment = info.ref.rsplit("@", 1)[1] if "@" in info.ref else info.version
        for seg in dict.fromkeys((segment, info.version)):
            spec["paths"][f"/model/{info.name}/{seg}/invocations"] = {"post": _operation(info, seg)}
    gate = getattr(app.state, "gate", None)
    complete(spec, auth=gate is not None and gate.enabled)
    app.state.openapi_cache = (keys, spec)
    return spec


def _operation(info: Any, segment: str) -> dict[str, Any]:
    example = info.schema.example_record
    request_examples: dict[str, Any] = {}
    if example:
        request_examples = {
            "dataframe_records": {"value": {"dataframe_records": [example]}},
            "data": {"value": {"data": [[example.get(c) for c in info.signature.input_names]]}},
        }
    desc = info.model.model_description or ""
    return {
        "tags": [f"model: {info.name}"],
        "summary": f"Score with {info.name} version {info.version}"
        + ("" if segment == info.version else f" (@{segment})"),
        "description": desc,
        "operationId": f"invocations_{info.name}_{segment}",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": info.schema.rest_request, "examples": request_examples},
                "text/csv": {"schema": {"type": "string"}},
                ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "responses": {
            "200": {
                "description": "Predictions",
                "content": {"application/json": {"schema": info.schema.rest_response}},
            },
        },
    }
