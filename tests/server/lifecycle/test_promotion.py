"""Alias following and hot swap: a moved alias is swapped in, a failing version keeps the old one serving, requests
in flight finish on the old batcher, and a request that reaches a drained batcher is answered by its successor."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Mapping
from typing import Any

import numpy as np
import pytest

from server.deployments import DeploymentTable
from server.lifecycle.promotion import Promotion
from server.main import Components, build
from server.service import InferenceService
from tests.lifecycle import ScorerRegistry, answer
from tests.server.fakes import fake_deployment

pytestmark = [pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def served(scorers: ScorerRegistry, tmp_path: Any) -> AsyncIterator[tuple[Components, str]]:
    """``<name>@champion`` served (v1 = 2x, v2 = 4x when scoring x=2; v3 has no signature: cannot load)."""
    name = scorers.register("promo", [1, 2, None])
    settings = scorers.settings(tmp_path, models=(f"models:/{name}@champion",))
    c = build(settings, mcp=False)
    await c.manager.deploy_all(settings.all_deployments())
    yield c, name
    await c.manager.stop_all()


async def _score(c: Components, name: str) -> float:
    return float((await c.service.predict_payload(name, "champion", answer())).predictions[0])


@pytest.mark.integration
async def test_a_moved_alias_is_swapped_in(served: tuple[Components, str], scorers: ScorerRegistry) -> None:
    c, name = served
    assert c.follower is not None
    changes: list[int] = []
    c.service.subscribe(lambda: changes.append(1))
    assert await c.follower.check() == []
    scorers.move(name, "champion", "2")
    assert await c.follower.check() == [Promotion(f"{name}@champion", "1", "2", swapped=True)]
    assert await _score(c, name) == 4.0
    info = c.service.describe(name, "champion")
    assert info.version == "2" and info.lifecycle is not None
    assert info.lifecycle.previous_version == "1" and info.lifecycle.swapped_at is not None
    assert info.lifecycle.pinned and info.lifecycle.owners == ("settings",)
    assert changes == [1]  # one table change: what the MCP door turns into tools/list_changed


@pytest.mark.integration
async def test_a_failed_promotion_keeps_the_old_version(
    served: tuple[Components, str], scorers: ScorerRegistry
) -> None:
    c, name = served
    assert c.follower is not None
    scorers.move(name, "champion", "3")
    (result,) = await c.follower.check()
    assert not result.swapped and result.error is not None and "no signature" in result.error
    assert await _score(c, name) == 2.0
    summary = c.service.describe(name, "champion").summary()
    assert summary["version"] == "1" and summary["pending_version"] is None
    assert "version 3 failed to load" in summary["last_error"] and "still serving version 1" in summary["last_error"]
    loads = c.manager.loads
    assert await c.follower.check() == []  # the same failed version is not retried by the poller...
    assert c.manager.loads == loads
    assert len(await c.follower.check({name}, retry_failed=True)) == 1  # ...but a webhook retries it
    assert c.manager.loads == loads + 1
    scorers.move(name, "champion", "2")
    assert (await c.follower.check())[0].swapped
    assert c.service.describe(name, "champion").summary()["last_error"] is None


@pytest.mark.integration
async def test_a_deleted_alias_keeps_serving_and_says_so(
    served: tuple[Components, str], scorers: ScorerRegistry
) -> None:
    c, name = served
    assert c.follower is not None
    scorers.client.delete_registered_model_alias(name, "champion")
    assert await c.follower.check() == []
    assert await _score(c, name) == 2.0
    assert "no longer exists" in c.service.describe(name, "champion").summary()["last_error"]


async def test_requests_in_flight_finish_on_the_old_batcher() -> None:
    """A gated model holds 40 requests in the old batcher while the swap happens: all answer from v1, none fail."""
    running, release = threading.Event(), threading.Event()

    def slow_v1(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        running.set()
        release.wait(10)
        return {"predictions": feeds["x"] * 1}

    table = DeploymentTable()
    service = InferenceService(table)
    old, new = (
        fake_deployment(slow_v1, version="1"),
        fake_deployment(lambda f: {"predictions": f["x"] * 2}, version="2"),
    )
    await old.batcher.start()
    await new.batcher.start()
    table.add(old)
    rows = [{"x": 1.0, "tag": "a"}]
    in_flight = [asyncio.create_task(service.predict_records("doubler", "champion", rows)) for _ in range(40)]
    await asyncio.wait_for(asyncio.to_thread(running.wait, 10), 10)
    table.add(new)  # the swap
    drained = asyncio.create_task(old.batcher.stop())
    after = await service.predict_records("doubler", "champion", rows)
    release.set()
    results = await asyncio.gather(*in_flight)
    await drained
    assert [(r.version, float(r.predictions[0])) for r in results] == [("1", 1.0)] * 40
    assert (after.version, float(after.predictions[0])) == ("2", 2.0)
    await new.batcher.stop()


async def test_a_request_reaching_a_drained_batcher_runs_on_the_successor() -> None:
    """Swap and drain happen while a request decodes (a large body, decoded in a worker thread): no error."""
    entered, go = threading.Event(), threading.Event()
    table = DeploymentTable()
    service = InferenceService(table)
    old, new = fake_deployment(version="1"), fake_deployment(lambda f: {"predictions": f["x"] * 3}, version="2")

    class Gated:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def decode_json(self, body: bytes) -> Any:
            entered.set()
            go.wait(10)
            return self.inner.decode_json(body)

    old.decoder = Gated(old.decoder)  # type: ignore[assignment]
    await old.batcher.start()
    await new.batcher.start()
    table.add(old)
    row = b'{"x": 1.0, "tag": "' + b"a" * 4000 + b'"}'
    body = b'{"dataframe_records": [' + b",".join([row] * 90) + b"]}"
    assert len(body) > 256 * 1024
    request = asyncio.create_task(service.predict_body("doubler", "champion", body, "application/json"))
    await asyncio.wait_for(asyncio.to_thread(entered.wait, 10), 10)
    table.add(new)
    await old.batcher.stop()
    go.set()
    result = await request
    assert result.version == "2" and float(result.predictions[0]) == 3.0 and result.rows == 90
    await new.batcher.stop()


@pytest.mark.integration
async def test_a_configured_alias_that_failed_at_start_follows_the_registry(
    scorers: ScorerRegistry, tmp_path: Any
) -> None:
    name = scorers.register("late", [None, 2])  # @champion starts on version 1, which cannot load
    settings = scorers.settings(tmp_path, models=(f"models:/{name}@champion",))
    c = build(settings, mcp=False)
    assert c.follower is not None
    await c.manager.deploy_all(settings.all_deployments())
    try:
        assert f"{name}@champion" in c.service.failures() and c.table.all() == []
        assert await c.follower.check() == []  # same alias target: not retried
        scorers.move(name, "champion", "2")
        await c.follower.check()
        assert await _score(c, name) == 4.0
        assert c.service.failures() == {}
    finally:
        await c.manager.stop_all()
