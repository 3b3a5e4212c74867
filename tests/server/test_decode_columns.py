"""Already-columnar input (Arrow, v2 tensors) checked and cast by the signature, with JSON's error messages."""

from __future__ import annotations

import numpy as np
import pytest

from registry import ColumnSpec, ModelSignature
from server.decode import Decoder
from server.errors import InvalidInput, PayloadTooLarge

SIG = ModelSignature(
    (
        ColumnSpec("year", "long"),
        ColumnSpec("product", "string"),
        ColumnSpec("units", "double"),
        ColumnSpec("discount", "float", optional=True),
    )
)
TENSOR = ModelSignature((ColumnSpec("pixels", "float", shape=(2, -1)),), is_tensor=True)


def _cols(**overrides: np.ndarray) -> dict[str, np.ndarray]:
    cols = {"year": np.array([2024, 2025]), "product": np.array(["a", "b"], dtype=object),
            "units": np.array([1.0, 2.5])}  # fmt: skip
    cols.update(overrides)
    return cols


def test_columns_are_cast_to_signature_types_and_optional_ones_filled() -> None:
    out = Decoder(SIG).decode_columns(_cols(year=np.array([[2024], [2025]], dtype=np.int32)))
    assert out.rows == 2
    assert out.columns["year"].dtype == np.int64 and out.columns["year"].shape == (2,)
    assert out.columns["product"].tolist() == ["a", "b"]
    assert out.columns["units"].dtype == np.float64
    assert np.isnan(out.columns["discount"]).all()


def test_unicode_arrays_become_object_strings() -> None:
    out = Decoder(SIG).decode_columns(_cols(product=np.array(["a", "b"])))
    assert out.columns["product"].dtype == object


def test_whole_floats_are_accepted_for_integer_columns_but_fractions_are_not() -> None:
    assert Decoder(SIG).decode_columns(_cols(year=np.array([2024.0, 2025.0]))).columns["year"].tolist() == [2024, 2025]
    with pytest.raises(InvalidInput, match="row 1: expected an integer") as err:
        Decoder(SIG).decode_columns(_cols(year=np.array([2024.0, 2025.5])))
    assert err.value.field == "year"


@pytest.mark.parametrize(
    ("cols", "message", "field"),
    [
        ({"year": np.array([1]), "product": np.array(["a"], dtype=object)}, "missing required column 'units'",
         "units"),
        (_cols(units=np.array([1.0])), "different lengths", "units"),
        (_cols(units=np.array([1.0, None], dtype=object)), "row 1: value is null", "units"),
        (_cols(units=np.array([1.0, np.nan])), "row 1: value is null", "units"),
        (_cols(product=np.array(["a", 3], dtype=object)), "row 1: expected a string", "product"),
        (_cols(units=np.array([True, False])), "expected a finite number", "units"),
        (_cols(units=np.ones((2, 3))), "one value per row", "units"),
        ({k: v[:0] for k, v in _cols().items()}, "no rows", "body"),
    ],
)  # fmt: skip
def test_bad_columns_name_the_field(cols: dict[str, np.ndarray], message: str, field: str) -> None:
    with pytest.raises(InvalidInput, match=message) as err:
        Decoder(SIG).decode_columns(cols)
    assert err.value.field == field


def test_unknown_columns_are_ignored_unless_strict() -> None:
    out = Decoder(SIG).decode_columns(_cols(color=np.array([1, 2])))
    assert out.ignored == ("color",) and "color" not in out.columns
    with pytest.raises(InvalidInput, match="unknown inputs") as err:
        Decoder(SIG).decode_columns(_cols(color=np.array([1, 2])), strict=True)
    assert err.value.field == "color"
    with pytest.raises(InvalidInput, match="unknown inputs"):
        Decoder(SIG, strict=True).decode_columns(_cols(color=np.array([1, 2])))


def test_optional_column_nulls_become_nan() -> None:
    out = Decoder(SIG).decode_columns(_cols(discount=np.array([0.1, None], dtype=object)))
    assert out.columns["discount"][0] == pytest.approx(0.1) and np.isnan(out.columns["discount"][1])


def test_row_limit() -> None:
    with pytest.raises(PayloadTooLarge):
        Decoder(SIG, max_rows=1).decode_columns(_cols())


def test_tensor_columns_check_per_row_shape() -> None:
    ok = Decoder(TENSOR).decode_columns({"pixels": np.zeros((3, 2, 5), dtype=np.float64)})
    assert ok.columns["pixels"].dtype == np.float32 and ok.columns["pixels"].shape == (3, 2, 5)
    with pytest.raises(InvalidInput, match=r"per-row shape \[2, -1\]"):
        Decoder(TENSOR).decode_columns({"pixels": np.zeros((3, 4, 5))})


def _split(*rows: str) -> bytes:
    data = ", ".join(rows)
    return b'{"dataframe_split": {"columns": ["year", "product", "units"], "data": [' + data.encode() + b"]}}"


def test_small_json_numbers_take_the_per_value_path_with_the_same_checks() -> None:
    dec = Decoder(SIG)
    ok = dec.decode_json(_split('[2024, "a", 1]', '[2025.0, "b", 2.5]'))
    assert ok.columns["year"].dtype == np.int64 and ok.columns["units"].tolist() == [1.0, 2.5]
    with pytest.raises(InvalidInput, match=r"row 0: expected an integer, got 2024\.5"):
        dec.decode_json(_split('[2024.5, "a", 1]'))
    with pytest.raises(InvalidInput, match="expected a finite number, got true"):
        dec.decode_json(_split('[2024, "a", true]'))
    with pytest.raises(InvalidInput, match="out of range for long"):
        dec.decode_json(_split('[99999999999999999999999, "a", 1]'))
