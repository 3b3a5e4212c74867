"""Tool calls are recorded like REST requests (door ``mcp``): metrics count them by status, with rows and model."""

from __future__ import annotations

import pytest
from mcp import Client

from server.ops.metrics import Metrics
from server.ops.record import Exchange, Recorder
from server.service import InferenceService
from server.settings import Settings
from tests.tools import scenarios
from tools import McpDoor

pytestmark = pytest.mark.anyio


class Captured:
    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []

    def wants(self, model: str | None, endpoint: str | None) -> bool:
        return model == "customer_propensity"

    def capture(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)


async def test_tool_calls_are_counted_and_captured(service: InferenceService) -> None:
    metrics, captured = Metrics(), Captured()
    door = McpDoor(service, Settings(max_tool_rows=10), recorder=Recorder(metrics, captured))
    async with Client(door.server) as client:
        ok = await client.call_tool("customer_propensity", {"inputs": scenarios.PROPENSITY_ROWS})
        assert ok.is_error is False
        bad = await client.call_tool("customer_propensity", {"inputs": [{"nope": 1}]})
        assert bad.is_error is True
    series = {k: v for k, v in metrics.series.items() if k[0] == "mcp" and k[1] == "customer_propensity"}
    assert sum(s.by_class[1] for s in series.values()) == 1
    assert sum(s.by_class[3] for s in series.values()) == 1
    assert sum(s.rows for s in series.values()) == len(scenarios.PROPENSITY_ROWS)
    assert [e.status for e in captured.exchanges] == [200, 400]
    first = captured.exchanges[0]
    assert first.door == "mcp" and first.request is not None and b"inputs" in first.request
    assert first.response is not None and b"predictions" in first.response
