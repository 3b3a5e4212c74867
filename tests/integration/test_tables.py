"""Inference tables as a user gets them: a real ``modelport serve`` capturing to Delta, stopped with SIGTERM, and
``modelport usage`` reading the tables in a subprocess."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from deltalake import DeltaTable

from server.ops.tables import InferenceTables
from tests.conftest import DemoRegistry
from tests.processes import free_port, wait_for
from tests.server.ops.test_tables import exchange

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "server"]
ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
    return env | {"PYTHONUNBUFFERED": "1"}


def _usage(state_dir: Path, *args: str) -> dict[str, object]:
    r = subprocess.run(
        [*CLI, "usage", "--json", "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        check=False,
    )
    assert r.returncode == 0, r.stderr
    report: dict[str, object] = json.loads(r.stdout)
    return report


def test_usage_command_reads_tables_written_here(tmp_path: Path) -> None:
    tables = InferenceTables(tmp_path / "tables", start=False)
    tables.enable_model("fraud")
    now = time.time()
    for i in range(5):
        tables.capture(exchange("fraud", timestamp=now - i, status=500 if i == 0 else 200, principal=f"u{i % 2}"))
    tables.close()
    report = _usage(tmp_path, "--by", "caller", "--since", "10m")
    assert report["tables"] == ["main.default.fraud_payload"]
    assert [(g["key"], g["requests"], g["errors"]) for g in report["groups"]] == [("u0", 3, 1), ("u1", 2, 0)]  # type: ignore[attr-defined,index]


def test_requests_answered_before_sigterm_equal_rows_in_the_table(demo_registry: DemoRegistry, tmp_path: Path) -> None:
    schema = f"sigterm_{uuid.uuid4().hex[:8]}"  # its own table in the shared demo state dir
    config = tmp_path / "modelport.yaml"
    config.write_text(
        "deployments:\n"
        "  - model: models:/sales_forecast@champion\n"
        f"    capture: {{schema_name: {schema}}}\n"
        "tables: {flush_rows: 100000, flush_s: 3600}\n"  # nothing commits before shutdown: close() writes it all
    )
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "serve", "--config", str(config), "--port", str(port), "--state-dir", str(demo_registry.state_dir),
         "--log-format", "json"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    answered: list[tuple[str, int]] = []
    try:
        wait_for(lines, "Uvicorn running on", 120)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for i in range(40):
                body = {"data": [[2025, "product_A", 10 + i]]} if i % 10 else {"data": [[2025]]}  # every 10th: 400
                rid = f"sigterm-{i}"
                r = client.post("/model/sales_forecast/champion/invocations", json=body, headers={"X-Request-Id": rid})
                answered.append((rid, r.status_code))
    finally:
        proc.send_signal(signal.SIGTERM)
        # uvicorn drains, runs the lifespan shutdown (the tables' close), then re-raises the SIGTERM it caught
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    path = demo_registry.state_dir / "tables" / "main" / schema / "sales_forecast_payload"
    table = DeltaTable(path).to_pyarrow_table().sort_by("timestamp_ms")
    assert table.num_rows == len(answered) == 40
    assert sorted(zip(table["databricks_request_id"].to_pylist(), table["status_code"].to_pylist(), strict=True)) == (
        sorted(answered)
    )
    assert {s for _, s in answered} == {200, 400}
    ok = next(row for row in table.to_pylist() if row["status_code"] == 200)
    assert json.loads(ok["request"])["data"][0][:2] == [2025, "product_A"] and "predictions" in ok["response"]
    assert dict(ok["request_metadata"])["model_name"] == "sales_forecast"
    report = _usage(demo_registry.state_dir, "--since", "1h")
    groups = {g["key"]: g for g in report["groups"]}  # type: ignore[attr-defined]
    assert groups["sales_forecast"]["requests"] >= 40 and groups["sales_forecast"]["errors"] >= 4
