"""The ASGI fast path for scoring answers exactly what the FastAPI routes answer, and steps aside when it must."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from server.deployments import DeploymentTable
from server.rest.app import RestApp, create_rest_app
from server.service import InferenceService
from tests.server.fakes import fake_deployment

pytestmark = pytest.mark.anyio

ARROW = "application/vnd.apache.arrow.stream"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _arrow_body() -> bytes:
    table = pa.table({"x": [1.0, 2.5], "tag": ["a", "b"]})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


@asynccontextmanager
async def _apps(*, max_body_bytes: int = 2000) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Two clients over the same service: one app with the fast path, one with it off (FastAPI routes)."""
    dep = fake_deployment()
    await dep.batcher.start()
    table = DeploymentTable()
    table.add(dep)
    service = InferenceService(table, max_body_bytes=max_body_bytes)
    fast = create_rest_app(service)
    slow = create_rest_app(service)
    assert isinstance(slow, RestApp)
    slow.fast_path = None
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t")
        for app in (fast, slow)
    ]
    try:
        yield clients[0], clients[1]
    finally:
        for client in clients:
            await client.aclose()
        await dep.batcher.stop()


CASES: list[tuple[str, str, dict[str, str], bytes]] = [
    ("json", "/model/doubler/champion/invocations", {}, b'{"data": [[1.5, "a"], [2, "b"]]}'),
    ("version", "/model/doubler/1/invocations", {}, b'{"dataframe_records": [{"x": 1, "tag": "a"}]}'),
    ("single", "/invocations", {}, b'{"inputs": {"x": [3.0], "tag": ["c"]}}'),
    ("csv", "/model/doubler/champion/invocations", {"content-type": "text/csv"}, b"x,tag\n1.5,a\n"),
    ("arrow", "/model/doubler/champion/invocations", {"content-type": ARROW}, _arrow_body()),
    ("unknown model", "/model/nope/1/invocations", {}, b'{"data": [[1, "a"]]}'),
    ("bad json", "/model/doubler/champion/invocations", {}, b"{nope"),
    ("bad column", "/model/doubler/champion/invocations", {}, b'{"data": [["x", "a"]]}'),
    ("media type", "/model/doubler/champion/invocations", {"content-type": "text/plain"}, b"1"),
    ("too large", "/model/doubler/champion/invocations", {}, b'{"data": [[1, "' + b"a" * 3000 + b'"]]}'),
    ("model failure", "/model/doubler/champion/invocations", {}, b'{"data": [[-1, "a"]]}'),
    ("v2", "/v2/models/doubler/infer", {}, orjson.dumps({"id": "7", "inputs": [
        {"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [2.0]},
        {"name": "tag", "shape": [1], "datatype": "BYTES", "data": ["a"]}]})),
    ("v2 version", "/v2/models/doubler/versions/champion/infer", {}, orjson.dumps({"inputs": [
        {"name": "x", "shape": [1], "datatype": "FP64", "data": [2.0]},
        {"name": "tag", "shape": [1], "datatype": "BYTES", "data": ["a"]}]})),
    ("v2 bad", "/v2/models/doubler/infer", {}, b'{"inputs": []}'),
    ("v2 failure", "/v2/models/doubler/infer", {}, orjson.dumps({"inputs": [
        {"name": "x", "shape": [1], "datatype": "FP64", "data": [-2.0]},
        {"name": "tag", "shape": [1], "datatype": "BYTES", "data": ["a"]}]})),
    ("v2 unknown", "/v2/models/nope/infer", {}, b'{"inputs": []}'),
]  # fmt: skip


@pytest.mark.parametrize(("case", "path", "headers", "body"), CASES, ids=[c[0] for c in CASES])
async def test_fast_path_answers_like_the_fastapi_routes(
    case: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    async with _apps() as (fast, slow):
        sent = {"content-type": "application/json", "x-request-id": f"req-{case}"} | headers
        a = await fast.post(path, content=body, headers=sent)
        b = await slow.post(path, content=body, headers=sent)
    assert a.status_code == b.status_code
    assert a.content == b.content
    assert a.headers["content-type"] == b.headers["content-type"]
    assert a.headers["x-request-id"] == b.headers["x-request-id"] == f"req-{case}"
    assert a.headers["content-length"] == str(len(a.content))


async def _post_once(path: str, body: bytes) -> httpx.Response:
    async with _apps() as (fast, _):
        return await fast.post(path, content=body)


async def test_success_and_error_shapes() -> None:
    async with _apps() as (fast, _):
        ok = await fast.post("/model/doubler/champion/invocations", content=b'{"data": [[1.5, "a"]]}')
        failed = await fast.post("/model/doubler/champion/invocations", content=b'{"data": [[-1, "a"]]}')
        v2 = await fast.post("/v2/models/doubler/infer", content=b'{"inputs": []}')
    assert ok.status_code == 200 and ok.json() == {"predictions": [3.0]}
    assert failed.status_code == 500
    assert failed.json()["request_id"] in failed.json()["message"]
    assert v2.status_code == 400 and "inputs" in v2.json()["error"]
    v2_failed = await _post_once("/v2/models/doubler/infer", orjson.dumps({"inputs": [
        {"name": "x", "shape": [1], "datatype": "FP64", "data": [-2.0]},
        {"name": "tag", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}))  # fmt: skip
    assert v2_failed.status_code == 500 and v2_failed.json()["request_id"] in v2_failed.json()["error"]


async def test_requests_are_logged_once_by_the_fast_path(caplog: pytest.LogCaptureFixture) -> None:
    async with _apps() as (fast, _):
        with caplog.at_level(logging.INFO, logger="modelport.access"):
            await fast.post("/model/doubler/champion/invocations", content=b'{"data": [[1, "a"]]}',
                            headers={"x-request-id": "one"})  # fmt: skip
    (record,) = [r for r in caplog.records if r.name == "modelport.access"]
    assert (record.request_id, record.status, record.model) == ("one", 200, "doubler")
    assert (record.rows, record.batch_rows) == (1, 1)


class Counting:
    """Middleware that counts the requests it sees."""

    seen: list[str] = []

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            Counting.seen.append(scope["path"])
        await self.app(scope, receive, send)


async def test_other_middleware_turns_the_fast_path_off() -> None:
    dep = fake_deployment()
    await dep.batcher.start()
    table = DeploymentTable()
    table.add(dep)
    app = create_rest_app(InferenceService(table))
    app.add_middleware(Counting)
    Counting.seen.clear()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.post("/model/doubler/champion/invocations", content=b'{"data": [[1, "a"]]}')
    await dep.batcher.stop()
    assert r.status_code == 200
    assert Counting.seen == ["/model/doubler/champion/invocations"]


async def _raw(app: Any, path: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Call the ASGI app directly with the given receive messages; return what it sent."""
    sent: list[dict[str, Any]] = []
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(b"content-type", b"application/json")], "http_version": "1.1", "scheme": "http",
             "server": ("t", 80), "client": ("c", 1), "root_path": ""}  # fmt: skip
    await app(scope, receive, send)
    return sent


async def test_chunked_bodies_are_joined_and_limited_while_streaming() -> None:
    dep = fake_deployment()
    await dep.batcher.start()
    table = DeploymentTable()
    table.add(dep)
    app = create_rest_app(InferenceService(table, max_body_bytes=40))
    path = "/model/doubler/champion/invocations"
    ok = await _raw(app, path, [{"type": "http.request", "body": b'{"data": [[2,', "more_body": True},
                                {"type": "http.request", "body": b' "a"]]}', "more_body": False}])  # fmt: skip
    big = await _raw(app, path, [{"type": "http.request", "body": b"x" * 30, "more_body": True},
                                 {"type": "http.request", "body": b"x" * 30, "more_body": False}])  # fmt: skip
    gone = await _raw(app, path, [{"type": "http.disconnect"}])
    await dep.batcher.stop()
    assert ok[0]["status"] == 200 and orjson.loads(ok[1]["body"]) == {"predictions": [4.0]}
    assert big[0]["status"] == 413
    assert gone == []  # the client left: nothing to answer
