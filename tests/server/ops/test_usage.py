"""Usage from inference tables: counts, sampling scale-up, latency percentiles, cost, the CLI's table and JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from server.cli import parser, settings_from
from server.ops.tables import InferenceTables
from server.ops.usage import find_tables, usage
from server.settings import CaptureSettings, CostSettings
from server.usage_cli import run
from tests.server.ops.test_tables import exchange

NOW = 1_767_225_600.0 + 12 * 3600


def write(root: Path, now: float) -> None:
    tables = InferenceTables(root, start=False, sample=lambda: 0.25)  # below 0.5: the sampled ltv row is kept
    tables.enable_model("fraud")
    tables.enable_model("ltv", CaptureSettings(schema_name="team", sampling_fraction=0.5))
    tables.enable_endpoint("fraud-ep")
    for i in range(10):  # fraud: 10 requests of 2 rows, 1..10 ms, one 400 and one 500
        status = 400 if i == 3 else 500 if i == 7 else 200
        tables.capture(exchange("fraud", timestamp=now - 60 - i, latency_s=(i + 1) / 1000, status=status, rows=2))
    tables.capture(exchange("fraud", endpoint="fraud-ep", timestamp=now - 5, latency_s=0.5, principal="bob"))
    tables.capture(exchange("ltv", timestamp=now - 30, latency_s=0.002, rows=4))  # stands for 2 at fraction 0.5
    tables.capture(exchange("fraud", timestamp=now - 7200))  # outside a 1h window
    tables.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write(tmp_path / "tables", NOW)
    return tmp_path / "tables"


def test_usage_by_model_scales_sampled_rows_and_estimates_cost(root: Path) -> None:
    tables = find_tables(root)
    assert [p.name for p in tables] == ["fraud-ep_payload", "fraud_payload", "ltv_payload"]
    cost = CostSettings(cpu_core_per_hour=3.6)
    groups = {g.key: g for g in usage(tables, since_s=3600, by="model", cost=cost, now=NOW)}
    fraud, ltv = groups["fraud"], groups["ltv"]
    assert (fraud.requests, fraud.captured, fraud.rows, fraud.errors, fraud.errors_5xx) == (11, 11, 21, 2, 1)
    assert fraud.p50_ms == 6.0 and fraud.p99_ms == 500.0
    assert fraud.cost == pytest.approx((55 + 500) / 1000 / 3600 * 3.6)
    assert (ltv.requests, ltv.captured, ltv.rows) == (2, 1, 8)  # 1 / sampling_fraction
    assert usage(tables, since_s=3 * 3600, by="model", now=NOW)[0].requests == 12  # the older row comes in
    assert usage(tables, since_s=3600, by="model", now=NOW)[0].cost is None


def test_usage_by_endpoint_and_caller(root: Path) -> None:
    by_endpoint = {g.key: g.requests for g in usage(find_tables(root), since_s=3600, by="endpoint", now=NOW)}
    assert by_endpoint == {"-": 12, "fraud-ep": 1}
    by_caller = {g.key: g.requests for g in usage(find_tables(root), since_s=3600, by="caller", now=NOW)}
    assert by_caller == {"alice@example.com": 12, "bob": 1}
    assert usage([], since_s=60, by="model") == []


def _cli(tmp_path: Path, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    args = parser().parse_args(["usage", "--state-dir", str(tmp_path), *argv])
    rc = run(args, settings_from(args))
    return rc, capsys.readouterr().out


def test_cli_json_and_terminal_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "tables", time.time())
    config = tmp_path / "modelport.yaml"
    config.write_text("cost:\n  cpu_core_per_hour: 3.6\n")
    rc, out = _cli(tmp_path, "--json", "--since", "1h", "--config", str(config), capsys=capsys)
    assert rc == 0
    report: dict[str, Any] = json.loads(out)
    assert report["by"] == "model" and report["window_s"] == 3600
    assert report["tables"] == ["main.default.fraud-ep_payload", "main.default.fraud_payload", "main.team.ltv_payload"]
    assert [(g["key"], g["requests"], g["errors"]) for g in report["groups"]] == [("fraud", 11, 2), ("ltv", 2, 0)]
    assert report["groups"][0]["cost"] > 0 and report["cost_basis"].startswith("execution time")
    rc, out = _cli(tmp_path, "--by", "caller", capsys=capsys)
    assert rc == 0 and "alice@example.com" in out and "P99 MS" in out and "cost.cpu_core_per_hour" in out
    rc, out = _cli(tmp_path / "empty", capsys=capsys)
    assert rc == 0 and "no captured requests" in out
    args = parser().parse_args(["usage", "--since", "soon"])
    assert run(args, settings_from(args)) == 2
