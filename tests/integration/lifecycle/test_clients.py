"""Clients written for Databricks and MLflow, unchanged, against a real modelport: the databricks-sdk
``WorkspaceClient().serving_endpoints``, ``mlflow.deployments.get_deploy_client("databricks")``, and the modelport
MLflow deployments plugin (CLI and Python API, ``run-local`` in a real subprocess)."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from click.testing import CliRunner
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound, ResourceAlreadyExists
from databricks.sdk.service.serving import (
    DataframeSplitInput,
    EndpointCoreConfigInput,
    EndpointStateConfigUpdate,
    EndpointStateReady,
    EndpointTag,
    Route,
    ServedEntityInput,
    TrafficConfig,
)
from mlflow.deployments import get_deploy_client
from mlflow.deployments.cli import commands as deployments_cli
from mlflow.exceptions import MlflowException

from tests.lifecycle import Live, ScorerRegistry, answer, live

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(scorers: ScorerRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, str]]:
    name = scorers.register("client", [1, 2])
    with live(scorers.settings(tmp_path_factory.mktemp("clients"))) as running:
        yield running, name


def test_databricks_sdk(server: tuple[Live, str]) -> None:
    live_server, name = server
    w = WorkspaceClient(host=live_server.url, token="dapi-anything")
    entities = [
        ServedEntityInput(
            name="v1", entity_name=name, entity_version="1", workload_size="Small", scale_to_zero_enabled=False
        ),
        ServedEntityInput(
            name="v2", entity_name=name, entity_version="2", workload_size="Small", scale_to_zero_enabled=True
        ),
    ]
    traffic = TrafficConfig(
        routes=[
            Route(served_model_name="v1", traffic_percentage=50),
            Route(served_model_name="v2", traffic_percentage=50),
        ]
    )
    waiter = w.serving_endpoints.create(
        name="sdk",
        config=EndpointCoreConfigInput(name="sdk", served_entities=entities, traffic_config=traffic),
        tags=[EndpointTag(key="team", value="risk")],
    )
    assert (
        waiter.response.state is not None
        and waiter.response.state.config_update == EndpointStateConfigUpdate.IN_PROGRESS
    )
    assert live_server.components.endpoints.wait_settled("sdk", 30)
    ready = waiter.result(timeout=timedelta(seconds=30))
    assert ready.state is not None and ready.state.ready == EndpointStateReady.READY
    got = w.serving_endpoints.get("sdk")
    assert got.config is not None and [e.entity_version for e in got.config.served_entities or []] == ["1", "2"]
    assert "sdk" in [e.name for e in w.serving_endpoints.list()]

    served = set()
    for _ in range(4):
        response = w.serving_endpoints.query("sdk", dataframe_records=[{"x": 2.0}], client_request_id="req-1")
        served.add((response.served_model_name, tuple(response.predictions or ())))
    assert served == {("v1", (2.0,)), ("v2", (4.0,))}
    split = w.serving_endpoints.query("sdk", dataframe_split=DataframeSplitInput(columns=["x"], data=[[1.0], [3.0]]))
    assert split.predictions in ([1.0, 3.0], [2.0, 6.0])

    w.serving_endpoints.update_config(name="sdk", served_entities=entities[1:])
    assert live_server.components.endpoints.wait_settled("sdk", 30)
    updated = w.serving_endpoints.get("sdk")
    assert updated.config is not None and updated.config.config_version == 2
    assert w.serving_endpoints.query("sdk", inputs={"x": [2.0]}).predictions == [4.0]
    tags = w.serving_endpoints.patch("sdk", add_tags=[EndpointTag(key="env", value="prod")], delete_tags=["team"])
    assert [(t.key, t.value) for t in tags.tags or []] == [("env", "prod")]
    with pytest.raises(ResourceAlreadyExists):
        w.serving_endpoints.create(name="sdk", config=EndpointCoreConfigInput(name="sdk", served_entities=entities))
    w.serving_endpoints.delete("sdk")
    with pytest.raises(NotFound):
        w.serving_endpoints.get("sdk")


def test_mlflow_databricks_deployments_client(server: tuple[Live, str], monkeypatch: pytest.MonkeyPatch) -> None:
    live_server, name = server
    monkeypatch.setenv("DATABRICKS_HOST", live_server.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-anything")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast instead of minutes of retries
    client = get_deploy_client("databricks")
    entities = [{"entity_name": name, "entity_version": "1", "workload_size": "Small", "scale_to_zero_enabled": False}]
    created = client.create_endpoint(config={"name": "mlf", "config": {"served_entities": entities}})
    assert created["name"] == "mlf"
    assert live_server.components.endpoints.wait_settled("mlf", 30)
    assert client.get_endpoint("mlf")["state"]["ready"] == "READY"
    assert "mlf" in [e["name"] for e in client.list_endpoints()]
    assert client.predict(endpoint="mlf", inputs={"dataframe_records": [{"x": 2.0}]}) == {"predictions": [2.0]}
    client.update_endpoint_config("mlf", {"served_entities": [{**entities[0], "entity_version": "2"}]})
    assert live_server.components.endpoints.wait_settled("mlf", 30)
    assert client.predict(endpoint="mlf", inputs={"inputs": {"x": [2.0]}}) == {"predictions": [4.0]}
    client.update_endpoint_tags("mlf", {"add_tags": [{"key": "k", "value": "v"}]})
    assert client.get_endpoint("mlf")["tags"] == [{"key": "k", "value": "v"}]
    client.delete_endpoint("mlf")
    assert "mlf" not in [e["name"] for e in client.list_endpoints()]


def test_mlflow_deployments_cli_with_the_modelport_plugin(server: tuple[Live, str], tmp_path: Path) -> None:
    live_server, name = server
    target = f"modelport:/{live_server.url}"
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"x": 2.0}, {"x": 3.0}]))
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(deployments_cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    assert "python_function deployment plug is created" in cli(
        "create", "-t", target, "--name", "plug", "-m", f"models:/{name}/1"
    )
    assert json.loads(cli("predict", "-t", target, "--name", "plug", "--input-path", str(rows)))["predictions"] == [
        2.0,
        3.0,
    ]
    assert "'name': 'plug'" in cli("list", "-t", target)
    assert f"model_uri: models:/{name}/1" in cli("get", "-t", target, "--name", "plug")
    assert "is updated" in cli(
        "update", "-t", target, "--name", "plug", "-m", f"models:/{name}@champion", "-C", "served_model_name=champ"
    )
    assert f"model_uri: models:/{name}@champion" in cli("get", "-t", target, "--name", "plug")
    assert "modelport:/http://HOST:PORT" in cli("help", "-t", "modelport")
    assert "Deployment plug is deleted" in cli("delete", "-t", target, "--name", "plug")
    failed = runner.invoke(deployments_cli, ["get", "-t", target, "--name", "plug"])
    assert isinstance(failed.exception, MlflowException) and "does not exist" in failed.exception.message
    assert failed.exception.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_modelport_plugin_python_api(server: tuple[Live, str]) -> None:
    live_server, name = server
    client = get_deploy_client(f"modelport:/{live_server.url}")
    deployment = client.create_deployment("py", f"models:/{name}@champion")
    assert deployment["state"] == "READY" and deployment["model_uri"] == f"models:/{name}@champion"
    response = client.predict("py", pd.DataFrame({"x": [1.0, 2.0]}))
    assert response.get_predictions()[0].tolist() == [1.0, 2.0]
    assert client.predict("py", {"dataframe_records": [{"x": 5.0}]})["predictions"] == [5.0]
    assert [d["name"] for d in client.list_deployments()] == ["py"]
    client.update_deployment("py", model_uri=f"models:/{name}/2")
    assert client.predict("py", answer())["predictions"] == [4.0]
    client.delete_deployment("py")
    assert client.list_deployments() == []
    with pytest.raises(MlflowException, match="does not exist"):
        client.get_deployment("py")


def test_run_local_serves_in_the_foreground(server: tuple[Live, str], scorers: ScorerRegistry, tmp_path: Path) -> None:
    _, name = server
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")} | {"MODELPORT_LOG_FORMAT": "json"}
    command = [sys.executable, "-m", "mlflow", "deployments", "run-local", "-t", "modelport", "--name", "local"]
    command += [
        "-m",
        f"models:/{name}/1",
        "-C",
        f"port={port}",
        "-C",
        f"registry_uri={scorers.uri}",
        "-C",
        f"state_dir={tmp_path}",
    ]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in proc.stderr or ():
            lines.put(line)
        lines.put(None)  # the process closed stderr (it exited)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    try:
        while True:  # uvicorn says so once the models are loaded and it listens
            line = lines.get(timeout=90)
            assert line is not None, "run-local exited:\n" + "".join(seen[-20:])
            seen.append(line)
            if "Uvicorn running on" in line:
                break
        r = httpx.post(f"http://127.0.0.1:{port}/model/{name}/1/invocations", json=answer(), timeout=30)
        assert r.json() == {"predictions": [2.0]}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
