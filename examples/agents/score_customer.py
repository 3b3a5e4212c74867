"""A minimal agent-side program with the MCP Python SDK ``Client``: list modelport's tools, then score one customer
with the ``customer_propensity`` and ``customer_ltv`` tools of the demo models.

The row for each tool is built from the tool's own ``inputSchema`` (the customer profile holds every field either
model needs), so nothing here hard-codes a model signature.

Run ``make demo`` (or ``modelport demo``) in another terminal, then::

    python examples/agents/score_customer.py                          # http://127.0.0.1:8000/mcp, newest protocol
    python examples/agents/score_customer.py --legacy                 # the initialize-handshake era (2025-11-25)
    python examples/agents/score_customer.py --stdio                  # spawn `modelport mcp --stdio` (repo root)
    MODELPORT_TOKEN=mp_... python examples/agents/score_customer.py   # a server with auth on (or --token)

With auth on, the SDK client sends ``Authorization: Bearer <token>`` through an ``httpx2.AsyncClient`` it is given
(``streamable_http_client(url, http_client=...)``), and sees only the tools the token may query.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from contextlib import AsyncExitStack
from typing import Any

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

DEFAULT_URL = "http://127.0.0.1:8000/mcp"
DEMO_MODELS = [
    f"models:/{name}@champion" for name in ("sales_forecast", "fraud_detector", "customer_propensity", "customer_ltv")
]
CUSTOMER: dict[str, Any] = {
    "age": 34,
    "income": 52000.0,
    "segment": "consumer",
    "channel": "app",
    "tenure_months": 18,
    "has_app": 1,
    "orders_per_year": 8.0,
    "avg_order_value": 65.0,
}


def row_for(tool_input_schema: dict[str, Any], profile: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``profile`` that the tool's input rows take."""
    columns = tool_input_schema["properties"]["inputs"]["items"]["properties"]
    return {name: profile[name] for name in columns if name in profile}


async def score_customer(
    server: str | StdioServerParameters | Any,
    profile: dict[str, Any] = CUSTOMER,
    *,
    mode: str = "auto",
    token: str | None = None,
) -> dict[str, Any]:
    """Connect, list the tools and score ``profile`` with the propensity and LTV models.

    Args:
        server: an MCP endpoint URL, stdio parameters, or an in-process ``mcp.server.Server``.
        profile: the customer's fields.
        mode: ``"auto"`` (newest protocol, falls back) or ``"legacy"`` (initialize handshake).
        token: a bearer token for an endpoint URL with auth on (a ``mp_...`` personal access token or an OAuth
            access token).

    Returns:
        ``{"tools": [...], "engagement_probability": p, "lifetime_value_eur": v, "expected_value_eur": p * v}``.
    """
    problem = None
    async with AsyncExitStack() as stack:
        if isinstance(server, str) and token:
            http = await stack.enter_async_context(
                httpx2.AsyncClient(
                    headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30.0, read=300.0)
                )
            )
            server = streamable_http_client(server, http_client=http)
        client = await stack.enter_async_context(Client(server, mode=mode))
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        results: dict[str, Any] = {"protocol": client.protocol_version, "tools": sorted(tools)}
        for name in ("customer_propensity", "customer_ltv"):
            if name not in tools:
                problem = (
                    f"the server lists no {name} tool for you; its tools: {sorted(tools)} (did you run `make demo`? "
                    f"with auth on, does your token grant CAN_QUERY on {name}?)"
                )
                break
            result = await client.call_tool(name, {"inputs": [row_for(tools[name].input_schema, profile)]})
            if result.is_error:
                problem = f"{name} failed: {result.content[0]}"
                break
            results[name] = (result.structured_content or {})["predictions"][0]
    if problem:
        raise SystemExit(problem)
    propensity = results.pop("customer_propensity")
    p = float(propensity["probabilities"]["1"]) if isinstance(propensity, dict) else float(propensity)
    ltv = float(results.pop("customer_ltv"))
    return results | {"engagement_probability": p, "lifetime_value_eur": ltv, "expected_value_eur": p * ltv}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", nargs="?", default=DEFAULT_URL, help="MCP endpoint (default %(default)s)")
    parser.add_argument("--legacy", action="store_true", help="use the initialize handshake (2025-11-25)")
    parser.add_argument("--stdio", action="store_true", help="spawn `modelport mcp --stdio` instead of HTTP")
    parser.add_argument(
        "--token", default=os.environ.get("MODELPORT_TOKEN"), help="bearer token (default $MODELPORT_TOKEN)"
    )
    args = parser.parse_args(argv)
    server: str | StdioServerParameters = args.url
    if args.stdio:
        server = StdioServerParameters(command="modelport", args=["mcp", "--stdio", *DEMO_MODELS])
    out = asyncio.run(score_customer(server, mode="legacy" if args.legacy else "auto", token=args.token))
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
