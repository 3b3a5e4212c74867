"""scikit-learn (``mlflow.sklearn``) → ONNX with skl2onnx.

* A pipeline starting with a ``ColumnTransformer`` (or a bare one) gets one ONNX input per signature column, named
  after the column (``columns`` layout): strings → ``StringTensorType``, integers → ``Int64TensorType`` (retried as
  float when a converter insists), floats/doubles/booleans → ``FloatTensorType``; each fed with shape ``(n, 1)``.
* Any other estimator takes the numeric feature matrix in signature order (``matrix`` layout, float32).
* Classifiers are converted with ``zipmap`` disabled (``label`` + ``probabilities`` outputs); the prediction is
  ``probabilities`` when the model was logged with ``pyfunc_predict_fn="predict_proba"``, else ``label``.

Compatibility patch: skl2onnx 1.20 with scikit-learn 1.9 fails on ``HistGradientBoosting*`` ("Unable to create node
'TreeEnsemble...'") because NumPy/Python bools land in an integer-list node attribute that ``onnx.helper`` rejects.
:func:`patch_skl2onnx` wraps skl2onnx's ``make_node`` to turn such bools into ints (nothing else changes); parity
still verifies the result.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from registry.convert.base import (
    NUMERIC_TYPES,
    Conversion,
    ConvertContext,
    check_feature_order,
    classifier_outputs,
    classifier_reference,
    matrix_plan,
    require_signature,
)
from registry.errors import ConversionError
from registry.signature import ModelSignature

TOOL = "skl2onnx"
_PREDICT_FNS = ("predict", "predict_proba")


def convert_sklearn(ctx: ConvertContext) -> Conversion:
    """Convert an ``mlflow.sklearn`` model; raises on anything it cannot convert faithfully."""
    import mlflow.sklearn
    from sklearn.base import is_classifier

    signature = require_signature(ctx)
    predict_fn = str(ctx.pyfunc_conf.get("predict_fn") or "predict")
    if predict_fn not in _PREDICT_FNS:
        raise ConversionError(f"{TOOL}: pyfunc predict_fn {predict_fn!r} is not supported (only {_PREDICT_FNS})")
    model = mlflow.sklearn.load_model(str(ctx.model_dir))
    patch_skl2onnx()
    classifier = bool(is_classifier(model))
    if predict_fn == "predict_proba" and not classifier:
        raise ConversionError(f"{TOOL}: predict_fn 'predict_proba' on a non-classifier {type(model).__name__}")
    options = {"zipmap": False} if classifier else None

    transformer = column_transformer(model)
    if transformer is not None and not signature.is_tensor:
        onx, dtypes = _convert_columns(model, signature, options)
        inputs = {i.name for i in onx.graph.input}
        conv = Conversion(onx, "columns", "", input_map={c: c for c in signature.input_names if c in inputs})
        conv.input_dtypes = {c: dtypes[c] for c in conv.input_map}
        missing = inputs - set(conv.input_map)
        if missing:
            raise ConversionError(f"{TOOL}: ONNX inputs {sorted(missing)} match no signature column")
    else:
        layout, name, columns = matrix_plan(signature, getattr(model, "n_features_in_", None), TOOL)
        if layout == "matrix":
            check_feature_order(getattr(model, "feature_names_in_", None), columns, TOOL)
        width = len(columns) if layout == "matrix" else signature.inputs[0].shape[0]
        onx = _to_onnx(model, [(name, _types().Float([None, None if width < 0 else width]))], options)
        conv = Conversion(onx, layout, "", input_dtypes={name: "float32"})
        if layout == "matrix":
            conv.matrix_input = name
        else:
            conv.input_map = {name: name}

    outputs = [o.name for o in onx.graph.output]
    pair = classifier_outputs(outputs) if classifier else None
    if pair is not None:
        conv.label_output, conv.probabilities_output = pair
        conv.classes = tuple(np.asarray(model.classes_).tolist())
        conv.prediction_output = pair[1] if predict_fn == "predict_proba" else pair[0]
        conv.squeeze_prediction = False
        frame = transformer is not None or getattr(model, "feature_names_in_", None) is not None
        conv.reference = classifier_reference(model, pair[0], pair[1], frame=frame)
    elif classifier:
        raise ConversionError(f"{TOOL}: classifier converted without label/probabilities outputs (got {outputs})")
    else:
        conv.prediction_output = outputs[0]
    if transformer is not None:
        conv.sample_categories, closed = encoder_categories(transformer)
        strings = {c.name for c in signature.inputs if c.type == "string"}
        conv.categories = {k: v for k, v in conv.sample_categories.items() if k in strings}
        conv.closed_categories = tuple(sorted(closed & conv.categories.keys()))
    return conv


def column_transformer(model: Any) -> Any | None:
    """The ``ColumnTransformer`` the model starts with, if any."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    first = model.steps[0][1] if isinstance(model, Pipeline) else model
    return first if isinstance(first, ColumnTransformer) else None


def encoder_categories(transformer: Any) -> tuple[dict[str, tuple[Any, ...]], set[str]]:
    """Per input column, the categories of the One-Hot/Ordinal encoder the column transformer applies to it, and
    the columns whose encoder fails on an unknown category (``handle_unknown="error"``, the scikit-learn default)."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    out: dict[str, tuple[Any, ...]] = {}
    closed: set[str] = set()
    for _, trans, cols in getattr(transformer, "transformers_", ()):
        cols = [cols] if isinstance(cols, str) else list(cols) if not callable(cols) else []
        if not cols or not all(isinstance(c, str) for c in cols):
            continue
        steps = [s for _, s in trans.steps] if isinstance(trans, Pipeline) else [trans]
        encoders = [s for s in steps if isinstance(s, OneHotEncoder | OrdinalEncoder)]
        if not encoders or len(encoders[0].categories_) != len(cols):
            continue
        for col, cats in zip(cols, encoders[0].categories_, strict=True):
            out[col] = tuple(v for v in np.asarray(cats).tolist() if not (isinstance(v, float) and math.isnan(v)))
            if getattr(encoders[0], "handle_unknown", "error") == "error":
                closed.add(col)
    return out, closed


def _convert_columns(model: Any, signature: ModelSignature, options: Any) -> tuple[Any, dict[str, str]]:
    has_ints = any(c.type in {"integer", "long"} for c in signature.inputs)
    first_error: Exception | None = None
    for ints_as_float in (False, True) if has_ints else (False,):
        initial, dtypes = _column_types(signature, ints_as_float)
        try:
            return _to_onnx(model, initial, options), dtypes
        except ConversionError:
            raise
        except Exception as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error


def _column_types(signature: ModelSignature, ints_as_float: bool) -> tuple[list[tuple[str, Any]], dict[str, str]]:
    t = _types()
    initial: list[tuple[str, Any]] = []
    dtypes: dict[str, str] = {}
    for col in signature.inputs:
        if col.shape:
            raise ConversionError(f"{TOOL}: tensor column {col.name!r} in a column-transformer model")
        if col.type == "string":
            initial.append((col.name, t.String([None, 1])))
            dtypes[col.name] = "object"
        elif col.type in {"integer", "long"} and not ints_as_float:
            initial.append((col.name, t.Int64([None, 1])))
            dtypes[col.name] = "int64"
        elif col.type in NUMERIC_TYPES:
            initial.append((col.name, t.Float([None, 1])))
            dtypes[col.name] = "float32"
        else:
            raise ConversionError(f"{TOOL}: column {col.name!r} of type {col.type} has no ONNX input type")
    return initial, dtypes


def _to_onnx(model: Any, initial_types: list[tuple[str, Any]], options: Any) -> Any:
    from skl2onnx import convert_sklearn as skl2onnx_convert

    return skl2onnx_convert(model, initial_types=initial_types, options=options)


class _types:
    """skl2onnx tensor types, imported lazily (skl2onnx is slow to import)."""

    def __init__(self) -> None:
        from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

        self.Float, self.Int64, self.String = FloatTensorType, Int64TensorType, StringTensorType


@functools.cache
def patch_skl2onnx() -> None:
    """Coerce bools inside list attributes to ints in skl2onnx's ``make_node`` (see module docstring). Idempotent."""
    import skl2onnx.common._container as container

    original = container.make_node

    @functools.wraps(original)
    def make_node(*args: Any, **attrs: Any) -> Any:
        for key, value in attrs.items():
            if isinstance(value, list | tuple) and any(isinstance(v, bool | np.bool_) for v in value):
                attrs[key] = [int(v) if isinstance(v, bool | np.bool_) else v for v in value]
        return original(*args, **attrs)

    container.make_node = make_node
