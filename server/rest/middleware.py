"""Request id and one access-log line per request (pure ASGI, no body buffering)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from itertools import count
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.ops.record import Recorder

access_log = logging.getLogger("modelport.access")

HEADER = b"x-request-id"
_LOG_KEYS = (
    "principal", "endpoint", "model", "alias", "version", "rows", "batch_rows", "batch_requests", "ignored", "error",
)  # fmt: skip
# Request ids: a random per-process prefix and a counter (unique, and no getrandom() syscall per request).
_PREFIX = os.urandom(8).hex()
_COUNTER = count(1)


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-Id`` (at most 128 characters), or a new unique id."""
    for key, value in headers:
        if key == HEADER:
            given = value.decode("latin-1")[:128]
            if given:
                return given
            break
    return f"{_PREFIX}{next(_COUNTER):016x}"


def log_request(scope: Scope, state: dict[str, Any], status: int, started: float, quiet: tuple[str, ...] = ()) -> None:
    """The access-log line: request id, method, path, status, latency and what the handler put in ``state``."""
    path = scope["path"]
    if (path in quiet and status < 400) or not access_log.isEnabledFor(logging.INFO):
        return
    fields = {
        "request_id": state.get("request_id"),
        "method": scope["method"],
        "path": path,
        "status": status,
        "latency_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    for key in _LOG_KEYS:
        if key in state:
            fields[key] = state[key]
    # makeRecord + handle is what ``access_log.info`` does, minus the caller lookup (a stack walk per request).
    access_log.handle(
        access_log.makeRecord(access_log.name, logging.INFO, __file__, 0, "request", (), None, extra=fields)
    )


class RequestContext:
    """Assigns ``X-Request-Id`` (kept from the client when given), echoes it, and logs the request once.

    Route handlers add ``model``, ``version``, ``rows`` and ``batch_rows`` to ``request.state`` for the log line.
    """

    def __init__(
        self, app: ASGIApp, *, quiet_paths: tuple[str, ...] = ("/ping", "/health"), recorder: Recorder | None = None
    ) -> None:
        self.app = app
        self.quiet_paths = quiet_paths
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(scope["headers"])
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        header = (HEADER, request_id.encode("latin-1"))

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            log_request(scope, state, status, started, self.quiet_paths)
            if self.recorder is not None:
                self.recorder.record(door_of(scope["path"]), state, status, started)


def door_of(path: str) -> str:
    """Which door a request came through, for metrics and inference tables."""
    if path.startswith("/v2/"):
        return "v2"
    if path.startswith("/serving-endpoints/"):
        return "databricks"
    return "rest"
