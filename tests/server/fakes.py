"""Fakes at the service seam: a Deployment around a Python function instead of a registry model."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from registry import ColumnSpec, ConvertedModel, ModelRef, ModelSignature, ModelVersionInfo
from server.decode import Decoder
from server.deployments import Deployment
from server.runtime.batcher import Batcher, BatcherConfig
from server.runtime.session import PyfuncSession
from server.schema import OutputKind, build_schema

SIGNATURE = ModelSignature((ColumnSpec("x", "double", description="input"), ColumnSpec("tag", "string")))


def doubler(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    x = feeds["x"]
    if (x < 0).any():
        raise RuntimeError("negative input broke the model")
    return {"predictions": x * 2}


def fake_deployment(
    fn: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]] = doubler,
    *,
    name: str = "doubler",
    version: str = "1",
    alias: str | None = "champion",
    config: BatcherConfig | None = None,
) -> Deployment:
    ref = ModelRef(name, alias=alias) if alias else ModelRef(name, version=version)
    info = ModelVersionInfo(
        name=name,
        version=version,
        aliases=(alias,) if alias else (),
        source="fake",
        run_id=None,
        experiment_id=None,
        model_description="Doubles x.",
        version_description=None,
        tags={},
        metrics={},
        params={},
        flavors=("python_function",),
        signature=SIGNATURE,
        input_example=[{"x": 1.0, "tag": "a"}],
    )
    converted = ConvertedModel(runtime="pyfunc", flavor="python_function", model_dir=Path("."), reason="fake")
    session = PyfuncSession(fn, input_names=["x", "tag"], output_names=["predictions"])
    kind = OutputKind("regression")
    return Deployment(
        ref=ref,
        model=info,
        converted=converted,
        signature=SIGNATURE,
        schema=build_schema(SIGNATURE, example=info.input_example),
        output_kind=kind,
        decoder=Decoder(SIGNATURE, max_rows=100),
        session=session,
        batcher=Batcher(session.run, config or BatcherConfig(), name=ref.uri),
        to_feeds=lambda columns, _n: dict(columns),
        from_outputs=lambda out: (out["predictions"], None, None),
    )
