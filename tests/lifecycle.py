"""A registry for lifecycle tests: versions whose answers tell which one served (``y = k * x``), and live servers.

Each test registers its own model names (``ScorerRegistry.register``) in one shared sqlite registry, so tests that move
aliases never disturb each other. A version registered with ``k=None`` has no signature: it fails to load.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
import uvicorn
from mlflow.models import infer_signature
from sklearn.linear_model import LinearRegression

from tests.conftest import start_server

_counter = itertools.count(1)


@dataclass
class ScorerRegistry:
    root: Path
    uri: str
    experiment_id: str
    client: mlflow.MlflowClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def register(self, prefix: str, factors: Sequence[float | None], alias: str | None = "champion") -> str:
        """A new registered model ``<prefix>_<n>`` with one version per factor; ``alias`` on version 1."""
        name = f"{prefix}_{next(_counter)}"
        x = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
        with _fluent(self.uri):
            for k in factors:
                model = LinearRegression().fit(x, x["x"] * (1.0 if k is None else k))
                signature = None if k is None else infer_signature(x, model.predict(x))
                with mlflow.start_run(experiment_id=self.experiment_id):
                    mlflow.sklearn.log_model(
                        model,
                        name="model",
                        signature=signature,
                        pip_requirements=["scikit-learn"],
                        serialization_format="cloudpickle",
                        registered_model_name=name,
                    )
        if alias is not None:
            self.move(name, alias, "1")
        return name

    def move(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def settings(self, state_dir: Path | None = None, **overrides: Any) -> Any:
        from server.settings import Settings

        return Settings(state_dir=state_dir or self.root, registry_uri=self.uri, **overrides)


@contextmanager
def _fluent(uri: str) -> Iterator[None]:
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def make_registry(root: Path) -> ScorerRegistry:
    uri = f"sqlite:///{root}/mlflow.db"
    experiment = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).create_experiment(
        "lifecycle", artifact_location=(root / "artifacts").as_uri()
    )
    return ScorerRegistry(root, uri, experiment)


@pytest.fixture(scope="session")
def scorers(tmp_path_factory: pytest.TempPathFactory) -> ScorerRegistry:
    """One sqlite registry for the lifecycle tests (each test registers its own model names)."""
    return make_registry(tmp_path_factory.mktemp("lifecycle"))


def answer(x: float = 2.0) -> dict[str, Any]:
    """A scoring body; version k answers ``k * x``."""
    return {"dataframe_records": [{"x": x}]}


def version_of(prediction: float, x: float = 2.0) -> float:
    return float(np.round(prediction / x, 6))


@dataclass
class Live:
    """A real modelport (uvicorn on 127.0.0.1 in a thread) built from settings."""

    url: str
    components: Any
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextmanager
def live(settings: Any, *, mcp: bool = False) -> Iterator[Live]:
    """Serve ``settings`` until the block ends; returns once the lifespan has loaded everything."""
    from server.main import build

    components = build(settings, mcp=mcp)
    server, thread, url = start_server(components, components.app)
    running = Live(url, components, server, thread)
    try:
        with running.client() as c:
            assert c.get("/ping").status_code == 200
        yield running
    finally:
        running.stop()
