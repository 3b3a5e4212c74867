"""What every transport must show a client: the same assertions run in-process, over HTTP (both eras) and stdio."""

from __future__ import annotations

import json
from typing import Any

import mcp.types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.tools.models import ltv_value, propensity_p1

LTV_ROWS = [
    {"tenure_months": 12, "monthly_spend": 40.5, "segment": "premium"},
    {"tenure_months": 3, "monthly_spend": 10.0, "segment": "basic"},
]
PROPENSITY_ROWS = [{"age": 20.0, "visits": 1}, {"age": 60.0, "visits": 8}]


def text_of(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def assert_tools_listed(client: Client) -> dict[str, types.Tool]:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert sorted(tools) == ["customer_ltv", "customer_propensity"]
    ltv = tools["customer_ltv"]
    assert ltv.title == "customer_ltv v3 @champion"
    record = ltv.input_schema["properties"]["inputs"]["items"]
    assert record["properties"]["segment"]["examples"] == ["basic", "premium"]  # the encoder scores other values
    assert record["required"] == ["tenure_months", "monthly_spend", "segment"]
    assert ltv.output_schema is not None and ltv.output_schema["type"] == "object"
    assert ltv.annotations is not None
    assert (
        ltv.annotations.read_only_hint,
        ltv.annotations.idempotent_hint,
        ltv.annotations.destructive_hint,
        ltv.annotations.open_world_hint,
    ) == (True, True, False, False)
    assert ltv.meta is not None and ltv.meta["modelport/model"]["version"] == "3"
    assert ltv.description is not None and "Example arguments" in ltv.description
    return tools


async def assert_scores(client: Client) -> None:
    ltv = await client.call_tool("customer_ltv", {"inputs": LTV_ROWS})
    assert ltv.is_error is False, text_of(ltv)
    expected = [ltv_value(r["tenure_months"], r["monthly_spend"], r["segment"]) for r in LTV_ROWS]
    assert ltv.structured_content == {"predictions": pytest.approx(expected)}
    assert json.loads(text_of(ltv)) == ltv.structured_content
    assert ltv.meta is not None and ltv.meta["modelport/model"]["batchRows"] >= 2

    prop = await client.call_tool("customer_propensity", {"inputs": PROPENSITY_ROWS})
    assert prop.is_error is False, text_of(prop)
    assert prop.structured_content is not None
    rows: list[dict[str, Any]] = prop.structured_content["predictions"]
    assert [r["label"] for r in rows] == [0, 1]
    for row, args in zip(rows, PROPENSITY_ROWS, strict=True):
        p1 = propensity_p1(args["age"], args["visits"])
        assert row["probabilities"] == {"0": pytest.approx(1 - p1, abs=1e-6), "1": pytest.approx(p1, abs=1e-6)}


async def assert_errors(client: Client) -> None:
    bad = await client.call_tool("customer_ltv", {"inputs": [{"tenure_months": "34", "segment": "gold", "x": 1}]})
    assert bad.is_error is True
    assert "3 problems in 1 row(s):" in text_of(bad)
    assert "row 0: x: unknown field; the fields are " in text_of(bad)
    assert 'tenure_months: expected an integer, got "34" (send 34, not "34")' in text_of(bad)
    assert "monthly_spend: missing (required)" in text_of(bad)
    assert "segment" not in text_of(bad).split("the fields are")[0]  # "gold" is scored, as REST scores it

    many = await client.call_tool("customer_ltv", {"inputs": LTV_ROWS * 6})
    assert many.is_error is True
    assert "12 rows" in text_of(many) and "POST /model/customer_ltv/champion/invocations" in text_of(many)

    with pytest.raises(MCPError) as unknown:
        await client.call_tool("no_such_model", {"inputs": [{}]})
    assert unknown.value.code == types.INVALID_PARAMS
    assert "Unknown tool: no_such_model" in unknown.value.message


async def assert_cards(client: Client) -> None:
    resources = (await client.list_resources()).resources
    assert sorted(str(r.uri) for r in resources) == [
        "modelport://models/customer_ltv/champion",
        "modelport://models/customer_propensity/champion",
    ]
    templates = (await client.list_resource_templates()).resource_templates
    assert [t.uri_template for t in templates] == ["modelport://models/{name}/{version}"]

    read = await client.read_resource("modelport://models/customer_ltv/3")
    content = read.contents[0]
    assert isinstance(content, types.TextResourceContents) and content.mime_type == "application/json"
    card = json.loads(content.text)
    assert card["name"] == "customer_ltv" and card["version"] == "3" and card["tool"] == "customer_ltv"
    assert card["training_run"]["metrics"] == {"rmse": 1.5, "r2": 0.9}
    assert card["training_run"]["params"] == {"alpha": "0.1"}
    assert card["lineage"]["run_id"] == "run-customer_ltv-3" and card["lineage"]["experiment_id"] == "7"
    assert card["serving"]["runtime"] == "onnx" and card["serving"]["provider"] == "CPUExecutionProvider"
    assert card["input_example"] == [{"tenure_months": 12, "monthly_spend": 40.5, "segment": "premium"}]
    assert card["tags"] == {"team": "growth"}

    with pytest.raises(MCPError) as missing:
        await client.read_resource("modelport://models/nope/1")
    assert missing.value.code == types.INVALID_PARAMS
    assert "not served" in missing.value.message
