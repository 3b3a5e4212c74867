"""Admission on the scoring fast path: refusals and waits for room come before the body is read (and so before any
decoding), the in-flight body budget, and the client's own deadline (``X-Request-Timeout-Ms``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import numpy as np
import orjson
import pytest

from server import service as service_module
from server.deployments import Deployment, DeploymentTable
from server.errors import Overloaded
from server.rest.app import create_rest_app
from server.runtime.batcher import BatcherConfig
from server.service import InferenceService
from tests.server.fakes import doubler, fake_deployment

pytestmark = pytest.mark.anyio

WAIT_S = 10.0
PATH = "/model/doubler/champion/invocations"
BODY = b'{"data": [[1.5, "a"]]}'


class Gate:
    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.entered.set()
        assert self.opened.wait(WAIT_S), "gate never opened"
        return doubler(feeds)


class Harness:
    """The REST app over one gated fake deployment, called in-process."""

    def __init__(self, dep: Deployment, service: InferenceService) -> None:
        self.dep = dep
        self.service = service
        self.app = create_rest_app(service)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, raise_app_exceptions=False), base_url="http://t"
        )

    async def raw(
        self, path: str, headers: dict[str, str], body: bytes = BODY
    ) -> tuple[int, dict[str, str], bytes, int]:
        """One request straight into the ASGI app; also returns how often the app read the body (``receive``)."""
        reads = [0]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            reads[0] += 1
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 1), "server": ("t", 80),
        }  # fmt: skip
        await self.app(scope, receive, send)
        start, end = sent
        out = {k.decode(): v.decode() for k, v in start["headers"]}
        return start["status"], out, end["body"], reads[0]


@asynccontextmanager
async def harness(config: BatcherConfig | None = None, **service: Any) -> AsyncIterator[tuple[Harness, Gate]]:
    gate = Gate()
    dep = fake_deployment(gate, config=config)
    await dep.batcher.start()
    table = DeploymentTable()
    table.add(dep)
    h = Harness(dep, InferenceService(table, **service))
    try:
        yield h, gate
    finally:
        gate.opened.set()
        await h.client.aclose()
        await dep.batcher.stop(timeout_s=WAIT_S)


async def _busy(h: Harness, gate: Gate, tg: anyio.abc.TaskGroup, results: list[httpx.Response], queued: int) -> None:
    """One request running (held by the gate) and ``queued`` more waiting."""

    async def call() -> None:
        results.append(await h.client.post(PATH, content=BODY, headers={"content-type": "application/json"}))

    tg.start_soon(call)
    await anyio.to_thread.run_sync(gate.entered.wait, WAIT_S)
    for _ in range(queued):
        tg.start_soon(call)
    with anyio.fail_after(WAIT_S):
        while h.dep.batcher.stats.queue_depth < queued:
            await anyio.wait_all_tasks_blocked()


async def test_a_full_queue_refuses_before_reading_the_body() -> None:
    async with harness(BatcherConfig(max_queue_requests=1, max_waiting_requests=0)) as (h, gate):  # fail fast
        results: list[httpx.Response] = []
        async with anyio.create_task_group() as tg:
            await _busy(h, gate, tg, results, queued=1)
            headers = {"content-type": "application/json", "content-length": str(len(BODY))}
            status, out, body, reads = await h.raw(PATH, headers)
            v2_status, _, v2_body, v2_reads = await h.raw("/v2/models/doubler/infer", headers, b'{"inputs": []}')
            gate.opened.set()
        assert (status, reads) == (503, 0)  # refused without reading (so without decoding) the body
        assert out["retry-after"] == "1" and orjson.loads(body)["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert (v2_status, v2_reads) == (503, 0) and "1 requests queued" in orjson.loads(v2_body)["error"]
        assert [r.status_code for r in results] == [200, 200]
        assert h.dep.batcher.stats.refused == 2


async def test_no_room_before_the_clients_deadline_is_504_without_reading_the_body() -> None:
    async with harness(BatcherConfig(max_queue_requests=1)) as (h, gate):
        results: list[httpx.Response] = []
        async with anyio.create_task_group() as tg:
            await _busy(h, gate, tg, results, queued=1)
            headers = {"content-length": str(len(BODY)), "x-request-timeout-ms": "50"}
            with anyio.fail_after(WAIT_S):
                status, _, body, reads = await h.raw(PATH, headers)
            gate.opened.set()
        assert (status, reads) == (504, 0)
        assert (
            "no room in model 'models:/doubler@champion' before the request's deadline" in orjson.loads(body)["message"]
        )
        assert [r.status_code for r in results] == [200, 200]


async def test_a_full_waiting_room_refuses_at_once() -> None:
    async with harness(BatcherConfig(max_queue_requests=1)) as (h, gate):  # 4 may wait
        results: list[httpx.Response] = []
        async with anyio.create_task_group() as tg:
            await _busy(h, gate, tg, results, queued=1)
            headers = {"content-type": "application/json", "content-length": str(len(BODY))}
            waiting = [asyncio.create_task(h.raw(PATH, headers)) for _ in range(4)]
            with anyio.fail_after(WAIT_S):
                while h.dep.batcher.stats.waiting < 4:
                    await anyio.wait_all_tasks_blocked()
                status, _, body, reads = await h.raw(PATH, headers)
            assert (status, reads) == (503, 0) and "4 requests waiting" in orjson.loads(body)["message"]
            gate.opened.set()
            with anyio.fail_after(WAIT_S):
                served = await asyncio.gather(*waiting)
        assert [(s, r) for s, _, _, r in served] == [(200, 1)] * 4  # each read its body once it had room
        assert [r.status_code for r in results] == [200, 200]


async def test_a_waiting_request_reads_its_body_only_when_it_has_room() -> None:
    async with harness(BatcherConfig(max_queue_requests=1)) as (h, gate):
        results: list[httpx.Response] = []
        async with anyio.create_task_group() as tg:
            await _busy(h, gate, tg, results, queued=1)
            parked = asyncio.create_task(h.raw(PATH, {"content-length": str(len(BODY))}))
            with anyio.fail_after(WAIT_S):
                while h.dep.batcher.stats.waiting < 1:
                    await anyio.wait_all_tasks_blocked()
            assert not parked.done()
            gate.opened.set()
            with anyio.fail_after(WAIT_S):
                status, _, body, reads = await parked
        assert (status, reads) == (200, 1) and orjson.loads(body) == {"predictions": [3.0]}
        stats = h.dep.batcher.stats
        assert (stats.waiting, stats.reserved, stats.refused) == (0, 0, 0)


async def test_the_in_flight_body_budget_refuses_by_content_length() -> None:
    async with harness(max_body_bytes=2000) as (h, gate):
        h.service.max_inflight_body_bytes = 40
        results: list[httpx.Response] = []
        async with anyio.create_task_group() as tg:
            await _busy(h, gate, tg, results, queued=0)  # holds len(BODY) = 22 bytes
            headers = {"content-type": "application/json", "content-length": str(len(BODY))}
            status, out, body, reads = await h.raw(PATH, headers)
            gate.opened.set()
        assert (status, reads) == (503, 0) and out["retry-after"] == "1"
        assert "bodies in flight would pass 40 bytes" in orjson.loads(body)["message"]
        assert results[0].status_code == 200
        status, _, _, reads = await h.raw(PATH, headers)  # released when the request ended
        assert (status, reads) == (200, 1)
        assert h.service.admit(None, None).inflight_bytes == 0


async def test_a_lone_body_larger_than_the_budget_is_still_taken() -> None:
    async with harness() as (h, gate):
        gate.opened.set()
        h.service.max_inflight_body_bytes = 5
        status, _, body, _ = await h.raw(PATH, {"content-length": str(len(BODY))})
        assert status == 200 and orjson.loads(body) == {"predictions": [3.0]}


async def test_the_clients_deadline_header() -> None:
    async with harness() as (h, gate):
        results: list[httpx.Response] = []
        async with anyio.create_task_group() as tg:
            await _busy(h, gate, tg, results, queued=0)
            late = await h.client.post(PATH, content=BODY, headers={"x-request-timeout-ms": "50"})
            spent = await h.client.post(PATH, content=BODY, headers={"x-request-timeout-ms": "0"})
            bad = await h.client.post(PATH, content=BODY, headers={"x-request-timeout-ms": "soon"})
            gate.opened.set()
        ok = await h.client.post(PATH, content=BODY, headers={"x-request-timeout-ms": "5000"})
        stats = h.dep.batcher.stats
    assert late.status_code == 504 and late.json()["error_code"] == "DEADLINE_EXCEEDED"
    assert "before the request's deadline" in late.json()["message"]
    assert spent.status_code == 504
    assert bad.status_code == 400 and bad.json()["field"] == "X-Request-Timeout-Ms"
    assert ok.status_code == 200 and results[0].status_code == 200
    assert stats.requests == 2  # the late one never ran


async def test_413_from_content_length_closes_the_connection() -> None:
    async with harness(max_body_bytes=10) as (h, _):
        status, out, body, reads = await h.raw(PATH, {"content-length": "1000000"})
    assert (status, reads) == (413, 0) and out["connection"] == "close"
    assert orjson.loads(body)["error_code"] == "PAYLOAD_TOO_LARGE"


async def test_mcp_and_other_doors_are_refused_before_decoding() -> None:
    """``resolve`` checks the queue's room: ``predict_records`` (the MCP door) refuses before its decoder runs."""
    async with harness(BatcherConfig(max_queue_requests=1)) as (h, gate):
        results: list[httpx.Response] = []
        decoded: list[int] = []
        decode = h.dep.decoder.decode_records
        h.dep.decoder.decode_records = lambda *a, **k: decoded.append(1) or decode(*a, **k)  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:
            await _busy(h, gate, tg, results, queued=1)
            with pytest.raises(Overloaded, match="1 requests queued"):
                await h.service.predict_records("doubler", "champion", [{"x": 1.0, "tag": "a"}])
            gate.opened.set()
        assert decoded == []


async def test_the_heap_is_trimmed_after_a_burst_of_bodies(monkeypatch: pytest.MonkeyPatch) -> None:
    """RSS would otherwise stay at the burst's peak: glibc keeps freed pages (``server/runtime/memory.py``)."""
    trimmed = threading.Event()
    monkeypatch.setattr(service_module, "trim", lambda: bool(trimmed.set() or True))
    async with harness() as (h, _):
        small = h.service.admit(None, None, 1024)
        small.release()
        assert not h.service._trim_pending  # not a burst
        held = [h.service.admit(None, None, 20 * 1024 * 1024) for _ in range(2)]
        for admission in held:
            admission.release()
        assert await anyio.to_thread.run_sync(trimmed.wait, WAIT_S)


async def test_a_large_body_reserves_its_room_before_it_is_read() -> None:
    """A body decoded in a worker thread lets other requests run meanwhile: its room is reserved (a slot) first."""
    async with harness(max_body_bytes=1024 * 1024) as (h, gate):
        gate.opened.set()
        large = BODY + b" " * 300_000
        reserved: list[int] = []
        decode = h.dep.decoder.decode_json

        def watching(body: bytes) -> Any:
            reserved.append(h.dep.batcher.stats.reserved)  # runs in the worker thread, mid-request
            return decode(body)

        h.dep.decoder.decode_json = watching  # type: ignore[method-assign]
        status, _, body, reads = await h.raw(PATH, {"content-length": str(len(large))}, large)
        assert (status, reads) == (200, 1) and orjson.loads(body) == {"predictions": [3.0]}
        assert reserved == [1] and h.dep.batcher.stats.reserved == 0
        status, _, _, _ = await h.raw(PATH, {"content-length": str(len(BODY))})  # small: no slot needed
        assert status == 200 and reserved == [1, 0]


async def test_a_request_waiting_on_a_replaced_deployment_goes_on_without_a_slot() -> None:
    """A hot swap stops the old batcher: its waiting room does not fail, the request path finds the new one."""
    async with harness(BatcherConfig(max_queue_requests=1)) as (h, gate):
        results: list[httpx.Response] = []
        async with anyio.create_task_group() as tg:
            await _busy(h, gate, tg, results, queued=1)
            admission = h.service.admit("doubler", "champion", len(BODY))
            assert admission.waiting is h.dep.batcher
            waiting = asyncio.create_task(admission.ready())
            with anyio.fail_after(WAIT_S):
                while h.dep.batcher.stats.waiting < 1:
                    await anyio.wait_all_tasks_blocked()
            stopping = asyncio.create_task(h.dep.batcher.stop(timeout_s=WAIT_S))
            with anyio.fail_after(WAIT_S):
                await waiting  # no ServerStopping
            assert admission.slot is None
            admission.release()
            gate.opened.set()
            await stopping
