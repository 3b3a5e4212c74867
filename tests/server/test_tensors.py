"""Wire formats to numpy columns: Arrow IPC streams and Open Inference Protocol v2 (JSON and binary tensors)."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pyarrow as pa
import pytest

from server.errors import InvalidInput
from server.tensors import decode_infer, encode_infer, read_arrow_stream, v2_datatype


def _arrow(table: pa.Table, *, batches: int = 1) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for part in np.array_split(np.arange(table.num_rows), batches):
            writer.write_table(table.slice(int(part[0]), len(part)))
    return sink.getvalue().to_pybytes()


def test_arrow_stream_gives_typed_columns_across_batches() -> None:
    table = pa.table({"year": pa.array([2024, 2025, 2026], pa.int64()), "product": ["a", "b", "c"],
                      "units": pa.array([1.5, 2.5, 3.5], pa.float32())})  # fmt: skip
    cols = read_arrow_stream(_arrow(table, batches=2))
    assert list(cols) == ["year", "product", "units"]
    assert cols["year"].dtype == np.int64 and cols["year"].tolist() == [2024, 2025, 2026]
    assert cols["product"].dtype == object and cols["product"].tolist() == ["a", "b", "c"]
    assert cols["units"].dtype == np.float32


def test_arrow_nulls_become_none_and_dictionaries_are_decoded() -> None:
    table = pa.table({"x": pa.array([1.0, None]), "tag": pa.array(["a", "b"]).dictionary_encode()})
    cols = read_arrow_stream(_arrow(table))
    assert cols["x"].dtype == object and cols["x"].tolist() == [1.0, None]
    assert cols["tag"].tolist() == ["a", "b"]


def test_arrow_list_column_becomes_a_matrix() -> None:
    cols = read_arrow_stream(_arrow(pa.table({"v": pa.array([[1.0, 2.0], [3.0, 4.0]])})))
    assert cols["v"].shape == (2, 2)


def test_garbage_is_not_an_arrow_stream() -> None:
    with pytest.raises(InvalidInput, match="not an Arrow IPC stream") as err:
        read_arrow_stream(b"definitely not arrow")
    assert err.value.field == "body"


def test_v2_json_tensors_keep_declared_shape_and_type() -> None:
    body = orjson.dumps({"id": "r1", "inputs": [
        {"name": "year", "shape": [2, 1], "datatype": "INT64", "data": [2024, 2025]},
        {"name": "product", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
        {"name": "units", "shape": [2, 1], "datatype": "FP32", "data": [[1.5], [2.5]]},
    ], "outputs": [{"name": "predictions", "parameters": {"binary_data": True}}]})  # fmt: skip
    req = decode_infer(body)
    assert req.id == "r1"
    assert req.inputs["year"].dtype == np.int64 and req.inputs["year"].shape == (2, 1)
    assert req.inputs["product"].tolist() == ["a", "b"]
    assert req.inputs["units"].dtype == np.float32 and req.inputs["units"].ravel().tolist() == [1.5, 2.5]
    assert req.outputs == {"predictions": True}


def test_v2_binary_tensors_follow_the_json_header() -> None:
    year = np.array([2024, 2025], dtype="<i8")
    words = b"".join(struct.pack("<I", len(w)) + w for w in (b"ab", b"cde"))
    head = orjson.dumps({"inputs": [
        {"name": "year", "shape": [2, 1], "datatype": "INT64", "parameters": {"binary_data_size": 16}},
        {"name": "product", "shape": [2, 1], "datatype": "BYTES", "parameters": {"binary_data_size": len(words)}},
    ], "parameters": {"binary_data_output": True}})  # fmt: skip
    req = decode_infer(head + year.tobytes() + words, len(head))
    assert req.inputs["year"].ravel().tolist() == [2024, 2025]
    assert req.inputs["product"].ravel().tolist() == ["ab", "cde"]
    assert req.binary_output is True and req.outputs == {}


@pytest.mark.parametrize(
    ("inputs", "header", "tail", "message"),
    [
        ([{"name": "x", "shape": [2], "datatype": "FP9", "data": [1, 2]}], False, b"", "unknown datatype"),
        ([{"name": "x", "shape": "2", "datatype": "FP32", "data": [1, 2]}], False, b"", "shape must be"),
        ([{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}], False, b"", "shape"),
        ([{"name": "x", "shape": [2], "datatype": "INT64", "data": [1.5, 2]}], False, b"", "must be numbers"),
        ([{"name": "x", "shape": [1], "datatype": "BYTES", "data": [1]}], False, b"", "must be strings"),
        ([{"name": "x", "shape": [1], "datatype": "FP32", "data": [True]}], False, b"", "only BOOL"),
        ([{"name": "x", "shape": [1], "datatype": "BOOL", "data": [1]}], False, b"", "BOOL data must be"),
        ([{"name": "x", "shape": [2], "datatype": "FP32"}], False, b"", "neither 'data'"),
        ([{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}], True, b"\0" * 4,
         "overruns"),
        ([{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}], True, b"\0" * 4,
         "do not hold"),
        ([{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}], True, b"\0" * 6,
         "not claimed"),
        ([{"name": "x", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 4}}], True,
         struct.pack("<I", 9), "overruns its tensor"),
        ([], False, b"", "non-empty 'inputs'"),
    ],
)  # fmt: skip
def test_v2_bad_requests_name_the_input(inputs: list, header: bool, tail: bytes, message: str) -> None:
    head = orjson.dumps({"inputs": inputs})
    with pytest.raises(InvalidInput, match=message):
        decode_infer(head + tail, len(head) if header else None)


def test_v2_header_length_outside_the_body() -> None:
    with pytest.raises(InvalidInput, match="outside") as err:
        decode_infer(b"{}", 10)
    assert err.value.field == "Inference-Header-Content-Length"


def test_encode_infer_json_and_binary_outputs() -> None:
    preds = np.array([1.5, 2.5], dtype=np.float32)
    labels = np.array(["yes", "no"], dtype=object)
    body, head = encode_infer("m", "3", "r1", {"predictions": preds, "label": labels}, set())
    assert head is None
    out = orjson.loads(body)
    assert out["model_name"] == "m" and out["model_version"] == "3" and out["id"] == "r1"
    assert out["outputs"][0] == {"name": "predictions", "datatype": "FP32", "shape": [2], "data": [1.5, 2.5]}
    assert out["outputs"][1]["datatype"] == "BYTES" and out["outputs"][1]["data"] == ["yes", "no"]

    body, head = encode_infer("m", "3", None, {"predictions": preds, "label": labels}, {"predictions", "label"})
    assert head is not None
    meta = orjson.loads(body[:head])
    sizes = [o["parameters"]["binary_data_size"] for o in meta["outputs"]]
    assert "id" not in meta and sizes == [8, 4 + 3 + 4 + 2]
    raw = body[head:]
    assert np.frombuffer(raw[:8], dtype="<f4").tolist() == [1.5, 2.5]
    assert raw[8:] == struct.pack("<I", 3) + b"yes" + struct.pack("<I", 2) + b"no"


def test_v2_datatypes() -> None:
    assert v2_datatype(np.dtype(np.int64)) == "INT64"
    assert v2_datatype(np.dtype(np.float16)) == "FP16"
    assert v2_datatype(np.dtype(np.bool_)) == "BOOL"
    assert v2_datatype(np.dtype(object)) == "BYTES"
    with pytest.raises(InvalidInput):
        v2_datatype(np.dtype(np.complex64))
