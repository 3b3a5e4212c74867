"""The Databricks serving-endpoints API over real HTTP: CRUD, states, rollouts, traffic split, served-model bypass,
tags, errors, and endpoints surviving a restart."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.lifecycle import Live, ScorerRegistry, answer, live

pytestmark = pytest.mark.integration

API = "/api/2.0/serving-endpoints"


@pytest.fixture(scope="module")
def dbx(scorers: ScorerRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, str]]:
    """A server with no configured models (policy 'listed'): endpoints decide what is served."""
    name = scorers.register("dbx", [1, 2, None])
    with live(scorers.settings(tmp_path_factory.mktemp("dbx"))) as server:
        yield server, name


def _entities(name: str, *versions: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"entity_name": name, "entity_version": v, "workload_size": "Small", **extra} for v in versions]


def _create(server: Live, c: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = c.post(API, json=body, headers={"Authorization": "Bearer any-token"})
    assert r.status_code == 200, r.text
    assert server.components.endpoints.wait_settled(body["name"], 30)
    return r.json()


def test_create_get_list_query_delete(dbx: tuple[Live, str]) -> None:
    server, name = dbx
    with server.client() as c:
        created = _create(server, c, {"name": "crud", "config": {"served_entities": _entities(name, "1")}})
        assert created["state"] == {"ready": "NOT_READY", "config_update": "IN_PROGRESS"}
        assert created["pending_config"]["config_version"] == 1 and "config" not in created
        ep = c.get(f"{API}/crud").json()
        assert ep["state"] == {"ready": "READY", "config_update": "NOT_UPDATING"}
        assert "pending_config" not in ep and ep["id"] == created["id"]
        entity = ep["config"]["served_entities"][0]
        assert entity["name"] == f"{name}-1" and entity["entity_version"] == "1"
        assert (
            entity["state"]["deployment"] == "DEPLOYMENT_READY"
            and "version 1" in entity["state"]["deployment_state_message"]
        )
        assert ep["config"]["served_models"][0]["model_name"] == name
        assert ep["config"]["traffic_config"] == {
            "routes": [{"served_model_name": f"{name}-1", "traffic_percentage": 100}]
        }
        assert "crud" in [e["name"] for e in c.get(API).json()["endpoints"]]

        r = c.post("/serving-endpoints/crud/invocations", json={**answer(), "client_request_id": "abc-1"})
        assert r.status_code == 200 and r.json() == {"predictions": [2.0]}
        assert r.headers["served-model-name"] == f"{name}-1"
        # the endpoint shares the deployment (and its batcher) with the /model/ path and the MCP tools
        assert c.post(f"/model/{name}/1/invocations", json=answer()).json() == {"predictions": [2.0]}

        assert c.delete(f"{API}/crud").json() == {}
        assert c.get(f"{API}/crud").status_code == 404
        assert c.post("/serving-endpoints/crud/invocations", json=answer()).status_code == 404
        assert c.post(f"/model/{name}/1/invocations", json=answer()).status_code == 404  # released: unloaded


def test_traffic_split_and_served_model_bypass(dbx: tuple[Live, str]) -> None:
    server, name = dbx
    routes = [
        {"served_model_name": "a", "traffic_percentage": 80},
        {"served_model_name": "b", "traffic_percentage": 20},
    ]
    served = [{**_entities(name, "1")[0], "name": "a"}, {**_entities(name, "2")[0], "name": "b"}]
    with server.client() as c:
        _create(
            server, c, {"name": "split", "config": {"served_entities": served, "traffic_config": {"routes": routes}}}
        )
        calls, seen = 2000, Counter[str]()
        for _ in range(calls):
            r = c.post("/serving-endpoints/split/invocations", json=answer())
            served_name = r.headers["served-model-name"]
            assert r.json()["predictions"][0] / 2 == {"a": 1.0, "b": 2.0}[served_name]
            seen[served_name] += 1
        assert abs(seen["a"] / calls - 0.80) < 0.02 and abs(seen["b"] / calls - 0.20) < 0.02, seen
        for served_name, expected in (("a", 2.0), ("b", 4.0)):
            r = c.post(f"/serving-endpoints/split/served-models/{served_name}/invocations", json=answer())
            assert r.json() == {"predictions": [expected]} and r.headers["served-model-name"] == served_name
        missing = c.post("/serving-endpoints/split/served-models/zzz/invocations", json=answer())
        assert missing.status_code == 404 and "served: ['a', 'b']" in missing.json()["message"]
        c.delete(f"{API}/split")


def test_update_config_rolls_out_and_a_failed_update_keeps_serving(dbx: tuple[Live, str]) -> None:
    server, name = dbx
    with server.client() as c:
        _create(server, c, {"name": "roll", "config": {"served_entities": _entities(name, "1")}})
        updated = c.put(f"{API}/roll/config", json={"served_entities": _entities(name, "2")}).json()
        assert updated["state"]["config_update"] == "IN_PROGRESS"
        assert updated["pending_config"]["config_version"] == 2 and updated["config"]["config_version"] == 1
        busy = c.put(f"{API}/roll/config", json={"served_entities": _entities(name, "1")})
        assert busy.status_code == 409 and busy.json()["error_code"] == "RESOURCE_CONFLICT"
        assert server.components.endpoints.wait_settled("roll", 30)
        ep = c.get(f"{API}/roll").json()
        assert ep["config"]["config_version"] == 2 and ep["state"]["config_update"] == "NOT_UPDATING"
        assert c.post("/serving-endpoints/roll/invocations", json=answer()).json() == {"predictions": [4.0]}

        c.put(f"{API}/roll/config", json={"served_entities": _entities(name, "3")})  # version 3 cannot load
        assert server.components.endpoints.wait_settled("roll", 30)
        ep = c.get(f"{API}/roll").json()
        assert ep["state"] == {"ready": "READY", "config_update": "UPDATE_FAILED"}
        assert ep["config"]["config_version"] == 2
        failed = ep["pending_config"]["served_entities"][0]["state"]
        assert failed["deployment"] == "DEPLOYMENT_FAILED" and "no signature" in failed["deployment_state_message"]
        assert c.post("/serving-endpoints/roll/invocations", json=answer()).json() == {"predictions": [4.0]}
        c.delete(f"{API}/roll")


def test_tags(dbx: tuple[Live, str]) -> None:
    server, name = dbx
    with server.client() as c:
        _create(
            server,
            c,
            {
                "name": "tagged",
                "config": {"served_entities": _entities(name, "1")},
                "tags": [{"key": "team", "value": "risk"}],
            },
        )
        r = c.patch(f"{API}/tagged/tags", json={"add_tags": [{"key": "env", "value": "prod"}], "delete_tags": ["team"]})
        assert r.json() == {"tags": [{"key": "env", "value": "prod"}]}
        assert c.get(f"{API}/tagged").json()["tags"] == [{"key": "env", "value": "prod"}]
        c.delete(f"{API}/tagged")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (
            {"name": "bad name", "config": {"served_entities": [{"entity_name": "m", "entity_version": "1"}]}},
            400,
            "BAD_REQUEST",
        ),
        ({"name": "nocfg"}, 400, "BAD_REQUEST"),
        (
            {
                "name": "pct",
                "config": {
                    "served_entities": [{"entity_name": "m", "entity_version": "1"}],
                    "traffic_config": {"routes": [{"served_model_name": "m-1", "traffic_percentage": 50}]},
                },
            },
            400,
            "BAD_REQUEST",
        ),
    ],
)
def test_invalid_requests(dbx: tuple[Live, str], body: dict[str, Any], status: int, code: str) -> None:
    server, _ = dbx
    with server.client() as c:
        r = c.post(API, json=body)
    assert (r.status_code, r.json()["error_code"]) == (status, code)


def test_conflicts_and_missing_endpoints(dbx: tuple[Live, str]) -> None:
    server, name = dbx
    with server.client() as c:
        _create(server, c, {"name": "twice", "config": {"served_entities": _entities(name, "1")}})
        again = c.post(API, json={"name": "twice", "config": {"served_entities": _entities(name, "1")}})
        assert again.status_code == 409 and again.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
        assert c.get(f"{API}/nope").json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        assert c.delete(f"{API}/nope").status_code == 404
        c.delete(f"{API}/twice")


def test_endpoints_survive_a_restart(scorers: ScorerRegistry, tmp_path: Path) -> None:
    name = scorers.register("persist", [1, 2])
    settings = scorers.settings(tmp_path)
    config = {"served_entities": _entities(name, "1", scale_to_zero_enabled=True) + _entities(name, "2")}
    with live(settings) as first, first.client() as c:
        _create(first, c, {"name": "kept", "config": config, "tags": [{"key": "k", "value": "v"}]})
        before = c.get(f"{API}/kept").json()
    assert (tmp_path / "endpoints.db").is_file()
    with live(settings) as second, second.client() as c:
        after = c.get(f"{API}/kept").json()  # restored in the lifespan, before the server answered
        assert after["state"] == {"ready": "READY", "config_update": "NOT_UPDATING"}
        for key in ("id", "creation_timestamp", "tags", "config"):
            assert after[key] == before[key], key
        answers = {
            c.post("/serving-endpoints/kept/invocations", json=answer()).json()["predictions"][0] for _ in range(4)
        }
        assert answers == {2.0, 4.0}
