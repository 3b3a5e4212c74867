"""Create the embedded demo registry: four small, documented models trained on synthetic data.

``ensure_demo_models`` is idempotent: a model whose registered name already has a ``champion`` alias is left
alone; any other is trained (fixed numpy seed, well under a few seconds each), logged to the experiment
``modelport-demo``, registered and aliased ``champion``. Every model carries a signature, an input example,
descriptions, tags, params, holdout metrics and per-column descriptions and units in
``metadata["modelport"]`` (see ``registry.signature.ModelSignature.from_mlflow``).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST, ErrorCode
from sklearn import metrics
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from xgboost import XGBRegressor

from registry.uri import ModelRef

logger = logging.getLogger(__name__)

DEMO_MODELS: tuple[str, ...] = ("sales_forecast", "fraud_detector", "customer_propensity", "customer_ltv")
DEMO_EXPERIMENT = "modelport-demo"
CHAMPION = "champion"
_OWNER = "modelport-demo"
_PRODUCTS = {"product_A": 20.0, "product_B": 35.0, "product_C": 12.0, "product_D": 55.0, "product_E": 8.0}


@dataclass(frozen=True, slots=True)
class _Spec:
    """One demo model: synthetic data, estimator, documentation. ``version_description`` is formatted with metrics."""

    name: str
    seed: int
    data: Callable[[np.random.Generator], tuple[pd.DataFrame, np.ndarray]]
    estimator: Callable[[], Any]
    params: dict[str, Any]
    example: dict[str, Any]
    description: str
    version_description: str
    columns: dict[str, tuple[str, str | None]]  # column -> (description, unit)
    output: tuple[str, str]  # (description, unit)
    tags: dict[str, str]
    predict_fn: str = "predict"


@dataclass(frozen=True, slots=True)
class _Trained:
    model: Any
    frame: pd.DataFrame
    metrics: dict[str, float]
    n_train: int


def _train(spec: _Spec) -> _Trained:
    """Generate the spec's data, fit its estimator on the first 75 % and score it on the holdout."""
    x, y = spec.data(np.random.default_rng(spec.seed))
    cut = int(len(x) * 0.75)
    model = spec.estimator().fit(x.iloc[:cut], y[:cut])
    hold, truth = x.iloc[cut:], y[cut:]
    if spec.predict_fn == "predict_proba":
        proba = model.predict_proba(hold)
        scores = {"auc": metrics.roc_auc_score(truth, proba[:, 1]), "log_loss": metrics.log_loss(truth, proba)}
        scores |= {"accuracy": metrics.accuracy_score(truth, proba[:, 1] >= 0.5), "positive_rate": np.mean(truth)}
    else:
        pred = model.predict(hold)
        scores = {"rmse": metrics.root_mean_squared_error(truth, pred), "r2": metrics.r2_score(truth, pred)}
        scores["mae"] = metrics.mean_absolute_error(truth, pred)
    return _Trained(model, x, {k: float(v) for k, v in scores.items()}, cut)


def _labels(rng: np.random.Generator, logit: pd.Series) -> np.ndarray:
    return (rng.random(len(logit)) < 1.0 / (1.0 + np.exp(-logit.to_numpy(dtype=np.float64)))).astype(np.int64)


def _sales_data(rng: np.random.Generator, n: int = 3000) -> tuple[pd.DataFrame, np.ndarray]:
    x = pd.DataFrame({"year": rng.integers(2018, 2026, n, dtype=np.int64),
                      "product": pd.Series(rng.choice(list(_PRODUCTS), n), dtype="str"),
                      "units": rng.uniform(0.0, 500.0, n)})  # fmt: skip
    price = x["product"].map(_PRODUCTS).to_numpy(dtype=np.float64)
    growth = 1.04 ** (x["year"].to_numpy() - 2018)
    return x, x["units"].to_numpy() * price * growth * rng.normal(1.0, 0.05, n)


def _fraud_data(rng: np.random.Generator, n: int = 4000) -> tuple[pd.DataFrame, np.ndarray]:
    x = pd.DataFrame({"amount": rng.lognormal(3.5, 1.0, n), "hour_of_day": rng.integers(0, 24, n, dtype=np.int64),
                      "distance_from_home_km": rng.exponential(15.0, n),
                      "transactions_last_24h": rng.poisson(2.0, n).astype(np.int64),
                      "merchant_risk_score": rng.beta(2.0, 5.0, n),
                      "is_foreign": (rng.random(n) < 0.1).astype(np.int64)})  # fmt: skip
    logit = (-7.5 + 0.008 * x["amount"] - 0.05 * x["hour_of_day"] + 0.04 * x["distance_from_home_km"]
             + 0.5 * x["transactions_last_24h"] + 5.0 * x["merchant_risk_score"] + 2.0 * x["is_foreign"])  # fmt: skip
    return x, _labels(rng, logit)


def _propensity_data(rng: np.random.Generator, n: int = 4000) -> tuple[pd.DataFrame, np.ndarray]:
    segments, channels = ["consumer", "smb", "enterprise"], ["web", "email", "store", "app"]
    x = pd.DataFrame({"age": rng.integers(18, 80, n, dtype=np.int64), "income": rng.lognormal(10.8, 0.5, n),
                      "segment": pd.Series(rng.choice(segments, n, p=[0.6, 0.3, 0.1]), dtype="str"),
                      "channel": pd.Series(rng.choice(channels, n), dtype="str"),
                      "tenure_months": rng.integers(0, 120, n, dtype=np.int64),
                      "has_app": (rng.random(n) < 0.4).astype(np.int64)})  # fmt: skip
    logit = (-1.5 - 0.03 * (x["age"] - 45) + 0.8 * np.log(x["income"] / 50_000) + 0.015 * x["tenure_months"]
             + x["segment"].map(dict(zip(segments, [0.0, 0.6, 1.2], strict=True))).astype(float)
             + x["channel"].map(dict(zip(channels, [0.3, -0.5, 0.0, 1.0], strict=True))).astype(float)
             + 1.0 * x["has_app"])  # fmt: skip
    return x, _labels(rng, logit)


def _ltv_data(rng: np.random.Generator, n: int = 4000) -> tuple[pd.DataFrame, np.ndarray]:
    x = pd.DataFrame({"age": rng.integers(18, 80, n, dtype=np.int64), "income": rng.lognormal(10.8, 0.5, n),
                      "tenure_months": rng.integers(1, 120, n, dtype=np.int64),
                      "orders_per_year": rng.gamma(2.0, 3.0, n),
                      "avg_order_value": rng.lognormal(4.0, 0.5, n)})  # fmt: skip
    loyalty = 0.8 + 0.004 * np.minimum(x["tenure_months"].to_numpy(), 60)
    wealth = 1.0 + 0.1 * np.log(x["income"].to_numpy() / 50_000)
    revenue = 3.0 * x["orders_per_year"].to_numpy() * x["avg_order_value"].to_numpy() * loyalty * wealth
    return x, revenue * rng.normal(1.0, 0.05, n)


def _one_hot() -> OneHotEncoder:
    return OneHotEncoder(handle_unknown="ignore", sparse_output=False)


_GBR = {"n_estimators": 200, "max_depth": 3, "learning_rate": 0.1}
_LOGREG = {"C": 1.0, "max_iter": 1000}
_XGB = {"n_estimators": 120, "max_depth": 4, "learning_rate": 0.1}
_SPECS: tuple[_Spec, ...] = (
    _Spec(
        "sales_forecast", 42, _sales_data,
        lambda: Pipeline([("prep", ColumnTransformer([("product", _one_hot(), ["product"])], remainder="passthrough")),
                          ("regressor", GradientBoostingRegressor(random_state=0, **_GBR))]),
        _GBR, {"year": 2025, "product": "product_A", "units": 100.0},
        "Forecasts the revenue (EUR) of one product line for a year at a planned sales volume; "
        "for sales planners and finance building the yearly budget.",
        "Trained on 3,000 synthetic yearly product sales records (2018-2025, seed 42). One-hot encoded product + "
        "GradientBoostingRegressor (200 trees, depth 3). Holdout RMSE {rmse:.1f} EUR, R2 {r2:.3f}.",
        {"year": ("Calendar year of the forecast", "year"),
         "product": ("Product line, one of product_A..product_E", None),
         "units": ("Planned number of units sold", "units")},
        ("Forecast revenue", "EUR"),
        {"domain": "sales", "task": "regression", "algorithm": "GradientBoostingRegressor"},
    ),
    _Spec(
        "fraud_detector", 7, _fraud_data,
        lambda: Pipeline([("scale", StandardScaler()), ("classifier", LogisticRegression(**_LOGREG))]),
        _LOGREG, {"amount": 249.9, "hour_of_day": 3, "distance_from_home_km": 120.0, "transactions_last_24h": 6,
                  "merchant_risk_score": 0.8, "is_foreign": 1},
        "Scores a card transaction with the probability that it is fraudulent (0-1); "
        "for payment operations deciding which transactions to hold for review.",
        "Trained on 4,000 synthetic card transactions (seed 7). StandardScaler + LogisticRegression. "
        "Holdout AUC {auc:.3f}, accuracy {accuracy:.3f}.",
        {"amount": ("Transaction amount", "EUR"), "hour_of_day": ("Local hour of the transaction (0-23)", "hour"),
         "distance_from_home_km": ("Distance between merchant and cardholder's home", "km"),
         "transactions_last_24h": ("Card transactions in the previous 24 hours", "count"),
         "merchant_risk_score": ("Merchant risk score from 0 (safe) to 1 (risky)", "score 0-1"),
         "is_foreign": ("1 if the merchant is abroad, else 0", "flag 0/1")},
        ("Class probabilities [legitimate, fraud]; the second column is the fraud probability", "probability 0-1"),
        {"domain": "payments", "task": "binary-classification", "algorithm": "LogisticRegression"},
        "predict_proba",
    ),
    _Spec(
        "customer_propensity", 3, _propensity_data,
        lambda: Pipeline([("prep", ColumnTransformer([("categorical", _one_hot(), ["segment", "channel"]),
                                                      ("numeric", StandardScaler(), ["age", "income", "tenure_months",
                                                                                     "has_app"])])),
                          ("classifier", LogisticRegression(**_LOGREG))]),
        _LOGREG, {"age": 34, "income": 52000.0, "segment": "consumer", "channel": "app", "tenure_months": 18,
                  "has_app": 1},
        "Estimates the probability (0-1) that a customer engages with a marketing campaign; "
        "for marketing teams choosing whom to target.",
        "Trained on 4,000 synthetic customer profiles (seed 3). One-hot encoded segment/channel + scaled numerics + "
        "LogisticRegression. Holdout AUC {auc:.3f}, accuracy {accuracy:.3f}.",
        {"age": ("Customer age", "years"), "income": ("Yearly household income", "EUR"),
         "segment": ("Customer segment: consumer, smb or enterprise", None),
         "channel": ("Preferred contact channel: web, email, store or app", None),
         "tenure_months": ("Months since the customer's first purchase", "months"),
         "has_app": ("1 if the customer has the mobile app installed, else 0", "flag 0/1")},
        ("Class probabilities [no engagement, engagement]; the second column is the engagement probability",
         "probability 0-1"),
        {"domain": "marketing", "task": "binary-classification", "algorithm": "LogisticRegression"},
        "predict_proba",
    ),
    _Spec(
        "customer_ltv", 11, _ltv_data, lambda: XGBRegressor(n_jobs=2, random_state=0, **_XGB), _XGB,
        {"age": 41, "income": 61000.0, "tenure_months": 36, "orders_per_year": 8.0, "avg_order_value": 65.0},
        "Predicts a customer's lifetime value: expected revenue (EUR) over the next 3 years; "
        "for CRM and finance teams sizing retention budgets.",
        "Trained on 4,000 synthetic customers (seed 11). XGBoost regressor (120 trees, depth 4). "
        "Holdout RMSE {rmse:.1f} EUR, R2 {r2:.3f}.",
        {"age": ("Customer age", "years"), "income": ("Yearly household income", "EUR"),
         "tenure_months": ("Months since the customer's first purchase", "months"),
         "orders_per_year": ("Average number of orders per year", "orders/year"),
         "avg_order_value": ("Average order value", "EUR")},
        ("Expected revenue from the customer over the next 3 years", "EUR"),
        {"domain": "crm", "task": "regression", "algorithm": "XGBRegressor"},
    ),
)  # fmt: skip


@contextmanager
def _fluent_uris(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (tracking and registry) at ``uri``; restore the previous state on exit."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    env = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    previous_tracking = getattr(tracking_utils, "_tracking_uri", None)
    previous_registry = getattr(registry_utils, "_registry_uri", None)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_tracking)  # type: ignore[arg-type]  # None is accepted: "unset"
        mlflow.set_registry_uri(previous_registry)  # type: ignore[arg-type]
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _champion_version(client: mlflow.MlflowClient, name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException as exc:  # no such registered model, or no such alias
        if exc.error_code in (ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), ErrorCode.Name(INVALID_PARAMETER_VALUE)):
            return None
        raise


def _experiment_id(client: mlflow.MlflowClient, artifact_root: Path) -> str:
    experiment = client.get_experiment_by_name(DEMO_EXPERIMENT)
    if experiment is None:
        return client.create_experiment(DEMO_EXPERIMENT, artifact_location=artifact_root.as_uri())
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return str(experiment.experiment_id)


def _log_and_register(client: mlflow.MlflowClient, spec: _Spec, trained: _Trained, experiment_id: str) -> str:
    """Log ``trained`` in a new run, register it under ``spec.name`` and return the new version."""
    example = pd.DataFrame([spec.example]).astype(trained.frame.dtypes.to_dict())
    sample = trained.frame.head(20)
    predict = getattr(trained.model, spec.predict_fn)
    columns = {c: {"description": d, **({"unit": u} if u else {})} for c, (d, u) in spec.columns.items()}
    metadata = {"modelport": {"columns": columns, "output": {"description": spec.output[0], "unit": spec.output[1]}}}
    with warnings.catch_warnings():  # the demo's integer columns never hold missing values
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
        signature = infer_signature(sample, predict(sample))
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{spec.name}"):
            mlflow.log_params({**spec.params, "seed": spec.seed, "n_train": trained.n_train})
            mlflow.log_metrics(trained.metrics)
            mlflow.set_tags({**spec.tags, "owner": _OWNER})
            common: dict[str, Any] = {"name": "model", "signature": signature, "input_example": example,
                                      "metadata": metadata, "registered_model_name": spec.name}  # fmt: skip
            if isinstance(trained.model, XGBRegressor):
                info = mlflow.xgboost.log_model(
                    trained.model, pip_requirements=mlflow.xgboost.get_default_pip_requirements(), **common
                )
            else:
                info = mlflow.sklearn.log_model(
                    trained.model, serialization_format="cloudpickle", pyfunc_predict_fn=spec.predict_fn,
                    pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_cloudpickle=True), **common,
                )  # fmt: skip
    version = str(info.registered_model_version)
    client.update_registered_model(spec.name, description=spec.description)
    for key, value in {**spec.tags, "owner": _OWNER}.items():
        client.set_registered_model_tag(spec.name, key, value)
    client.update_model_version(spec.name, version, description=spec.version_description.format(**trained.metrics))
    client.set_model_version_tag(spec.name, version, "seed", str(spec.seed))
    client.set_registered_model_alias(spec.name, CHAMPION, version)
    return version


def ensure_demo_models(
    tracking_uri: str, artifact_root: Path, *, progress: Callable[[str], None] | None = None
) -> list[ModelRef]:
    """Make sure every demo model is registered with a ``champion`` alias, training the missing ones.

    Args:
        tracking_uri: MLflow tracking (and registry) URI, e.g. ``sqlite:///path/mlflow.db``.
        artifact_root: Folder for the artifacts of the ``modelport-demo`` experiment (used when it is created).
        progress: Optional callback receiving short status lines such as ``"training sales_forecast"``.

    Returns:
        ``models:/<name>@champion`` references, one per name in ``DEMO_MODELS``, in that order.
    """
    report = progress or (lambda _message: None)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment_id: str | None = None
    refs: list[ModelRef] = []
    for spec in _SPECS:
        existing = _champion_version(client, spec.name)
        if existing is not None:
            logger.debug("demo model %s already has champion version %s", spec.name, existing)
            report(f"{spec.name}: champion is version {existing}")
        else:
            report(f"training {spec.name}")
            trained = _train(spec)
            report(f"registering {spec.name}")
            with _fluent_uris(tracking_uri):
                experiment_id = experiment_id or _experiment_id(client, artifact_root)
                version = _log_and_register(client, spec, trained, experiment_id)
            logger.info("registered demo model %s version %s as %s", spec.name, version, CHAMPION)
        refs.append(ModelRef(spec.name, alias=CHAMPION))
    return refs
