"""What every converter gets (:class:`ConvertContext`) and returns (:class:`Conversion`), plus shared helpers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from registry.errors import ConversionError
from registry.model import ModelVersionInfo
from registry.signature import ModelSignature

NUMERIC_TYPES = frozenset({"boolean", "integer", "long", "float", "double"})

#: ONNX tensor element type (as onnxruntime spells it) -> numpy dtype name fed to that input.
ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
    "tensor(float16)": "float16",
}

#: Reference predictions for parity: a frame in signature order -> {onnx output name: expected array}.
#: (The input is what the pyfunc gets: a DataFrame, or an array for a single-tensor signature.)
Reference = Callable[[Any], Mapping[str, np.ndarray]]


@dataclass(frozen=True, slots=True)
class ConvertContext:
    """Everything a converter needs about one downloaded model version."""

    info: ModelVersionInfo
    model_dir: Path
    flavor: str
    flavor_conf: Mapping[str, Any]
    """The MLmodel entry of the flavor being converted."""
    pyfunc_conf: Mapping[str, Any]
    """The MLmodel ``python_function`` entry (``predict_fn`` lives there for sklearn)."""
    signature: ModelSignature | None
    progress: Callable[[str], None]


@dataclass(slots=True)
class Conversion:
    """A converter's output: the ONNX graph and how to feed/read it (see ``ConvertedModel``)."""

    onnx_model: Any
    """An ``onnx.ModelProto``."""
    input_layout: Literal["columns", "matrix"]
    prediction_output: str
    input_map: dict[str, str] = field(default_factory=dict)
    matrix_input: str | None = None
    input_dtypes: dict[str, str] = field(default_factory=dict)
    squeeze_prediction: bool = True
    label_output: str | None = None
    probabilities_output: str | None = None
    classes: tuple[Any, ...] | None = None
    categories: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    """String-column categories published for schema enums."""
    closed_categories: tuple[str, ...] = ()
    """Columns whose encoder refuses categories it has not seen (``handle_unknown="error"``)."""
    sample_categories: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    """Every known category (string or numeric column), used to generate parity rows."""
    reference: Reference | None = None
    """Native predictions of the extra classifier outputs (label and probabilities) for parity."""


def require_signature(ctx: ConvertContext) -> ModelSignature:
    if ctx.signature is None or not ctx.signature.inputs:
        raise ConversionError(f"{ctx.flavor}: the model has no input signature; cannot type the ONNX inputs")
    return ctx.signature


Layout = Literal["columns", "matrix"]


def matrix_plan(signature: ModelSignature, n_features: int | None, tool: str) -> tuple[Layout, str, list[str]]:
    """Decide how a model over a plain numeric matrix is fed.

    Returns ``(layout, onnx_input_name, columns)``: ``("matrix", "input", names)`` for k scalar numeric
    columns stacked in signature order, or ``("columns", name, [name])`` for one tensor column of shape (k,).
    """
    cols = signature.inputs
    layout: Layout
    if signature.is_tensor:
        if len(cols) != 1 or len(cols[0].shape) != 1 or cols[0].type not in NUMERIC_TYPES:
            raise ConversionError(f"{tool}: needs one numeric 2-D tensor input, signature has {_describe(signature)}")
        width = cols[0].shape[0]
        layout, name = "columns", cols[0].name
    else:
        bad = [c.name for c in cols if c.type not in NUMERIC_TYPES or c.shape]
        if bad:
            raise ConversionError(f"{tool}: non-numeric input columns {bad} for a numeric feature matrix")
        width, layout, name = len(cols), "matrix", "input"
    if n_features is not None and width not in (-1, n_features):
        raise ConversionError(f"{tool}: model expects {n_features} features, signature provides {width}")
    return layout, name, [c.name for c in cols]


def check_feature_order(names: Sequence[Any] | None, columns: Sequence[str], tool: str) -> None:
    """Refuse a matrix whose signature order differs from the feature order the model was fitted with."""
    if names is not None and list(map(str, names)) != list(columns):
        raise ConversionError(f"{tool}: model features {list(names)} differ from signature columns {list(columns)}")


def dynamic_batch(onnx_model: Any) -> Any:
    """Make the first dimension of every graph input/output symbolic (some converters pin it to 1)."""
    for value in [*onnx_model.graph.input, *onnx_model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims) > 0 and dims[0].HasField("dim_value"):
            dims[0].dim_param = "N"
    return onnx_model


def classifier_outputs(output_names: Sequence[str]) -> tuple[str, str] | None:
    """``(label, probabilities)`` when the graph has the usual classifier output pair."""
    if "label" in output_names and "probabilities" in output_names:
        return "label", "probabilities"
    return None


def classifier_reference(model: Any, label: str, probabilities: str, *, frame: bool) -> Reference:
    """Parity reference calling the native classifier's ``predict``/``predict_proba``."""

    def reference(df: pd.DataFrame | np.ndarray) -> Mapping[str, np.ndarray]:
        x = df if frame else np.asarray(df)
        return {label: np.asarray(model.predict(x)), probabilities: np.asarray(model.predict_proba(x))}

    return reference


def first_line(exc: BaseException, limit: int = 300) -> str:
    """A short one-line rendering of an exception (converters love multi-kilobyte messages)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(signature: ModelSignature) -> str:
    return ", ".join(f"{c.name}:{c.type}{list(c.shape) if c.shape else ''}" for c in signature.inputs)
