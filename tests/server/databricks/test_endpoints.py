"""EndpointService in process (real registry, onnxruntime): scale-to-zero entities unload when idle and come back on
the next call; pinned ones stay."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from server.main import build
from tests.lifecycle import ScorerRegistry, answer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_scale_to_zero_entities_unload_when_idle_and_reload(scorers: ScorerRegistry, tmp_path: Path) -> None:
    name = scorers.register("s2z", [1, 2])
    c = build(scorers.settings(tmp_path, cache={"idle_ttl_s": 60}), mcp=False)
    assert c.endpoints is not None
    entities = [
        {"name": "cold", "entity_name": name, "entity_version": "1", "scale_to_zero_enabled": True},
        {"name": "warm", "entity_name": name, "entity_version": "2"},
    ]
    try:
        await c.endpoints.create({"name": "ep", "config": {"served_entities": entities}})
        assert await asyncio.to_thread(c.endpoints.wait_settled, "ep", 30)
        assert await c.manager.reap(now=time.monotonic() + 61) == [f"{name}/1"]
        states = {e["name"]: e["state"] for e in c.endpoints.get("ep")["config"]["served_entities"]}
        assert states["cold"] == {"deployment": "DEPLOYMENT_READY", "deployment_state_message": "scaled to zero"}
        assert "version 2" in states["warm"]["deployment_state_message"]
        prediction, served = await c.endpoints.invoke("ep", orjson.dumps(answer()), "application/json", "cold")
        assert (served, float(prediction.predictions[0])) == ("cold", 2.0)
        states = {e["name"]: e["state"] for e in c.endpoints.get("ep")["config"]["served_entities"]}
        assert "version 1" in states["cold"]["deployment_state_message"]
        await c.endpoints.delete("ep")
        assert c.table.all() == []
    finally:
        await c.endpoints.aclose()
        await c.manager.stop_all()
