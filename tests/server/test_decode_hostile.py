"""Hostile and odd input at the decoder: a 400 naming the field, or the answer MLflow gives; never a crash, never a
value scored as something else (wrapped, clamped, infinite), never a message that grows with the input."""

from __future__ import annotations

import io
import struct

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest

from registry import ColumnSpec, ModelSignature, ParamSpec
from server.decode import Decoder
from server.errors import InvalidInput
from server.prediction import Prediction
from server.schema import OutputKind
from server.tensors import decode_infer, read_arrow_stream

SIG = ModelSignature(
    (
        ColumnSpec("year", "long"),
        ColumnSpec("product", "string"),
        ColumnSpec("units", "double"),
        ColumnSpec("promo", "boolean", optional=True),
    ),
    params=(ParamSpec("horizon", "long", 1),),
)
NUMBERS = ModelSignature(
    (
        ColumnSpec("i32", "integer", optional=True),
        ColumnSpec("i64", "long", optional=True),
        ColumnSpec("f32", "float", optional=True),
        ColumnSpec("f64", "double", optional=True),
    )
)
TENSOR = ModelSignature((ColumnSpec("input", "double", shape=(4,)),), is_tensor=True)


def _arrow(**columns: pa.Array) -> bytes:
    table = pa.table(columns)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


# -- CSV ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"year,product,units\r2025,product_A,100\r2026,product_B,2.5\r",  # CR-only line ends (old Mac, Excel)
        b"year,product,units\r\n2025,product_A,100\r\n2026,product_B,2.5\r\n",
        b"year,product,units\n2025,product_A,100\r2026,product_B,2.5",  # a bare CR between rows
        b"\xef\xbb\xbfyear,product,units\n2025,product_A,100\n2026,product_B,2.5\n",  # UTF-8 BOM
        b"year, product, units\n2025, product_A, 100\n 2026 ,product_B , 2.5\n",  # spaces around names and values
        b",year,product,units\n0,2025,product_A,100\n1,2026,product_B,2.5\n",  # df.to_csv() index column
        b'year,product,units\n2025, "product_A" ,100\n2026,"product_B",2.5\n\n',
    ],
)
def test_csv_as_pandas_writes_and_reads_it(body: bytes) -> None:
    out = Decoder(SIG, strict=True).decode_csv(body)
    assert out.rows == 2
    assert out.columns["year"].tolist() == [2025, 2026]
    assert out.columns["product"].tolist() == ["product_A", "product_B"]
    assert out.columns["units"].tolist() == [100.0, 2.5]


def test_csv_written_by_pandas_round_trips() -> None:
    frame = pd.DataFrame(
        {"year": [2025, 2026], "product": ["product_A", "product_B"], "units": [100.0, 2.5], "promo": [True, False]}
    )
    for body in (frame.to_csv(), frame.to_csv(index=False), frame.to_csv(lineterminator="\r")):
        out = Decoder(SIG, strict=True).decode_csv(body.encode())
        assert out.columns["promo"].dtype == np.bool_ and out.columns["promo"].tolist() == [True, False]
        assert out.columns["product"].tolist() == ["product_A", "product_B"] and out.ignored == ()


def test_csv_values_are_typed_by_their_column() -> None:
    sig = ModelSignature((ColumnSpec("code", "string"), ColumnSpec("flag", "boolean"), ColumnSpec("n", "double")))
    out = Decoder(sig).decode_csv(b"code,flag,n\n007,true,1e3\nTrue,FALSE,-2\n")
    assert out.columns["code"].tolist() == ["007", "True"]  # strings stay strings, as pandas reads them with dtypes
    assert out.columns["flag"].tolist() == [True, False]
    assert out.columns["n"].tolist() == [1000.0, -2.0]
    with pytest.raises(InvalidInput, match="expected true or false") as err:
        Decoder(sig).decode_csv(b"code,flag,n\na,maybe,1\n")
    assert err.value.field == "flag"
    with pytest.raises(InvalidInput, match="finite number") as err:
        Decoder(sig).decode_csv("code,flag,n\na,true,١٢\n".encode())  # int() takes Arabic-Indic digits; pandas not
    assert err.value.field == "n"


def test_csv_fields_longer_than_the_csv_module_default() -> None:
    long = "p" * 200_000  # csv.field_size_limit() is 131,072 by default
    out = Decoder(SIG).decode_csv(f"year,product,units\n2025,{long},1\n".encode())
    assert out.columns["product"].tolist() == [long]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'year,product,units\n2025,"product_A,1\n', "quoted field"),
        (b"year,product,units\n2025,product_A\n", "2 values"),
        (b"\xff\xfe", "UTF-8"),
        (b"\n\n", "header"),
        (b"year,year,units\n1,2,3\n", "twice"),
    ],
)
def test_csv_that_cannot_be_read_is_a_400(body: bytes, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        Decoder(SIG).decode_csv(body)


# -- values that do not fit the column type ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"dataframe_records": [{"f32": 1e39}]}', "f32"),
        (b'{"dataframe_records": [{"f32": 1e308}]}', "f32"),
        (b'{"dataframe_records": [{"f32": -3.5e38}]}', "f32"),
        (b'{"dataframe_records": [{"i64": -9223372036854775809}]}', "i64"),  # orjson: a float, -2**63 after rounding
        (b'{"dataframe_records": [{"i64": 9223372036854775808}]}', "i64"),
        (b'{"dataframe_records": [{"i64": 18446744073709551615}]}', "i64"),
        (b'{"dataframe_records": [{"i64": 1e300}]}', "i64"),
        (b'{"dataframe_records": [{"i64": 9007199254740994.0}]}', "i64"),  # not an exact integer as a float
        (b'{"dataframe_records": [{"i32": 2147483648}]}', "i32"),
        (b'{"dataframe_records": [{"i32": -2147483649}]}', "i32"),
        (b'{"dataframe_records": [{"i32": 3e9}]}', "i32"),
    ],
)
def test_json_values_out_of_range_are_refused(body: bytes, field: str) -> None:
    for rows in (1, 40):  # the per-value path and the numpy path
        payload = orjson.loads(body)
        payload["dataframe_records"] = payload["dataframe_records"] * rows
        with pytest.raises(InvalidInput, match="out of range") as err:
            Decoder(NUMBERS).decode_payload(payload)
        assert err.value.field == field


def test_values_at_the_edges_of_the_range_fit() -> None:
    edges = {"i32": [-(2**31), 2**31 - 1], "i64": [-(2**63), 2**63 - 1], "f32": [-3.4e38, 3.4e38],
             "f64": [-1e308, 1e308]}  # fmt: skip
    for rows in (1, 20):
        out = Decoder(NUMBERS).decode_payload({"inputs": {k: v * rows for k, v in edges.items()}})
        assert out.columns["i64"].dtype == np.int64 and out.columns["i64"].tolist()[:2] == edges["i64"]
        assert out.columns["i32"].tolist()[:2] == edges["i32"]
        assert np.isfinite(out.columns["f32"]).all() and out.columns["f32"].dtype == np.float32


def test_tool_records_out_of_range_are_refused() -> None:
    with pytest.raises(InvalidInput, match="out of range") as err:
        Decoder(NUMBERS).decode_records([{"f32": 1e39}])
    assert err.value.field == "f32"


def test_bools_are_not_numbers_even_in_long_columns() -> None:
    with pytest.raises(InvalidInput, match="got true") as err:
        Decoder(NUMBERS).decode_payload({"inputs": {"f64": [1.0] * 20 + [True]}})
    assert err.value.field == "f64"


def test_lists_in_scalar_columns_are_refused() -> None:
    with pytest.raises(InvalidInput, match="expected a finite number") as err:
        Decoder(NUMBERS).decode_payload({"inputs": {"f64": [[1.0, 2.0]] * 20}})
    assert err.value.field == "f64"


@pytest.mark.parametrize(
    ("array", "field"),
    [
        (pa.array([1, 2**64 - 1], type=pa.uint64()), "i64"),
        (pa.array([1, 2**31], type=pa.int64()), "i32"),
        (pa.array([1.0, 1e39], type=pa.float64()), "f32"),
        (pa.array([1.0, 1e300], type=pa.float64()), "i64"),
    ],
)
def test_arrow_values_out_of_range_are_refused(array: pa.Array, field: str) -> None:
    columns = read_arrow_stream(_arrow(**{field: array}))
    with pytest.raises(InvalidInput, match=r"row 1: .* out of range") as err:
        Decoder(NUMBERS).decode_columns(columns)
    assert err.value.field == field


def test_arrow_timestamps_are_not_integers() -> None:
    columns = read_arrow_stream(_arrow(i64=pa.array([np.datetime64("2024-01-01", "ns")])))
    with pytest.raises(InvalidInput, match="expected an integer") as err:
        Decoder(NUMBERS).decode_columns(columns)
    assert err.value.field == "i64"


def _infer(datatype: str, data: list[object], name: str = "i64") -> dict[str, np.ndarray]:
    body = {"inputs": [{"name": name, "datatype": datatype, "shape": [len(data), 1], "data": data}]}
    return decode_infer(orjson.dumps(body)).inputs


@pytest.mark.parametrize(
    ("datatype", "data"),
    [("INT32", [2**40]), ("UINT8", [-1]), ("INT8", [300]), ("FP32", [1e39]), ("FP16", [70000.0]),
     ("UINT64", [-1]), ("INT64", [2**64 - 1])],
)  # fmt: skip
def test_v2_json_tensors_must_fit_their_declared_datatype(datatype: str, data: list[object]) -> None:
    with pytest.raises(InvalidInput, match="out of range") as err:
        _infer(datatype, data)
    assert err.value.field == "i64"


def test_v2_tensors_that_fit_their_datatype_must_still_fit_the_column() -> None:
    with pytest.raises(InvalidInput, match="out of range") as err:
        Decoder(NUMBERS).decode_columns(_infer("UINT64", [2**64 - 1]))
    assert err.value.field == "i64"
    with pytest.raises(InvalidInput, match="out of range"):
        Decoder(NUMBERS).decode_columns(_infer("FP64", [1e39], name="f32"))
    raw = np.array([1, 2**63], dtype="<u8").tobytes()
    head = orjson.dumps(
        {"inputs": [{"name": "i64", "datatype": "UINT64", "shape": [2, 1], "parameters": {"binary_data_size": 16}}]}
    )
    with pytest.raises(InvalidInput, match=r"row 1: .* out of range"):
        Decoder(NUMBERS).decode_columns(decode_infer(head + raw, len(head)).inputs)


@pytest.mark.parametrize(
    "request_",
    [
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1], "parameters": []}]},
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], "parameters": "binary"},
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], "outputs": 5},
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
         "outputs": [{"name": "p", "parameters": 1}]},
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2**32, 2**32], "data": []}]},
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [[[[1]]]] * 2}]},
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": True}}]},
    ],
)  # fmt: skip
def test_v2_requests_of_the_wrong_shape_are_400s(request_: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        decode_infer(orjson.dumps(request_))


def test_v2_binary_shapes_whose_product_wraps_around_are_refused() -> None:
    head = orjson.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2**32, 2**32], "parameters": {"binary_data_size": 0}}]}
    )
    with pytest.raises(InvalidInput, match="do not hold"):
        decode_infer(head, len(head))


# -- MLflow parity: extra columns, tensors from frames ----------------------------------------------------------------


def test_tensor_models_take_frames_with_the_columns_as_the_last_axis() -> None:
    dec = Decoder(TENSOR)
    split = dec.decode_json(
        b'{"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": [[1, 2, 3, 4], [5, 6, 7, 8]]}}'
    )
    records = dec.decode_json(
        b'{"dataframe_records": [{"a": 1, "b": 2, "c": 3, "d": 4}, {"a": 5, "b": 6, "c": 7, "d": 8}]}'
    )
    unnamed = dec.decode_json(b'{"dataframe_split": {"data": [[1, 2, 3, 4], [5, 6, 7, 8]]}}')
    csv = dec.decode_csv(b"a,b,c,d\n1,2,3,4\n5,6,7,8\n")
    for out in (split, records, unnamed, csv):
        assert out.columns["input"].shape == (2, 4) and out.columns["input"].dtype == np.float64
        assert out.columns["input"].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]] and out.ignored == ()
    named = dec.decode_json(b'{"dataframe_split": {"columns": ["input"], "data": [[[1, 2, 3, 4]]]}}')
    assert named.columns["input"].tolist() == [[1, 2, 3, 4]]
    with pytest.raises(InvalidInput, match=r"per-row shape \[4\]"):
        dec.decode_json(b'{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}')
    with pytest.raises(InvalidInput, match="no value for column 'd'") as err:
        dec.decode_json(b'{"dataframe_records": [{"a": 1, "b": 2, "c": 3, "d": 4}, {"a": 5, "b": 6, "c": 7}]}')
    assert err.value.field == "dataframe_records[1].d"
    with pytest.raises(InvalidInput, match="numbers"):
        dec.decode_json(b'{"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": [[1, 2, 3, "4"]]}}')


def test_tensor_values_are_numbers_that_fit() -> None:
    sig = ModelSignature((ColumnSpec("input", "float", shape=(2,)),), is_tensor=True)
    for body in (b'{"inputs": [[1, "2"]]}', b'{"inputs": [[1, null]]}', b'{"inputs": [[1, true]]}'):
        with pytest.raises(InvalidInput, match="numbers"):
            Decoder(sig).decode_json(body)
    with pytest.raises(InvalidInput, match="out of range"):
        Decoder(sig).decode_json(b'{"inputs": [[1, 1e39]]}')


def test_duplicate_columns_are_refused_not_last_one_wins() -> None:
    with pytest.raises(InvalidInput, match="twice") as err:
        Decoder(SIG).decode_json(
            b'{"dataframe_split": {"columns": ["year", "product", "units", "units"], "data": [[1, "a", 1, 2]]}}'
        )
    assert err.value.field == "units"


# -- messages that do not grow with the input -------------------------------------------------------------------------


def _wide_split(n: int) -> bytes:
    cols = ["year", "product", "units"] + [f"junk_{i}" for i in range(n)]
    return orjson.dumps({"dataframe_split": {"columns": cols, "data": [[2025, "a", 1.0] + [0] * n]}})


@pytest.mark.parametrize(
    "body",
    [
        _wide_split(100_000),
        orjson.dumps({"dataframe_records": [{"year": 1, "product": "a"} | {f"c{i}": 0 for i in range(50_000)}]}),
        orjson.dumps({"dataframe_split": {"columns": [f"c{i}" for i in range(50_000)], "data": [[1]]}}),
        orjson.dumps({"data": [[1, "a", 1, None]], "params": {f"p{i}": 0 for i in range(50_000)}}),
        orjson.dumps({"data": [[1, "a", 1, None]]} | {f"k{i}": 0 for i in range(50_000)}),
        orjson.dumps({"inputs": {"x" * 1_000_000: [1]}}),
    ],
)  # fmt: skip
def test_error_messages_are_capped(body: bytes) -> None:
    with pytest.raises(InvalidInput) as err:
        Decoder(SIG, strict=True).decode_json(body)
    assert len(err.value.message) < 1500, err.value.message[:200]
    assert err.value.field is not None and len(err.value.field) < 200
    assert "more" in err.value.message or "..." in err.value.message


def test_columnar_and_v2_messages_are_capped() -> None:
    columns = {f"c{i}": np.zeros(1) for i in range(50_000)}
    with pytest.raises(InvalidInput) as err:
        Decoder(SIG).decode_columns(columns, strict=True)
    assert len(err.value.message) < 1500 and "and 49990 more" in err.value.message
    name = "n" * 1_000_000
    for request_ in (
        {"inputs": [{"name": name, "datatype": "NOPE", "shape": [1], "data": [1]}]},
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(range(1, 100_000)), "data": [1]}]},
        {"inputs": [{"name": "x", "datatype": "X" * 1_000_000, "shape": [1], "data": [1]}]},
    ):
        with pytest.raises(InvalidInput) as err:
            decode_infer(orjson.dumps(request_))
        assert len(err.value.message) < 1500 and len(err.value.field or "") < 200


def test_ignored_names_are_reported_capped_and_header_safe() -> None:
    out = Decoder(SIG).decode_json(_wide_split(100_000))
    assert out.rows == 1 and len(out.ignored) == 100_000
    prediction = Prediction("m", "1", np.zeros(1), OutputKind("regression"), ignored=out.ignored)
    text = prediction.ignored_text
    assert text is not None and len(text) < 700 and text.startswith("junk_0,junk_1,") and "(+99980 more)" in text
    odd = Prediction("m", "1", np.zeros(1), OutputKind("regression"), ignored=("a,b", "x\r\nSet-Cookie: 1", "é%"))
    assert odd.ignored_text == "a%2Cb,x%0D%0ASet-Cookie: 1,%C3%A9%25"
    assert odd.ignored_text.encode("latin-1")
    assert Prediction("m", "1", np.zeros(1), OutputKind("regression")).ignored_text is None


def test_params_of_the_wrong_type_are_400s() -> None:
    for value in ("3", 1.5, True, 2**63, None):
        body = orjson.dumps({"data": [[1, "a", 1, None]], "params": {"horizon": value}})
        if value is None:
            assert Decoder(SIG).decode_json(body).params == {}
            continue
        with pytest.raises(InvalidInput, match="param 'horizon' must be long"):
            Decoder(SIG).decode_json(body)


def test_nan_tokens_in_csv_are_nulls() -> None:
    out = Decoder(SIG).decode_csv(b"year,product,units,promo\n2025,a,1,NA\n2026,b,2,\n")
    assert out.columns["promo"].tolist() == [None, None]
    with pytest.raises(InvalidInput, match="null"):
        Decoder(SIG).decode_csv(b"year,product,units\n2025,a,nan\n")


def test_binary_bytes_tensor_lengths() -> None:
    raw = struct.pack("<I", 5) + b"ab"
    head = orjson.dumps(
        {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(raw)}}]}
    )
    with pytest.raises(InvalidInput, match="overruns"):
        decode_infer(head + raw, len(head))
