"""The REST door: a FastAPI app over an InferenceService, with per-model request schemas in OpenAPI."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.types import Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from server.databricks.endpoints import EndpointService
from server.errors import ModelNotFound
from server.lifecycle.webhooks import WebhookReceiver
from server.ops.gate import Gate
from server.ops.identity import Level, Principal, Resource
from server.ops.observability import Observability
from server.rest import dashboard, databricks, errors, metrics, v2, webhooks
from server.rest.cors import Cors, is_preflight
from server.rest.fast import ScoringFastPath
from server.rest.guard import RestGuard, caller
from server.rest.middleware import RequestContext
from server.rest.openapi import build_openapi
from server.rest.routes import router, single_model
from server.service import InferenceService
from server.settings import CorsSettings

log = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
QUIET_PATHS = ("/ping", "/health", "/dashboard/feed.json")
"""Not access-logged unless they fail (probes, and the dashboard's once-a-second poll)."""


class RestApp(FastAPI):
    """FastAPI, with the scoring routes answered by ``ScoringFastPath`` before the framework's stack.

    The fast path is used only while the app's own middleware is just ``RequestContext`` (whose request id and
    access log it reproduces); middleware added by anyone else turns it off, so that middleware sees every request.
    """

    fast_path: ScoringFastPath | None = None
    cors: Cors | None = None
    _fast_ok: bool | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            cors = self.cors
            if cors is not None:
                origin = cors.origin(scope)
                if origin is not None:
                    if is_preflight(scope):
                        await cors.preflight(scope, origin, send)
                        return
                    send = cors.wrap(origin, send)
            fast = self.fast_path
            if fast is not None:
                matched = fast.route(scope)
                if matched is not None and self._fast_allowed():
                    await fast.serve(matched, scope, receive, send)
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
    gate: Gate | None = None,
    cors: CorsSettings | None = None,
    observability: Observability | None = None,
    public_metrics: bool = False,
) -> FastAPI:
    """Build the app. ``lifespan`` (from the composition root) loads models and starts batchers.

    ``endpoints`` adds the Databricks-compatible serving endpoints API; ``receiver`` the MLflow webhook receiver;
    ``gate`` identity, permissions and rate limits on every route (``server/rest/guard.py``); ``cors`` cross-origin
    access for browser apps.
    """
    guard = None
    if gate is not None:
        guard = RestGuard(
            gate,
            lambda: single_model(service)[0],
            endpoints.name_of if endpoints is not None else None,
        )
    app = RestApp(
        title="modelport",
        version=version,
        lifespan=_freezing(lifespan, service),
        description="MLflow registry models over MLflow-compatible REST and typed MCP tools.",
        dependencies=[Depends(guard.check)] if guard is not None else None,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.state.gate = gate
    app.state.observability = observability
    app.state.public_metrics = public_metrics
    recorder = observability.recorder if observability is not None else None
    app.include_router(router)
    app.include_router(v2.router)
    if observability is not None:
        app.include_router(metrics.router)
    app.include_router(dashboard.router)
    if endpoints is not None:
        app.state.endpoints = endpoints
        app.include_router(databricks.router)
    if receiver is not None:
        app.state.webhooks = receiver
        app.include_router(webhooks.router)
    errors.install(app)
    app.add_middleware(RequestContext, recorder=recorder, quiet_paths=QUIET_PATHS)
    app.fast_path = ScoringFastPath(service, guard, recorder)
    if cors is not None and (cors.allow_origins):
        app.cors = Cors(cors)
    app.openapi = lambda: build_openapi(app, service)  # type: ignore[method-assign]
    _document(app, service)
    return app


_SWAGGER_ASSETS = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"})


def _document(app: FastAPI, service: InferenceService) -> None:
    """``/openapi.json`` (showing the models the caller may view) and the Swagger UI at ``/docs``."""

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> Response:
        gate: Gate | None = request.app.state.gate
        spec = build_openapi(app, service)
        if gate is not None and gate.enabled:
            spec = _visible(spec, gate, caller(request), service)
        return Response(orjson.dumps(spec), media_type="application/json")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        """Swagger UI from the package (``swagger-ui-bundle``): it works offline, no CDN."""
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="modelport - Swagger UI",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )

    @app.get("/docs/assets/{asset}", include_in_schema=False)
    async def docs_asset(asset: str) -> Response:
        if asset not in _SWAGGER_ASSETS:
            raise ModelNotFound(f"no such asset '{asset}'", field="path")
        return FileResponse(swagger_ui_path / asset, headers={"Cache-Control": "public, max-age=86400"})


def _visible(
    spec: dict[str, Any], gate: Gate, principal: Principal | None, service: InferenceService
) -> dict[str, Any]:
    """The spec without the per-model paths of models ``principal`` may not view (all of them when anonymous)."""
    hidden = {
        info.name
        for info in service.list()
        if principal is None or not gate.can(principal, Resource("model", info.name), Level.CAN_VIEW)
    }
    if not hidden:
        return spec
    paths = {
        path: op
        for path, op in spec["paths"].items()
        if not (path.startswith("/model/") and path.split("/")[2] in hidden and "{" not in path.split("/")[2])
    }
    return {**spec, "paths": paths}


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
