"""Two processes sharing one state directory (as replicas do under ``--ray``): what one does to an endpoint, the
other takes with ``follow`` (real registry, onnxruntime, sqlite store), without writing the store itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from server.errors import ModelNotFound
from server.main import Components, build
from server.ops.identity import Resource
from tests.lifecycle import ScorerRegistry, answer, version_of

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def pair(scorers: ScorerRegistry, tmp_path: Path) -> AsyncIterator[tuple[Components, Components]]:
    built = [build(scorers.settings(tmp_path), mcp=False) for _ in range(2)]
    try:
        yield built[0], built[1]
    finally:
        for c in built:
            assert c.endpoints is not None
            await c.endpoints.aclose()
            await c.manager.stop_all()


async def _score(c: Components, name: str) -> float:
    assert c.endpoints is not None
    prediction, _ = await c.endpoints.invoke(name, orjson.dumps(answer()), "application/json")
    return version_of(prediction.predictions[0])


async def _settled(c: Components, name: str) -> None:
    assert c.endpoints is not None
    assert await asyncio.to_thread(c.endpoints.wait_settled, name, 30)


async def test_create_update_gateway_and_delete_are_followed(
    pair: tuple[Components, Components], scorers: ScorerRegistry
) -> None:
    origin, follower = pair
    assert origin.endpoints is not None and follower.endpoints is not None
    changed: list[str] = []
    origin.endpoints.listeners.append(changed.append)
    model = scorers.register("follow", [1.0, 2.0])
    entity = {"entity_name": model, "entity_version": "1"}

    await origin.endpoints.create({"name": "ep", "config": {"served_entities": [entity]}})
    await _settled(origin, "ep")
    stored = origin.endpoints.store.get("ep")
    await follower.endpoints.follow("ep")
    await _settled(follower, "ep")
    assert await _score(follower, "ep") == 1.0
    assert follower.endpoints.get("ep")["state"]["ready"] == "READY"
    assert follower.endpoints.store.get("ep") == stored  # the follower wrote nothing

    await origin.endpoints.update_config("ep", {"served_entities": [{**entity, "entity_version": "2"}]})
    limits = {"rate_limits": [{"calls": 1, "key": "user", "renewal_period": "minute"}]}
    origin.endpoints.put_ai_gateway("ep", limits)
    origin.endpoints.patch_tags("ep", {"add_tags": [{"key": "team", "value": "risk"}]})
    await _settled(origin, "ep")
    await follower.endpoints.follow("ep")
    await _settled(follower, "ep")
    assert await _score(follower, "ep") == 2.0
    assert follower.endpoints.get("ep")["tags"] == [{"key": "team", "value": "risk"}]
    assert follower.gate is not None and follower.gate.limits.get(Resource("endpoint", "ep"))  # enforced there too

    await origin.endpoints.delete("ep")
    await follower.endpoints.follow("ep")
    with pytest.raises(ModelNotFound):
        await _score(follower, "ep")
    assert follower.table.all() == []  # its deployments released
    assert changed == ["ep"] * 5  # create, config, gateway, tags, delete: each told once


async def test_following_an_endpoint_nobody_created_does_nothing(pair: tuple[Components, Components]) -> None:
    _, follower = pair
    assert follower.endpoints is not None
    await follower.endpoints.follow("never-created")
    assert follower.endpoints.list() == []


async def test_a_newer_config_seen_during_a_rollout_rolls_out_after_it(
    pair: tuple[Components, Components], scorers: ScorerRegistry
) -> None:
    origin, follower = pair
    assert origin.endpoints is not None and follower.endpoints is not None
    model = scorers.register("follow_twice", [1.0, 2.0, 3.0])

    def config(version: str) -> dict[str, object]:
        return {"served_entities": [{"entity_name": model, "entity_version": version}]}

    await origin.endpoints.create({"name": "ep", "config": config("1")})
    await _settled(origin, "ep")
    await origin.endpoints.update_config("ep", config("2"))
    await _settled(origin, "ep")
    await follower.endpoints.follow("ep")  # starts rolling out version 2 here, returns at once
    await origin.endpoints.update_config("ep", config("3"))
    await _settled(origin, "ep")
    await follower.endpoints.follow("ep")  # waits for that rollout, then rolls out version 3
    await _settled(follower, "ep")
    assert await _score(follower, "ep") == 3.0
    assert follower.endpoints.get("ep")["config"]["config_version"] == 3
