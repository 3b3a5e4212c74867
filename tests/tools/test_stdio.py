"""The door over stdio in a subprocess, in both protocol eras: nothing but protocol on stdout."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from tests.tools import scenarios

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
COMMAND = StdioServerParameters(command=sys.executable, args=["-m", "tests.tools.stdio_server"], cwd=str(ROOT))


@pytest.fixture(params=["legacy", "auto"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    async with Client(COMMAND, mode=request.param) as c:
        assert (c.protocol_version == "2026-07-28") == (request.param == "auto")
        yield c


async def test_stdio_in_both_eras(client: Client) -> None:
    await scenarios.assert_tools_listed(client)
    await scenarios.assert_scores(client)
    await scenarios.assert_errors(client)
    await scenarios.assert_cards(client)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_stdio_is_local_and_needs_no_credential_even_with_auth_required(mode: str) -> None:
    command = StdioServerParameters(
        command=sys.executable, args=["-m", "tests.tools.stdio_server", "--auth-required"], cwd=str(ROOT)
    )
    async with Client(command, mode=mode) as client:
        await scenarios.assert_tools_listed(client)
        await scenarios.assert_scores(client)
        await scenarios.assert_cards(client)


def test_stdout_carries_only_json_rpc() -> None:
    request = (
        '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
        '"capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "tests.tools.stdio_server"],
        input=request,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('{"jsonrpc":"2.0","id":1,"result":'), done.stdout
    assert '"listChanged":true' in lines[0]
    assert "serving the test models over stdio" in done.stderr  # logs go to stderr
