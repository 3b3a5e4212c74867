"""What an MCP tool call adds over the same REST call: sequential 1-row calls over one keep-alive connection each.

Both go through raw httpx (no SDK on the client side), so the difference is the server's MCP door: JSON-RPC
framing, tool lookup, argument validation and the structured result.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
PROTOCOL = "2025-11-25"


def _rpc(client: httpx.Client, method: str, params: dict[str, Any], ident: int, session: str | None) -> httpx.Response:
    headers = dict(HEADERS)
    if session:
        headers |= {"mcp-session-id": session, "mcp-protocol-version": PROTOCOL}
    body = {"jsonrpc": "2.0", "id": ident, "method": method, "params": params}
    return client.post("/mcp", content=orjson.dumps(body), headers=headers)


def _json(response: httpx.Response) -> Any:
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        text = next(line[5:] for line in text.splitlines() if line.startswith("data:"))
    return orjson.loads(text)


def _p50s(first: Any, second: Any, n: int) -> tuple[float, float]:
    """Median ms of ``first()`` and of ``second()``, called alternately so machine noise hits both alike."""
    for _ in range(20):
        first()
        second()
    a, b = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        first()
        t1 = time.perf_counter()
        second()
        t2 = time.perf_counter()
        a.append(t1 - t0)
        b.append(t2 - t1)
    return statistics.median(a) * 1e3, statistics.median(b) * 1e3


def compare(url: str, rest_body: Path, *, n: int = 500) -> str:
    """One markdown line: REST p50, MCP ``tools/call`` p50 (alternating calls) and the difference, one connection."""
    record = {"year": 2025, "product": "product_A", "units": 100.0}
    with httpx.Client(base_url=url, timeout=30) as client:
        init = _rpc(client, "initialize", {"protocolVersion": PROTOCOL, "capabilities": {},
                                           "clientInfo": {"name": "bench", "version": "1"}}, 1, None)  # fmt: skip
        if init.status_code != 200:
            return f"MCP: no MCP endpoint answered at {url}/mcp ({init.status_code})"
        session = init.headers.get("mcp-session-id")
        client.post("/mcp", content=orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                    headers=HEADERS | ({"mcp-session-id": session} if session else {}))  # fmt: skip
        tools = _json(_rpc(client, "tools/list", {}, 2, session))["result"]["tools"]
        name = next((t["name"] for t in tools if t["name"].startswith("sales_forecast")), None)
        if name is None:
            return f"MCP: no sales_forecast tool among {[t['name'] for t in tools]}"
        call = {"name": name, "arguments": {"inputs": [record]}}
        check = _json(_rpc(client, "tools/call", call, 3, session))
        if check.get("result", {}).get("isError", True):
            return f"MCP: tools/call failed: {check}"
        body = rest_body.read_bytes()
        rest, mcp = _p50s(
            lambda: client.post(SCORING, content=body, headers={"Content-Type": "application/json"}),
            lambda: _rpc(client, "tools/call", call, 4, session),
            n,
        )
    return (
        f"MCP tool call vs REST, 1 row, 1 connection, p50 of {n}: REST {rest:.3f} ms, MCP {mcp:.3f} ms, "
        f"MCP adds {mcp - rest:.3f} ms (target <= 1 ms: {'met' if mcp - rest <= 1.0 else 'NOT met'})"
    )


SCORING = "/model/sales_forecast/champion/invocations"
