"""Open Inference Protocol v2 and Arrow IPC end to end: real registry, onnxruntime and uvicorn, httpx clients;
tritonclient's HTTP client too when it is installed."""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from tests.conftest import LiveServer

pytestmark = pytest.mark.integration

DEMO = ("sales_forecast", "fraud_detector", "customer_propensity", "customer_ltv")
V2_TYPE = {"long": "INT64", "integer": "INT32", "double": "FP64", "float": "FP32", "string": "BYTES",
           "boolean": "BOOL"}  # fmt: skip
ARROW = "application/vnd.apache.arrow.stream"


@pytest.fixture(scope="module")
def cards(live_server: LiveServer) -> dict[str, dict[str, Any]]:
    with live_server.client() as c:
        return {name: c.get(f"/models/{name}/champion").json() for name in DEMO}


@pytest.fixture(scope="module")
def expected(live_server: LiveServer, cards: dict[str, dict[str, Any]]) -> dict[str, list[Any]]:
    """What the MLflow scoring route answers for each model's input example."""
    with live_server.client() as c:
        return {
            name: c.post(f"/model/{name}/champion/invocations",
                         json={"dataframe_records": card["input_example"]}).json()["predictions"]
            for name, card in cards.items()
        }  # fmt: skip


def _columns(card: dict[str, Any]) -> list[tuple[str, str, list[Any]]]:
    rows = card["input_example"]
    return [(c["name"], V2_TYPE[c["type"]], [r[c["name"]] for r in rows]) for c in card["signature"]["inputs"]]


def _v2_json(card: dict[str, Any]) -> dict[str, Any]:
    inputs = [{"name": n, "datatype": t, "shape": [len(v), 1], "data": v} for n, t, v in _columns(card)]
    return {"id": "abc", "inputs": inputs}


def _v2_binary(card: dict[str, Any]) -> tuple[bytes, int]:
    inputs, blobs = [], []
    for name, datatype, values in _columns(card):
        if datatype == "BYTES":
            raw = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
        else:
            raw = np.asarray(values, dtype={"INT64": "<i8", "FP64": "<f8"}[datatype]).tobytes()
        inputs.append({"name": name, "datatype": datatype, "shape": [len(values), 1],
                       "parameters": {"binary_data_size": len(raw)}})  # fmt: skip
        blobs.append(raw)
    head = orjson.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}})
    return head + b"".join(blobs), len(head)


def test_server_metadata_and_health(live_server: LiveServer) -> None:
    with live_server.client() as c:
        meta = c.get("/v2").json()
        live, ready = c.get("/v2/health/live"), c.get("/v2/health/ready")
    assert meta["name"] == "modelport" and "binary_tensor_data" in meta["extensions"]
    assert live.status_code == 200 and live.json() == {"live": True}
    assert ready.status_code == 200 and ready.json() == {"ready": True}


@pytest.mark.parametrize("name", DEMO)
def test_model_metadata_config_and_readiness(live_server: LiveServer, cards: dict[str, Any], name: str) -> None:
    card = cards[name]
    with live_server.client() as c:
        meta = c.get(f"/v2/models/{name}").json()
        versioned = c.get(f"/v2/models/{name}/versions/{card['version']}").json()
        config = c.get(f"/v2/models/{name}/config").json()
        ready = c.get(f"/v2/models/{name}/versions/champion/ready")
    assert meta == versioned and meta["versions"] == [card["version"]]
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        (n, t, [-1, 1]) for n, t, _ in _columns(card)
    ]
    assert meta["outputs"][0]["name"] == "predictions"
    assert config["max_batch_size"] == 1024
    assert [i["dims"] for i in config["input"]] == [[1]] * len(meta["inputs"])
    assert ready.status_code == 200 and ready.json() == {"name": name, "ready": True}


@pytest.mark.parametrize("name", DEMO)
def test_infer_json_matches_the_mlflow_route(
    live_server: LiveServer, cards: dict[str, Any], expected: dict[str, Any], name: str
) -> None:
    with live_server.client() as c:
        r = c.post(f"/v2/models/{name}/infer", json=_v2_json(cards[name]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == name and body["id"] == "abc"
    preds = next(o for o in body["outputs"] if o["name"] == "predictions")
    got = np.asarray(preds["data"]).reshape(preds["shape"])
    np.testing.assert_allclose(got, np.asarray(expected[name]), rtol=1e-6)


@pytest.mark.parametrize("name", DEMO)
def test_infer_binary_tensors_both_ways(
    live_server: LiveServer, cards: dict[str, Any], expected: dict[str, Any], name: str
) -> None:
    body, head = _v2_binary(cards[name])
    with live_server.client() as c:
        r = c.post(f"/v2/models/{name}/versions/champion/infer", content=body,
                   headers={"Content-Type": "application/octet-stream",
                            "Inference-Header-Content-Length": str(head)})  # fmt: skip
    assert r.status_code == 200, r.text
    length = int(r.headers["inference-header-content-length"])
    meta = orjson.loads(r.content[:length])
    offset, arrays = length, {}
    for out in meta["outputs"]:
        size = out["parameters"]["binary_data_size"]
        if out["datatype"] != "BYTES":
            dtype = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4"}[out["datatype"]]
            arrays[out["name"]] = np.frombuffer(r.content[offset : offset + size], dtype=dtype).reshape(out["shape"])
        offset += size
    assert offset == len(r.content)
    np.testing.assert_allclose(arrays["predictions"], np.asarray(expected[name]), rtol=1e-6)


@pytest.mark.parametrize("name", DEMO)
def test_arrow_stream_on_the_invocations_route(
    live_server: LiveServer, cards: dict[str, Any], expected: dict[str, Any], name: str
) -> None:
    table = pa.table({n: v for n, _, v in _columns(cards[name])})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    with live_server.client() as c:
        r = c.post(f"/model/{name}/champion/invocations", content=sink.getvalue(), headers={"Content-Type": ARROW})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.asarray(r.json()["predictions"]), np.asarray(expected[name]), rtol=1e-6)


def test_v2_errors_use_the_v2_shape(live_server: LiveServer, cards: dict[str, Any]) -> None:
    bad = _v2_json(cards["sales_forecast"])
    bad["inputs"][0]["name"] = "yeer"
    with live_server.client() as c:
        unknown = c.post("/v2/models/nope/infer", json=bad)
        wrong = c.post("/v2/models/sales_forecast/infer", json=bad)
        meta = c.get("/v2/models/nope")
        output = c.post("/v2/models/sales_forecast/infer",
                        json=_v2_json(cards["sales_forecast"]) | {"outputs": [{"name": "nope"}]})  # fmt: skip
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
    assert meta.status_code == 404 and "error" in meta.json()
    assert wrong.status_code == 400 and wrong.json()["field"] == "yeer"
    assert output.status_code == 400 and "unknown output" in output.json()["error"]


def test_tritonclient_drives_modelport(live_server: LiveServer, cards: dict[str, Any], expected: dict) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    client = httpclient.InferenceServerClient(url=live_server.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("fraud_detector")
        assert client.get_model_config("fraud_detector")["max_batch_size"] == 1024
        inputs = []
        for name, datatype, values in _columns(cards["fraud_detector"]):
            array = np.asarray(values, dtype={"INT64": np.int64, "FP64": np.float64}[datatype]).reshape(-1, 1)
            tensor = httpclient.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array, binary_data=True)
            inputs.append(tensor)
        outputs = [httpclient.InferRequestedOutput("predictions", binary_data=True)]
        result = client.infer("fraud_detector", inputs, outputs=outputs)
        np.testing.assert_allclose(result.as_numpy("predictions"), np.asarray(expected["fraud_detector"]), rtol=1e-6)
    finally:
        client.close()
