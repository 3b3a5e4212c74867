"""The demo registry: four documented champions that load, predict, convert to ONNX and are created only once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from mlflow.models import Model

from registry.demo import DEMO_EXPERIMENT, DEMO_MODELS, _fluent_uris, ensure_demo_models
from registry.uri import ModelRef

pytestmark = pytest.mark.integration

#: A few hand-written rows per model, in signature column order, for pyfunc vs ONNX comparisons.
_ROWS: dict[str, list[list[Any]]] = {
    "sales_forecast": [[2025, "product_A", 100.0], [2019, "product_D", 430.5], [2022, "product_unknown", 12.0]],
    "fraud_detector": [[12.5, 14, 2.0, 1, 0.1, 0], [980.0, 2, 300.0, 9, 0.95, 1], [60.0, 20, 15.0, 3, 0.4, 0]],
    "customer_propensity": [
        [34, 52000.0, "consumer", "app", 18, 1],
        [67, 31000.0, "smb", "email", 2, 0],
        [45, 140000.0, "enterprise", "fax", 110, 1],
    ],
    "customer_ltv": [[41, 61000.0, 36, 8.0, 65.0], [22, 18000.0, 1, 0.5, 20.0], [58, 150000.0, 119, 30.0, 210.0]],
}


@dataclass(frozen=True)
class DemoRegistry:
    uri: str
    artifacts: Path
    refs: list[ModelRef]
    messages: list[str]
    client: mlflow.MlflowClient


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRegistry:
    root = tmp_path_factory.mktemp("demo")
    uri = f"sqlite:///{root}/mlflow.db"
    messages: list[str] = []
    refs = ensure_demo_models(uri, root / "artifacts", progress=messages.append)
    return DemoRegistry(uri, root / "artifacts", refs, messages, mlflow.MlflowClient(uri, registry_uri=uri))


@pytest.fixture
def fluent(demo: DemoRegistry) -> Iterator[None]:
    """Point the fluent API (needed to resolve ``models:/`` URIs) at the demo registry for one test."""
    with _fluent_uris(demo.uri):
        yield


def _frame(name: str, model: Model) -> pd.DataFrame:
    schema = model.get_input_schema()
    return pd.DataFrame(_ROWS[name], columns=schema.input_names())


def test_creates_one_champion_per_demo_model(demo: DemoRegistry) -> None:
    assert demo.refs == [ModelRef(name, alias="champion") for name in DEMO_MODELS]
    assert [ref.uri for ref in demo.refs] == [f"models:/{name}@champion" for name in DEMO_MODELS]
    for name in DEMO_MODELS:
        assert f"training {name}" in demo.messages
        assert "champion" in demo.client.get_model_version_by_alias(name, "champion").aliases
    experiment = demo.client.get_experiment_by_name(DEMO_EXPERIMENT)
    assert experiment is not None
    assert experiment.artifact_location == demo.artifacts.as_uri()
    assert len(list(demo.artifacts.rglob("MLmodel"))) == len(DEMO_MODELS)


def test_every_model_is_documented(demo: DemoRegistry) -> None:
    for name in DEMO_MODELS:
        registered = demo.client.get_registered_model(name)
        version = demo.client.get_model_version_by_alias(name, "champion")
        assert registered.description and len(registered.description) > 40
        assert registered.tags["owner"] == "modelport-demo"
        assert {"domain", "task"} <= set(registered.tags)
        assert version.description and "Holdout" in version.description and "{" not in version.description
        assert version.run_id is not None
        run = demo.client.get_run(version.run_id)
        assert {"seed", "n_train"} <= set(run.data.params)
        scores = run.data.metrics
        assert scores["auc"] > 0.75 if "auc" in scores else scores["r2"] > 0.9, (name, scores)
        assert {"rmse", "mae"} <= set(scores) or {"accuracy", "log_loss"} <= set(scores)


def test_signatures_examples_and_column_metadata(demo: DemoRegistry, fluent: None) -> None:
    expected_types = {
        "sales_forecast": {"year": "long", "product": "string", "units": "double"},
        "fraud_detector": {"amount": "double", "hour_of_day": "long", "is_foreign": "long"},
        "customer_propensity": {"age": "long", "income": "double", "segment": "string", "has_app": "long"},
        "customer_ltv": {"age": "long", "orders_per_year": "double", "avg_order_value": "double"},
    }
    for name in DEMO_MODELS:
        info = mlflow.models.get_model_info(f"models:/{name}@champion")
        assert info.signature is not None
        types = {col.name: col.type.name for col in info.signature.inputs.inputs}
        assert expected_types[name].items() <= types.items()
        assert info.metadata is not None
        meta = info.metadata["modelport"]
        assert set(meta["columns"]) == set(types), name
        assert all(col["description"] for col in meta["columns"].values())
        assert meta["output"]["description"] and meta["output"]["unit"]
        model = Model.load(f"models:/{name}@champion")
        example = model.load_input_example()
        assert isinstance(example, pd.DataFrame) and list(example.columns) == list(types)
        if name == "sales_forecast":
            assert example.to_dict("records") == [{"year": 2025, "product": "product_A", "units": 100.0}]
            assert meta["columns"]["units"]["unit"] == "units" and meta["output"]["unit"] == "EUR"


def test_champions_load_and_predict_their_input_examples(demo: DemoRegistry, fluent: None) -> None:
    for name in DEMO_MODELS:
        uri = f"models:/{name}@champion"
        pyfunc = mlflow.pyfunc.load_model(uri)
        example = Model.load(uri).load_input_example()
        prediction = np.asarray(pyfunc.predict(example))
        assert prediction.shape[0] == 1 and np.isfinite(prediction).all(), name
        if name in ("fraud_detector", "customer_propensity"):
            assert prediction.shape == (1, 2)
            np.testing.assert_allclose(prediction.sum(axis=1), 1.0, rtol=1e-9)
        else:
            assert prediction[0] > 0


def test_seed_request_gives_a_plausible_forecast(demo: DemoRegistry, fluent: None) -> None:
    pyfunc = mlflow.pyfunc.load_model("models:/sales_forecast@champion")
    schema = pyfunc.metadata.get_input_schema()
    dtypes = {col.name: col.type.to_numpy() for col in schema.inputs}

    def decode(rows: list[list[Any]]) -> pd.DataFrame:  # as a server decodes {"data": rows} with the signature
        return pd.DataFrame(rows, columns=schema.input_names()).astype(dtypes)

    forecast = float(np.asarray(pyfunc.predict(decode([[2025, "product_A", 100]])))[0])
    assert 2000.0 < forecast < 3300.0  # 100 units x 20 EUR x 4 % yearly growth since 2018 ~ 2630 EUR
    assert float(np.asarray(pyfunc.predict(decode([[2025, "product_D", 400]])))[0]) > 5 * forecast


def test_classifiers_rank_risky_rows_higher(demo: DemoRegistry, fluent: None) -> None:
    for name in ("fraud_detector", "customer_propensity"):
        uri = f"models:/{name}@champion"
        proba = np.asarray(mlflow.pyfunc.load_model(uri).predict(_frame(name, Model.load(uri))))[:, 1]
        if name == "fraud_detector":  # row 1: big foreign night-time purchase at a risky merchant
            assert proba[1] > 0.5 > proba[0]
        else:  # row 0: young app user; row 1: older email-only customer with short tenure
            assert proba[0] > proba[1]


def _to_onnx(name: str, native: Any, schema: Any) -> tuple[bytes, Any]:
    """Convert with skl2onnx / onnxmltools; return the model bytes and a feed builder for a DataFrame."""
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType as XgbFloat
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
    from sklearn.compose import ColumnTransformer

    columns = [(col.name, col.type.name) for col in schema.inputs]
    if name == "customer_ltv":  # onnxmltools wants feature names f0..fn: convert a copy without names
        booster = native.get_booster().copy()
        booster.feature_names = None
        onnx_model = convert_xgboost(
            booster, initial_types=[("input", XgbFloat([None, len(columns)]))], target_opset=15
        )
        return onnx_model.SerializeToString(), lambda df: {"input": df.to_numpy(np.float32)}
    options = {id(native): {"zipmap": False}} if hasattr(native, "predict_proba") else None
    if isinstance(native.steps[0][1], ColumnTransformer):  # one ONNX input per DataFrame column
        kinds = {"long": Int64TensorType, "string": StringTensorType, "double": FloatTensorType}
        initial = [(col, kinds[kind]([None, 1])) for col, kind in columns]
        onnx_model = convert_sklearn(
            native, initial_types=initial, options=options, target_opset={"": 17, "ai.onnx.ml": 3}
        )
        dtypes = {"long": np.int64, "string": object, "double": np.float32}

        def feeds(df: pd.DataFrame) -> dict[str, np.ndarray]:
            return {col: df[col].to_numpy(dtype=dtypes[kind]).reshape(-1, 1) for col, kind in columns}

        return onnx_model.SerializeToString(), feeds
    initial = [("input", FloatTensorType([None, len(columns)]))]
    onnx_model = convert_sklearn(native, initial_types=initial, options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    return onnx_model.SerializeToString(), lambda df: {"input": df.to_numpy(np.float32)}


def test_champions_convert_to_onnx_and_agree_with_pyfunc(demo: DemoRegistry, fluent: None) -> None:
    for name in DEMO_MODELS:
        uri = f"models:/{name}@champion"
        model = Model.load(uri)
        native = mlflow.xgboost.load_model(uri) if name == "customer_ltv" else mlflow.sklearn.load_model(uri)
        onnx_bytes, feeds = _to_onnx(name, native, model.get_input_schema())
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        frame = _frame(name, model)
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds(frame)), strict=True))
        expected = np.asarray(mlflow.pyfunc.load_model(uri).predict(frame), dtype=np.float64)
        if expected.ndim == 2:  # predict_proba: compare with the probabilities output
            np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5, err_msg=name)
        else:
            got = np.asarray(next(iter(outputs.values())), dtype=np.float64).ravel()
            np.testing.assert_allclose(got, expected, rtol=1e-3, err_msg=name)


def test_second_call_creates_nothing(demo: DemoRegistry) -> None:
    versions = {name: len(demo.client.search_model_versions(f"name='{name}'")) for name in DEMO_MODELS}
    experiment = demo.client.get_experiment_by_name(DEMO_EXPERIMENT)
    assert experiment is not None
    runs = len(demo.client.search_runs([experiment.experiment_id]))
    messages: list[str] = []
    refs = ensure_demo_models(demo.uri, demo.artifacts, progress=messages.append)
    assert refs == demo.refs
    assert not any(m.startswith(("training", "registering")) for m in messages)
    assert len(messages) == len(DEMO_MODELS)
    assert {name: len(demo.client.search_model_versions(f"name='{name}'")) for name in DEMO_MODELS} == versions
    assert len(demo.client.search_runs([experiment.experiment_id])) == runs


def test_missing_champion_is_retrained_and_fluent_state_restored(demo: DemoRegistry) -> None:
    before = demo.client.get_model_version_by_alias("customer_ltv", "champion").version
    demo.client.delete_registered_model_alias("customer_ltv", "champion")
    env_before = os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get("MLFLOW_REGISTRY_URI")
    tracking_before, registry_before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    messages: list[str] = []
    ensure_demo_models(demo.uri, demo.artifacts, progress=messages.append)
    assert [m for m in messages if m.startswith("training")] == ["training customer_ltv"]
    after = demo.client.get_model_version_by_alias("customer_ltv", "champion").version
    assert int(after) == int(before) + 1
    assert (os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get("MLFLOW_REGISTRY_URI")) == env_before
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == (tracking_before, registry_before)
