"""Model outputs of one request, and their two renderings: MLflow's ``predictions`` and structured rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson

from server.schema import OutputKind

_NUMPY = orjson.OPT_SERIALIZE_NUMPY
#: ``ignored_text`` names at most this many, in at most ``IGNORED_CHARS`` characters.
IGNORED_NAMES = 20
IGNORED_CHARS = 512
#: Characters kept as they are in ``ignored_text`` (visible ASCII but ``%`` and ``,``); others are %-escaped.
_SAFE = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in "%,") + " "


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
    ignored: tuple[str, ...] = ()
    """What the request gave that the model does not take and was ignored, as ``mlflow models serve`` ignores it:
    columns, params (``params.<name>``) and top-level fields, in request order. Unbounded (as long as the request):
    show it through ``ignored_text``."""

    @property
    def rows(self) -> int:
        return int(self.predictions.shape[0])

    @property
    def ignored_text(self) -> str | None:
        """``ignored`` for a response header (``X-Modelport-Ignored``) or a log line; ``None`` when nothing was.

        Comma-separated, at most ``IGNORED_NAMES`` names and about ``IGNORED_CHARS`` characters, then
        ``,... (+K more)``; every name %-escaped outside visible ASCII (and ``%``, ``,``), so it is a valid
        latin-1 header value whatever the request sent.
        """
        if not self.ignored:
            return None
        parts: list[str] = []
        size = 0
        for name in self.ignored[:IGNORED_NAMES]:
            part = quote(name[:IGNORED_CHARS], safe=_SAFE)
            if parts and size + len(part) > IGNORED_CHARS:
                break
            parts.append(part[:IGNORED_CHARS])
            size += len(part) + 1
        more = len(self.ignored) - len(parts)
        return ",".join(parts) + (f",... (+{more} more)" if more else "")

    def mlflow_json(self) -> bytes:
        """``{"predictions": ...}`` as ``mlflow models serve`` renders it."""
        return orjson.dumps({"predictions": _plain(self.predictions)}, option=_NUMPY)

    def structured(self) -> dict[str, Any]:
        """``{"predictions": [...]}`` matching the generated output schema (classifiers: label + probabilities)."""
        if self.kind.kind == "classification":
            labels = self.label if self.label is not None else self._argmax_labels()
            rows: list[Any] = []
            classes = [label_key(c) for c in (self.kind.classes or ())]
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


def label_key(c: Any) -> str:
    """The string a class label is keyed by in ``structured()`` probabilities (``True`` → ``"true"``)."""
    c = _scalar(c)
    return str(c).lower() if isinstance(c, bool) else str(c)
