"""ModelManager with a real sqlite registry and onnxruntime: on-demand loads (single flight, policy, negative cache),
LRU eviction, idle unload (scale-to-zero) releasing the session, endpoint ownership."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.errors import ModelNotFound, ModelNotReady
from server.main import Components, build
from server.settings import DeploymentSpec
from tests.lifecycle import ScorerRegistry, answer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _started(settings: Any) -> AsyncIterator[Components]:
    components = build(settings, mcp=False)
    await components.manager.deploy_all(settings.all_deployments())
    try:
        yield components
    finally:
        await components.manager.stop_all()


async def _score(c: Components, name: str, version: str) -> float:
    prediction = await c.service.predict_payload(name, version, answer())
    return float(prediction.predictions[0])


@pytest.fixture
async def registry_mode(scorers: ScorerRegistry, tmp_path: Any) -> AsyncIterator[tuple[Components, str]]:
    name = scorers.register("lazy", [1, 2, 3])
    async for c in _started(scorers.settings(tmp_path, policy={"mode": "registry"}, cache={"max_models": 2})):
        yield c, name


async def test_concurrent_first_calls_load_once(registry_mode: tuple[Components, str]) -> None:
    c, name = registry_mode
    answers = await asyncio.gather(*(_score(c, name, "2") for _ in range(25)))
    assert answers == [4.0] * 25
    assert c.manager.loads == 1
    (info,) = c.service.list()
    assert info.key == f"{name}/2" and info.load_seconds > 0
    assert info.lifecycle is not None and not info.lifecycle.pinned and info.lifecycle.owners == ()
    assert info.memory_bytes > 0 and "memory_mb" in info.summary()


async def test_unknown_versions_are_404_and_remembered(registry_mode: tuple[Components, str]) -> None:
    c, name = registry_mode
    with pytest.raises(ModelNotFound, match="version 9"):
        await _score(c, name, "9")
    started = time.perf_counter()
    with pytest.raises(ModelNotFound, match="version 9"):
        await _score(c, name, "9")
    assert time.perf_counter() - started < 0.05
    assert c.manager.loads == 1  # the second answer came from the negative cache
    with pytest.raises(ModelNotFound):
        await _score(c, "no_such_model", "1")


async def test_lru_eviction_keeps_the_cache_bounded(registry_mode: tuple[Components, str]) -> None:
    c, name = registry_mode
    assert [await _score(c, name, v) for v in ("1", "2", "1", "3")] == [2.0, 4.0, 2.0, 6.0]
    assert sorted(d.key for d in c.table.all()) == [f"{name}/1", f"{name}/3"]  # 2 was the least recently used
    assert await _score(c, name, "2") == 4.0
    assert sorted(d.key for d in c.table.all()) == [f"{name}/2", f"{name}/3"]
    assert c.manager.loads == 4


async def test_idle_unload_releases_the_session(scorers: ScorerRegistry, tmp_path: Any) -> None:
    name = scorers.register("idle", [1, 2])
    settings = scorers.settings(
        tmp_path, models=(f"models:/{name}@champion",), policy={"mode": "registry"}, cache={"idle_ttl_s": 60}
    )
    async for c in _started(settings):
        assert await _score(c, name, "2") == 4.0
        lazy = c.table.get(f"{name}/2")
        assert lazy is not None
        session = weakref.ref(lazy.session)
        batcher = lazy.batcher
        del lazy
        assert await c.manager.reap(now=time.monotonic() + 30) == []
        assert await c.manager.reap(now=time.monotonic() + 61) == [f"{name}/2"]  # the pinned @champion stays
        assert [d.key for d in c.table.all()] == [f"{name}@champion"]
        assert not batcher.running
        del batcher
        gc.collect()
        assert session() is None  # the onnxruntime session (and its memory) is gone
        assert await _score(c, name, "2") == 4.0  # cold start on the next call
        assert c.manager.loads == 3


async def test_listed_policy_serves_only_the_configured_models(scorers: ScorerRegistry, tmp_path: Any) -> None:
    name = scorers.register("listed", [1, 2])
    async for c in _started(scorers.settings(tmp_path, models=(f"models:/{name}@champion",))):
        assert await _score(c, name, "champion") == 2.0
        with pytest.raises(ModelNotFound, match="no served version or alias '2'"):
            await _score(c, name, "2")
        assert c.manager.loads == 1


async def test_name_patterns_and_tags(scorers: ScorerRegistry, tmp_path: Any) -> None:
    name = scorers.register("tagged", [1, 2])
    other = scorers.register("untagged", [1])
    scorers.client.set_model_version_tag(name, "1", "serving", "approved")
    policy = {"mode": "registry", "names": ["tagged_*"], "tags": {"serving": "approved"}}
    async for c in _started(scorers.settings(tmp_path, policy=policy)):
        assert await _score(c, name, "1") == 2.0
        with pytest.raises(ModelNotFound, match="not served"):
            await _score(c, name, "2")
        with pytest.raises(ModelNotFound, match="tagged_"):
            await _score(c, other, "1")


async def test_a_version_that_cannot_load_is_503_and_listed(scorers: ScorerRegistry, tmp_path: Any) -> None:
    name = scorers.register("broken", [None])
    async for c in _started(scorers.settings(tmp_path, policy={"mode": "registry"})):
        with pytest.raises(ModelNotReady, match="no signature"):
            await _score(c, name, "1")
        assert "no signature" in c.service.failures()[f"{name}/1"]


async def test_endpoint_owned_scale_to_zero_reloads_under_the_listed_policy(
    scorers: ScorerRegistry, tmp_path: Any
) -> None:
    name = scorers.register("owned", [1, 2])
    async for c in _started(scorers.settings(tmp_path, cache={"idle_ttl_s": 10})):
        dep = await c.manager.acquire(DeploymentSpec(model=f"models:/{name}/2"), "endpoint:e", pinned=False)
        assert dep.lifecycle.owners == ("endpoint:e",) and not dep.lifecycle.pinned
        assert await c.manager.reap(now=time.monotonic() + 11) == [f"{name}/2"]
        assert await _score(c, name, "2") == 4.0  # owned: loaded again although the policy is 'listed'
        await c.manager.release(f"{name}/2", "endpoint:e")
        assert c.table.all() == []


async def test_registry_mode_serves_aliases_by_alias_not_by_a_stale_version(
    scorers: ScorerRegistry, tmp_path: Any
) -> None:
    name = scorers.register("stale", [1, 2])  # @champion on version 1
    async for c in _started(scorers.settings(tmp_path, policy={"mode": "registry"})):
        assert await _score(c, name, "1") == 2.0  # name/1 loaded while it carried @champion
        scorers.move(name, "champion", "2")
        assert await _score(c, name, "champion") == 4.0  # loads name@champion, which follows the alias
        assert sorted(d.key for d in c.table.all()) == [f"{name}/1", f"{name}@champion"]
