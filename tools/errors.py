"""The ONE mapping from serving errors to MCP results (the REST door has its own in ``server/rest/errors.py``).

Two planes, as the MCP spec asks:

* **Tool results with ``isError: true``**, for everything the calling model can act on: invalid arguments (with the
  path and the reason), too many rows (pointing to the REST path for bulk scoring), a model still loading,
  overload (with a retry delay), timeouts, shutdown and model failures. Details for programs ride in
  ``_meta["modelport/error"]`` (``code``, ``field``, ``retryAfterSeconds``).
* **JSON-RPC errors**: an unknown tool name is ``-32602`` (INVALID_PARAMS), like the SDK's own servers.

=====================  =================================================================
ServingError           tool result text (isError)
=====================  =================================================================
PayloadTooLarge        too many rows: split the call or POST to the REST path
InvalidInput           invalid arguments: <path>: <reason>; fix them and call again
ModelNotFound          no longer served: list the tools again
ModelNotReady          loading: retry in a few seconds
Overloaded             busy: retry after N seconds
InferenceTimeout       took too long: retry, or send fewer rows
ServerStopping         shutting down: retry later / on another replica
InferenceFailed        the model failed: <reason>
Unauthenticated        not signed in: how to send a token
PermissionDenied       not allowed: who holds what, what it needs; pick a listed tool or ask
RateLimited            rate limit used up: retry after N seconds
(any other exception)  internal error (logged with a traceback)
=====================  =================================================================

Reading a model card without ``CAN_VIEW`` is a JSON-RPC error ``-32602`` naming the permission (``access_denied``),
and so is a list or read request that reaches a handler without a credential (``-32600``; the HTTP layer answers
401 first).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import mcp.types as types
from mcp.shared.exceptions import MCPError

from server.errors import (
    InferenceFailed,
    InferenceTimeout,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServerStopping,
    ServingError,
    Unauthenticated,
)
from tools.catalog import ToolSpec

log = logging.getLogger(__name__)

ERROR_META_KEY = "modelport/error"


def unknown_tool(name: str, available: list[str]) -> MCPError:
    """The JSON-RPC error for a tool name that is not (or no longer) published."""
    shown = ", ".join(available[:20]) + (", ..." if len(available) > 20 else "")
    return MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {name}. Available tools: {shown or 'none'}")


def access_denied(exc: ServingError, **data: str) -> MCPError:
    """The JSON-RPC error for a request the caller may not make outside a tool call: reading a model card without
    ``CAN_VIEW`` (``-32602``), or any request without a credential (``-32600``)."""
    if isinstance(exc, Unauthenticated):
        return MCPError(
            code=types.INVALID_REQUEST, message=f"Not signed in: {exc.message}", data={**data, "code": exc.error_code}
        )
    return MCPError(
        code=types.INVALID_PARAMS,
        message=f"Not allowed: {exc.message}. Read only the resources listed for you.",
        data={**data, "code": exc.error_code},
    )


def tool_error(exc: BaseException, spec: ToolSpec) -> types.CallToolResult:
    """Turn an exception raised while serving a tool call into an ``isError`` result the agent can act on."""
    retry_after: float | None = None
    model = f"model '{spec.model_name}' ({spec.key})"
    if isinstance(exc, PayloadTooLarge):
        text = (
            f"Too many rows: {exc.message}. Split the rows into several calls, or score them in bulk over REST: "
            f'POST {spec.rest_path} with a JSON body {{"dataframe_records": [...]}}.'
        )
    elif isinstance(exc, InvalidInput):
        text = f"Invalid arguments for {spec.name}: {_strip(exc.message)}. Fix the arguments and call again."
    elif isinstance(exc, ModelNotFound):
        text = f"The {model} is no longer served ({exc.message}). List the tools again and pick another one."
    elif isinstance(exc, ModelNotReady):
        retry_after = 5.0
        text = f"The {model} is not ready yet ({exc.message}). Retry in a few seconds."
    elif isinstance(exc, Overloaded):
        retry_after = exc.retry_after_s
        text = f"The {model} is busy ({exc.message}). Retry after {exc.retry_after_s:g} seconds."
    elif isinstance(exc, InferenceTimeout):
        text = f"The {model} took too long ({exc.message}). Retry, or send fewer rows per call."
    elif isinstance(exc, ServerStopping):
        retry_after = 5.0
        text = f"The server is shutting down ({exc.message}). Retry later."
    elif isinstance(exc, Unauthenticated):
        text = f"Not signed in to modelport ({exc.message}). Configure the MCP client with an access token."
    elif isinstance(exc, PermissionDenied):
        text = (
            f"Not allowed to use the {model}: {exc.message}. Use one of the tools listed for you, or ask an "
            f"administrator for CAN_QUERY on model '{spec.model_name}'."
        )
    elif isinstance(exc, RateLimited):
        retry_after = exc.retry_after_s
        text = f"Rate limit of the {model} used up ({exc.message}). Retry after {math.ceil(exc.retry_after_s)} seconds."
    elif isinstance(exc, InferenceFailed):
        text = f"The {model} failed on these inputs: {exc.message}."
    elif isinstance(exc, ServingError):
        text = f"The {model} could not score the request: {exc.message}."
    else:
        log.error("tool %s failed unexpectedly", spec.name, exc_info=exc)
        text = f"Internal error while scoring with the {model}. The server logged the details."
    return error_result(text, _error_meta(exc, retry_after))


def error_result(text: str, meta: dict[str, Any] | None = None) -> types.CallToolResult:
    """An ``isError`` tool result with one text block."""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        is_error=True,
        _meta={ERROR_META_KEY: meta} if meta else None,
    )


#: The HTTP status REST would answer for the same failure (metrics and inference tables count MCP calls alike).
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (PayloadTooLarge, 413),
    (InvalidInput, 400),
    (Unauthenticated, 401),
    (PermissionDenied, 403),
    (ModelNotFound, 404),
    (RateLimited, 429),
    (ModelNotReady, 503),
    (Overloaded, 503),
    (ServerStopping, 503),
    (InferenceTimeout, 504),
)


def status_of(result: types.CallToolResult) -> int:
    """The REST-equivalent status of a tool result: 200, or the one its error meta names."""
    if not result.is_error:
        return 200
    meta = (result.meta or {}).get(ERROR_META_KEY) or {}
    return int(meta.get("status", 500))


def _error_meta(exc: BaseException, retry_after: float | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"code": getattr(exc, "error_code", "INTERNAL_ERROR"), "type": type(exc).__name__}
    meta["status"] = next((status for cls, status in _STATUS if isinstance(exc, cls)), 500)
    field = getattr(exc, "field", None)
    if field:
        meta["field"] = field
    if retry_after is not None:
        meta["retryAfterSeconds"] = retry_after
    return meta


def _strip(message: str) -> str:
    message = message.strip().rstrip(".")
    return message.removeprefix("invalid arguments: ")
