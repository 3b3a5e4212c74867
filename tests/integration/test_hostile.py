"""Hostile and odd input over real HTTP: a 4xx with a bounded MLflow-style error body, or the right answer.

Never a 500, never a wrong 200, and the server keeps serving. The corpus covers every content type (JSON, CSV,
Arrow IPC, v2 JSON and binary tensors) and route family (MLflow invocations, single-model ``/invocations``, v2
``infer``, Databricks serving endpoints), written out by hand where a finding named the case and generated with
hypothesis (derandomized, bounded) around it. A 200 is checked against the original MLflow pyfunc on the same rows.
"""

from __future__ import annotations

import csv
import io
import json
import math
import struct
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import mlflow
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import DemoRegistry, LiveServer

pytestmark = pytest.mark.integration

DEMO = ("sales_forecast", "fraud_detector", "customer_propensity", "customer_ltv")
ARROW = "application/vnd.apache.arrow.stream"
JSON = "application/json"
CSV = "text/csv"
HEADER_LENGTH = "Inference-Header-Content-Length"
#: The largest error body any refusal may have: messages are capped, whatever the input.
MAX_ERROR_BYTES = 4096
HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_PANDAS = {"long": "int64", "integer": "int32", "double": "float64", "float": "float32", "string": "object",
           "boolean": "bool"}  # fmt: skip
_ARROW = {"long": pa.int64(), "integer": pa.int32(), "double": pa.float64(), "float": pa.float32(),
          "string": pa.string(), "boolean": pa.bool_()}  # fmt: skip
_V2 = {"long": "INT64", "integer": "INT32", "double": "FP64", "float": "FP32", "string": "BYTES", "boolean": "BOOL"}
_INT_RANGE = {"long": (-(2**63), 2**63 - 1), "integer": (-(2**31), 2**31 - 1)}


# -- fixtures ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    with live_server.client() as c:
        yield c
        assert c.get("/ping").status_code == 200  # alive after everything below
        ok = c.post("/model/sales_forecast/champion/invocations", json={"data": [[2025, "product_A", 100]]})
        assert ok.status_code == 200


@pytest.fixture(scope="module")
def cards(client: httpx.Client) -> dict[str, dict[str, Any]]:
    return {name: client.get(f"/models/{name}/champion").json() for name in DEMO}


@pytest.fixture(scope="module")
def columns(cards: dict[str, dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    """Model → [(column, type)] in signature order."""
    return {name: [(c["name"], c["type"]) for c in card["signature"]["inputs"]] for name, card in cards.items()}


Oracle = Callable[[str, list[dict[str, Any]]], np.ndarray]


@pytest.fixture(scope="module")
def pyfunc(demo_registry: DemoRegistry, columns: dict[str, list[tuple[str, str]]]) -> Oracle:
    """What the original MLflow pyfunc predicts for rows (``mlflow models serve`` answers this)."""
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(demo_registry.tracking_uri)
    mlflow.set_registry_uri(demo_registry.tracking_uri)
    try:
        models = {name: mlflow.pyfunc.load_model(f"models:/{name}@champion") for name in DEMO}
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])

    def predict(name: str, rows: list[dict[str, Any]]) -> np.ndarray:
        frame = pd.DataFrame(
            {c: pd.Series([r[c] for r in rows], dtype=_PANDAS[t]) for c, t in columns[name]}  # type: ignore[call-overload]
        )
        return np.asarray(models[name].predict(frame))

    return predict


# -- checks -----------------------------------------------------------------------------------------------------------


def refused(r: httpx.Response, *, field: str | None = None) -> dict[str, Any]:
    """A client error with an MLflow-style body (v2 adds ``error``), bounded in size, naming ``field`` if given."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:500])
    assert len(r.content) <= MAX_ERROR_BYTES, f"{len(r.content)}-byte error body: {r.text[:300]}"
    body = r.json()
    assert isinstance(body.get("error_code"), str) and body["error_code"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert "Traceback" not in r.text
    if r.status_code == 400:
        assert isinstance(body.get("field"), str) and body["field"], body
    if field is not None:
        assert body.get("field") == field, body
    return body


def answered(r: httpx.Response) -> np.ndarray:
    """The predictions of a 200, from either protocol."""
    assert r.status_code == 200, r.text[:500]
    if r.headers.get("content-type", "").startswith("application/octet-stream"):
        length = int(r.headers[HEADER_LENGTH.lower()])
        meta, offset = orjson.loads(r.content[:length]), length
        for out in meta["outputs"]:
            size = out["parameters"]["binary_data_size"]
            if out["name"] == "predictions":
                dtype = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8"}[out["datatype"]]
                return np.frombuffer(r.content[offset : offset + size], dtype=dtype).reshape(out["shape"])
            offset += size
        raise AssertionError("no predictions output")
    body = r.json()
    if "outputs" in body:
        out = next(o for o in body["outputs"] if o["name"] == "predictions")
        return np.asarray(out["data"]).reshape(out["shape"])
    return np.asarray(body["predictions"])


def same(got: np.ndarray, expected: np.ndarray) -> None:
    """ONNX (float32) against the pyfunc (float64), with the parity check's tolerances scaled to the output: a tree
    ensemble summed in float32 is off by ~1e-4 of its typical output even where one prediction is near zero."""
    scale = max(1.0, float(np.abs(expected).max()), 1000.0 if expected.ndim == 1 else 1.0)
    np.testing.assert_allclose(
        got.astype(np.float64).reshape(expected.shape), expected.astype(np.float64), rtol=1e-4, atol=1e-4 * scale
    )


def outcome(r: httpx.Response) -> str:
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code == 200:
        return "200"
    refused(r)
    return "4xx"


# -- bodies -----------------------------------------------------------------------------------------------------------


def _csv(cols: list[str], rows: list[list[Any]], *, end: str = "\n", index: bool = False, bom: bool = False) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=end)
    writer.writerow(([""] if index else []) + cols)
    writer.writerows(([i] if index else []) + row for i, row in enumerate(rows))
    return (b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode()


def _arrow(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _v2_binary(inputs: list[tuple[str, str, list[Any]]]) -> tuple[bytes, int]:
    specs, blobs = [], []
    for name, datatype, values in inputs:
        if datatype == "BYTES":
            raw = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
        else:
            raw = np.asarray(values, dtype={"INT64": "<i8", "FP64": "<f8", "INT32": "<i4"}[datatype]).tobytes()
        specs.append({"name": name, "datatype": datatype, "shape": [len(values), 1],
                      "parameters": {"binary_data_size": len(raw)}})  # fmt: skip
        blobs.append(raw)
    head = orjson.dumps({"inputs": specs, "parameters": {"binary_data_output": True}})
    return head + b"".join(blobs), len(head)


FORMATS = ("split", "records", "instances", "inputs", "data", "csv", "csv_cr", "csv_pandas", "arrow", "v2", "v2_bin")


def send(
    client: httpx.Client, name: str, cols: list[tuple[str, str]], rows: list[dict[str, Any]], fmt: str
) -> httpx.Response:
    """Score ``rows`` (valid values) with model ``name`` in body format ``fmt``."""
    names = [c for c, _ in cols]
    matrix = [[r[c] for c in names] for r in rows]
    url = f"/model/{name}/champion/invocations"
    if fmt in ("split", "records", "instances", "inputs", "data"):
        body = {
            "split": {"dataframe_split": {"columns": names, "data": matrix}},
            "records": {"dataframe_records": rows},
            "instances": {"instances": rows},
            "inputs": {"inputs": {c: [r[c] for r in rows] for c in names}},
            "data": {"data": matrix},
        }[fmt]
        return client.post(url, content=orjson.dumps(body), headers={"Content-Type": JSON})
    if fmt == "csv":
        return client.post(url, content=_csv(names, matrix), headers={"Content-Type": CSV})
    if fmt == "csv_cr":
        return client.post(url, content=_csv(names, matrix, end="\r", bom=True), headers={"Content-Type": CSV})
    if fmt == "csv_pandas":
        frame = pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=_PANDAS[t]) for c, t in cols})  # type: ignore[call-overload]
        return client.post(url, content=frame.to_csv().encode(), headers={"Content-Type": CSV})
    if fmt == "arrow":
        table = pa.table({c: pa.array([r[c] for r in rows], type=_ARROW[t]) for c, t in cols})
        return client.post(url, content=_arrow(table), headers={"Content-Type": ARROW})
    v2 = [(c, _V2[t], [r[c] for r in rows]) for c, t in cols]
    if fmt == "v2":
        inputs = [{"name": c, "datatype": d, "shape": [len(v), 1], "data": v} for c, d, v in v2]
        return client.post(f"/v2/models/{name}/infer", content=orjson.dumps({"inputs": inputs}))
    body, head = _v2_binary(v2)
    return client.post(
        f"/v2/models/{name}/versions/champion/infer",
        content=body,
        headers={"Content-Type": "application/octet-stream", HEADER_LENGTH: str(head)},
    )


# -- strategies -------------------------------------------------------------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


def _value(kind: str, categories: list[str]) -> st.SearchStrategy[Any]:
    """A valid value of an MLflow column type, in ranges where float32 (ONNX) and float64 (pyfunc) agree."""
    if kind in ("long", "integer"):
        return st.integers(-(10**6), 10**6)
    if kind in ("double", "float"):
        return st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)
    if kind == "boolean":
        return st.booleans()
    return st.sampled_from(categories) | _TEXT.map(str.strip).filter(bool)


def _rows(cols: list[tuple[str, str]], categories: dict[str, list[str]]) -> st.SearchStrategy[list[dict[str, Any]]]:
    row = st.fixed_dictionaries({c: _value(t, categories.get(c, ["x"])) for c, t in cols})
    return st.lists(row, min_size=1, max_size=5)


def _categories(card: dict[str, Any]) -> dict[str, list[str]]:
    return {c["name"]: [str(v) for v in c.get("categories") or ["a"]] for c in card["signature"]["inputs"]}


#: Any JSON value (what a hostile client may put where a column value belongs).
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)


def valid(kind: str, value: Any) -> bool:
    """Whether a JSON value is a value of the column type that modelport must score (and MLflow would)."""
    if kind in _INT_RANGE:
        lo, hi = _INT_RANGE[kind]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if isinstance(value, float):
            return math.isfinite(value) and value.is_integer() and abs(value) <= 2**53 and lo <= value <= hi
        return lo <= value <= hi
    if kind in ("double", "float"):  # the demo ONNX graphs take float32 (so does scikit-learn's tree code)
        limit = 3.4028234663852886e38
        return not isinstance(value, bool) and isinstance(value, int | float) and -limit <= value <= limit
    if kind == "boolean":
        return isinstance(value, bool)
    return isinstance(value, str)


# -- generated: valid rows in every format get the pyfunc's answer ----------------------------------------------------


@pytest.mark.parametrize("name", DEMO)
def test_valid_rows_in_every_format_get_the_pyfunc_answer(
    client: httpx.Client, cards: dict[str, Any], columns: dict[str, Any], pyfunc: Oracle, name: str
) -> None:
    cols = columns[name]

    @HYPOTHESIS
    @given(rows=_rows(cols, _categories(cards[name])), fmt=st.sampled_from(FORMATS))
    def check(rows: list[dict[str, Any]], fmt: str) -> None:
        same(answered(send(client, name, cols, rows, fmt)), pyfunc(name, rows))

    check()


# -- generated: one hostile value in an otherwise valid row -----------------------------------------------------------


@pytest.mark.parametrize("name", DEMO)
def test_a_hostile_value_is_refused_naming_its_column_or_scored_right(
    client: httpx.Client, cards: dict[str, Any], columns: dict[str, Any], pyfunc: Oracle, name: str
) -> None:
    cols = columns[name]
    example = dict(cards[name]["input_example"][0])

    @settings(HYPOTHESIS, max_examples=60)
    @given(column=st.sampled_from([c for c, _ in cols]), value=JSON_VALUES, shape=st.sampled_from(["records", "split"]))
    def check(column: str, value: Any, shape: str) -> None:
        row = example | {column: value}
        if shape == "records":
            body = {"dataframe_records": [row]}
        else:
            names = [c for c, _ in cols]
            body = {"dataframe_split": {"columns": names, "data": [[row[c] for c in names]]}}
        r = client.post(f"/model/{name}/champion/invocations", content=json.dumps(body).encode())
        kind = dict(cols)[column]
        if valid(kind, value):
            same(answered(r), pyfunc(name, [row]))
        else:  # (an integer too long for a double is not even JSON to orjson: the body is refused)
            assert refused(r)["field"] in (column, "body")

    check()


# -- generated: garbage of every content type -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/model/sales_forecast/champion/invocations", JSON),
        ("/model/sales_forecast/champion/invocations", CSV),
        ("/model/fraud_detector/champion/invocations", ARROW),
        ("/v2/models/customer_ltv/infer", JSON),
        ("/v2/models/customer_propensity/infer", "application/octet-stream"),
    ],
)
def test_random_bytes_are_refused(client: httpx.Client, path: str, content_type: str) -> None:
    @HYPOTHESIS
    @given(body=st.binary(max_size=200) | _TEXT.map(str.encode))
    def check(body: bytes) -> None:
        headers = {"Content-Type": content_type}
        if content_type == "application/octet-stream":
            headers[HEADER_LENGTH] = str(len(body) // 2)
        refused(client.post(path, content=body, headers=headers))

    check()


def test_random_json_documents_never_500(client: httpx.Client) -> None:
    documents = st.dictionaries(
        st.sampled_from(["dataframe_split", "dataframe_records", "instances", "inputs", "data", "params", "x"]),
        JSON_VALUES,
        max_size=3,
    )

    @settings(HYPOTHESIS, max_examples=80)
    @given(document=documents, name=st.sampled_from(DEMO))
    def check(document: dict[str, Any], name: str) -> None:
        outcome(client.post(f"/model/{name}/champion/invocations", content=json.dumps(document).encode()))

    check()


def test_random_csv_never_500(client: httpx.Client, columns: dict[str, Any]) -> None:
    names = [c for c, _ in columns["sales_forecast"]]
    cell = _TEXT | st.sampled_from(["True", "nan", "", " 1 ", "1e39", "-9223372036854775809", '"', "\x00", "\r"])

    @settings(HYPOTHESIS, max_examples=80)
    @given(
        header=st.lists(st.sampled_from([*names, "", "x", " year "]), min_size=1, max_size=5),
        cells=st.lists(st.lists(cell, min_size=1, max_size=5), min_size=1, max_size=4),
        end=st.sampled_from(["\n", "\r\n", "\r"]),
    )
    def check(header: list[str], cells: list[list[str]], end: str) -> None:
        body = end.join(",".join(row) for row in [header, *cells]).encode()
        outcome(client.post("/model/sales_forecast/champion/invocations", content=body, headers={"Content-Type": CSV}))

    check()


def test_random_v2_requests_never_500(client: httpx.Client) -> None:
    tensor = st.fixed_dictionaries(
        {
            "name": st.sampled_from(["amount", "hour_of_day", "x", ""]),
            "datatype": st.sampled_from(["INT64", "FP64", "FP32", "UINT64", "INT8", "BOOL", "BYTES", "FP16", "X"]),
            "shape": st.lists(st.integers(-1, 3), max_size=3) | JSON_VALUES,
        },
        optional={"data": JSON_VALUES, "parameters": JSON_VALUES},
    )
    request_ = st.fixed_dictionaries(
        {"inputs": st.lists(tensor, max_size=3) | JSON_VALUES}, optional={"outputs": JSON_VALUES, "id": JSON_VALUES}
    )

    @settings(HYPOTHESIS, max_examples=80)
    @given(document=request_)
    def check(document: dict[str, Any]) -> None:
        outcome(client.post("/v2/models/fraud_detector/infer", content=json.dumps(document).encode()))

    check()


# -- the hand-written corpus ------------------------------------------------------------------------------------------

SALES = "/model/sales_forecast/champion/invocations"
OK_ROW = [2025, "product_A", 100.0]


def _deep(n: int) -> bytes:
    return b'{"data": ' + b"[" * n + b"]" * n + b"}"


def _wide(n: int) -> bytes:
    cols = ["year", "product", "units"] + [f"c{i}" for i in range(n)]
    return orjson.dumps({"dataframe_split": {"columns": cols, "data": [[*OK_ROW, *range(n)]]}})


# (body, content type) pairs every scoring route must refuse with a bounded 4xx.
JSON_BODIES: list[bytes] = [
    b"", b"{", b"[]", b"null", b"1", b'"x"', b"{}", b"\xff\xfe\x00", b'{"data": NaN}', b'{"data": Infinity}',
    b'{"data": [[1e400, "product_A", 1]]}', b'{"data": [["\\ud800", "product_A", 1]]}', _deep(3000), _deep(70),
    b'{"data": 5}', b'{"data": [1, 2]}', b'{"data": [[2025, "product_A", 1, 2]]}', b'{"data": [[]]}',
    b'{"data": [[2025, "product_A", 1]], "inputs": []}', b'{"params": {}}', b'{"x": 1}', b'{"data": null}',
    b'{"dataframe_split": []}', b'{"dataframe_split": {"columns": 5, "data": []}}',
    b'{"dataframe_split": {"columns": [null, 1, [], {}], "data": [[1, 2, 3, 4]]}}',
    b'{"dataframe_split": {"columns": ["year", "year", "units"], "data": [[1, 2, 3]]}}',
    b'{"dataframe_split": {"columns": ["year", "product", "units"], "data": [[1, "a"]]}}',
    b'{"dataframe_split": {"columns": ["year", "product", "units"], "data": "rows"}}',
    b'{"dataframe_records": {}}', b'{"dataframe_records": [null]}', b'{"dataframe_records": [[1, 2, 3]]}',
    b'{"dataframe_records": []}', b'{"instances": "x"}', b'{"instances": [1, 2]}',
    b'{"inputs": {"year": {"a": 1}}}', b'{"inputs": {"year": [1, 2], "product": ["a"], "units": [1, 2]}}',
    b'{"data": [[2025, "product_A", 1]], "params": []}', b'{"data": [[2025, "product_A", 1]], "params": "x"}',
    b'{"data": [[true, "product_A", 1]]}', b'{"data": [[2025, true, 1]]}', b'{"data": [[2025, "product_A", false]]}',
    b'{"data": [[2025.5, "product_A", 1]]}', b'{"data": [["2025", "product_A", 1]]}',
    b'{"data": [[2025, ["product_A"], 1]]}', b'{"data": [[2025, {"p": 1}, 1]]}', b'{"data": [[2025, null, 1]]}',
    b'{"data": [[9223372036854775808, "product_A", 1]]}', b'{"data": [[-9223372036854775809, "product_A", 1]]}',
    b'{"data": [[18446744073709551615, "product_A", 1]]}', b'{"data": [[1e300, "product_A", 1]]}',
    b'{"data": [[2025, "product_A", ' + b"9" * 400 + b"]]}",
    b'{"data": [' + b",".join([b'[2025, "product_A", [1, 2]]'] * 20) + b"]}",
    b'{"data": [' + b",".join([b'[2025, "product_A", 1]'] * 19 + [b'[2025, "product_A", true]']) + b"]}",
    b'{"data": [' + b",".join([b'[2025, "product_A", 1]'] * 19 + [b'[18446744073709551615, "product_A", 1]']) + b"]}",
    orjson.dumps({"dataframe_split": {"columns": [f"c{i}" for i in range(60_000)], "data": [[1]]}}),
    orjson.dumps({"dataframe_records": [{f"c{i}": 0 for i in range(40_000)}]}),
    orjson.dumps({"data": [[2025, "product_A", 1]] * 5001}),
    orjson.dumps({"inputs": {"y" * 500_000: [1]}}),
]  # fmt: skip
CSV_BODIES: list[bytes] = [
    b"", b"\n\n", b"\xff\xfe", b"year,product,units\n", b"year,product,units\n2025,product_A\n",
    b"year,product,units\n2025,product_A,1,2\n", b'year,product,units\n2025,"product_A,1\n',
    b"year,product,units\nsoon,product_A,1\n", b"year,product,units\n2025,product_A,many\n",
    b"year,product,units\n2025,,1\n", b"year,product,units\n2025,product_A,\n",
    b"year,product,units\n2025,product_A,nan\n",
    b"year,product,units\n2025,product_A,inf\n", b"year,product,units\n2025.5,product_A,1\n",
    b"year,product,units\n9223372036854775808,product_A,1\n", b"year,product,units\n1_000,product_A,1\n",
    b"year,product,units\n2025,product_A,1e400\n", b"year,year,units\n1,2,3\n", b"year\tproduct\tunits\n2025\ta\t1\n",
    b"year,product\n2025,product_A\n", b"a,b,c\n1,2,3\n", b"year,product,units\n2025,product_A,\x001\n",
    b"year,product,units\n" + b"2025,product_A,1\n" * 5001,
    b",".join(b"c%d" % i for i in range(60_000)) + b"\n" + b",".join([b"1"] * 60_000) + b"\n",
]  # fmt: skip


@pytest.mark.parametrize("body", JSON_BODIES, ids=range(len(JSON_BODIES)))
@pytest.mark.parametrize("path", [SALES, "/invocations", "/serving-endpoints/nope/invocations"])
def test_hostile_json_is_a_bounded_4xx(client: httpx.Client, path: str, body: bytes) -> None:
    refused(client.post(path, content=body, headers={"Content-Type": JSON}))


@pytest.mark.parametrize("body", CSV_BODIES, ids=range(len(CSV_BODIES)))
def test_hostile_csv_is_a_bounded_4xx(client: httpx.Client, body: bytes) -> None:
    refused(client.post(SALES, content=body, headers={"Content-Type": CSV}))


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml",
     "application/json\r\nX-Evil: 1", "ü/ü"],
)  # fmt: skip
def test_unsupported_content_types_are_415(client: httpx.Client, content_type: str) -> None:
    try:
        r = client.post(SALES, content=b'{"data": [[2025, "product_A", 1]]}', headers={"Content-Type": content_type})
    except (httpx.LocalProtocolError, UnicodeEncodeError):
        return  # the client itself refuses to send it
    assert r.status_code == 415
    refused(r, field="Content-Type")


def _arrow_cases() -> list[tuple[str, bytes]]:
    good = pa.table({"year": pa.array([2025], pa.int64()), "product": ["product_A"], "units": [1.0]})
    body = _arrow(good)
    swap = {
        "uint64 max": pa.table({"year": pa.array([2**64 - 1], pa.uint64()), "product": ["a"], "units": [1.0]}),
        "int64 to float": pa.table({"year": [2025], "product": ["a"], "units": pa.array([2**62], pa.int64())}),
        "string year": pa.table({"year": ["2025"], "product": ["a"], "units": [1.0]}),
        "timestamp year": pa.table({"year": pa.array([0], pa.timestamp("ns")), "product": ["a"], "units": [1.0]}),
        "bool units": pa.table({"year": [2025], "product": ["a"], "units": [True]}),
        "null units": pa.table({"year": [2025], "product": ["a"], "units": pa.array([None], pa.float64())}),
        "nan units": pa.table({"year": [2025], "product": ["a"], "units": [math.nan]}),
        "inf units": pa.table({"year": [2025], "product": ["a"], "units": [math.inf]}),
        "struct product": pa.table({"year": [2025], "product": [{"a": 1}], "units": [1.0]}),
        "list units": pa.table({"year": [2025], "product": ["a"], "units": [[1.0, 2.0]]}),
        "ragged units": pa.table({"year": [1, 2], "product": ["a", "b"], "units": [[1.0], [1.0, 2.0]]}),
        "binary product": pa.table({"year": [2025], "product": [b"\xff"], "units": [1.0]}),
        "decimal units": pa.table({"year": [2025], "product": ["a"], "units": pa.array([1], pa.decimal128(5, 2))}),
        "no rows": pa.table({"year": pa.array([], pa.int64()), "product": pa.array([], pa.string()),
                             "units": pa.array([], pa.float64())}),
        "no columns": pa.table({}),
        "missing units": pa.table({"year": [2025], "product": ["a"]}),
        "float year": pa.table({"year": [2025.5], "product": ["a"], "units": [1.0]}),
        "huge float year": pa.table({"year": [1e300], "product": ["a"], "units": [1.0]}),
        "date units": pa.table({"year": [2025], "product": ["a"], "units": pa.array([0], pa.date32())}),
        "duration units": pa.table({"year": [2025], "product": ["a"], "units": pa.array([1], pa.duration("s"))}),
    }  # fmt: skip
    cases = [(k, _arrow(v)) for k, v in swap.items()]
    twice = pa.Table.from_arrays([pa.array([2025]), pa.array(["a"]), pa.array([1.0]), pa.array([1.0])],
                                 names=["year", "product", "units", "units"])  # fmt: skip
    cases += [("duplicate field", _arrow(twice)), ("truncated", body[: len(body) // 2]), ("garbage", b"\x00" * 64),
              ("empty", b""), ("json", b'{"data": [[2025, "product_A", 1]]}'),
              ("trailing junk", body + b"junk")]  # fmt: skip
    return cases


ARROW_CASES = _arrow_cases()


@pytest.mark.parametrize(("case", "body"), ARROW_CASES, ids=[c for c, _ in ARROW_CASES])
def test_hostile_arrow_is_refused_or_scored_right(client: httpx.Client, pyfunc: Oracle, case: str, body: bytes) -> None:
    r = client.post(SALES, content=body, headers={"Content-Type": ARROW})
    if case == "int64 to float":  # a valid double: scored like pyfunc
        same(answered(r), pyfunc("sales_forecast", [{"year": 2025, "product": "a", "units": float(2**62)}]))
    elif case == "trailing junk" and r.status_code == 200:  # pyarrow stops at the end-of-stream marker
        same(answered(r), pyfunc("sales_forecast", [{"year": 2025, "product": "product_A", "units": 1.0}]))
    else:
        refused(r)


def _v2(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": inputs} | extra)


FRAUD = [("amount", "FP64", 249.9), ("hour_of_day", "INT64", 3), ("distance_from_home_km", "FP64", 120.0),
         ("transactions_last_24h", "INT64", 6), ("merchant_risk_score", "FP64", 0.8),
         ("is_foreign", "INT64", 1)]  # fmt: skip


def _fraud(**override: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, datatype, value in FRAUD:
        spec = {"name": name, "datatype": datatype, "shape": [1, 1], "data": [value]}
        out.append(spec | override.get(name, {}))
    return out


V2_JSON: list[bytes] = [
    b"", b"{", b"[]", b"{}", b'{"inputs": []}', b'{"inputs": {}}', b'{"inputs": [1]}', b'{"inputs": [{}]}',
    _v2([{"name": "amount"}]), _v2(_fraud(amount={"datatype": "NOPE"})), _v2(_fraud(amount={"datatype": None})),
    _v2(_fraud(amount={"shape": [2, 1]})), _v2(_fraud(amount={"shape": []})), _v2(_fraud(amount={"shape": "1"})),
    _v2(_fraud(amount={"shape": [-1, 1]})), _v2(_fraud(amount={"shape": [2**40, 2**40]})),
    _v2(_fraud(amount={"shape": list(range(1, 60_000))})), _v2(_fraud(amount={"name": "n" * 300_000})),
    _v2(_fraud(amount={"data": ["a"]})), _v2(_fraud(amount={"data": [[1, [2]]]})),
    _v2(_fraud(amount={"data": [True]})), _v2(_fraud(amount={"data": [None]})),
    _v2(_fraud(amount={"datatype": "FP32", "data": [1e39]})), _v2(_fraud(amount={"datatype": "FP16", "data": [1e6]})),
    _v2(_fraud(hour_of_day={"data": [1.5]})), _v2(_fraud(hour_of_day={"data": [2**63]})),
    _v2(_fraud(hour_of_day={"datatype": "UINT64", "data": [2**64 - 1]})),
    _v2(_fraud(hour_of_day={"datatype": "INT8", "data": [300]})),
    _v2(_fraud(hour_of_day={"datatype": "BYTES", "data": ["3"]})),
    _v2(_fraud(hour_of_day={"datatype": "BOOL", "data": [True]})),
    _v2(_fraud(amount={"parameters": []})), _v2(_fraud(amount={"parameters": {"binary_data_size": 8}})),
    _v2(_fraud(amount={"parameters": {"binary_data_size": -1}})), _v2(_fraud(), parameters="x"),
    _v2(_fraud(), outputs=5), _v2(_fraud(), outputs=[{"name": "nope"}]), _v2(_fraud(), outputs=[1]),
    _v2(_fraud(), outputs=[{"name": "predictions", "parameters": 1}]), _v2(_fraud(), id={"a": 1}),
    _v2([*_fraud(), {"name": "amount", "datatype": "FP64", "shape": [1, 1], "data": [1.0]}]),
    _v2([*_fraud(), {"name": "extra", "datatype": "FP64", "shape": [1, 1], "data": [1.0]}]),
    _v2(_fraud()[1:]),
]  # fmt: skip


@pytest.mark.parametrize("body", V2_JSON, ids=range(len(V2_JSON)))
@pytest.mark.parametrize(
    "path", ["/v2/models/fraud_detector/infer", "/v2/models/fraud_detector/versions/champion/infer"]
)
def test_hostile_v2_json_is_a_bounded_4xx(client: httpx.Client, path: str, body: bytes) -> None:
    refused(client.post(path, content=body))


def _v2_binary_cases() -> list[tuple[str, bytes, str]]:
    body, head = _v2_binary([(n, d, [v]) for n, d, v in FRAUD])
    spec = {"name": "s", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}
    bytes_head = orjson.dumps({"inputs": [spec]})
    wrap = orjson.dumps({"inputs": [{"name": "amount", "datatype": "FP64", "shape": [2**32, 2**32],
                                     "parameters": {"binary_data_size": 0}}]})  # fmt: skip
    return [
        ("length past the body", body, str(len(body) + 1)),
        ("length zero", body, "0"),
        ("length not a number", body, "ten"),
        ("length negative", body, "-1"),
        ("length inside the binary", body, str(head + 3)),
        ("unclaimed bytes", body + b"\x00" * 8, str(head)),
        ("missing bytes", body[:-4], str(head)),
        ("truncated BYTES prefix", bytes_head + b"\x05\x00", str(len(bytes_head))),
        ("BYTES overrun", bytes_head + struct.pack("<I", 9) + b"ab", str(len(bytes_head))),
        ("shape product wraps around", wrap, str(len(wrap))),
        ("NaN amount", _v2_binary([(n, d, [math.nan if n == "amount" else v]) for n, d, v in FRAUD])[0], str(head)),
        ("inf amount", _v2_binary([(n, d, [math.inf if n == "amount" else v]) for n, d, v in FRAUD])[0], str(head)),
    ]


V2_BINARY = _v2_binary_cases()


@pytest.mark.parametrize(("case", "body", "length"), V2_BINARY, ids=[c for c, _, _ in V2_BINARY])
def test_hostile_v2_binary_is_a_bounded_4xx(client: httpx.Client, case: str, body: bytes, length: str) -> None:
    r = client.post(
        "/v2/models/fraud_detector/infer",
        content=body,
        headers={"Content-Type": "application/octet-stream", HEADER_LENGTH: length},
    )
    refused(r)


def test_v2_header_length_in_non_ascii_digits_is_a_400(client: httpx.Client) -> None:
    body, _ = _v2_binary([(n, d, [v]) for n, d, v in FRAUD])
    r = client.post(
        "/v2/models/fraud_detector/infer",
        content=body,
        headers={"Content-Type": "application/octet-stream", HEADER_LENGTH: "²".encode()},  # bytes: sent as they are
    )
    refused(r)


def test_v2_unknown_outputs_message_is_bounded(client: httpx.Client) -> None:
    outputs = [{"name": f"{i}" * 1000} for i in range(10)]
    refused(client.post("/v2/models/fraud_detector/infer", content=_v2(_fraud(), outputs=outputs)))


@pytest.mark.parametrize(
    "path",
    ["/model/" + "m" * 20_000 + "/1/invocations", "/model/sales_forecast/" + "v" * 20_000 + "/invocations",
     "/v2/models/" + "m" * 20_000 + "/infer", "/v2/models/fraud_detector/versions/" + "9" * 20_000 + "/infer",
     "/model/%00%ff/1/invocations", "/v2/models/" + "m" * 20_000],
)  # fmt: skip
def test_unknown_models_and_versions_are_bounded_404s(client: httpx.Client, path: str) -> None:
    if path.endswith("/infer"):
        r = client.post(path, content=_v2(_fraud()))
    elif path.endswith("/invocations"):
        r = client.post(path, content=b'{"data": [[2025, "product_A", 1]]}')
    else:
        r = client.get(path)
    assert r.status_code == 404
    refused(r)


# -- the findings, end to end -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"year,product,units\r2025,product_A,100\r2026,product_B,2.5\r",
        b"year,product,units\n2025,product_A,100\r2026,product_B,2.5\n",
        b"\xef\xbb\xbfyear,product,units\r\n2025,product_A,100\r\n2026,product_B,2.5\r\n",
        b"year, product, units\n2025, product_A, 100\n2026 , product_B ,2.5\n",
        b",year,product,units\n0,2025,product_A,100\n1,2026,product_B,2.5\n",
    ],
)
def test_csv_like_mlflow_reads_it(client: httpx.Client, pyfunc: Oracle, body: bytes) -> None:
    rows = [
        {"year": 2025, "product": "product_A", "units": 100.0},
        {"year": 2026, "product": "product_B", "units": 2.5},
    ]
    same(answered(client.post(SALES, content=body, headers={"Content-Type": CSV})), pyfunc("sales_forecast", rows))


def test_csv_fields_past_the_csv_module_default_are_read(client: httpx.Client, pyfunc: Oracle) -> None:
    product = "p" * 200_000
    body = f"year,product,units\n2025,{product},100\n".encode()
    r = client.post(SALES, content=body, headers={"Content-Type": CSV})
    same(answered(r), pyfunc("sales_forecast", [{"year": 2025, "product": product, "units": 100.0}]))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"dataframe_records": [{"year": -9223372036854775809, "product": "product_A", "units": 1}]}', "year"),
        (b'{"dataframe_records": [{"year": 2025, "product": "product_A", "units": 1e309}]}', "body"),
        (b'{"inputs": {"year": [2025], "product": ["product_A"], "units": [1e308]}}', "units"),  # float32 graph
        (b'{"inputs": {"year": [2025], "product": ["product_A"], "units": [1e39]}}', "units"),
        (b'{"dataframe_records": [{"year": 18446744073709551615, "product": "product_A", "units": 1}]}', "year"),
    ],
)
def test_values_that_do_not_fit_are_refused(client: httpx.Client, body: bytes, field: str) -> None:
    refused(client.post(SALES, content=body, headers={"Content-Type": JSON}), field=field)
    table = pa.table({"year": pa.array([2**64 - 1], pa.uint64()), "product": ["product_A"], "units": [1.0]})
    refused(client.post(SALES, content=_arrow(table), headers={"Content-Type": ARROW}), field="year")
    inputs = [{"name": "units", "datatype": "FP64", "shape": [1, 1], "data": [1e39]},
              {"name": "year", "datatype": "INT64", "shape": [1, 1], "data": [2025]},
              {"name": "product", "datatype": "BYTES", "shape": [1, 1], "data": ["product_A"]}]  # fmt: skip
    refused(client.post("/v2/models/sales_forecast/infer", json={"inputs": inputs}), field="units")


def test_error_bodies_stay_small_whatever_the_request(client: httpx.Client) -> None:
    r = client.post(SALES, content=_wide(60_000), headers={"Content-Type": JSON})  # ignored like mlflow: a 200
    assert r.status_code == 200, r.text[:300]
    cols = {"dataframe_split": {"columns": [f"c{i}" for i in range(60_000)], "data": [list(range(60_000))]}}
    body = refused(client.post(SALES, content=orjson.dumps(cols)))
    assert body["message"].startswith("missing required column")


def test_v2_metadata_matches_what_infer_answers(client: httpx.Client, columns: dict[str, Any]) -> None:
    for name in DEMO:
        meta = {o["name"]: o["datatype"] for o in client.get(f"/v2/models/{name}").json()["outputs"]}
        row = {c: ("product_A" if t == "string" else 1) for c, t in columns[name]}
        inputs = [{"name": c, "datatype": _V2[t], "shape": [1, 1], "data": [row[c]]} for c, t in columns[name]]
        answer = client.post(f"/v2/models/{name}/infer", json={"inputs": inputs}).json()
        got = {o["name"]: o["datatype"] for o in answer["outputs"]}
        assert got == meta, name
        config = client.get(f"/v2/models/{name}/config").json()
        assert {o["name"]: o["data_type"] for o in config["output"]} == {k: f"TYPE_{v}" for k, v in meta.items()}


def test_parity_shows_both_tolerances(client: httpx.Client) -> None:
    for model in client.get("/models").json()["models"]:
        parity = model["parity"]
        assert parity["atol"] == 1e-4 and parity["rtol"] == 1e-4 and parity["passed"] is True
        assert "tolerance" not in parity


def test_server_is_alive_and_right_after_the_corpus(client: httpx.Client, pyfunc: Oracle) -> None:
    assert client.get("/ping").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    row = {"year": 2025, "product": "product_A", "units": 100.0}
    same(answered(client.post(SALES, json={"dataframe_records": [row]})), pyfunc("sales_forecast", [row]))
