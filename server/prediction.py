"""Model outputs of one request, and their two renderings: MLflow's ``predictions`` and structured rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from server.schema import OutputKind

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True, slots=True)
class Prediction:
    """Outputs for the rows of one request.

    ``predictions`` is exactly what the MLflow pyfunc returns (and ``mlflow models serve`` answers); ``label`` and
    ``probabilities`` are filled for classifiers.
    """

    name: str
    version: str
    predictions: np.ndarray
    kind: OutputKind
    label: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    batch_rows: int = 0
    """Rows of the runtime batch this request ran in (for logs)."""
    batch_requests: int = 0

    @property
    def rows(self) -> int:
        return int(self.predictions.shape[0])

    def mlflow_json(self) -> bytes:
        """``{"predictions": ...}`` as ``mlflow models serve`` renders it."""
        return orjson.dumps({"predictions": _plain(self.predictions)}, option=_NUMPY)

    def structured(self) -> dict[str, Any]:
        """``{"predictions": [...]}`` matching the generated output schema (classifiers: label + probabilities)."""
        if self.kind.kind == "classification":
            labels = self.label if self.label is not None else self._argmax_labels()
            rows: list[Any] = []
            classes = [_key(c) for c in (self.kind.classes or ())]
            probs = self.probabilities
            for i in range(self.rows):
                row: dict[str, Any] = {"label": _scalar(labels[i])}
                if probs is not None and classes:
                    row["probabilities"] = {c: float(p) for c, p in zip(classes, probs[i], strict=False)}
                rows.append(row)
            return {"predictions": rows}
        return {"predictions": _plain(self.predictions).tolist()}

    def _argmax_labels(self) -> np.ndarray:
        classes = np.asarray(self.kind.classes if self.kind.classes is not None else ())
        if self.probabilities is not None and len(classes):
            return classes[np.argmax(self.probabilities, axis=1)]
        return self.predictions


def _plain(arr: np.ndarray) -> Any:
    if arr.dtype == object:
        return np.array([_scalar(v) for v in arr.ravel()], dtype=object).reshape(arr.shape).tolist()
    return arr


def _scalar(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _key(c: Any) -> str:
    c = _scalar(c)
    return str(c).lower() if isinstance(c, bool) else str(c)
