"""``modelport score`` and ``modelport sql`` as a user runs them, and batch output against the live endpoint."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from server.batch import BatchModel, score
from server.settings import Settings
from tests.conftest import DemoRegistry, LiveServer
from tests.processes import wait_for
from tests.server.batch.conftest import assert_parity, batch_settings, rows_for, sales

__all__ = ["batch_settings", "sales"]  # the batch tests' session fixtures, shared here

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "server"]
DEMO = ("sales_forecast", "fraud_detector", "customer_propensity", "customer_ltv")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
    return env | {"PYTHONUNBUFFERED": "1"}


def _run(reg: DemoRegistry, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    command = [*CLI, *args, "--state-dir", str(reg.state_dir), "--log-format", "json"]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_env(), check=False)


def test_score_command_writes_what_the_api_returns(
    demo_registry: DemoRegistry, sales: BatchModel, tmp_path: Path
) -> None:
    table = rows_for(sales, 3000, seed=21)
    pq.write_table(table, tmp_path / "plan.parquet")
    r = _run(
        demo_registry, "score", "models:/sales_forecast@champion", "--input", str(tmp_path / "plan.parquet"),
        "--output", str(tmp_path / "scored.csv"), "--keep", "id", "--prediction-column", "revenue",
        "--chunk-rows", "1000",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert '"event": "scored"' in r.stderr and '"rows": 3000' in r.stderr  # a log line, not a bar, off a terminal
    got = pacsv.read_csv(tmp_path / "scored.csv")
    assert got.column_names == ["id", "revenue"]
    want = score(sales, table, keep=["id"])
    assert want is not None
    assert_parity(sales, got.column("revenue").to_numpy(), want.column("prediction").to_numpy())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--columns", "units=qty"], "input has no column 'qty' (model input 'units')"),
        (["--keep", "customer"], "--keep column 'customer' is not in the input"),
        (["--mode", "append"], "--mode append needs a Delta output"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    demo_registry: DemoRegistry, sales: BatchModel, tmp_path: Path, args: list[str], message: str
) -> None:
    pq.write_table(rows_for(sales, 10), tmp_path / "plan.parquet")
    r = _run(
        demo_registry, "score", "sales_forecast@champion", "-i", str(tmp_path / "plan.parquet"),
        "-o", str(tmp_path / "out.parquet"), *args,
    )  # fmt: skip
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("modelport:")]
    assert errors == [f"modelport: score: {errors[0].split(': ', 2)[2]}"] and message in errors[0]
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.parquet"]


def test_unknown_model_is_one_line(demo_registry: DemoRegistry, tmp_path: Path) -> None:
    r = _run(demo_registry, "score", "nope@champion", "-i", str(tmp_path / "x.parquet"), "-o", str(tmp_path / "o.csv"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "modelport: score: cannot load models:/nope@champion" in r.stderr


def test_ctrl_c_after_the_first_chunk_leaves_no_output(
    demo_registry: DemoRegistry, sales: BatchModel, tmp_path: Path
) -> None:
    pq.write_table(rows_for(sales, 1_000_000, seed=22), tmp_path / "big.parquet")
    command = [
        *CLI, "score", "sales_forecast@champion", "-i", str(tmp_path / "big.parquet"), "-o", str(tmp_path / "out"),
        "--output-format", "delta", "--chunk-rows", "200", "--state-dir", str(demo_registry.state_dir),
        "--log-format", "json",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=_env())
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    try:
        wait_for(lines, '"event": "scoring"', timeout=120)  # logged after the first chunk
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.parquet"]  # no table, no temporary


@pytest.mark.parametrize("name", DEMO)
def test_score_output_equals_the_live_endpoint(live_server: LiveServer, batch_settings: Settings, name: str) -> None:
    model = BatchModel.load(f"{name}@champion", batch_settings)
    table = rows_for(model, 1000, seed=23)
    scored = score(model, table, keep=["id"], chunk_rows=333)
    assert scored is not None
    columns = model.signature.input_names
    body = {"dataframe_split": {"columns": columns, "data": table.select(columns).to_pandas().values.tolist()}}
    with live_server.client() as client:
        r = client.post(f"/model/{name}/champion/invocations", json=body)
    assert r.status_code == 200, r.text
    endpoint = np.asarray(r.json()["predictions"], dtype=float)
    batch = np.asarray(scored.column("prediction").to_pylist(), dtype=float)
    assert batch.shape == endpoint.shape
    assert_parity(model, batch, endpoint)


def test_sql_command_prints_csv(demo_registry: DemoRegistry, sales: BatchModel, tmp_path: Path) -> None:
    pq.write_table(rows_for(sales, 100, seed=24), tmp_path / "plan.parquet")
    query = (
        "SELECT id, ai_query('sales_forecast@champion', struct_pack(year := year, product := product, "
        f"units := units)) AS revenue FROM '{tmp_path}/plan.parquet' ORDER BY id"
    )
    r = _run(demo_registry, "sql", "-c", query, "--format", "csv")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == '"id","revenue"' and len(lines) == 101
    bad = _run(demo_registry, "sql", "-c", "SELECT ai_query('sales_forecast@champion', struct_pack(year := 1))")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "modelport: sql: ai_query: the struct has no 'product'" in bad.stderr
