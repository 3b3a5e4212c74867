"""MLflow deployments plugin: ``mlflow deployments <command> -t modelport:/http://127.0.0.1:8000``.

Registered in the ``mlflow.deployments`` entry-point group as ``modelport``, so the MLflow CLI and
``mlflow.deployments.get_deploy_client("modelport:/http://host:port")`` manage deployments on a running modelport
server. A deployment is a Databricks-compatible serving endpoint with one served entity
(``/api/2.0/serving-endpoints``), scored at ``/serving-endpoints/{name}/invocations``; the endpoint methods take
Databricks endpoint bodies as they are.

Targets: ``modelport`` (``$MODELPORT_URL``, default ``http://127.0.0.1:8000``), ``modelport:/http://host:port``.
``$MODELPORT_TOKEN``, when set, is sent as ``Authorization: Bearer``. ``-C`` options: ``served_model_name``,
``workload_size``, ``scale_to_zero_enabled`` (true/false), ``timeout`` (seconds to wait for the rollout, default 300).
"""

from __future__ import annotations

import os
import time
from typing import Any

import requests
from mlflow.deployments import BaseDeploymentClient, PredictionsResponse
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE, ErrorCode

from registry.uri import ModelRef

DEFAULT_URL = "http://127.0.0.1:8000"
_FLAVORS = (None, "python_function", "onnx")


def base_url(target_uri: str) -> str:
    """The server URL a target names: ``modelport:/http://h:p`` → ``http://h:p``; bare ``modelport`` → env/default."""
    rest = target_uri.split(":", 1)[1] if ":" in target_uri else ""
    rest = rest.lstrip("/")
    if not rest:
        return os.environ.get("MODELPORT_URL", DEFAULT_URL).rstrip("/")
    return (rest if "://" in rest else f"http://{rest}").rstrip("/")


class ModelportDeploymentClient(BaseDeploymentClient):
    """Deployments and endpoints on a modelport server (its Databricks-compatible serving endpoints API)."""

    def __init__(self, target_uri: str) -> None:
        super().__init__(target_uri)
        self.url = base_url(target_uri)
        self._session = requests.Session()
        token = os.environ.get("MODELPORT_TOKEN")
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    # -- deployments ----------------------------------------------------------------------------------------------

    def create_deployment(self, name, model_uri, flavor=None, config=None, endpoint=None):  # type: ignore[no-untyped-def]
        """Serve ``model_uri`` (``models:/name/3`` or ``models:/name@alias``) as endpoint ``name``, once ready."""
        config = dict(config or {})
        body = {"name": name, "config": {"served_entities": [_entity(model_uri, flavor, config)]}}
        self._call("POST", "/api/2.0/serving-endpoints", body)
        return _deployment(self._wait(name, config))

    def update_deployment(self, name, model_uri=None, flavor=None, config=None, endpoint=None):  # type: ignore[no-untyped-def]
        """Serve another model version (or alias) on deployment ``name``; waits until it serves."""
        config = dict(config or {})
        if model_uri is None:
            raise MlflowException("update needs a model URI (-m models:/name/version)", INVALID_PARAMETER_VALUE)
        body = {"served_entities": [_entity(model_uri, flavor, config)]}
        self._call("PUT", f"/api/2.0/serving-endpoints/{name}/config", body)
        return _deployment(self._wait(name, config))

    def delete_deployment(self, name, config=None, endpoint=None):  # type: ignore[no-untyped-def]
        self._call("DELETE", f"/api/2.0/serving-endpoints/{name}")

    def list_deployments(self, endpoint=None):  # type: ignore[no-untyped-def]
        return [_deployment(ep) for ep in self._call("GET", "/api/2.0/serving-endpoints").get("endpoints", [])]

    def get_deployment(self, name, endpoint=None):  # type: ignore[no-untyped-def]
        return _deployment(self._call("GET", f"/api/2.0/serving-endpoints/{name}"))

    def predict(self, deployment_name=None, inputs=None, endpoint=None):  # type: ignore[no-untyped-def]
        """Score ``inputs`` (a DataFrame, a scoring dict such as ``{"dataframe_records": [...]}``, or rows)."""
        name = deployment_name or endpoint
        if not name:
            raise MlflowException("predict needs a deployment name", INVALID_PARAMETER_VALUE)
        return PredictionsResponse(self._call("POST", f"/serving-endpoints/{name}/invocations", _scoring_body(inputs)))

    # -- endpoints (Databricks bodies) ---------------------------------------------------------------------------

    def create_endpoint(self, name, config=None):  # type: ignore[no-untyped-def]
        body = dict(config or {})
        body = body if "config" in body else {"name": name, "config": body}
        body.setdefault("name", name)
        return self._call("POST", "/api/2.0/serving-endpoints", body)

    def update_endpoint(self, endpoint, config=None):  # type: ignore[no-untyped-def]
        return self._call("PUT", f"/api/2.0/serving-endpoints/{endpoint}/config", dict(config or {}))

    def delete_endpoint(self, endpoint):  # type: ignore[no-untyped-def]
        self._call("DELETE", f"/api/2.0/serving-endpoints/{endpoint}")

    def list_endpoints(self):  # type: ignore[no-untyped-def]
        return self._call("GET", "/api/2.0/serving-endpoints").get("endpoints", [])

    def get_endpoint(self, endpoint):  # type: ignore[no-untyped-def]
        return self._call("GET", f"/api/2.0/serving-endpoints/{endpoint}")

    # -- internals ----------------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        try:
            response = self._session.request(method, self.url + path, json=body, timeout=120)
        except requests.RequestException as exc:
            raise MlflowException(f"modelport at {self.url} is not reachable: {exc}", INTERNAL_ERROR) from exc
        try:
            data = response.json() if response.content else {}
        except ValueError:
            data = {"message": response.text}
        if response.status_code >= 400:
            code = str(data.get("error_code", ""))
            try:
                error_code = ErrorCode.Value(code)
            except ValueError:
                error_code = INVALID_PARAMETER_VALUE if response.status_code < 500 else INTERNAL_ERROR
            raise MlflowException(f"{response.status_code} {data.get('message', response.text)}", error_code)
        return data

    def _wait(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """Poll the endpoint until its rollout ends; raise if it failed."""
        deadline = time.monotonic() + float(config.get("timeout", 300))
        delay = 0.05
        while True:
            ep = self._call("GET", f"/api/2.0/serving-endpoints/{name}")
            update = ep.get("state", {}).get("config_update")
            if update == "UPDATE_FAILED":
                pending = ep.get("pending_config") or ep.get("config") or {}
                reasons = [
                    e.get("state", {}).get("deployment_state_message") for e in pending.get("served_entities", [])
                ]
                raise MlflowException(f"deployment {name} failed: {'; '.join(r for r in reasons if r)}", INTERNAL_ERROR)
            if update != "IN_PROGRESS":
                return ep
            if time.monotonic() > deadline:
                raise MlflowException(f"deployment {name} is still rolling out after {config.get('timeout', 300)}s")
            time.sleep(delay)  # a client waiting on a remote rollout: nothing to wait on but time
            delay = min(delay * 2, 1.0)


def _check_flavor(flavor: str | None) -> None:
    if flavor not in _FLAVORS:
        message = f"modelport serves python_function/onnx models, not flavor {flavor!r}"
        raise MlflowException(message, INVALID_PARAMETER_VALUE)


def _entity(model_uri: str, flavor: str | None, config: dict[str, Any]) -> dict[str, Any]:
    if flavor not in _FLAVORS:
        raise MlflowException(
            f"modelport serves python_function/onnx models, not flavor {flavor!r}", INVALID_PARAMETER_VALUE
        )
    try:
        ref = ModelRef.parse(model_uri)
    except Exception as exc:
        raise MlflowException(
            f"{model_uri!r}: modelport deploys registered models (models:/name/version or models:/name@alias)",
            INVALID_PARAMETER_VALUE,
        ) from exc
    entity: dict[str, Any] = {
        "entity_name": ref.name,
        "entity_version": ref.version or ref.alias,
        "workload_size": str(config.get("workload_size", "Small")),
        "scale_to_zero_enabled": str(config.get("scale_to_zero_enabled", "false")).lower() in ("1", "true", "yes"),
    }
    if config.get("served_model_name"):
        entity["name"] = str(config["served_model_name"])
    return entity


def _deployment(ep: dict[str, Any]) -> dict[str, Any]:
    """An endpoint as a deployment: its name, flavor, model URI and state, plus the endpoint itself."""
    served = ((ep.get("config") or ep.get("pending_config") or {}).get("served_entities") or [{}])[0]
    version = str(served.get("entity_version", ""))
    uri = f"models:/{served.get('entity_name')}" + (f"/{version}" if version.isdigit() else f"@{version.lstrip('@')}")
    state = ep.get("state", {})
    return {
        "name": ep.get("name"),
        "flavor": "python_function",
        "model_uri": uri if served else None,
        "state": state.get("ready"),
        "config_update": state.get("config_update"),
        "endpoint": ep,
    }


def _scoring_body(inputs: Any) -> dict[str, Any]:
    import pandas as pd

    if isinstance(inputs, pd.DataFrame):
        split = inputs.to_dict(orient="split")
        return {"dataframe_split": {"columns": split["columns"], "data": split["data"]}}
    if isinstance(inputs, dict):
        return inputs
    if hasattr(inputs, "tolist"):
        return {"inputs": inputs.tolist()}
    if isinstance(inputs, list):
        return {"dataframe_records": inputs} if inputs and isinstance(inputs[0], dict) else {"instances": inputs}
    raise MlflowException(f"cannot send inputs of type {type(inputs).__name__}", INVALID_PARAMETER_VALUE)


def run_local(name: str, model_uri: str, flavor: str | None = None, config: dict | None = None) -> None:
    """Serve ``model_uri`` in the foreground (``modelport serve``); ``-C host=... -C port=...``; Ctrl-C stops it.

    MLflow calls it as ``run_local(name, model_uri, flavor, config)`` (``mlflow.deployments.interface``).
    """
    from server.cli import main

    if flavor not in _FLAVORS:
        raise MlflowException(
            f"modelport serves python_function/onnx models, not flavor {flavor!r}", INVALID_PARAMETER_VALUE
        )
    config = dict(config or {})
    argv = ["serve", model_uri]
    for key in ("host", "port", "registry_uri", "state_dir"):
        if config.get(key):
            argv += [f"--{key.replace('_', '-')}", str(config[key])]
    code = main(argv)
    if code:
        raise MlflowException(f"modelport serve exited with status {code}", INTERNAL_ERROR)


def target_help() -> str:
    return """\
modelport: serve MLflow registry models (converted to ONNX, batched) on a running modelport server.

Target URI: modelport:/http://HOST:PORT (or just 'modelport': $MODELPORT_URL, default http://127.0.0.1:8000).
$MODELPORT_TOKEN, when set, is sent as a bearer token.

  mlflow deployments create -t modelport:/http://127.0.0.1:8000 --name churn -m models:/churn/3
  mlflow deployments predict -t modelport:/http://127.0.0.1:8000 --name churn --input-path rows.json
  mlflow deployments update -t modelport:/http://127.0.0.1:8000 --name churn -m models:/churn@champion
  mlflow deployments list|get|delete -t modelport:/http://127.0.0.1:8000 [--name churn]
  mlflow deployments run-local -t modelport --name churn -m models:/churn/3 -C port=8000

Model URIs: models:/NAME/VERSION or models:/NAME@ALIAS (an alias deployment follows the alias: hot swap).
-C options: served_model_name, workload_size, scale_to_zero_enabled=true|false, timeout=SECONDS (create/update
wait for the rollout). A deployment is a Databricks-compatible serving endpoint (/api/2.0/serving-endpoints).
"""
