"""The `modelport` command as a user runs it: real subprocesses, real registry, real server."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import DemoRegistry
from tests.processes import free_port, wait_for

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "server"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
    return env | {"PYTHONUNBUFFERED": "1"}


def _run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=_env(), check=False)


def test_demo_is_idempotent(demo_registry: DemoRegistry) -> None:
    r = _run("demo", "--no-serve", "--state-dir", str(demo_registry.state_dir), "--log-format", "json")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [
        f"models:/{n}@champion" for n in ("sales_forecast", "fraud_detector", "customer_propensity", "customer_ltv")
    ]


def test_predict_command(demo_registry: DemoRegistry, tmp_path: Path) -> None:
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"data": [[2025, "product_A", 100], [2025, "product_C", 10]]}))
    r = _run(
        "predict",
        "models:/sales_forecast@champion",
        "--input",
        str(rows),
        "--state-dir",
        str(demo_registry.state_dir),
        "--log-format",
        "json",
    )
    assert r.returncode == 0, r.stderr
    predictions = json.loads(r.stdout)["predictions"]
    assert len(predictions) == 2 and predictions[0] > predictions[1]  # 100 units sell more than 10
    csv = tmp_path / "rows.csv"
    csv.write_text("year,product,units\n2025,product_A,100\n")
    r = _run(
        "predict",
        "models:/sales_forecast@champion",
        "--input",
        str(csv),
        "--state-dir",
        str(demo_registry.state_dir),
        "--log-format",
        "json",
    )
    assert json.loads(r.stdout)["predictions"][0] == pytest.approx(predictions[0], rel=1e-5)
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [[2025, "product_A"]]}')
    r = _run(
        "predict",
        "models:/sales_forecast@champion",
        "--input",
        str(bad),
        "--state-dir",
        str(demo_registry.state_dir),
        "--log-format",
        "json",
    )
    assert r.returncode == 1 and "BAD_REQUEST" in r.stderr


def test_unknown_model_fails_visibly(demo_registry: DemoRegistry, tmp_path: Path) -> None:
    rows = tmp_path / "rows.json"
    rows.write_text('{"data": [[1]]}')
    r = _run(
        "predict",
        "models:/no_such_model/1",
        "--input",
        str(rows),
        "--state-dir",
        str(demo_registry.state_dir),
        "--log-format",
        "json",
    )
    assert r.returncode != 0 and "no_such_model" in r.stderr


@pytest.fixture
def served(demo_registry: DemoRegistry) -> Iterator[tuple[str, queue.Queue[str]]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            *CLI,
            "serve",
            "models:/sales_forecast@champion",
            "models:/customer_ltv/1",
            "--port",
            str(port),
            "--state-dir",
            str(demo_registry.state_dir),
            "--log-format",
            "json",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    try:
        wait_for(lines, "Uvicorn running on", 120)
        yield f"http://127.0.0.1:{port}", lines
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        wait_for(lines, '"event": "stopped"', 5)


def test_serve_command_logs_json_and_answers_the_seed(
    served: tuple[str, queue.Queue[str]], demo_registry: DemoRegistry
) -> None:
    url, lines = served
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post(
            "/model/sales_forecast/1/invocations",
            json={"data": [[2025, "product_A", 100]]},
            headers={"X-Request-Id": "seed-1"},
        )
        assert r.status_code == 200 and r.json()["predictions"][0] > 0
        models = c.get("/models").json()["models"]
        assert {m["key"] for m in models} == {"sales_forecast@champion", "customer_ltv/1"}
    access = json.loads(wait_for(lines, '"seed-1"', 30))  # the access line (orjson: no spaces)
    assert access["status"] == 200 and access["model"] == "sales_forecast" and access["version"] == "1"
    assert access["batch_rows"] == 1 and access["latency_ms"] > 0
    r = _run("models", "--state-dir", str(demo_registry.state_dir), "--url", url)
    assert r.returncode == 0, r.stderr
    assert "sales_forecast@champion" in r.stdout and "@champion→v1" in r.stdout
