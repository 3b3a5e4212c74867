"""XGBoost (``mlflow.xgboost``) and LightGBM (``mlflow.lightgbm``) → ONNX with onnxmltools.

Both take the numeric feature matrix in signature order (``matrix`` layout, one float32 input ``(n, k)``; a single
2-D tensor column feeds the input directly). Regressors predict ``variable`` (squeezed to ``(n,)`` like pyfunc);
classifiers get ``label`` + ``probabilities`` outputs and predict the label, as the flavors' pyfunc does.

XGBoost models fitted on a DataFrame carry feature names, which onnxmltools cannot read (it wants ``f0, f1...``):
the converter works on a copy whose feature names are cleared, after checking they match the signature order.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import numpy as np

from registry.convert.base import (
    Conversion,
    ConvertContext,
    check_feature_order,
    classifier_outputs,
    classifier_reference,
    dynamic_batch,
    matrix_plan,
    require_signature,
)
from registry.errors import ConversionError

TOOL = "onnxmltools"
_LGB_DEFAULT_NAME = re.compile(r"^Column_\d+$")


def convert_xgboost(ctx: ConvertContext) -> Conversion:
    """Convert an ``mlflow.xgboost`` model (scikit-learn API estimator or raw ``Booster``)."""
    import mlflow.xgboost
    from onnxmltools import convert_xgboost as mlt_convert

    signature = require_signature(ctx)
    model = mlflow.xgboost.load_model(str(ctx.model_dir))
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    layout, name, columns = matrix_plan(signature, int(booster.num_features()), TOOL)
    names = booster.feature_names
    if layout == "matrix":
        check_feature_order(names, columns, TOOL)
    if hasattr(model, "get_booster"):
        target = copy.deepcopy(model)
        target.get_booster().feature_names = None
    else:
        target = booster.copy()
        target.feature_names = None
    width = _width(signature, layout, columns)
    onx = mlt_convert(target, initial_types=[(name, _float_type(width))])
    return _finish(onx, model, layout, name, frame=names is not None)


def convert_lightgbm(ctx: ConvertContext) -> Conversion:
    """Convert an ``mlflow.lightgbm`` model (scikit-learn API estimator or raw ``Booster``)."""
    import mlflow.lightgbm
    from onnxmltools import convert_lightgbm as mlt_convert

    signature = require_signature(ctx)
    model = mlflow.lightgbm.load_model(str(ctx.model_dir))
    if hasattr(model, "booster_"):
        n_features = int(model.n_features_)
        names = getattr(model, "feature_names_in_", None)
        names = None if names is None else [str(n) for n in names]
    else:
        n_features = int(model.num_feature())
        names = [str(n) for n in model.feature_name()]
        names = None if all(_LGB_DEFAULT_NAME.match(n) for n in names) else names
    layout, name, columns = matrix_plan(signature, n_features, TOOL)
    if layout == "matrix":
        check_feature_order(names, columns, TOOL)
    width = _width(signature, layout, columns)
    onx = mlt_convert(model, initial_types=[(name, _float_type(width))], zipmap=False)
    return _finish(onx, model, layout, name, frame=names is not None)


def _finish(onx: Any, model: Any, layout: str, name: str, *, frame: bool) -> Conversion:
    onx = dynamic_batch(onx)
    conv = Conversion(onx, "matrix" if layout == "matrix" else "columns", "", input_dtypes={name: "float32"})
    if layout == "matrix":
        conv.matrix_input = name
    else:
        conv.input_map = {name: name}
    outputs = [o.name for o in onx.graph.output]
    pair = classifier_outputs(outputs)
    if pair is not None:
        if not hasattr(model, "predict_proba"):
            raise ConversionError(f"{TOOL}: raw booster classifiers are not supported (pyfunc returns scores)")
        conv.label_output, conv.probabilities_output = pair
        conv.prediction_output = pair[0]
        conv.squeeze_prediction = False
        conv.classes = tuple(np.asarray(model.classes_).tolist())
        conv.reference = classifier_reference(model, pair[0], pair[1], frame=frame)
    else:
        conv.prediction_output = outputs[0]
    return conv


def _width(signature: Any, layout: str, columns: list[str]) -> int | None:
    width = len(columns) if layout == "matrix" else signature.inputs[0].shape[0]
    return None if width < 0 else width


def _float_type(width: int | None) -> Any:
    from onnxmltools.convert.common.data_types import FloatTensorType

    return FloatTensorType([None, width])
