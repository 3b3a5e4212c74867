"""REST and MCP agree: the same row gets the same answer on both doors, or the same refusal.

One real server (uvicorn on 127.0.0.1) with the REST app and /mcp over one service; httpx and the MCP SDK client.
Three deployments of the LTV graph: categories open (the encoder scores an unknown segment as no segment),
categories closed (``handle_unknown="error"``: both doors refuse an unknown segment with the same words), and
columns whose names are no portable property keys (the tool takes portable keys, REST the real names).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from mcp import Client

from server.deployments import DeploymentTable
from server.rest.app import create_rest_app
from server.service import InferenceService
from server.settings import Settings
from tests.conftest import start_server
from tests.tools.live import door_lifespan
from tests.tools.models import ltv_deployment, ltv_value
from tools import McpDoor

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

AWKWARD = ("Tenure (months)", "monthly spend €", "ségment")


@dataclass
class Doors:
    url: str
    door: McpDoor


@pytest.fixture(scope="module")
def doors() -> Iterator[Doors]:
    table = DeploymentTable()
    for dep in (
        ltv_deployment(),
        ltv_deployment(name="ltv_strict", closed=True),
        ltv_deployment(name="ltv_awkward", columns=AWKWARD),
    ):
        table.add(dep)
    service = InferenceService(table, max_tool_rows=10)
    door = McpDoor(service, Settings(max_tool_rows=10))

    app = create_rest_app(service, lifespan=door_lifespan(table, door))
    door.install(app)
    server, thread, url = start_server(None, app)
    try:
        yield Doors(url, door)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


async def _both(doors: Doors, model: str, rest_row: dict[str, object], tool_row: dict[str, object]) -> tuple:
    async with httpx.AsyncClient(base_url=doors.url, timeout=30) as http, Client(f"{doors.url}/mcp") as mcp:
        rest = await http.post(f"/model/{model}/champion/invocations", json={"dataframe_records": [rest_row]})
        tool = await mcp.call_tool(model, {"inputs": [tool_row]})
    return rest, tool


async def test_an_unknown_category_is_scored_on_both_doors_when_the_encoder_ignores_it(doors: Doors) -> None:
    row = {"tenure_months": 12, "monthly_spend": 50.0, "segment": "gold"}
    rest, tool = await _both(doors, "customer_ltv", row, row)
    expected = ltv_value(12, 50.0, "gold")
    assert rest.status_code == 200 and rest.json() == {"predictions": [pytest.approx(expected)]}
    assert not tool.is_error and tool.structured_content == {"predictions": [pytest.approx(expected)]}
    tools = {t.name: t for t in (await _tools(doors))}
    segment = tools["customer_ltv"].input_schema["properties"]["inputs"]["items"]["properties"]["segment"]
    assert "enum" not in segment and segment["examples"] == ["basic", "premium"]


async def test_an_unknown_category_is_refused_on_both_doors_with_the_same_words(doors: Doors) -> None:
    row = {"tenure_months": 12, "monthly_spend": 50.0, "segment": "gold"}
    rest, tool = await _both(doors, "ltv_strict", row, row)
    words = '"gold" is not a category this model knows; use one of ["basic", "premium"]'
    assert rest.status_code == 400
    body = rest.json()
    assert body["error_code"] == "BAD_REQUEST" and body["field"] == "segment"
    assert words in body["message"]
    assert tool.is_error and words in tool.content[0].text
    good = row | {"segment": "premium"}
    rest, tool = await _both(doors, "ltv_strict", good, good)
    assert (
        rest.json()["predictions"]
        == tool.structured_content["predictions"]
        == [pytest.approx(ltv_value(12, 50, "premium"))]
    )


async def test_columns_without_portable_keys_are_mapped_back(doors: Doors) -> None:
    rest_row = dict(zip(AWKWARD, (24, 10.0, "premium"), strict=True))
    tools = {t.name: t for t in (await _tools(doors))}
    props = tools["ltv_awkward"].input_schema["properties"]["inputs"]["items"]["properties"]
    assert list(props) == ["Tenure_months", "monthly_spend", "segment"]
    assert [p["title"] for p in props.values()] == list(AWKWARD)
    tool_row = dict(zip(props, (24, 10.0, "premium"), strict=True))
    rest, tool = await _both(doors, "ltv_awkward", rest_row, tool_row)
    expected = [pytest.approx(ltv_value(24, 10.0, "premium"))]
    assert rest.json()["predictions"] == expected
    assert not tool.is_error and tool.structured_content["predictions"] == expected


async def _tools(doors: Doors) -> list:
    async with Client(f"{doors.url}/mcp") as mcp:
        return (await mcp.list_tools()).tools
