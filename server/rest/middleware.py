"""Request id and one access-log line per request (pure ASGI, no body buffering)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("modelport.access")

_HEADER = b"x-request-id"


class RequestContext:
    """Assigns ``X-Request-Id`` (kept from the client when given), echoes it, and logs the request once.

    Route handlers add ``model``, ``version``, ``rows`` and ``batch_rows`` to ``request.state`` for the log line.
    """

    def __init__(self, app: ASGIApp, *, quiet_paths: tuple[str, ...] = ("/ping", "/health")) -> None:
        self.app = app
        self.quiet_paths = quiet_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = ""
        for key, value in scope["headers"]:
            if key == _HEADER:
                request_id = value.decode("latin-1")[:128]
                break
        request_id = request_id or uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        header = (_HEADER, request_id.encode("latin-1"))

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope["path"]
            if path not in self.quiet_paths or status >= 400:
                fields = {
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": path,
                    "status": status,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                }
                for key in ("model", "version", "rows", "batch_rows", "batch_requests", "error"):
                    if key in state:
                        fields[key] = state[key]
                access_log.info("request", extra=fields)
