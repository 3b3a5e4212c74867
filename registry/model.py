"""What the registry knows about one model version, and what conversion produced from it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from registry.signature import ModelSignature


@dataclass(frozen=True, slots=True)
class ModelVersionInfo:
    """A resolved registered model version with everything a model card or tool description needs."""

    name: str
    version: str
    aliases: tuple[str, ...]
    source: str
    """Artifact URI of the logged model (``models:/...`` or ``runs:/...`` or a path)."""
    run_id: str | None
    experiment_id: str | None
    model_description: str | None
    """The registered model's description."""
    version_description: str | None
    tags: Mapping[str, str]
    """Registered-model tags overlaid with version tags."""
    metrics: Mapping[str, float]
    params: Mapping[str, str]
    flavors: tuple[str, ...]
    signature: ModelSignature | None
    input_example: list[dict[str, Any]] | None
    """The logged input example as records (one dict per row), when there is one."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    created_at_ms: int | None = None

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"


Runtime = Literal["onnx", "pyfunc"]


@dataclass(frozen=True, slots=True)
class Parity:
    """Outcome of comparing the converted model with the original pyfunc."""

    rows: int
    max_abs_err: float
    tolerance: float
    """The absolute tolerance (``atol``) applied."""
    passed: bool
    rtol: float = 1e-4
    """The relative tolerance applied: floats pass when ``|onnx - pyfunc| <= tolerance + rtol * |pyfunc|``."""


@dataclass(frozen=True, slots=True)
class ConvertedModel:
    """How to run one model version: an ONNX file plus how its inputs/outputs map to the signature, or pyfunc.

    Input layout:
      * ``columns``: each signature column feeds the ONNX input named in ``input_map`` with shape ``(n, 1)``
        (or ``(n, *shape)`` for tensor columns);
      * ``matrix``: all columns are stacked, in signature order, into ``matrix_input`` of shape ``(n, k)``.
    ``input_dtypes`` gives the numpy dtype each ONNX input expects (``object`` for strings).

    Outputs: ``prediction_output`` is the ONNX output equal to the pyfunc's ``predict`` (what MLflow serving
    returns); for classifiers ``label_output``/``probabilities_output``/``classes`` describe the rest.
    """

    runtime: Runtime
    flavor: str
    model_dir: Path
    """Local copy of the MLflow model (used by the pyfunc runtime and for parity)."""
    onnx_path: Path | None = None
    reason: str | None = None
    """Why the pyfunc runtime serves this model (conversion failure or parity mismatch)."""
    input_layout: Literal["columns", "matrix"] = "columns"
    input_map: Mapping[str, str] = field(default_factory=dict)
    matrix_input: str | None = None
    input_dtypes: Mapping[str, str] = field(default_factory=dict)
    prediction_output: str | None = None
    squeeze_prediction: bool = True
    """Flatten an (n, 1) prediction to (n,), as pyfunc does for regressors."""
    label_output: str | None = None
    probabilities_output: str | None = None
    classes: tuple[Any, ...] | None = None
    categories: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    """Known categories of string input columns (e.g. a OneHotEncoder's), for schema enums."""
    closed_categories: tuple[str, ...] = ()
    """Columns of ``categories`` whose encoder fails on a category it has not seen (``handle_unknown="error"``):
    both doors refuse unknown values there; elsewhere unknown values are scored (the encoder ignores them)."""
    parity: Parity | None = None
    checksum: str = ""
    from_cache: bool = False


#: A loaded pyfunc as a batch function over column arrays: {column: (n,...) array} -> (n, ...) predictions.
PyfuncPredict = Callable[[Mapping[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True, slots=True)
class RegisteredModelSummary:
    """One registered model as listed by the registry (no per-version details)."""

    name: str
    description: str | None
    latest_versions: tuple[str, ...]
    """Latest version numbers as the registry reports them (one per stage), ascending."""
    aliases: Mapping[str, str] = field(default_factory=dict)
    """Alias -> version."""
    tags: Mapping[str, str] = field(default_factory=dict)
