"""The one ServingError → MCP mapping."""

from __future__ import annotations

import logging

import mcp.types as types
import pytest

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
    Unauthenticated,
)
from tests.tools.models import ltv_deployment
from tools.catalog import ToolSpec, build_spec
from tools.errors import ERROR_META_KEY, access_denied, tool_error, unknown_tool


@pytest.fixture(scope="module")
def spec() -> ToolSpec:
    return build_spec(ltv_deployment().info(), "customer_ltv")


def text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


@pytest.mark.parametrize(
    ("exc", "words", "code", "retry"),
    [
        (
            PayloadTooLarge("'inputs' has 11 rows; a tool call takes at most 10", field="inputs"),
            ["Too many rows", "POST /model/customer_ltv/champion/invocations"],
            "PAYLOAD_TOO_LARGE",
            None,
        ),
        (
            InvalidInput('1 problem in 1 row(s):\nrow 0: age: expected a number, got "x"', field="inputs[0].age"),
            [
                'Invalid arguments for customer_ltv: 1 problem in 1 row(s):\nrow 0: age: expected a number, got "x"',
                "Fix the arguments",
            ],
            "BAD_REQUEST",
            None,
        ),
        (
            ModelNotFound("model 'customer_ltv' is not served"),
            ["no longer served", "List the tools again"],
            "RESOURCE_DOES_NOT_EXIST",
            None,
        ),
        (
            ModelNotReady("model is loading"),
            ["not ready yet", "Retry in a few seconds"],
            "TEMPORARILY_UNAVAILABLE",
            5.0,
        ),
        (
            Overloaded("queue full", retry_after_s=2.0),
            ["busy", "Retry after 2 seconds"],
            "TEMPORARILY_UNAVAILABLE",
            2.0,
        ),
        (InferenceTimeout("no result within 30s"), ["took too long", "fewer rows"], "DEADLINE_EXCEEDED", None),
        (ServerStopping("stopping"), ["shutting down", "Retry later"], "TEMPORARILY_UNAVAILABLE", 5.0),
        (InferenceFailed("shape mismatch"), ["failed on these inputs: shape mismatch"], "INTERNAL_ERROR", None),
        (
            Unauthenticated("authentication required", field="Authorization"),
            ["Not signed in", "access token"],
            "UNAUTHENTICATED",
            None,
        ),
        (
            PermissionDenied("bob has no permission on model 'customer_ltv'; this needs CAN_QUERY"),
            ["Not allowed", "this needs CAN_QUERY", "tools listed for you", "CAN_QUERY on model 'customer_ltv'"],
            "PERMISSION_DENIED",
            None,
        ),
        (
            RateLimited("rate limit of model 'customer_ltv' exceeded for bob; retry after 42 s", retry_after_s=41.2),
            ["Rate limit", "Retry after 42 seconds"],
            "REQUEST_LIMIT_EXCEEDED",
            41.2,
        ),
    ],
)
def test_serving_errors_become_actionable_error_results(
    spec: ToolSpec, exc: Exception, words: list[str], code: str, retry: float | None
) -> None:
    result = tool_error(exc, spec)
    assert result.is_error is True
    assert result.structured_content is None
    for w in words:
        assert w in text(result)
    assert result.meta is not None
    meta = result.meta[ERROR_META_KEY]
    assert meta["code"] == code and meta["type"] == type(exc).__name__
    assert meta.get("retryAfterSeconds") == retry
    if getattr(exc, "field", None):
        assert meta["field"] == exc.field  # type: ignore[attr-defined]


def test_unexpected_exceptions_are_logged_and_hidden(spec: ToolSpec, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="tools.errors"):
        result = tool_error(RuntimeError("secret internals"), spec)
    assert result.is_error is True
    assert "Internal error" in text(result) and "secret" not in text(result)
    assert "tool customer_ltv failed unexpectedly" in caplog.text


def test_unknown_tool_is_invalid_params_listing_the_tools() -> None:
    err = unknown_tool("nope", ["customer_ltv", "customer_propensity"])
    assert err.code == types.INVALID_PARAMS == -32602
    assert err.message == "Unknown tool: nope. Available tools: customer_ltv, customer_propensity"


def test_access_denied_outside_tool_calls_is_a_json_rpc_error() -> None:
    denied = access_denied(PermissionDenied("bob has no permission on model 'x'; this needs CAN_VIEW"), uri="u")
    assert denied.code == types.INVALID_PARAMS
    assert "Not allowed" in denied.message and "CAN_VIEW" in denied.message
    assert denied.data == {"uri": "u", "code": "PERMISSION_DENIED"}
    anonymous = access_denied(Unauthenticated("authentication required"))
    assert anonymous.code == types.INVALID_REQUEST and anonymous.message.startswith("Not signed in")
