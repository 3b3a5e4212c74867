"""Every demo model through the real server (``server.main``) over HTTP in both eras: each tool passes the schema
checklist and every provider's function-calling rules, scores its published example, and has a readable model
card."""

from __future__ import annotations

import json

import httpx
import mcp.types as types
import pytest
from mcp import Client

from tests.conftest import LiveServer
from tools.checks import RULE_SETS, portability_report, tool_problems

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
            assert portability_report(tool.name, tool.input_schema) == {rule_set: [] for rule_set in RULE_SETS}
            assert meta["name"] == tool.name and meta["aliases"] == ["champion"]
            assert tool.description and meta["restPath"] in tool.description
            result = await client.call_tool(tool.name, meta["example"])  # the SDK checks it against outputSchema
            assert result.is_error is False
            assert len((result.structured_content or {})["predictions"]) == len(meta["example"]["inputs"])
            card = (await client.read_resource(meta["card"])).contents[0]
            assert isinstance(card, types.TextResourceContents)
            assert json.loads(card.text)["tool"] == tool.name


async def test_categories_follow_the_encoder_and_classes_are_fixed_properties(live_server: LiveServer) -> None:
    """The demo encoders ignore unknown categories (``handle_unknown="ignore"``): known values are examples, not an
    enum, and an unknown one is scored like REST scores it. Classifier probabilities have one property per class."""
    async with Client(f"{live_server.url}/mcp") as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        columns = tools["sales_forecast"].input_schema["properties"]["inputs"]["items"]["properties"]
        assert "enum" not in columns["product"]
        assert columns["product"]["examples"] == ["product_A", "product_B", "product_C", "product_D", "product_E"]
        row = {"age": 40, "income": 52000.0, "segment": "gold", "channel": "web", "tenure_months": 24, "has_app": 1}
        result = await client.call_tool("customer_propensity", {"inputs": [row]})
        assert result.is_error is False
        probabilities = tools["customer_propensity"].output_schema["properties"]["predictions"]["items"]
        probabilities = probabilities["properties"]["probabilities"]
        assert sorted(probabilities["properties"]) == ["0", "1"] and probabilities["additionalProperties"] is False
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        rest = await http.post("/model/customer_propensity/champion/invocations", json={"dataframe_records": [row]})
    assert rest.status_code == 200
    assert result.structured_content is not None
    tool_p1 = result.structured_content["predictions"][0]["probabilities"]["1"]
    assert rest.json()["predictions"][0][1] == pytest.approx(tool_p1, rel=1e-6)
