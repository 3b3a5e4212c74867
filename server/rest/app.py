"""The REST door: a FastAPI app over an InferenceService, with per-model request schemas in OpenAPI."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from server.rest import errors
from server.rest.middleware import RequestContext
from server.rest.routes import router
from server.service import InferenceService

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_rest_app(service: InferenceService, *, lifespan: Lifespan | None = None, version: str = "0") -> FastAPI:
    """Build the app. ``lifespan`` (from the composition root) loads models and starts batchers."""
    app = FastAPI(
        title="modelport",
        version=version,
        lifespan=lifespan,
        description="MLflow registry models over MLflow-compatible REST and typed MCP tools.",
    )
    app.state.service = service
    app.include_router(router)
    errors.install(app)
    app.add_middleware(RequestContext)
    app.openapi = lambda: _openapi(app, service)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI, service: InferenceService) -> dict[str, Any]:
    """Base OpenAPI plus one documented path per served deployment (rebuilt when deployments change)."""
    keys = tuple((d.key, d.version) for d in service.list())
    cached: tuple[tuple[Any, ...], dict[str, Any]] | None = getattr(app.state, "openapi_cache", None)
    if cached is not None and cached[0] == keys:
        return cached[1]
    spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    for info in service.list():
        segment = info.ref.rsplit("@", 1)[1] if "@" in info.ref else info.version
        for seg in dict.fromkeys((segment, info.version)):
            spec["paths"][f"/model/{info.name}/{seg}/invocations"] = {"post": _operation(info, seg)}
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
            },
        },
        "responses": {
            "200": {
                "description": "Predictions",
                "content": {"application/json": {"schema": info.schema.rest_response}},
            },
            "400": {"description": "Invalid input (error_code, message, field)"},
            "404": {"description": "Unknown model, version or alias"},
            "413": {"description": "Payload too large"},
            "503": {"description": "Overloaded or not ready (Retry-After)"},
        },
    }
