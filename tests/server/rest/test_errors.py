"""REST error mapping and request logging, in-process (httpx ASGITransport) over a fake deployment."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import anyio
import httpx
import numpy as np
import pytest

from server.deployments import DeploymentTable
from server.rest.app import create_rest_app
from server.runtime.batcher import BatcherConfig
from server.service import InferenceService
from tests.server.fakes import doubler, fake_deployment

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Gate:
    """A model function that blocks until released (to fill queues and pass deadlines without sleeping)."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.entered.set()
        assert self.opened.wait(10), "gate never opened"
        return doubler(feeds)


@asynccontextmanager
async def _client(*deps) -> AsyncIterator[tuple[httpx.AsyncClient, DeploymentTable]]:
    table = DeploymentTable()
    for dep in deps:
        await dep.batcher.start()
        table.add(dep)
    app = create_rest_app(InferenceService(table, max_body_bytes=2000))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client, table
    for dep in deps:
        await dep.batcher.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with _client(fake_deployment()) as (c, _):
        yield c


async def test_prediction_and_request_id(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/model/doubler/champion/invocations", json={"data": [[1.5, "a"]]}, headers={"X-Request-Id": "abc-123"}
    )
    assert r.status_code == 200 and r.json() == {"predictions": [3.0]}
    assert r.headers["x-request-id"] == "abc-123"
    r = await client.post("/invocations", json={"dataframe_records": [{"x": 2, "tag": "b"}]})
    assert r.json() == {"predictions": [4.0]}
    assert len(r.headers["x-request-id"]) == 32


async def test_model_failure_is_500_with_request_id_and_server_keeps_serving(client: httpx.AsyncClient) -> None:
    r = await client.post("/model/doubler/1/invocations", json={"data": [[-1, "a"]]})
    assert r.status_code == 500
    body = r.json()
    assert body["error_code"] == "INTERNAL_ERROR"
    assert body["request_id"] in body["message"] and "Traceback" not in r.text
    ok = await client.post("/model/doubler/1/invocations", json={"data": [[1, "a"]]})
    assert ok.status_code == 200


async def test_body_limit_is_413_before_decoding(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/model/doubler/1/invocations", content=b"{" + b" " * 3000 + b"}", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["field"] == "body"


async def test_path_errors(client: httpx.AsyncClient) -> None:
    r = await client.post("/model/doubler/7/invocations", json={"data": [[1, "a"]]})
    assert r.status_code == 404 and "'7'" in r.json()["message"]
    r = await client.get("/models/unknown")
    assert r.status_code == 404 and "doubler" in r.json()["message"]
    r = await client.get("/model/doubler/1/invocations")
    assert r.status_code == 405 and r.json()["error_code"] == "METHOD_NOT_ALLOWED"


async def test_overload_is_503_with_retry_after() -> None:
    gate = Gate()
    dep = fake_deployment(gate, config=BatcherConfig(max_queue_requests=1, max_waiting_requests=0))
    async with _client(dep) as (client, _):
        async with anyio.create_task_group() as tg:
            results: list[httpx.Response] = []

            async def call() -> None:
                results.append(await client.post("/model/doubler/1/invocations", json={"data": [[1, "a"]]}))

            tg.start_soon(call)  # runs, blocked in the gate
            await anyio.to_thread.run_sync(gate.entered.wait, 10)
            tg.start_soon(call)  # queued (the one allowed)
            with anyio.fail_after(10):
                while dep.batcher.stats.queue_depth < 1:
                    await anyio.wait_all_tasks_blocked()
            r = await client.post("/model/doubler/1/invocations", json={"data": [[1, "a"]]})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
            gate.opened.set()
        assert [x.status_code for x in results] == [200, 200]


async def test_timeout_is_504() -> None:
    gate = Gate()
    dep = fake_deployment(gate, config=BatcherConfig(timeout_s=0.05))
    async with _client(dep) as (client, _):
        r = await client.post("/model/doubler/1/invocations", json={"data": [[1, "a"]]})
        gate.opened.set()
        assert r.status_code == 504 and r.json()["error_code"] == "DEADLINE_EXCEEDED"


async def test_every_request_is_logged_once_with_model_and_batch(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="modelport.access"):
        await client.post(
            "/model/doubler/champion/invocations",
            json={"data": [[1, "a"], [2, "b"]]},
            headers={"X-Request-Id": "req-1"},
        )
        await client.post(
            "/model/doubler/champion/invocations",
            content=b"nope",
            headers={"X-Request-Id": "req-2", "Content-Type": "application/json"},
        )
    records = [r for r in caplog.records if r.name == "modelport.access"]
    assert [r.request_id for r in records] == ["req-1", "req-2"]
    ok, bad = records
    assert (ok.model, ok.version, ok.status, ok.rows, ok.batch_rows) == ("doubler", "1", 200, 2, 2)
    assert ok.latency_ms > 0
    assert bad.status == 400 and "JSON" in bad.error
