"""Batch scoring fixtures: the demo registry (real sqlite MLflow, real conversion cache) and tables drawn from each
demo model's signature."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from server.batch import BatchModel
from server.settings import Settings
from tests.conftest import DemoRegistry


@pytest.fixture(scope="session")
def batch_settings(demo_registry: DemoRegistry) -> Settings:
    return Settings(state_dir=demo_registry.state_dir, registry_uri=demo_registry.tracking_uri)


@pytest.fixture(scope="session")
def sales(batch_settings: Settings) -> BatchModel:
    """sales_forecast@champion (year long, product string, units double) → one float per row."""
    return BatchModel.load("sales_forecast@champion", batch_settings)


@pytest.fixture(scope="session")
def fraud(batch_settings: Settings) -> BatchModel:
    """fraud_detector@champion → class probabilities (a list per row)."""
    return BatchModel.load("models:/fraud_detector@champion", batch_settings)


def rows_for(model: BatchModel, n: int, seed: int = 0, *, ids: bool = True) -> pa.Table:
    """``n`` valid rows for ``model``'s signature, drawn around its input example as the parity check draws them
    (strings from the known categories), plus an ``id`` column."""
    rng = np.random.default_rng(seed)
    example = (model.deployment.model.input_example or [{}])[0]
    columns: dict[str, pa.Array] = {"id": pa.array(np.arange(n, dtype=np.int64))} if ids else {}
    for col in model.signature.inputs:
        base = example.get(col.name, 1)
        if col.type == "string":
            choices = [str(c) for c in (col.categories or (base,))]
            columns[col.name] = pa.array(rng.choice(choices, n).tolist(), pa.string())
        elif col.type in ("long", "integer"):
            spread = max(abs(int(base)) // 4, 1)
            columns[col.name] = pa.array(rng.integers(int(base) - spread, int(base) + spread + 1, n, dtype=np.int64))
        else:
            columns[col.name] = pa.array(float(base) * rng.uniform(0.5, 1.5, n))
    return pa.table(columns)


def assert_parity(model: BatchModel, actual: object, desired: object) -> None:
    """Equal within the model's parity tolerance (float32 sums differ in the last bits with the batch size)."""
    parity = model.deployment.converted.parity
    atol, rtol = (parity.tolerance, parity.rtol) if parity is not None else (1e-4, 1e-4)
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(desired, float), rtol=rtol, atol=atol)
