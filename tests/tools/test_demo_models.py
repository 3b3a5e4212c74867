"""Every demo model through the real server (``server.main``) over HTTP in both eras: each tool passes the schema
checklist, scores its published example, and has a readable model card."""

from __future__ import annotations

import json

import mcp.types as types
import pytest
from mcp import Client

from tests.conftest import LiveServer
from tools.checks import tool_problems

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

DEMO = ["customer_ltv", "customer_propensity", "fraud_detector", "sales_forecast"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_every_demo_model_is_a_valid_tool_that_scores(live_server: LiveServer, mode: str) -> None:
    async with Client(f"{live_server.url}/mcp", mode=mode) as client:
        tools = (await client.list_tools()).tools
        assert [t.name for t in tools] == DEMO
        for tool in tools:
            meta = (tool.meta or {})["modelport/model"]
            assert tool_problems(tool.name, tool.input_schema, tool.output_schema, meta["example"]) == []
            assert meta["name"] == tool.name and meta["aliases"] == ["champion"]
            assert tool.description and meta["restPath"] in tool.description
            result = await client.call_tool(tool.name, meta["example"])  # the SDK checks it against outputSchema
            assert result.is_error is False
            assert len((result.structured_content or {})["predictions"]) == len(meta["example"]["inputs"])
            card = (await client.read_resource(meta["card"])).contents[0]
            assert isinstance(card, types.TextResourceContents)
            assert json.loads(card.text)["tool"] == tool.name


async def test_categorical_columns_get_enums(live_server: LiveServer) -> None:
    async with Client(f"{live_server.url}/mcp") as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    columns = tools["sales_forecast"].input_schema["properties"]["inputs"]["items"]["properties"]
    assert columns["product"]["enum"] == ["product_A", "product_B", "product_C", "product_D", "product_E"]
