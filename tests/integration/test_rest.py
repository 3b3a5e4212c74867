"""REST door end to end: real sqlite MLflow registry, real onnxruntime, real uvicorn on 127.0.0.1, httpx."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.conftest import DemoRegistry, LiveServer

pytestmark = pytest.mark.integration

DEMO = ("sales_forecast", "fraud_detector", "customer_propensity", "customer_ltv")


@pytest.fixture(scope="module")
def examples(live_server: LiveServer) -> dict[str, dict[str, Any]]:
    with live_server.client() as c:
        return {name: c.get(f"/models/{name}/champion").json() for name in DEMO}


@pytest.fixture(scope="module")
def reference(demo_registry: DemoRegistry, examples: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    """What the original MLflow pyfunc predicts on each model's input example."""
    out = {}
    for name in DEMO:
        model = _load(demo_registry, name)
        df = pd.DataFrame(examples[name]["input_example"])
        out[name] = np.asarray(model.predict(df))
    return out


def _load(reg: DemoRegistry, name: str) -> Any:
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(reg.tracking_uri)
    mlflow.set_registry_uri(reg.tracking_uri)
    try:
        return mlflow.pyfunc.load_model(f"models:/{name}@champion")
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def _bodies(info: dict[str, Any]) -> dict[str, tuple[str, bytes | dict[str, Any]]]:
    rows = info["input_example"]
    cols = [c["name"] for c in info["signature"]["inputs"]]
    matrix = [[r[c] for c in cols] for r in rows]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(cols)
    writer.writerows(matrix)
    return {
        "dataframe_split": ("application/json", {"dataframe_split": {"columns": cols, "data": matrix}}),
        "dataframe_records": ("application/json", {"dataframe_records": rows}),
        "instances": ("application/json", {"instances": rows}),
        "inputs": ("application/json", {"inputs": {c: [r[c] for r in rows] for c in cols}}),
        "data": ("application/json", {"data": matrix}),
        "csv": ("text/csv", buf.getvalue().encode()),
    }


@pytest.mark.parametrize("name", DEMO)
@pytest.mark.parametrize("fmt", ["dataframe_split", "dataframe_records", "instances", "inputs", "data", "csv"])
def test_every_demo_model_and_body_matches_pyfunc(
    live_server: LiveServer, examples: dict, reference: dict, name: str, fmt: str
) -> None:
    content_type, body = _bodies(examples[name])[fmt]
    with live_server.client() as c:
        kwargs = {"json": body} if isinstance(body, dict) else {"content": body}
        r = c.post(f"/model/{name}/champion/invocations", headers={"Content-Type": content_type}, **kwargs)
    assert r.status_code == 200, r.text
    got = np.asarray(r.json()["predictions"])
    np.testing.assert_allclose(got.astype(float), reference[name].astype(float), rtol=1e-4, atol=1e-4)
    assert r.headers["x-request-id"]


def test_seed_example(live_server: LiveServer, examples: dict) -> None:
    version = examples["sales_forecast"]["version"]
    with live_server.client() as c:
        r = c.post(f"/model/sales_forecast/{version}/invocations", json={"data": [[2025, "product_A", 100]]})
    assert r.status_code == 200, r.text
    (forecast,) = r.json()["predictions"]
    assert isinstance(forecast, float) and forecast > 0


def test_listing_and_health(live_server: LiveServer) -> None:
    with live_server.client() as c:
        models = c.get("/models").json()["models"]
        assert sorted(m["name"] for m in models) == sorted(DEMO)
        for m in models:
            assert m["state"] == "READY" and m["runtime"] == "onnx", m
            assert m["provider"] == "CPUExecutionProvider"
            assert "champion" in m["aliases"] and m["signature"]["inputs"]
            assert m["parity"]["passed"] is True
        assert c.get("/health").json()["status"] == "ok"
        assert c.get("/ping").status_code == 200
        assert c.get("/version").json()["modelport"]
        openapi = c.get("/openapi.json").json()
        path = openapi["paths"]["/model/sales_forecast/champion/invocations"]["post"]
        props = path["requestBody"]["content"]["application/json"]["schema"]["properties"]
        assert props["dataframe_records"]["items"]["properties"]["product"]["type"] == "string"


def test_single_model_invocations_refuses_when_several_are_served(live_server: LiveServer) -> None:
    with live_server.client() as c:
        r = c.post("/invocations", json={"data": [[2025, "product_A", 100]]})
    assert r.status_code == 404
    assert "/model/sales_forecast/" in r.json()["message"]


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "code", "field"),
    [
        ("/model/sales_forecast/champion/invocations", {}, b"{not json", 400, "BAD_REQUEST", "body"),
        (
            "/model/sales_forecast/champion/invocations",
            {"Content-Type": "text/plain"},
            b"x",
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "Content-Type",
        ),
        ("/model/nope/1/invocations", {}, b'{"data": [[1]]}', 404, "RESOURCE_DOES_NOT_EXIST", "name"),
        ("/model/sales_forecast/99/invocations", {}, b'{"data": [[1]]}', 404, "RESOURCE_DOES_NOT_EXIST", "version"),
        (
            "/model/sales_forecast/champion/invocations",
            {},
            b'{"dataframe_records": [{"year": 2025, "units": 1}]}',
            400,
            "BAD_REQUEST",
            "product",
        ),
        (
            "/model/sales_forecast/champion/invocations",
            {},
            b'{"data": [["soon", "product_A", 1]]}',
            400,
            "BAD_REQUEST",
            "year",
        ),
        (
            "/model/sales_forecast/champion/invocations",
            {},
            b'{"data": [[2025, "product_A", null]]}',
            400,
            "BAD_REQUEST",
            "units",
        ),
        ("/model/sales_forecast/champion/invocations", {}, b'{"data": []}', 400, "BAD_REQUEST", "body"),
    ],
)
def test_bad_input_is_a_clear_4xx(
    live_server: LiveServer, path: str, headers: dict, body: bytes, status: int, code: str, field: str
) -> None:
    with live_server.client() as c:
        r = c.post(path, content=body, headers={"Content-Type": "application/json", **headers})
    assert r.status_code == status, r.text
    err = r.json()
    assert err["error_code"] == code
    assert err["field"] == field and err["message"]
    assert "Traceback" not in r.text


def test_extra_columns_and_params_are_ignored_like_mlflow(live_server: LiveServer) -> None:
    row = {"year": 2025, "product": "product_A", "units": 1}
    with live_server.client() as c:
        plain = c.post("/model/sales_forecast/champion/invocations", json={"dataframe_records": [row]})
        extra = c.post(
            "/model/sales_forecast/champion/invocations",
            json={"dataframe_records": [row | {"x": 1}], "params": {"k": 1}},
        )
    assert plain.status_code == extra.status_code == 200, extra.text
    assert extra.json() == plain.json()
    assert "x-modelport-ignored" not in plain.headers
    ignored = extra.headers["x-modelport-ignored"]
    assert "x" in ignored and "k" in ignored, ignored


def test_strict_inputs_refuse_what_mlflow_would_ignore(demo_registry: DemoRegistry) -> None:
    from server.main import build
    from server.settings import Settings
    from tests.conftest import start_server

    settings = Settings(state_dir=demo_registry.state_dir, registry_uri=demo_registry.tracking_uri,
                        models=(demo_registry.refs[0].uri,), strict_inputs=True)  # fmt: skip
    components = build(settings, mcp=False)
    server, thread, url = start_server(components, components.app)
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            name = demo_registry.refs[0].name
            info = c.get(f"/models/{name}/champion").json()
            example = info["input_example"]
            rows = example if isinstance(example, list) else example.get("dataframe_records") or [example]
            r = c.post(f"/model/{name}/champion/invocations", json={"dataframe_records": [rows[0] | {"x": 1}]})
        assert r.status_code == 400 and "x" in r.json()["message"], r.text
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_oversized_payload_and_too_many_rows(live_server: LiveServer) -> None:
    with live_server.client() as c:
        big = b'{"data": [' + b",".join([b'[2025, "product_A", 100]'] * 60_000) + b"]}"
        r = c.post(
            "/model/sales_forecast/champion/invocations", content=big, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 413 and r.json()["error_code"] == "PAYLOAD_TOO_LARGE"
        rows = {"data": [[2025, "product_A", 100]] * 5001}
        r = c.post("/model/sales_forecast/champion/invocations", json=rows)
        assert r.status_code == 413 and "5001 rows" in r.json()["message"]
        # the server keeps serving after refusals
        ok = c.post("/model/sales_forecast/champion/invocations", json={"data": [[2025, "product_A", 100]]})
        assert ok.status_code == 200


def test_unknown_route_is_mlflow_style(live_server: LiveServer) -> None:
    with live_server.client() as c:
        r = c.get("/nothing-here")
    assert r.status_code == 404 and r.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_64_concurrent_clients_get_correct_answers_in_shared_batches(live_server: LiveServer) -> None:
    """Each client sends a different row; every answer must be its own row's, and batches must form."""
    units = [float(u) for u in range(1, 65)]
    records: list[list[float]] = []
    dep = live_server.components.table.find("sales_forecast", "champion")  # type: ignore[attr-defined]
    seen: list[int] = []
    dep.batcher.add_listener(lambda rec: seen.append(rec.requests))

    async def run() -> list[float]:
        async with httpx.AsyncClient(
            base_url=live_server.url, timeout=60, limits=httpx.Limits(max_connections=64)
        ) as client:

            async def one(u: float) -> float:
                r = await client.post(
                    "/model/sales_forecast/champion/invocations", json={"data": [[2025, "product_B", u]]}
                )
                assert r.status_code == 200, r.text
                return r.json()["predictions"][0]

            for _ in range(3):  # a few waves so connection setup does not serialise everything
                records.append(await asyncio.gather(*(one(u) for u in units)))
            return records[-1]

    answers = asyncio.run(run())
    with live_server.client() as c:
        expected = c.post(
            "/model/sales_forecast/champion/invocations", json={"data": [[2025, "product_B", u] for u in units]}
        ).json()["predictions"]
    for wave in records:
        np.testing.assert_allclose(wave, expected, rtol=1e-5)  # float32 trees: sums differ in the 7th digit
    assert answers
    assert max(seen) > 1, f"no batch held more than one request: {seen[:20]}"
