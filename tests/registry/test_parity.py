"""Parity helpers: comparison rules, row generation, ONNX feeds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from registry.convert.parity import ATOL, compare, generate_columns, onnx_feeds, prediction, records_to_columns
from registry.model import ConvertedModel
from registry.signature import ColumnSpec, ModelSignature

SIG = ModelSignature(
    (
        ColumnSpec("area", "double"),
        ColumnSpec("rooms", "long"),
        ColumnSpec("city", "string"),
        ColumnSpec("ok", "boolean"),
    )
)


def test_float_tolerance_is_absolute_plus_relative() -> None:
    assert compare("y", np.array([1.0, 1000.0]), np.array([1.0 + 0.5 * ATOL, 1000.05])) == (pytest.approx(0.05), None)
    err, problem = compare("y", np.array([1.0, 2.0]), np.array([1.0, 2.3]))
    assert err == pytest.approx(0.3)
    assert problem == "y: max abs error 0.3 > 0.0001 (+0.0001·|x|)"
    assert compare("y", np.array([np.nan]), np.array([np.nan])) == (0.0, None)
    assert compare("y", np.array([np.nan]), np.array([1.0]))[1] is not None


def test_labels_must_match_exactly() -> None:
    assert compare("label", np.array(["a", "b"], dtype=object), np.array(["a", "b"])) == (0.0, None)
    assert compare("label", np.array([0, 1, 1]), np.array([0, 1, 0])) == (math.inf, "label: 1/3 values differ")
    assert (
        compare("label", np.array(["a"], dtype=object), np.array(["b"], dtype=object))[1] == "label: 1/1 values differ"
    )


def test_shapes_must_match() -> None:
    err, problem = compare("p", np.zeros((3, 2)), np.zeros(3))
    assert err == math.inf and problem == "p: shape (3, 2) != pyfunc (3,)"


def test_generated_rows_follow_the_signature_and_categories() -> None:
    example = records_to_columns(
        [
            {"area": 50.0, "rooms": 2, "city": "paris", "ok": True},
            {"area": 70.0, "rooms": 4, "city": "lyon", "ok": False},
        ],
        SIG,
    )
    assert example is not None and example["rooms"].dtype == np.int64 and example["city"].dtype == object
    cols = generate_columns(SIG, example, {"city": ("nice", "paris")}, 200, np.random.default_rng(0))
    assert {k: len(v) for k, v in cols.items()} == {"area": 200, "rooms": 200, "city": 200, "ok": 200}
    assert cols["area"].dtype == np.float64 and 20 < cols["area"].mean() < 100
    assert cols["rooms"].dtype == np.int64
    assert set(cols["city"]) == {"nice", "paris"}
    assert cols["ok"].dtype == np.bool_
    strings_from_example = generate_columns(SIG, example, {}, 50, np.random.default_rng(0))
    assert set(strings_from_example["city"]) == {"paris", "lyon"}


def test_example_that_does_not_fit_is_ignored() -> None:
    assert records_to_columns([{"area": 1.0}], SIG) is None
    assert records_to_columns(None, SIG) is None


def test_feeds_for_both_layouts() -> None:
    columns = {"area": np.array([1.5, 2.5]), "rooms": np.array([1, 2]), "city": np.array(["a", "b"], dtype=object)}
    sig = ModelSignature(SIG.inputs[:3])
    by_column = ConvertedModel(
        "onnx",
        "sklearn",
        Path("."),
        input_map={"area": "area", "city": "c"},
        input_dtypes={"area": "float32", "c": "object"},
    )
    feeds = onnx_feeds(by_column, columns, sig)
    assert feeds["area"].shape == (2, 1) and feeds["area"].dtype == np.float32
    assert feeds["c"].tolist() == [["a"], ["b"]]
    matrix = ConvertedModel(
        "onnx", "xgboost", Path("."), input_layout="matrix", matrix_input="input", input_dtypes={"input": "float32"}
    )
    numeric = ModelSignature(SIG.inputs[:2])
    feeds = onnx_feeds(matrix, columns, numeric)
    assert feeds["input"].tolist() == [[1.5, 1.0], [2.5, 2.0]] and feeds["input"].dtype == np.float32


def test_prediction_squeeze() -> None:
    conv = ConvertedModel("onnx", "sklearn", Path("."), prediction_output="variable")
    assert prediction(conv, {"variable": np.zeros((4, 1))}).shape == (4,)
    kept = ConvertedModel("onnx", "onnx", Path("."), prediction_output="variable", squeeze_prediction=False)
    assert prediction(kept, {"variable": np.zeros((4, 1))}).shape == (4, 1)


def test_no_signature_cannot_pass(tmp_path: Path) -> None:
    from registry.convert.parity import check_parity

    parity, detail = check_parity(ConvertedModel("onnx", "onnx", tmp_path), None, None)
    assert not parity.passed and parity.rows == 0
    assert detail == "no input signature to build comparison rows from"


def test_unloadable_pyfunc_fails_parity(tmp_path: Path) -> None:
    from registry.convert.parity import check_parity

    parity, detail = check_parity(ConvertedModel("onnx", "sklearn", tmp_path), SIG, None)
    assert not parity.passed
    assert detail is not None and detail.startswith("pyfunc failed to load: ")
