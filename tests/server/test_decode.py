"""Decoder: every MLflow body shape to typed columns, and every bad input to an InvalidInput naming the field."""

from __future__ import annotations

import numpy as np
import pytest

from registry import ColumnSpec, ModelSignature, ParamSpec
from server.decode import Decoder
from server.errors import InvalidInput, PayloadTooLarge

SIG = ModelSignature(
    (
        ColumnSpec("year", "long"),
        ColumnSpec("product", "string"),
        ColumnSpec("units", "double"),
        ColumnSpec("promo", "boolean", optional=True),
    ),
    params=(ParamSpec("horizon", "long", 1),),
)


@pytest.fixture
def decoder() -> Decoder:
    return Decoder(SIG, max_rows=10)


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": [[2025, "product_A", 100, true], [2026, "product_B", 1.5, false]]}',
        b'{"dataframe_split": {"columns": ["year", "product", "units", "promo"], '
        b'"data": [[2025, "product_A", 100, true], [2026, "product_B", 1.5, false]]}}',
        b'{"dataframe_split": {"data": [[2025, "product_A", 100, true], [2026, "product_B", 1.5, false]]}}',
        b'{"dataframe_records": [{"year": 2025, "product": "product_A", "units": 100, "promo": true}, '
        b'{"year": 2026, "product": "product_B", "units": 1.5, "promo": false}]}',
        b'{"instances": [{"year": 2025, "product": "product_A", "units": 100, "promo": true}, '
        b'{"year": 2026, "product": "product_B", "units": 1.5, "promo": false}]}',
        b'{"inputs": {"year": [2025, 2026], "product": ["product_A", "product_B"], "units": [100, 1.5], '
        b'"promo": [true, false]}}',
        b'{"inputs": [[2025, "product_A", 100, true], [2026, "product_B", 1.5, false]]}',
    ],
)
def test_every_body_shape_decodes_to_the_same_columns(decoder: Decoder, body: bytes) -> None:
    out = decoder.decode_json(body)
    assert out.rows == 2
    assert out.columns["year"].dtype == np.int64 and out.columns["year"].tolist() == [2025, 2026]
    assert out.columns["product"].tolist() == ["product_A", "product_B"]
    assert out.columns["units"].dtype == np.float64 and out.columns["units"].tolist() == [100.0, 1.5]
    assert out.columns["promo"].tolist() == [True, False]


def test_csv_with_header(decoder: Decoder) -> None:
    out = decoder.decode_csv(b"year,product,units\n2025,product_A,100\n2026,product_B,2.5\n")
    assert out.columns["units"].tolist() == [100.0, 2.5]
    assert out.columns["year"].tolist() == [2025, 2026]


def test_optional_column_may_be_missing_or_null(decoder: Decoder) -> None:
    out = decoder.decode_json(
        b'{"dataframe_records": [{"year": 1, "product": "a", "units": 1, "promo": null},'
        b'{"year": 1, "product": "a", "units": 1}]}'
    )
    assert out.columns["promo"].tolist() == [None, None]


def test_params_are_kept_and_checked(decoder: Decoder) -> None:
    out = decoder.decode_json(b'{"data": [[1, "a", 1, true]], "params": {"horizon": 3}}')
    assert out.params == {"horizon": 3} and out.ignored == ()
    lenient = decoder.decode_json(b'{"data": [[1, "a", 1, true]], "params": {"depth": 3, "horizon": 2}}')
    assert lenient.params == {"horizon": 2} and lenient.ignored == ("params.depth",)
    with pytest.raises(InvalidInput) as err:
        Decoder(SIG, strict=True).decode_json(b'{"data": [[1, "a", 1, true]], "params": {"depth": 3}}')
    assert err.value.field == "params.depth"
    with pytest.raises(InvalidInput, match="param 'horizon' must be long") as err:
        decoder.decode_json(b'{"data": [[1, "a", 1, true]], "params": {"horizon": "soon"}}')
    assert err.value.field == "params.horizon"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (b"{", "body", "not valid JSON"),
        (b"[1, 2]", "body", "JSON object"),
        (b'{"rows": []}', "rows", "unknown top-level"),
        (b'{"data": [], "inputs": []}', "body", "exactly one"),
        (b"{}", "body", "exactly one"),
        (b'{"data": []}', "body", "no rows"),
        (b'{"data": [[2025, "a"]]}', "data[0]", "4 values"),
        (b'{"data": [[2025.5, "a", 1, true]]}', "year", "expected an integer"),
        (b'{"data": [["2025", "a", 1, true]]}', "year", "expected an integer"),
        (b'{"data": [[2025, 7, 1, true]]}', "product", "expected a string"),
        (b'{"data": [[2025, "a", "many", true]]}', "units", "finite number"),
        (b'{"data": [[2025, "a", null, true]]}', "units", "null"),
        (b'{"data": [[2025, "a", 1, "yes"]]}', "promo", "true or false"),
        (b'{"dataframe_records": [{"product": "a", "units": 1}]}', "year", "missing"),
        (b'{"dataframe_records": [1, 2]}', "dataframe_records[0]", "object"),
        (b'{"dataframe_split": [1]}', "dataframe_split", "'data'"),
        (b'{"data": [[1, "a", 1e400, true]]}', "body", "JSON"),
    ],
)
def test_bad_input_names_the_field(decoder: Decoder, body: bytes, field: str, words: str) -> None:
    with pytest.raises(InvalidInput) as err:
        decoder.decode_json(body)
    assert err.value.field == field
    assert words in err.value.message


@pytest.mark.parametrize(
    ("body", "field", "ignored"),
    [
        (
            b'{"dataframe_records": [{"year": 1, "product": "a", "units": 1, "colour": "red"}]}',
            "dataframe_records[0].colour",
            ("colour",),
        ),
        (
            b'{"dataframe_split": {"columns": ["year", "product", "units", "size"], "data": [[1, "a", 1, 2]]}}',
            "size",
            ("size",),
        ),
        (b'{"inputs": [{"year": 1, "product": "a", "units": 1, "x": 1}], "extra": 1}', "extra", ("extra", "x")),
    ],
)
def test_unknown_columns_are_ignored_like_mlflow_or_refused_when_strict(
    decoder: Decoder, body: bytes, field: str, ignored: tuple[str, ...]
) -> None:
    out = decoder.decode_json(body)
    assert out.rows == 1 and set(out.columns) == {"year", "product", "units", "promo"}
    assert out.ignored == ignored
    with pytest.raises(InvalidInput, match="unknown") as err:
        Decoder(SIG, strict=True).decode_json(body)
    assert err.value.field == field


def test_too_many_rows_is_payload_too_large(decoder: Decoder) -> None:
    with pytest.raises(PayloadTooLarge):
        decoder.decode_json(b'{"data": [' + b",".join([b'[1, "a", 1, true]'] * 11) + b"]}")


def test_tensor_signature_takes_nested_lists() -> None:
    sig = ModelSignature((ColumnSpec("input", "float", shape=(3,)),), is_tensor=True)
    dec = Decoder(sig)
    out = dec.decode_json(b'{"inputs": [[1, 2, 3], [4, 5, 6]]}')
    assert out.columns["input"].shape == (2, 3) and out.columns["input"].dtype == np.float32
    with pytest.raises(InvalidInput) as err:
        dec.decode_json(b'{"inputs": [[1, 2], [4, 5]]}')
    assert "shape" in err.value.message


def test_records_entry_point_for_tools(decoder: Decoder) -> None:
    out = decoder.decode_records([{"year": 2025, "product": "p", "units": 3}])
    assert out.rows == 1 and out.columns["units"].tolist() == [3.0]
