"""``GET /metrics``: Prometheus text (OpenMetrics when ``Accept`` asks for it), rendered at scrape time."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from server.errors import ModelNotFound, PermissionDenied, Unauthenticated
from server.ops.exposition import render
from server.ops.gate import HOW_TO
from server.ops.identity import Level, Resource
from server.rest.guard import caller

router = APIRouter(tags=["monitoring"])

EVERYTHING = Resource("model", "*")


_EXPOSITION = {
    200: {
        "description": "Prometheus text, or OpenMetrics when Accept asks for it",
        "content": {"text/plain": {"schema": {"type": "string"}},
                    "application/openmetrics-text": {"schema": {"type": "string"}}},
    }
}  # fmt: skip


@router.get(
    "/metrics",
    summary="Prometheus / OpenMetrics exposition of every modelport series",
    response_class=Response,
    responses=_EXPOSITION,  # type: ignore[arg-type]
)
async def metrics(request: Request) -> Response:
    """Needs an admin or a ``*=CAN_VIEW`` grant when auth is on, unless ``auth.public_metrics``."""
    observability = getattr(request.app.state, "observability", None)
    if observability is None:
        raise ModelNotFound("metrics are not enabled on this server", field="path")
    gate = request.app.state.gate
    principal = caller(request)
    if gate is not None and gate.enabled and not request.app.state.public_metrics:
        if principal is None:
            raise Unauthenticated(f"authentication required for /metrics: {HOW_TO}", field="Authorization")
        if not gate.can(principal, EVERYTHING, Level.CAN_VIEW):
            raise PermissionDenied(f"{principal.name} may not read /metrics: it needs an admin or a '*=CAN_VIEW' grant")
    body, content_type = render(observability.registry, request.headers.get("accept"))
    return Response(body, media_type=content_type)
