"""One runtime behind both doors: a REST call and an MCP tool call for one model land in the same batch.

The model's runtime is held busy by a first request (a gate around the real ONNX session), a REST call and a tool
call queue meanwhile, and the batch that runs after the gate opens must hold both: asserted via the batcher's batch
records, not timing.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import anyio
import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from mcp import Client

from server.deployments import DeploymentTable
from server.rest.app import create_rest_app
from server.runtime.batcher import Batcher, BatcherConfig, BatchRecord
from server.service import InferenceService
from server.settings import Settings
from tests.conftest import start_server
from tests.tools.models import ltv_deployment, ltv_value
from tools import McpDoor

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ROW = {"tenure_months": 12, "monthly_spend": 50.0, "segment": "premium"}


class Gate:
    def __init__(self, run: object) -> None:
        self.run = run
        self.open = threading.Event()
        self.entered = threading.Event()

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.entered.set()
        assert self.open.wait(10), "gate never opened"
        return self.run(feeds)  # type: ignore[operator]


async def test_rest_and_tool_call_share_one_batch() -> None:
    dep = ltv_deployment()
    gate = Gate(dep.session.run)
    dep.batcher = Batcher(gate, BatcherConfig(), name=dep.ref.uri)
    records: list[BatchRecord] = []
    dep.batcher.add_listener(records.append)
    table = DeploymentTable()
    table.add(dep)
    service = InferenceService(table)
    door = McpDoor(service, Settings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await dep.batcher.start()
        async with door.lifespan():
            yield
        await dep.batcher.stop()

    app = create_rest_app(service, lifespan=lifespan)
    door.install(app)
    server, thread, url = start_server(None, app)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http, Client(f"{url}/mcp") as mcp:
            path = "/model/customer_ltv/champion/invocations"
            results: dict[str, object] = {}
            async with anyio.create_task_group() as tg:

                async def rest(key: str) -> None:
                    results[key] = (await http.post(path, json={"dataframe_records": [ROW]})).json()

                async def tool() -> None:
                    results["tool"] = await mcp.call_tool("customer_ltv", {"inputs": [ROW]})

                tg.start_soon(rest, "blocker")
                await anyio.to_thread.run_sync(gate.entered.wait, 10)
                tg.start_soon(rest, "rest")
                tg.start_soon(tool)
                with anyio.fail_after(10):
                    while dep.batcher.stats.queue_depth < 2:
                        await anyio.sleep(0)  # yield to the event loop until both calls are queued
                gate.open.set()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    expected = ltv_value(12, 50.0, "premium")
    assert results["rest"] == {"predictions": [pytest.approx(expected, rel=1e-5)]}
    tool_result = results["tool"]
    assert not tool_result.is_error  # type: ignore[attr-defined]
    assert tool_result.structured_content["predictions"] == [pytest.approx(expected, rel=1e-5)]  # type: ignore[attr-defined]
    assert [(r.requests, r.rows) for r in records] == [(1, 1), (2, 2)]
