"""A real sqlite MLflow registry, built once per session, holding one tiny model per supported case.

| registered model | flavor / case                                                            | aliases            |
|------------------|--------------------------------------------------------------------------|--------------------|
| houses v1        | sklearn Pipeline(ColumnTransformer[scaler, one-hot(city)], Ridge)        | challenger         |
| houses v2        | same with HistGradientBoostingRegressor (skl2onnx bool-attribute patch)  | champion           |
| churn            | sklearn pipeline classifier, string labels, pyfunc_predict_fn=predict_proba |                 |
| flowers          | HistGradientBoostingClassifier on a plain numeric matrix (3 classes)     |                    |
| xgb-reg          | xgboost XGBRegressor                                                     |                    |
| lgb-clf          | lightgbm LGBMClassifier                                                  |                    |
| onnx-linear      | mlflow.onnx model (skl2onnx LinearRegression, tensor signature)          |                    |
| custom           | mlflow.pyfunc PythonModel (no converter)                                 |                    |
| odd              | sklearn Pipeline(FunctionTransformer(np.log1p), Ridge): skl2onnx refuses |                    |
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.pyfunc import PythonModel

HOUSES_METADATA = {
    "modelport": {
        "columns": {
            "area": {"description": "Living area", "unit": "m2"},
            "city": {"description": "City name"},
        },
        "output": {"description": "Predicted price", "unit": "kEUR"},
    }
}


class Doubler(PythonModel):
    """A custom pyfunc no converter understands."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        return model_input["x"].to_numpy(dtype=np.float64) * 2.0


@dataclass
class RegistryFixture:
    """The session registry: its URI, the fitted native models and a way to draw fresh rows per model."""

    uri: str
    root: Path
    natives: dict[str, Any] = field(default_factory=dict)
    makers: dict[str, Callable[[int, int], pd.DataFrame]] = field(default_factory=dict)

    def rows(self, name: str, n: int = 32, seed: int = 1234) -> pd.DataFrame:
        return self.makers[name](n, seed)


def houses_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "area": rng.uniform(30, 200, n),
            "rooms": rng.integers(1, 7, n).astype(np.int64),
            "city": rng.choice(["paris", "lyon", "nice"], n).astype(object),
        }
    )


def churn_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"tenure": rng.uniform(0, 60, n), "plan": rng.choice(["basic", "pro"], n).astype(object)})


def numeric_frame(columns: list[str]) -> Callable[[int, int], pd.DataFrame]:
    def make(n: int, seed: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        return pd.DataFrame(rng.normal(size=(n, len(columns))), columns=columns)

    return make


_MODEL_ARG = {
    "mlflow.sklearn": "sk_model",
    "mlflow.xgboost": "xgb_model",
    "mlflow.lightgbm": "lgb_model",
    "mlflow.onnx": "onnx_model",
    "mlflow.pyfunc": "python_model",
}


def _log(flavor: Any, model: Any, name: str, example: Any, **kwargs: Any) -> str:
    with mlflow.start_run() as run:
        mlflow.log_params({"model": type(model).__name__, "rows": 200})
        mlflow.log_metric("rmse", 0.5)
        kwargs[_MODEL_ARG[flavor.__name__]] = model
        flavor.log_model(name="model", input_example=example, registered_model_name=name, **kwargs)
    return run.info.run_id


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryFixture]:
    from lightgbm import LGBMClassifier
    from skl2onnx import to_onnx
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
    from xgboost import XGBRegressor

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    fx = RegistryFixture(uri, root)
    skl = {"serialization_format": "cloudpickle", "pip_requirements": []}
    try:
        exp = mlflow.create_experiment("modelport-tests", artifact_location=(root / "artifacts").as_uri())
        mlflow.set_experiment(experiment_id=exp)
        client = mlflow.MlflowClient(uri, uri)

        X = houses_frame(200, 0)
        y = 3.0 * X["area"] + 20.0 * X["rooms"] + X["city"].map({"paris": 300.0, "lyon": 120.0, "nice": 200.0})
        for version, est in enumerate([Ridge(), HistGradientBoostingRegressor(max_iter=20)], start=1):
            pre = ColumnTransformer(
                [
                    ("num", StandardScaler(), ["area", "rooms"]),
                    ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                ]
            )
            pipe = Pipeline([("pre", pre), ("est", est)]).fit(X, y)
            fx.natives[f"houses/{version}"] = pipe
            _log(mlflow.sklearn, pipe, "houses", X.head(5), metadata=HOUSES_METADATA, **skl)
        fx.makers["houses"] = houses_frame
        client.update_registered_model("houses", description="House prices in three cities")
        client.set_registered_model_tag("houses", "team", "pricing")
        client.set_registered_model_tag("houses", "stage", "registered-model")
        client.update_model_version("houses", "2", description="Gradient boosting, better RMSE")
        client.set_model_version_tag("houses", "2", "stage", "version")
        client.set_registered_model_alias("houses", "champion", "2")
        client.set_registered_model_alias("houses", "challenger", "1")

        C = churn_frame(200, 0)
        labels = np.where((C["tenure"] < 20) & (C["plan"] == "basic"), "leave", "stay")
        pre = ColumnTransformer([("num", StandardScaler(), ["tenure"]), ("cat", OneHotEncoder(), ["plan"])])
        churn = Pipeline([("pre", pre), ("clf", LogisticRegression())]).fit(C, labels)
        fx.natives["churn"] = churn
        fx.makers["churn"] = churn_frame
        _log(mlflow.sklearn, churn, "churn", C.head(5), pyfunc_predict_fn="predict_proba", **skl)

        cols = ["sepal", "petal", "stem", "leaf"]
        fx.makers["flowers"] = numeric_frame(cols)
        F = fx.rows("flowers", 300, 0)
        flowers = HistGradientBoostingClassifier(max_iter=15).fit(F, np.digitize(F["sepal"] + F["leaf"], [-0.7, 0.7]))
        fx.natives["flowers"] = flowers
        _log(mlflow.sklearn, flowers, "flowers", F.head(5), **skl)

        fx.makers["xgb-reg"] = numeric_frame(["a", "b", "c"])
        XR = fx.rows("xgb-reg", 200, 0)
        xgb = XGBRegressor(n_estimators=20, max_depth=3).fit(XR, 2 * XR["a"] - XR["b"] * XR["c"])
        fx.natives["xgb-reg"] = xgb
        _log(mlflow.xgboost, xgb, "xgb-reg", XR.head(5), pip_requirements=[])

        fx.makers["lgb-clf"] = numeric_frame(["u", "v"])
        LC = fx.rows("lgb-clf", 200, 0)
        lgb = LGBMClassifier(n_estimators=15, num_leaves=7, verbose=-1).fit(LC, (LC["u"] * LC["v"] > 0).astype(int))
        fx.natives["lgb-clf"] = lgb
        _log(mlflow.lightgbm, lgb, "lgb-clf", LC.head(5), pip_requirements=[])

        OX = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
        linear = LinearRegression().fit(OX, OX @ np.array([1.0, -2.0, 0.5]) + 1.0)
        fx.natives["onnx-linear"] = linear
        fx.makers["onnx-linear"] = numeric_frame(["x0", "x1", "x2"])
        onx = to_onnx(linear, OX[:1], target_opset={"": 17, "ai.onnx.ml": 3})
        _log(
            mlflow.onnx,
            onx,
            "onnx-linear",
            OX[:4],
            signature=mlflow.models.infer_signature(OX, linear.predict(OX)),  # not inferred for mlflow.onnx
            pip_requirements=[],
            onnx_execution_providers=["CPUExecutionProvider"],
        )

        fx.makers["odd"] = numeric_frame(["x"])
        OD = fx.rows("odd", 50, 0).abs()
        odd = Pipeline([("log", FunctionTransformer(np.log1p)), ("est", Ridge())]).fit(OD, OD["x"] * 2)
        _log(mlflow.sklearn, odd, "odd", OD.head(3), **skl)

        fx.makers["custom"] = numeric_frame(["x"])
        _log(mlflow.pyfunc, Doubler(), "custom", fx.rows("custom", 4, 0), pip_requirements=[])
        yield fx
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


@pytest.fixture(scope="session")
def client(registry: RegistryFixture) -> Any:
    from registry.client import RegistryClient

    return RegistryClient(registry.uri)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def converted(client: Any, model_cache: Path) -> Callable[[str, str], tuple[Any, Any]]:
    """``converted(name, version)`` -> (ModelVersionInfo, ConvertedModel), converted once per session."""
    from registry.convert import convert
    from registry.uri import ModelRef

    done: dict[tuple[str, str], tuple[Any, Any]] = {}

    def get(name: str, version: str = "1") -> tuple[Any, Any]:
        if (name, version) not in done:
            info = client.resolve(ModelRef(name, version=version))
            model_dir = client.download(info, model_cache)
            done[name, version] = info, convert(info, model_dir, model_cache)
        return done[name, version]

    return get
