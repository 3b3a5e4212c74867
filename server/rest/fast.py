"""The scoring routes served straight on ASGI, ahead of the FastAPI stack.

``POST /model/{name}/{version_or_alias}/invocations``, ``POST /invocations`` and
``POST /v2/models/{m}[/versions/{v}]/infer`` are the hot path: for a 1-row request FastAPI's middleware stack,
router, request object and exception wrappers cost several times the decode + inference (docs/performance.md).
Here they get exactly what the FastAPI routes do (same handlers in ``routes.py``/``v2.py``, same request id, access
log line and error mapping from ``errors.py``) in one plain coroutine, and the response goes out as a single body
message with its ``content-length``. The FastAPI routes stay for the OpenAPI document and serve these paths whenever
the fast path is off (``RestApp`` turns it off when the app has middleware of its own beyond ``RequestContext``).

Admission comes before any work (docs/reliability.md "Limits"): after the guard, ``InferenceService.admit`` reserves
the declared body from the in-flight budget and a slot in the model's queue (waiting for room, bounded, when there is
none) before the body is read or decoded: a 503 costs neither. ``X-Request-Timeout-Ms`` sets the request's own
deadline. From admission to the answer the request is marked cancellable: ``SingleWriteProtocol`` cancels it when
the client goes away, and the batcher drops it from its waiting room or queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from server.errors import InvalidInput, PayloadTooLarge, ServingError
from server.ops.record import Recorder
from server.rest import errors
from server.rest.guard import RestGuard
from server.rest.middleware import HEADER, log_request, request_id_from
from server.rest.protocol import CANCEL_ON_DISCONNECT, CANCELLED
from server.rest.routes import note_prediction, score, single_model
from server.rest.v2 import HEADER_LENGTH, Reply, error_reply, infer
from server.service import Admission, InferenceService

Handler = Callable[[dict[str, Any], bytes, dict[bytes, bytes]], Awaitable[Reply]]
Route = tuple[Handler, str | None, str | None]
"""A matched scoring route: its handler, the model it scores (``None``: the single served model) and the version or
alias named in the path."""

_JSON = b"application/json"
_TIMEOUT = b"x-request-timeout-ms"
_WANTED = frozenset((b"content-type", b"content-length", b"authorization", HEADER_LENGTH.encode(), _TIMEOUT))
_CLOSE = (b"connection", b"close")


class _Disconnected(Exception):
    """The client went away before sending its whole body."""


class ScoringFastPath:
    """Matches and serves the scoring routes; ``route(scope)`` says whether a request is one of them."""

    def __init__(
        self, service: InferenceService, guard: RestGuard | None = None, recorder: Recorder | None = None
    ) -> None:
        self.service = service
        self.guard = guard
        self.recorder = recorder

    def route(self, scope: Scope) -> Route | None:
        """The handler for a scoring request, ``None`` for anything else (FastAPI serves it)."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path: str = scope["path"]
        if path.endswith("/invocations"):
            if path == "/invocations":
                return self._single, None, None
            parts = path.split("/")
            if len(parts) == 5 and parts[1] == "model" and parts[2] and parts[3]:
                name, version = parts[2], parts[3]
                return (
                    lambda state, body, headers: self._invocations(name, version, state, body, headers),
                    name,
                    version,
                )
        elif path.startswith("/v2/models/") and path.endswith("/infer"):
            parts = path.split("/")
            if len(parts) == 5 and parts[3]:
                name, v2version = parts[3], None
            elif len(parts) == 7 and parts[3] and parts[4] == "versions" and parts[5]:
                name, v2version = parts[3], parts[5]
            else:
                return None
            return lambda state, body, headers: self._infer(name, v2version, state, body, headers), name, v2version
        return None

    async def serve(self, matched: Route, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the route's handler with the gate, admission, request id, body limit, error mapping and the
        access-log line."""
        handler, model, version = matched
        started = time.perf_counter()
        raw_headers = scope["headers"]
        headers = {k: v for k, v in raw_headers if k in _WANTED}
        request_id = request_id_from(raw_headers)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        admission: Admission | None = None
        close = False
        try:
            if model is not None:
                state["model"] = model
            try:
                if self.guard is not None:  # identity → permission → rate limit, before reading the body
                    await self.guard.enter_model(state, headers.get(b"authorization"), model)
                length = headers.get(b"content-length")
                declared = int(length) if length is not None and length.isdigit() else None
                limit = self.service.max_body_bytes
                if declared is not None and declared > limit:
                    close = True  # do not read it: the protocol discards the rest (bounded) and closes
                    raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}", field="body")
                timeout = headers.get(_TIMEOUT)
                admission = self.service.admit(
                    model, version, declared, timeout_s=None if timeout is None else _timeout_s(timeout)
                )  # a 503 here (or a wait for room below) costs no read and no decode
                scope[CANCEL_ON_DISCONNECT] = True  # from now on the client going away cancels this task
                if admission.waiting is not None:
                    await admission.ready()
                body = await self._body(receive, None if declared is not None else admission)
                state["body"] = body
                reply = await handler(state, body, headers)
            except _Disconnected:
                status = 499
                return
            except ServingError as exc:
                state["error"] = exc.message
                if scope["path"].startswith("/v2/"):
                    reply = error_reply(exc, request_id)
                else:
                    reply = await self._mapped(errors.serving_error, exc, scope, receive)
            except Exception as exc:
                reply = await self._mapped(errors.unexpected_error, exc, scope, receive)
            status = reply.status
            out = [(b"content-type", reply.content_type.encode("latin-1")),
                   (b"content-length", str(len(reply.body)).encode("latin-1")),
                   (HEADER, request_id.encode("latin-1"))]  # fmt: skip
            out += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
            if close:
                out.append(_CLOSE)
            state["response"] = reply.body
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": reply.body})
        except asyncio.CancelledError:
            status = 499
            if scope.get(CANCELLED) is not True:
                raise
            task = asyncio.current_task()  # cancelled by the protocol: the client went away; the request ends here
            if task is not None:
                task.uncancel()
        finally:
            if admission is not None:
                admission.release()
            log_request(scope, state, status, started)
            if self.recorder is not None:
                self.recorder.record("v2" if scope["path"].startswith("/v2/") else "rest", state, status, started)

    async def _body(self, receive: Receive, unsized: Admission | None) -> bytes:
        """The whole body; ``unsized``: no ``Content-Length`` was given, so each chunk is reserved as it comes."""
        limit = self.service.max_body_bytes
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes", field="body")
            if unsized is not None:
                unsized.grow(len(body))
            return body
        chunks, size = [body], len(body)
        if unsized is not None:
            unsized.grow(len(body))
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes", field="body")
            if unsized is not None:
                unsized.grow(len(chunk))
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    async def _mapped(
        handler: Callable[[Request, Exception], Awaitable[Response]], exc: Exception, scope: Scope, receive: Receive
    ) -> Reply:
        """Render an error with the REST door's one mapping (``server/rest/errors.py``)."""
        response = await handler(Request(scope, receive), exc)
        extra = {k.decode("latin-1"): v.decode("latin-1") for k, v in response.raw_headers}
        extra.pop("content-type", None)
        extra.pop("content-length", None)
        return Reply(bytes(response.body), response.status_code, "application/json", extra)

    async def _invocations(
        self, name: str, version: str, state: dict[str, Any], body: bytes, headers: dict[bytes, bytes]
    ) -> Reply:
        state["model"] = name
        if version.isdigit():
            state["version"] = version
        else:
            state["alias"] = version
        content_type = headers.get(b"content-type")
        if content_type is not None:
            state["content_type"] = content_type.decode("latin-1")
        prediction = await score(
            self.service, name, version, body, content_type.decode("latin-1") if content_type else None
        )
        extra = note_prediction(state, prediction)
        return Reply(prediction.mlflow_json(), headers=extra) if extra else Reply(prediction.mlflow_json())

    async def _single(self, state: dict[str, Any], body: bytes, headers: dict[bytes, bytes]) -> Reply:
        name, version = single_model(self.service)
        return await self._invocations(name, version, state, body, headers)

    async def _infer(
        self, name: str, version: str | None, state: dict[str, Any], body: bytes, headers: dict[bytes, bytes]
    ) -> Reply:
        state["model"], state["version"] = name, version
        length = headers.get(HEADER_LENGTH.encode())
        return await infer(self.service, name, version, body, length.decode("latin-1") if length else None, state)


def _timeout_s(value: bytes) -> float:
    """``X-Request-Timeout-Ms``: whole milliseconds (as gRPC's ``grpc-timeout``, the client's own deadline)."""
    text = value.strip()
    if not text.isdigit() or len(text) > 12:
        raise InvalidInput(
            f"X-Request-Timeout-Ms must be a whole number of milliseconds, got {value.decode('latin-1')!r}",
            field="X-Request-Timeout-Ms",
        )
    return int(text) / 1000.0
