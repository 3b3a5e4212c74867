"""The door over real HTTP (uvicorn on 127.0.0.1): both protocol eras on exactly /mcp."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import httpx
import mcp.types as types
import pytest
from mcp import Client
from mcp.client.session import IncomingMessage
from mcp.server.subscriptions import ToolsListChanged

from tests.tools import scenarios
from tests.tools.live import LiveDoor, serve_door
from tests.tools.models import ltv_deployment

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
def live() -> Iterator[LiveDoor]:
    with serve_door() as live:
        yield live


@pytest.fixture(params=["legacy", "auto"])
async def client(request: pytest.FixtureRequest, live: LiveDoor) -> AsyncIterator[Client]:
    async with Client(live.url, mode=request.param) as c:
        assert (c.protocol_version == "2026-07-28") == (request.param == "auto")
        yield c


async def test_both_eras_list_call_and_read(client: Client) -> None:
    await scenarios.assert_tools_listed(client)
    await scenarios.assert_scores(client)
    await scenarios.assert_errors(client)
    await scenarios.assert_cards(client)


async def test_progress_over_http(client: Client) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    result = await client.call_tool(
        "customer_propensity", {"inputs": scenarios.PROPENSITY_ROWS}, progress_callback=on_progress
    )
    assert result.is_error is False
    assert seen == [0, 1]


async def test_legacy_http_clients_hear_about_deploys(live: LiveDoor) -> None:
    changed = anyio.Event()

    async def on_message(message: IncomingMessage) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with Client(live.url, mode="legacy", message_handler=on_message) as client:
        caps = client.server_capabilities
        assert caps.tools is not None and caps.tools.list_changed is True
        assert caps.resources is not None and caps.resources.list_changed is True
        await client.list_tools()
        await anyio.to_thread.run_sync(live.service.table.add, ltv_deployment(version="4", alias=None))
        with anyio.fail_after(10):
            await changed.wait()
        names = [t.name for t in (await client.list_tools()).tools]
    assert names == ["customer_ltv_champion", "customer_ltv_v4", "customer_propensity"]


async def test_modern_http_clients_hear_about_deploys(live: LiveDoor) -> None:
    async with Client(live.url) as client:
        async with client.listen(tools_list_changed=True) as sub:
            await anyio.to_thread.run_sync(live.service.table.remove, "customer_ltv@champion")
            with anyio.fail_after(10):
                event = await sub.__anext__()
        assert isinstance(event, ToolsListChanged)
        assert [t.name for t in (await client.list_tools()).tools] == ["customer_propensity"]


INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def test_endpoint_is_exactly_mcp_without_redirect(live: LiveDoor) -> None:
    async with httpx.AsyncClient(follow_redirects=False, timeout=10) as http:
        response = await http.post(live.url, json=INIT, headers=HEADERS)
    assert response.status_code == 200
    assert response.headers.get("mcp-session-id")


async def test_dns_rebinding_protection(live: LiveDoor) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        foreign_host = await http.post(live.url, json=INIT, headers=HEADERS | {"Host": "evil.example:80"})
        foreign_origin = await http.post(live.url, json=INIT, headers=HEADERS | {"Origin": "http://evil.example"})
        local_origin = await http.post(live.url, json=INIT, headers=HEADERS | {"Origin": "http://localhost:3000"})
    assert foreign_host.status_code == 421
    assert foreign_origin.status_code == 403
    assert local_origin.status_code == 200
