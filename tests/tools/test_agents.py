"""The agent examples against the demo models: the SDK Client program (HTTP both eras, stdio) and the pydantic-ai
agent with pydantic-ai's TestModel (no LLM key), which calls every tool through its JSON schema."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from mcp import StdioServerParameters

from tests.conftest import DemoRegistry, LiveServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agents"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_agents_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_scored(out: dict[str, object]) -> None:
    assert out["tools"] == ["customer_ltv", "customer_propensity", "fraud_detector", "sales_forecast"]
    p, ltv = out["engagement_probability"], out["lifetime_value_eur"]
    assert isinstance(p, float) and 0.0 < p < 1.0
    assert isinstance(ltv, float) and ltv > 0.0
    assert out["expected_value_eur"] == pytest.approx(p * ltv)


@pytest.mark.parametrize(("mode", "protocol"), [("auto", "2026-07-28"), ("legacy", "2025-11-25")])
async def test_score_customer_over_http(live_server: LiveServer, mode: str, protocol: str) -> None:
    out = await load("score_customer").score_customer(f"{live_server.url}/mcp", mode=mode)
    assert out["protocol"] == protocol
    assert_scored(out)


async def test_score_customer_over_stdio_with_the_cli(demo_registry: DemoRegistry) -> None:
    command = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "server",
            "mcp",
            "--stdio",
            "--state-dir",
            str(demo_registry.state_dir),
            "--registry-uri",
            demo_registry.tracking_uri,
            *(ref.uri for ref in demo_registry.refs),
        ],
        cwd=str(EXAMPLES.parents[1]),
    )
    assert_scored(await load("score_customer").score_customer(command))


async def test_pydantic_agent_calls_every_tool_through_its_schema(live_server: LiveServer) -> None:
    pytest.importorskip("pydantic_ai.mcp")
    from pydantic_ai.messages import RetryPromptPart, ToolReturnPart
    from pydantic_ai.models.test import TestModel

    agent = load("pydantic_agent").build_agent(f"{live_server.url}/mcp", TestModel())
    result = await agent.run("Score a customer with every model.")
    parts = [p for m in result.all_messages() for p in m.parts]
    assert not [p for p in parts if isinstance(p, RetryPromptPart)]  # every generated call passed validation
    returned = {p.tool_name: p.content for p in parts if isinstance(p, ToolReturnPart)}
    assert sorted(returned) == ["customer_ltv", "customer_propensity", "fraud_detector", "sales_forecast"]
    for content in returned.values():
        assert isinstance(content, dict) and len(content["predictions"]) >= 1
    assert set(json.loads(result.output)) == set(returned)
