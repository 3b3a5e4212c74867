"""``POST /webhooks/mlflow``: the MLflow registry webhook receiver (alias moves trigger a hot swap)."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from server.lifecycle.webhooks import WebhookReceiver
from server.rest.routes import read_body

router = APIRouter(tags=["lifecycle"])

_LIMIT = 1024 * 1024


@router.post("/webhooks/mlflow", summary="MLflow registry webhook (model_version_alias.created/deleted)")
async def mlflow_webhook(request: Request) -> Response:
    """Verify the ``X-MLflow-Signature`` HMAC and check the named model's aliases now (401 on a bad signature)."""
    receiver: WebhookReceiver = request.app.state.webhooks
    body = await read_body(request, _LIMIT)
    answer = receiver.receive({k.lower(): v for k, v in request.headers.items()}, body)
    return Response(orjson.dumps(answer), media_type="application/json")
