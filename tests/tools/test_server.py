"""Pieces of the door that the transport tests do not pin: the wire check, change feed, describe()."""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

import anyio
import pytest
from mcp import Client

from registry import ModelSignature
from server.service import InferenceService
from server.settings import Settings
from tests.tools.models import ltv_deployment
from tools import McpDoor
from tools import catalog as catalog_module
from tools.catalog import build_spec
from tools.door import ChangeFeed, _close_on_server_exit
from tools.server import _wire_checked
from tools.shapes import ToolShape

pytestmark = pytest.mark.anyio


def test_a_tool_invalid_on_the_legacy_wire_is_not_published(caplog: pytest.LogCaptureFixture) -> None:
    spec = build_spec(ltv_deployment().info(), "customer_ltv")
    assert _wire_checked(spec) is not None
    # An array-root outputSchema is legal in 2026-07-28 but breaks tools/list for handshake-era clients.
    array_root = dataclasses.replace(spec, output_schema={"type": "array", "items": {"type": "number"}})
    with caplog.at_level(logging.WARNING, logger="tools.server"):
        assert _wire_checked(array_root) is None
    assert "invalid for protocol 2025-11-25" in caplog.text


async def test_change_feed_wakes_the_notifier_on_its_loop_from_any_thread() -> None:
    feed = ChangeFeed()
    calls: list[str] = []
    woke = anyio.Event()

    async def notify() -> None:
        calls.append(threading.current_thread().name)
        woke.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(feed.run, notify)
        await anyio.wait_all_tasks_blocked()
        await anyio.to_thread.run_sync(lambda: [feed.fire() for _ in range(3)])
        with anyio.fail_after(5):
            await woke.wait()
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert 1 <= len(calls) <= 3  # bursts may coalesce
    assert set(calls) == {threading.main_thread().name}  # notify runs on the loop, not the firing thread
    feed.fire()  # no notifier left: a no-op


async def test_describe_lists_published_tools_and_skipped_deployments(
    door: McpDoor, service: InferenceService, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert door.describe() == {"tools": ["customer_ltv", "customer_propensity"], "skipped": {}}
    real = catalog_module.build_shape

    def shape(signature: ModelSignature, *args: Any, **kwargs: Any) -> ToolShape:
        built = real(signature, *args, **kwargs)
        broken = "broken" in signature.input_names
        return dataclasses.replace(built, input_schema={"type": "object", "properties": {}}) if broken else built

    monkeypatch.setattr(catalog_module, "build_shape", shape)
    broken = ltv_deployment(
        version="9", alias="broken", name="broken_model", columns=("tenure_months", "monthly_spend", "broken")
    )
    service.table.add(broken)
    described = door.describe()
    assert described["tools"] == ["customer_ltv", "customer_propensity"]
    assert "'inputs' must be an array" in described["skipped"]["broken_model@broken"]


async def test_listen_streams_end_gracefully_when_the_server_exits(door: McpDoor) -> None:
    async with Client(door.server) as client, client.listen(tools_list_changed=True) as sub:
        door.close_streams()
        with anyio.fail_after(5):
            events = [event async for event in sub]  # ends without SubscriptionLost
    assert events == []


async def test_uvicorn_exit_closes_listen_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    from sse_starlette.sse import AppStatus

    closed = anyio.Event()
    monkeypatch.setattr(AppStatus, "should_exit", True)  # what sse-starlette sets when uvicorn gets SIGINT/SIGTERM
    with anyio.fail_after(5):
        await _close_on_server_exit(closed.set, poll_s=0)
    assert closed.is_set()


async def test_the_full_dialect_publishes_every_bound_and_still_scores(service: InferenceService) -> None:
    door = McpDoor(service, Settings(max_tool_rows=10, mcp_schema="full"))
    async with Client(door.server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        inputs = tools["customer_ltv"].input_schema["properties"]["inputs"]
        assert (inputs["minItems"], inputs["maxItems"]) == (1, 10)
        row = {"tenure_months": 2, "monthly_spend": 10.0, "segment": "basic"}
        result = await client.call_tool("customer_ltv", {"inputs": [row]})
        assert result.is_error is False and result.structured_content == {"predictions": [40.0]}
        too_many = await client.call_tool("customer_ltv", {"inputs": [row] * 11})
        assert too_many.is_error is True and "at most 10" in too_many.content[0].text  # type: ignore[union-attr]
