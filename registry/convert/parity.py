"""Parity: the converted ONNX model must predict what the original MLflow pyfunc predicts.

Rows: the logged input example plus :data:`GENERATED_ROWS` rows sampled from the signature (numbers drawn
around the example's mean/spread, integers rounded, strings and encoded columns drawn from the converter's known
categories or else the example's values; fixed seed, so a check is reproducible). If the pyfunc rejects the
generated rows, the example alone is used; with no usable row at all the check fails.

Compared: the ONNX ``prediction_output`` (squeezed like the runtime does) against ``pyfunc.predict``; for
classifiers also ``label_output`` and ``probabilities_output`` against the native ``predict``/``predict_proba``.

Tolerance: floating outputs pass when ``|onnx - ref| <= ATOL + RTOL * |ref|`` element-wise, with ``ATOL = 1e-4`` and
``RTOL = 1e-4`` (ONNX tree ensembles and most skl2onnx graphs compute in float32 while the original models use
float64; a decision flip on a threshold shows up far above this). Labels, integers and strings must be equal
exactly. Shapes must match (after the ``(n, 1)`` → ``(n,)`` squeeze).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from registry.convert.base import Reference, first_line
from registry.errors import ConversionError
from registry.model import ConvertedModel, Parity
from registry.pyfunc import load_pyfunc, model_input
from registry.signature import ModelSignature

logger = logging.getLogger(__name__)

ATOL = 1e-4
RTOL = 1e-4
GENERATED_ROWS = 64
_NUMBERS = {"integer", "long", "float", "double"}


def check_parity(
    converted: ConvertedModel,
    signature: ModelSignature | None,
    example: Sequence[Mapping[str, Any]] | None,
    *,
    categories: Mapping[str, Sequence[Any]] | None = None,
    reference: Reference | None = None,
    rows: int = GENERATED_ROWS,
    seed: int = 0,
) -> tuple[Parity, str | None]:
    """Compare ``converted`` (runtime ``onnx``) with its pyfunc; returns the result and, on failure, why."""
    if signature is None or not signature.inputs:
        return Parity(0, math.inf, ATOL, False, RTOL), "no input signature to build comparison rows from"
    example_cols = records_to_columns(example, signature)
    candidates: list[dict[str, np.ndarray]] = []
    try:
        generated = generate_columns(signature, example_cols, categories or {}, rows, np.random.default_rng(seed))
        candidates.append(_concat(example_cols, generated) if example_cols else generated)
    except ConversionError as exc:
        logger.debug("parity rows not generated: %s", exc)
    if example_cols:
        candidates.append(example_cols)
    if not candidates:
        return Parity(0, math.inf, ATOL, False, RTOL), "no input example and no way to generate rows"

    try:
        predict = load_pyfunc(converted, signature)
    except Exception as exc:
        return Parity(0, math.inf, ATOL, False, RTOL), f"pyfunc failed to load: {first_line(exc)}"
    columns, expected, errors = None, None, []
    for cand in candidates:
        try:
            expected, columns = predict(cand), cand
            break
        except Exception as exc:
            errors.append(first_line(exc))
    if columns is None or expected is None:
        return Parity(0, math.inf, ATOL, False, RTOL), f"pyfunc failed on the comparison rows: {errors[0]}"
    n = len(expected)
    try:
        outputs = run_onnx(converted, columns, signature)
    except Exception as exc:
        return Parity(n, math.inf, ATOL, False, RTOL), f"onnxruntime failed: {first_line(exc)}"

    checks = [(str(converted.prediction_output), prediction(converted, outputs), expected)]
    if reference is not None:
        try:
            native = reference(model_input(columns, signature)[0])
        except Exception as exc:
            return Parity(n, math.inf, ATOL, False, RTOL), f"native predict failed: {first_line(exc)}"
        checks += [(name, outputs[name], ref) for name, ref in native.items()]
    worst, problems = 0.0, []
    for name, got, ref in checks:
        err, problem = compare(name, got, ref)
        worst = max(worst, err)
        if problem:
            problems.append(problem)
    detail = f"{'; '.join(problems)} on {n} rows" if problems else None
    return Parity(n, worst, ATOL, not problems, RTOL), detail


def run_onnx(
    converted: ConvertedModel, columns: Mapping[str, np.ndarray], signature: ModelSignature | None
) -> dict[str, np.ndarray]:
    """Run the converted model on CPU with onnxruntime; returns every output by name."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(converted.onnx_path), opts, providers=["CPUExecutionProvider"])
    feeds = onnx_feeds(converted, columns, signature)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def onnx_feeds(
    converted: ConvertedModel, columns: Mapping[str, np.ndarray], signature: ModelSignature | None
) -> dict[str, np.ndarray]:
    """ONNX inputs for ``columns`` following the converted model's layout (see ``ConvertedModel``)."""
    if converted.input_layout == "matrix":
        assert converted.matrix_input is not None
        order = signature.input_names if signature is not None else list(columns)
        n = len(np.asarray(columns[order[0]]))
        parts = [np.asarray(columns[c]).reshape(n, -1) for c in order]
        dtype = converted.input_dtypes.get(converted.matrix_input, "float32")
        return {converted.matrix_input: np.concatenate(parts, axis=1).astype(dtype)}
    feeds = {}
    for col, name in converted.input_map.items():
        arr = np.asarray(columns[col])
        arr = arr.reshape(-1, 1) if arr.ndim == 1 else arr
        feeds[name] = arr.astype(converted.input_dtypes.get(name, arr.dtype))
    return feeds


def prediction(converted: ConvertedModel, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The ONNX prediction as the runtime returns it (squeezed ``(n, 1)`` → ``(n,)`` when asked)."""
    arr = np.asarray(outputs[str(converted.prediction_output)])
    if converted.squeeze_prediction and arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.reshape(-1)
    return arr


def compare(name: str, got: Any, expected: Any) -> tuple[float, str | None]:
    """``(max abs error, problem or None)`` for one output; see the module docstring for the rules."""
    got, expected = np.asarray(got), np.asarray(expected)
    if got.shape != expected.shape:
        return math.inf, f"{name}: shape {got.shape} != pyfunc {expected.shape}"
    numeric = got.dtype.kind in "biuf" and expected.dtype.kind in "biuf"
    if numeric and "f" in (got.dtype.kind, expected.dtype.kind):
        a, b = got.astype(np.float64), expected.astype(np.float64)
        diff = np.where(np.isnan(a) & np.isnan(b), 0.0, np.abs(a - b))
        diff = np.nan_to_num(diff, nan=math.inf)
        err = float(diff.max()) if diff.size else 0.0
        if np.any(diff > ATOL + RTOL * np.abs(np.nan_to_num(b))):
            return err, f"{name}: max abs error {err:.3g} > {ATOL:g} (+{RTOL:g}·|x|)"
        return err, None
    equal = got == expected if numeric else got.astype(str) == expected.astype(str)
    bad = int(np.size(equal) - np.count_nonzero(equal))
    return (math.inf, f"{name}: {bad}/{got.shape[0]} values differ") if bad else (0.0, None)


def records_to_columns(
    records: Sequence[Mapping[str, Any]] | None, signature: ModelSignature
) -> dict[str, np.ndarray] | None:
    """Column arrays (signature dtypes) from example records, or ``None`` when there are none or they don't fit."""
    if not records:
        return None
    try:
        out = {}
        for col in signature.inputs:
            if col.name not in records[0] and col.optional:
                continue
            values = [r[col.name] for r in records]
            out[col.name] = np.asarray(values, dtype=object if col.type == "string" else col.dtype)
        return out
    except (KeyError, TypeError, ValueError) as exc:
        logger.debug("input example does not fit the signature: %s", exc)
        return None


def generate_columns(
    signature: ModelSignature,
    example: Mapping[str, np.ndarray] | None,
    categories: Mapping[str, Sequence[Any]],
    n: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """``n`` random rows shaped like the signature (see the module docstring)."""
    out: dict[str, np.ndarray] = {}
    for col in signature.inputs:
        ex = example.get(col.name) if example else None
        cats = list(categories.get(col.name) or ())
        if not cats and col.type == "string":
            cats = sorted({str(v) for v in ex}) if ex is not None and len(ex) else ["a", "b", "c"]
        if cats and not col.shape:
            picked = [cats[i] for i in rng.integers(0, len(cats), n)]
            out[col.name] = np.asarray(picked, dtype=object if col.type == "string" else col.dtype)
        elif col.type == "boolean":
            out[col.name] = rng.random((n, *col.shape)) < 0.5
        elif col.type in _NUMBERS:
            out[col.name] = _numbers(col.type, col.dtype, col.shape, ex, n, rng, col.name)
        else:
            raise ConversionError(f"cannot generate values for column {col.name!r} of type {col.type}")
    return out


def _numbers(
    kind: str, dtype: Any, shape: tuple[int, ...], ex: np.ndarray | None, n: int, rng: np.random.Generator, name: str
) -> np.ndarray:
    if ex is not None and len(ex):
        base = ex.astype(np.float64)
        mean, std = base.mean(axis=0), base.std(axis=0)
        std = np.where(std > 0, std, np.maximum(np.abs(mean) * 0.1, 1.0))
        row_shape = base.shape[1:]
    elif all(d > 0 for d in shape):
        mean, std, row_shape = np.zeros(shape), np.ones(shape), shape
    else:
        raise ConversionError(f"cannot generate column {name!r}: unknown tensor shape {shape} and no example")
    values = rng.normal(mean, std, size=(n, *row_shape))
    return (np.rint(values) if kind in {"integer", "long"} else values).astype(dtype)


def _concat(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([np.asarray(a[k]), np.asarray(b[k]).astype(np.asarray(a[k]).dtype)]) for k in a}
