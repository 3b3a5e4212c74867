"""The door in-process (``Client(door.server)``), in both protocol eras."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import mcp.types as types
import pytest
from mcp import Client
from mcp.client.session import IncomingMessage
from mcp.server.subscriptions import ToolsListChanged

from server.service import InferenceService
from tests.tools import scenarios
from tests.tools.models import ltv_deployment
from tools import McpDoor

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["legacy", "auto"])
async def client(request: pytest.FixtureRequest, door: McpDoor) -> AsyncIterator[Client]:
    async with Client(door.server, mode=request.param) as c:
        yield c


async def test_lists_typed_tools(client: Client) -> None:
    await scenarios.assert_tools_listed(client)


async def test_scores_with_every_model(client: Client) -> None:
    await scenarios.assert_scores(client)


async def test_errors_are_actionable(client: Client) -> None:
    await scenarios.assert_errors(client)


async def test_model_cards(client: Client) -> None:
    await scenarios.assert_cards(client)


async def test_progress_is_reported(client: Client) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    result = await client.call_tool("customer_ltv", {"inputs": scenarios.LTV_ROWS[:1]}, progress_callback=on_progress)
    assert result.is_error is False
    assert seen[0][:2] == (0, 1) and "scoring 1 row(s) with customer_ltv v3 @champion" in (seen[0][2] or "")
    assert seen[-1] == (1, 1, "done")


async def test_runtime_errors_are_error_results(client: Client, service: InferenceService) -> None:
    service.table.find("customer_ltv").state = "LOADING"
    result = await client.call_tool("customer_ltv", {"inputs": scenarios.LTV_ROWS[:1]})
    assert result.is_error is True
    assert "is not ready yet" in scenarios.text_of(result) and "Retry in a few seconds" in scenarios.text_of(result)
    assert result.meta is not None and result.meta["modelport/error"]["retryAfterSeconds"] == 5.0


async def test_legacy_clients_are_told_when_tools_change(door: McpDoor, service: InferenceService) -> None:
    changed = anyio.Event()

    async def on_message(message: IncomingMessage) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with Client(door.server, mode="legacy", message_handler=on_message) as client:
        assert client.server_capabilities.tools is not None and client.server_capabilities.tools.list_changed
        await client.list_tools()
        assert door.tools.legacy_connections == 1
        service.table.add(ltv_deployment(version="4", alias=None))
        with anyio.fail_after(5):
            await changed.wait()
        names = [t.name for t in (await client.list_tools()).tools]
    assert names == ["customer_ltv_champion", "customer_ltv_v4", "customer_propensity"]


async def test_modern_clients_are_told_when_tools_change(door: McpDoor, service: InferenceService) -> None:
    async with Client(door.server) as client:
        assert client.protocol_version == "2026-07-28"
        async with client.listen(tools_list_changed=True) as sub:
            service.table.remove("customer_propensity@champion")
            with anyio.fail_after(5):
                event = await sub.__anext__()
        assert isinstance(event, ToolsListChanged)
        names = [t.name for t in (await client.list_tools()).tools]
    assert names == ["customer_ltv"]
