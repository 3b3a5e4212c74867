"""The MLflow pyfunc as a batch function over column arrays (the fallback runtime, and parity's reference)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from registry.model import ConvertedModel, PyfuncPredict
from registry.signature import ModelSignature


def load_pyfunc(converted: ConvertedModel, signature: ModelSignature | None) -> PyfuncPredict:
    """Load ``mlflow.pyfunc.load_model(converted.model_dir)`` once and wrap it.

    The returned function takes ``{column: array}`` (each ``(n,)`` or ``(n, 1)``, tensor columns ``(n, *shape)``),
    builds the model input the way MLflow serving would (a DataFrame in signature order and dtypes, or arrays for
    tensor signatures), calls ``predict`` and returns a numpy array with ``n`` rows. Calls are serialised by a lock.
    """
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(converted.model_dir))
    lock = threading.Lock()

    def predict(columns: Mapping[str, np.ndarray]) -> np.ndarray:
        data, n = model_input(columns, signature)
        with lock:
            out = model.predict(data)
        return prediction_array(out, n, converted.prediction_output)

    return predict


def model_input(columns: Mapping[str, np.ndarray], signature: ModelSignature | None) -> tuple[Any, int]:
    """The pyfunc input for ``columns`` and its row count."""
    if signature is not None and signature.is_tensor:
        arrays = {c.name: np.asarray(_column(columns, c.name)).astype(c.dtype, copy=False) for c in signature.inputs}
        n = len(next(iter(arrays.values())))
        return (next(iter(arrays.values())) if len(arrays) == 1 else arrays), n
    if signature is None:
        frame = pd.DataFrame({k: _flat(v) for k, v in columns.items()})
        return frame, len(frame)
    data: dict[str, Any] = {}
    for col in signature.inputs:
        if col.name not in columns and col.optional:
            continue
        values = _flat(_column(columns, col.name))
        data[col.name] = values.astype(col.dtype, copy=False) if col.type != "string" else values.astype(object)
    frame = pd.DataFrame(data)
    return frame, len(frame)


def prediction_array(out: Any, n: int, output_name: str | None = None) -> np.ndarray:
    """Normalise a pyfunc result (DataFrame, Series, dict, list, array) to an array with ``n`` rows."""
    if isinstance(out, pd.DataFrame):
        if output_name is not None and output_name in out.columns and out.shape[1] > 1:
            arr = out[output_name].to_numpy()
        elif out.shape[1] == 1:
            arr = out.iloc[:, 0].to_numpy()
        else:
            arr = out.to_numpy()
    elif isinstance(out, pd.Series):
        arr = out.to_numpy()
    elif isinstance(out, Mapping):
        key = output_name if output_name in out else next(iter(out))
        arr = np.asarray(out[key])
    else:
        arr = np.asarray(out)
    if arr.ndim == 0 or len(arr) != n:
        raise ValueError(f"pyfunc returned {arr.shape} for {n} input rows")
    return arr


def _column(columns: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if name not in columns:
        raise KeyError(f"missing input column {name!r}")
    return np.asarray(columns[name])


def _flat(values: Any) -> np.ndarray:
    arr = np.asarray(values)
    return arr.reshape(len(arr)) if arr.ndim == 2 and arr.shape[1] == 1 else arr
