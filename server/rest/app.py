"""The REST door: a FastAPI app over an InferenceService, with per-model request schemas in OpenAPI."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import Receive, Scope, Send

from server.databricks.endpoints import EndpointService
from server.rest import databricks, errors, v2, webhooks
from server.rest.fast import ScoringFastPath
from server.rest.middleware import RequestContext
from server.rest.routes import router
from server.service import InferenceService
from server.tensors import ARROW_STREAM
from server.webhooks import WebhookReceiver

log = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


class RestApp(FastAPI):
    """FastAPI, with the scoring routes answered by ``ScoringFastPath`` before the framework's stack.

    The fast path is used only while the app's own middleware is just ``RequestContext`` (whose request id and
    access log it reproduces); middleware added by anyone else turns it off, so that middleware sees every request.
    """

    fast_path: ScoringFastPath | None = None
    _fast_ok: bool | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_path
        if fast is not None and scope["type"] == "http":
            handler = fast.route(scope)
            if handler is not None and self._fast_allowed():
                await fast.serve(handler, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _fast_allowed(self) -> bool:
        if self._fast_ok is None:
            others = [m.cls for m in self.user_middleware if m.cls is not RequestContext]
            self._fast_ok = not others
            if others:
                log.info("scoring fast path off: the app has middleware %s", others)
        return self._fast_ok


def create_rest_app(
    service: InferenceService,
    *,
    lifespan: Lifespan | None = None,
    version: str = "0",
    endpoints: EndpointService | None = None,
    receiver: WebhookReceiver | None = None,
) -> FastAPI:
    """Build the app. ``lifespan`` (from the composition root) loads models and starts batchers.

    ``endpoints`` adds the Databricks-compatible serving endpoints API; ``receiver`` the MLflow webhook receiver.
    """
    app = RestApp(
        title="modelport",
        version=version,
        lifespan=_freezing(lifespan, service),
        description="MLflow registry models over MLflow-compatible REST and typed MCP tools.",
    )
    app.state.service = service
    app.include_router(router)
    app.include_router(v2.router)
    if endpoints is not None:
        app.state.endpoints = endpoints
        app.include_router(databricks.router)
    if receiver is not None:
        app.state.webhooks = receiver
        app.include_router(webhooks.router)
    errors.install(app)
    app.add_middleware(RequestContext)
    app.fast_path = ScoringFastPath(service)
    app.openapi = lambda: _openapi(app, service)  # type: ignore[method-assign]
    return app


def _freezing(lifespan: Lifespan | None, service: InferenceService) -> Lifespan:
    """Run ``lifespan``; once startup is done (models loaded), move the heap out of the cyclic GC's sight.

    The startup heap (mlflow, sklearn, onnx, pydantic: several 100k objects) never becomes garbage, yet every
    full collection walked it: 80-260 ms pauses about once a second under load, the p99 of every request
    (docs/performance.md). ``gc.freeze()`` parks it in the permanent generation; a deployment change re-freezes.
    """

    def refreeze() -> None:
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    @asynccontextmanager
    async def frozen(app: FastAPI) -> AsyncIterator[None]:
        if lifespan is None:
            refreeze()
            yield
            return
        async with lifespan(app):
            refreeze()
            service.subscribe(refreeze)
            yield

    return frozen


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
                ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}},
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
