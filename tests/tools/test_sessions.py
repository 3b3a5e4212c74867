"""An MCP session flood cannot lock other clients out: per-owner bounds with least-recently-used eviction."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from mcp import Client

from server.settings import Settings
from tests.tools import scenarios
from tests.tools.live import LiveDoor, serve_door
from tests.tools.models import MAX_TOOL_ROWS

pytestmark = pytest.mark.integration

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "flood", "version": "1"}},
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def live() -> Iterator[LiveDoor]:
    settings = Settings(max_tool_rows=MAX_TOOL_ROWS, mcp_sessions_per_owner=5, mcp_max_sessions=8)
    with serve_door(settings=settings) as running:
        yield running


def _open(c: httpx.Client) -> str:
    r = c.post("/mcp", json=INITIALIZE, headers=HEADERS)
    assert r.status_code == 200, r.text
    return r.headers["mcp-session-id"]


def _ping(c: httpx.Client, session: str) -> int:
    body = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    return c.post("/mcp", json=body, headers={**HEADERS, "mcp-session-id": session,
                                              "mcp-protocol-version": "2025-11-25"}).status_code  # fmt: skip


def test_a_flood_evicts_the_flooders_oldest_idle_sessions(live: LiveDoor) -> None:
    base = live.url.removesuffix("/mcp")
    with httpx.Client(base_url=base, timeout=30) as c:
        sessions = [_open(c) for _ in range(50)]
        assert live.door.sessions is not None
        # NOTE: the previous initialize may still count as in flight for a moment after its response reached the
        # client (the SDK decrements after sending), so it cannot be evicted yet: one over the bound, never more.
        assert 5 <= len(live.door.sessions._server_instances) <= 6
        assert live.door.sessions.evicted >= 44
        assert _ping(c, sessions[0]) == 404  # evicted: the client opens a new one
        assert _ping(c, sessions[-1]) == 200


@pytest.mark.anyio
async def test_new_clients_still_get_in_after_a_flood(live: LiveDoor) -> None:
    base = live.url.removesuffix("/mcp")
    with httpx.Client(base_url=base, timeout=30) as c:
        for _ in range(30):
            _open(c)
    async with Client(live.url, mode="legacy") as client:
        await scenarios.assert_scores(client)


def test_recently_used_sessions_survive(live: LiveDoor) -> None:
    base = live.url.removesuffix("/mcp")
    with httpx.Client(base_url=base, timeout=30) as c:
        keep = _open(c)
        others = [_open(c) for _ in range(4)]
        assert _ping(c, keep) == 200  # keep is now the most recently used
        _open(c)  # one past the bound: the least recently used idle one goes
        assert _ping(c, others[0]) == 404
        assert _ping(c, keep) == 200
