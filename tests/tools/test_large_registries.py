"""Large registries: cursor pagination of tools/list and resources/list, and catalogue mode (search_models,
describe_model, predict), with the real SDK client in both protocol eras, in-process and over HTTP."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import mcp.types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types.methods import serialize_server_result

from server.main import build_gate
from server.ops.gate import Gate
from server.ops.identity import Level, Resource
from server.ops.limits import RateLimit
from server.service import InferenceService
from server.settings import Settings
from tests.tools import scenarios
from tests.tools.live import serve_door
from tests.tools.models import MAX_TOOL_ROWS, ltv_deployment, ltv_value, propensity_deployment, start_service
from tests.tools.test_auth import connect
from tools import McpDoor
from tools.catalog import CatalogBuilder
from tools.checks import RULE_SETS, provider_problems, tool_problems
from tools.directory import NAMES
from tools.errors import ERROR_META_KEY
from tools.paging import encode_cursor, page
from tools.search import entry, rank

pytestmark = pytest.mark.anyio

ERAS = ["legacy", "auto"]
LTV_NAMES = ["churn_a", "churn_b", "churn_c", "forecast_d", "forecast_e", "forecast_f"]
CATALOG = ["search_models", "describe_model", "predict"]


def settings(**overrides: Any) -> Settings:
    return Settings(max_tool_rows=MAX_TOOL_ROWS, **overrides)


@pytest.fixture
async def big() -> AsyncIterator[InferenceService]:
    """Eight deployments: six copies of the LTV model under other names, and both test models."""
    deployments = [ltv_deployment(name=n, alias=None, version="1") for n in LTV_NAMES]
    svc = await start_service(*deployments, ltv_deployment(), propensity_deployment())
    try:
        yield svc
    finally:
        for dep in svc.table.all():
            await dep.batcher.stop()


async def all_pages(client: Client, what: str = "tools") -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        if what == "tools":
            result: Any = await client.list_tools(cursor=cursor)
            pages.append([t.name for t in result.tools])
        else:
            result = await client.list_resources(cursor=cursor)
            pages.append([str(r.uri) for r in result.resources])
        cursor = result.next_cursor
        if cursor is None:
            return pages
        assert len(pages) < 20, "the cursors never end"


# -- pagination -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_tools_list_pages_cover_every_tool_once(big: InferenceService, mode: str) -> None:
    door = McpDoor(big, settings(mcp_page_size=3))
    async with Client(door.server, mode=mode) as client:
        pages = await all_pages(client)
    assert [len(p) for p in pages] == [3, 3, 2]
    flat = [name for p in pages for name in p]
    assert flat == sorted([*LTV_NAMES, "customer_ltv", "customer_propensity"])


@pytest.mark.parametrize("mode", ERAS)
async def test_resources_list_pages_the_model_cards(big: InferenceService, mode: str) -> None:
    door = McpDoor(big, settings(mcp_page_size=5))
    async with Client(door.server, mode=mode) as client:
        pages = await all_pages(client, "resources")
    assert [len(p) for p in pages] == [5, 3]
    flat = [uri for p in pages for uri in p]
    assert flat == sorted(flat) and len(set(flat)) == 8
    assert "modelport://models/churn_a/1" in flat


async def test_a_usual_registry_fits_one_page(big: InferenceService) -> None:
    assert Settings().mcp_page_size == 100
    door = McpDoor(big, settings())
    async with Client(door.server) as client:
        result = await client.list_tools()
    assert len(result.tools) == 8 and result.next_cursor is None


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        base64.urlsafe_b64encode(b"not json").decode(),
        encode_cursor("resources/list", "1:churn_a", "x"),  # another list's cursor
        base64.urlsafe_b64encode(json.dumps({"v": 9, "list": "tools/list", "after": "a", "fp": "x"}).encode()).decode(),
    ],
)
async def test_an_unknown_cursor_is_invalid_params(big: InferenceService, mode: str, cursor: str) -> None:
    door = McpDoor(big, settings(mcp_page_size=3))
    async with Client(door.server, mode=mode) as client:
        with pytest.raises(MCPError, match="Invalid cursor for tools/list") as raised:
            await client.list_tools(cursor=cursor)
    assert raised.value.error.code == types.INVALID_PARAMS


async def test_a_cursor_continues_after_the_last_tool_seen_when_the_registry_changes(big: InferenceService) -> None:
    door = McpDoor(big, settings(mcp_page_size=3))
    async with Client(door.server) as client:
        first = await client.list_tools()
        assert [t.name for t in first.tools] == ["churn_a", "churn_b", "churn_c"]
        big.table.remove("churn_c/1")  # the last tool seen goes away
        big.table.add(ltv_deployment(name="aaa_new", alias=None, version="1"))  # sorts before the cursor
        big.table.add(ltv_deployment(name="customer_zzz", alias=None, version="1"))  # sorts after it
        second = await client.list_tools(cursor=first.next_cursor)
    assert [t.name for t in second.tools] == ["customer_ltv", "customer_propensity", "customer_zzz"]


def test_pages_are_slices_of_the_listing() -> None:
    items = [(f"k{i:02}", i) for i in range(7)]
    got, cursor = page("x", items, None, 7)
    assert got == list(range(7)) and cursor is None
    seen: list[int] = []
    cursor = None
    while True:
        chunk, cursor = page("x", items, cursor, 2)
        seen += chunk
        if cursor is None:
            break
    assert seen == list(range(7))
    assert page("x", [], None, 2) == ([], None)


def test_a_page_stops_at_its_byte_cap_but_always_holds_one_item() -> None:
    items = [(f"k{i}", "x" * n) for i, n in enumerate((400, 400, 400, 2000, 10))]
    pages, cursor = [], None
    while True:
        got, cursor = page("x", items, cursor, 100, max_bytes=1000, size_of=len)
        pages.append([len(v) for v in got])
        if cursor is None:
            break
    assert pages == [[400, 400], [400], [2000], [10]]  # 2000 alone: bigger than the cap, still listed


@pytest.mark.parametrize("mode", ERAS)
async def test_tools_and_cards_pages_stay_under_the_byte_cap(big: InferenceService, mode: str) -> None:
    door = McpDoor(big, settings(mcp_page_bytes=5000))
    async with Client(door.server, mode=mode) as client:
        pages = await all_pages(client)
        sizes = []
        cursor: str | None = None
        while True:
            result = await client.list_tools(cursor=cursor)
            sizes.append(sum(len(t.model_dump_json(by_alias=True, exclude_none=True)) for t in result.tools))
            cursor = result.next_cursor
            if cursor is None:
                break
    assert len(pages) > 1 and all(size <= 5000 for size in sizes), sizes  # 100 per page by count: one page
    assert [name for p in pages for name in p] == sorted([*LTV_NAMES, "customer_ltv", "customer_propensity"])


@pytest.mark.integration
@pytest.mark.parametrize("mode", ERAS)
async def test_pagination_over_http(mode: str) -> None:
    with serve_door(settings=settings(mcp_page_size=1)) as live:
        async with Client(live.url, mode=mode) as client:
            assert await all_pages(client) == [["customer_ltv"], ["customer_propensity"]]
            assert await all_pages(client, "resources") == [
                ["modelport://models/customer_ltv/champion"],
                ["modelport://models/customer_propensity/champion"],
            ]
            with pytest.raises(MCPError, match="Invalid cursor") as raised:
                await client.list_tools(cursor="nope")
            assert raised.value.error.code == types.INVALID_PARAMS


# -- catalogue mode -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_catalog_mode_lists_exactly_the_three_tools(service: InferenceService, mode: str) -> None:
    door = McpDoor(service, settings(mcp_tools="catalog"))
    async with Client(door.server, mode=mode) as client:
        tools = (await client.list_tools()).tools
        assert [t.name for t in tools] == CATALOG
        with pytest.raises(MCPError, match=r"Unknown tool: customer_ltv\. Available tools: search_models"):
            await client.call_tool("customer_ltv", {"inputs": scenarios.LTV_ROWS})
    if mode == "auto":
        assert "search_models" in (door.server.instructions or "")
    assert door.describe()["tools"] == CATALOG
    both = McpDoor(door.service, settings(mcp_tools="both")).describe()["tools"]
    assert both == [*CATALOG, "customer_ltv", "customer_propensity"]


async def test_the_catalogue_tools_pass_every_providers_rules(service: InferenceService) -> None:
    door = McpDoor(service, settings(mcp_tools="catalog"))
    for tool in door.tools.directory.tools():
        for rule_set in RULE_SETS:
            assert provider_problems(tool.name, tool.input_schema, rule_set) == [], (tool.name, rule_set)
        assert tool_problems(tool.name, tool.input_schema, tool.output_schema, rows=False) == []
        wire = {"tools": [tool.model_dump(by_alias=True, mode="json", exclude_none=True)], "ttlMs": 0}
        for era in ("2025-11-25", "2026-07-28"):
            serialize_server_result("tools/list", era, wire | {"cacheScope": "public", "resultType": "complete"})


@pytest.mark.parametrize("mode", ERAS)
async def test_both_mode_lists_the_catalogue_first_then_every_model(service: InferenceService, mode: str) -> None:
    door = McpDoor(service, settings(mcp_tools="both", mcp_page_size=2))
    async with Client(door.server, mode=mode) as client:
        pages = await all_pages(client)
    assert pages == [CATALOG[:2], [CATALOG[2], "customer_ltv"], ["customer_propensity"]]


def test_search_ranks_by_field_weight() -> None:
    infos = [ltv_deployment().info(), propensity_deployment().info()]
    catalog = CatalogBuilder().build(infos)
    entries = [entry(spec, info) for spec, info in zip(catalog.tools, infos, strict=True)]

    def order(query: str, tags: tuple[str, ...] = ()) -> list[str]:
        return [e.spec.model_name for _, e in rank(entries, query, tags)]

    assert order("lifetime value") == ["customer_ltv"]  # description words
    assert order("store visits") == ["customer_propensity"]  # a column description and a column name
    assert order("visit") == ["customer_propensity"]  # a prefix of a column name
    assert order("EUR") == ["customer_ltv"]  # a unit
    assert order("champion") == ["customer_ltv", "customer_propensity"]  # an alias, then by name
    assert order("customer_propensity")[0] == "customer_propensity"  # the exact name first
    assert order("") == ["customer_ltv", "customer_propensity"]  # every model, by name
    assert order("", ("team=growth",)) == ["customer_ltv", "customer_propensity"]
    assert order("", ("team=other",)) == [] and order("", ("owner",)) == []
    assert order("quantum chromodynamics") == []
    scores = dict((e.spec.model_name, s) for s, e in rank(entries, "customer age"))
    assert scores["customer_propensity"] > scores["customer_ltv"]  # 'age' is a propensity column


@pytest.mark.parametrize("mode", ERAS)
async def test_search_describe_and_predict(service: InferenceService, mode: str) -> None:
    door = McpDoor(service, settings(mcp_tools="both"))
    async with Client(door.server, mode=mode) as client:
        found = await client.call_tool("search_models", {"query": "lifetime value in EUR", "tags": None, "limit": 5})
        assert found.is_error is False, scenarios.text_of(found)
        hits = (found.structured_content or {})["models"]
        assert hits[0]["model"] == "customer_ltv@champion" and hits[0]["tool"] == "customer_ltv"
        assert [c["name"] for c in hits[0]["columns"]] == ["tenure_months", "monthly_spend", "segment"]
        assert hits[0]["columns"][1]["unit"] == "EUR" and "EUR" in hits[0]["output"]
        assert json.loads(scenarios.text_of(found)) == found.structured_content

        described = await client.call_tool("describe_model", {"model": hits[0]["model"]})
        assert described.is_error is False, scenarios.text_of(described)
        card = described.structured_content or {}
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert card["inputSchema"] == tools["customer_ltv"].input_schema
        assert card["outputSchema"] == tools["customer_ltv"].output_schema
        assert card["description"] == tools["customer_ltv"].description

        by_example = await client.call_tool("predict", card["examplePredictCall"])
        assert by_example.is_error is False, scenarios.text_of(by_example)

        direct = await client.call_tool("customer_ltv", {"inputs": scenarios.LTV_ROWS})
        as_text = await client.call_tool(
            "predict", {"model": "customer_ltv@champion", "inputs": json.dumps(scenarios.LTV_ROWS), "params": None}
        )
        as_array = await client.call_tool("predict", {"model": "customer_ltv", "inputs": scenarios.LTV_ROWS})
    expected = [ltv_value(12, 40.5, "premium"), ltv_value(3, 10.0, "basic")]  # scenarios.LTV_ROWS
    assert direct.structured_content == {"predictions": pytest.approx(expected)}
    assert as_text.structured_content == direct.structured_content
    assert as_array.structured_content == direct.structured_content
    assert as_text.meta is not None and as_text.meta["modelport/model"]["deployment"] == "customer_ltv@champion"


@pytest.mark.parametrize("mode", ERAS)
async def test_predict_errors_are_error_results_naming_the_problem(service: InferenceService, mode: str) -> None:
    door = McpDoor(service, settings(mcp_tools="catalog"))
    bad_row = [{"tenure_months": "twelve", "monthly_spend": 40.5, "segment": "premium"}]
    async with Client(door.server, mode=mode) as client:
        invalid = await client.call_tool("predict", {"model": "customer_ltv", "inputs": json.dumps(bad_row)})
        not_json = await client.call_tool("predict", {"model": "customer_ltv", "inputs": "[{age: 3"})
        one_row = await client.call_tool("predict", {"model": "customer_ltv", "inputs": json.dumps(bad_row[0])})
        unknown = await client.call_tool("predict", {"model": "customer_lvt", "inputs": "[]"})
        too_many = await client.call_tool(
            "predict", {"model": "customer_ltv", "inputs": json.dumps(scenarios.LTV_ROWS * MAX_TOOL_ROWS)}
        )
        extra = await client.call_tool("search_models", {"query": "x", "colour": "red"})
        nothing = await client.call_tool("describe_model", {"model": "nope"})
    for result in (invalid, not_json, one_row, unknown, too_many, extra, nothing):
        assert result.is_error is True
    assert "tenure_months" in scenarios.text_of(invalid) and "twelve" in scenarios.text_of(invalid)
    assert invalid.meta is not None and "tenure_months" in invalid.meta[ERROR_META_KEY]["field"]
    assert "not valid JSON" in scenarios.text_of(not_json)
    assert "wrap a single row in a list" in scenarios.text_of(one_row)
    assert "No served model 'customer_lvt'" in scenarios.text_of(unknown)
    assert '"customer_ltv@champion"' in scenarios.text_of(unknown)  # the closest match
    assert unknown.meta is not None and unknown.meta[ERROR_META_KEY]["code"] == "RESOURCE_DOES_NOT_EXIST"
    assert "Too many rows" in scenarios.text_of(too_many)
    assert "colour" in scenarios.text_of(extra)
    assert "Call search_models" in scenarios.text_of(nothing) or "Closest" in scenarios.text_of(nothing)


async def test_predict_goes_through_the_rate_limit_of_the_model(service: InferenceService, tmp_path: Path) -> None:
    gate = build_gate(Settings(state_dir=tmp_path))
    try:
        gate.limits.set(Resource("model", "customer_propensity"), [RateLimit(1, "endpoint")])
        door = McpDoor(service, settings(mcp_tools="both"), gate=gate)
        rows = json.dumps(scenarios.PROPENSITY_ROWS)
        async with Client(door.server) as client:
            first = await client.call_tool("predict", {"model": "customer_propensity", "inputs": rows})
            second = await client.call_tool("customer_propensity", {"inputs": scenarios.PROPENSITY_ROWS})
        assert first.is_error is False, scenarios.text_of(first)
        assert second.is_error is True and "Retry after" in scenarios.text_of(second)
    finally:
        gate.tokens.db.close()


# -- per-caller visibility ------------------------------------------------------------------------------------------


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[tuple[str, Gate]]:
    secure = settings(state_dir=tmp_path, auth={"required": True}, mcp_tools="both")
    gate = build_gate(secure)
    try:
        with serve_door(settings=secure, gate=gate) as live:
            yield live.url, gate
    finally:
        gate.tokens.db.close()


@pytest.mark.integration
@pytest.mark.parametrize("mode", ERAS)
async def test_the_catalogue_shows_and_scores_only_what_the_caller_may_query(
    guarded: tuple[str, Gate], mode: str
) -> None:
    url, gate = guarded
    token = gate.tokens.create("ci", grants={"customer_ltv": Level.CAN_QUERY})
    async with connect(url, token, mode) as (client, _):
        assert [t.name for t in (await client.list_tools()).tools] == [*CATALOG, "customer_ltv"]
        found = await client.call_tool("search_models", {"query": "", "tags": None, "limit": None})
        assert [h["model"] for h in (found.structured_content or {})["models"]] == ["customer_ltv@champion"]
        customer = await client.call_tool("search_models", {"query": "customer age visits", "tags": None, "limit": 3})
        assert [h["name"] for h in (customer.structured_content or {})["models"]] == ["customer_ltv"]

        described = await client.call_tool("describe_model", {"model": "customer_propensity"})
        denied = await client.call_tool(
            "predict", {"model": "customer_propensity", "inputs": json.dumps(scenarios.PROPENSITY_ROWS)}
        )
        allowed = await client.call_tool(
            "predict", {"model": "customer_ltv", "inputs": json.dumps(scenarios.LTV_ROWS), "params": None}
        )
    for result in (described, denied):
        assert result.is_error is True
        assert "ci has no permission on model 'customer_propensity'" in scenarios.text_of(result)
        assert result.meta is not None and result.meta[ERROR_META_KEY]["code"] == "PERMISSION_DENIED"
    assert allowed.is_error is False, scenarios.text_of(allowed)


def test_catalogue_names_are_the_three_tools() -> None:
    assert list(NAMES) == CATALOG
