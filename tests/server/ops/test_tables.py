"""Inference tables: capture off the hot path into Delta tables (fake clock, small thresholds, real deltalake)."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from server.ops.payload import SCHEMA, default_prefix
from server.ops.record import Exchange, Recorder
from server.ops.tables import InferenceTables
from server.settings import CaptureSettings, DeploymentSpec, Settings, TablesSettings

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


_ids = itertools.count()


def exchange(
    model: str | None = "fraud",
    *,
    endpoint: str | None = None,
    status: int = 200,
    request: bytes | None = b'{"data": [[1, 2]]}',
    response: bytes | None = b'{"predictions": [0.5]}',
    timestamp: float = T0,
    latency_s: float = 0.0012,
    **extra: Any,
) -> Exchange:
    fields: dict[str, Any] = {
        "door": "rest",
        "request_id": f"req-{next(_ids)}",
        "timestamp": timestamp,
        "latency_s": latency_s,
        "status": status,
        "model": model,
        "version": "3",
        "alias": "champion",
        "endpoint": endpoint,
        "served_entity": None,
        "principal": "alice@example.com",
        "client_request_id": None,
        "rows": 1,
        "request": request,
        "response": response,
        "content_type": "application/json",
        "error": None,
    }
    return Exchange(**(fields | extra))


def read(path: Path) -> pa.Table:
    return DeltaTable(path).to_pyarrow_table().sort_by("timestamp_ms")


def meta(table: pa.Table, i: int = 0) -> dict[str, str]:
    return dict(table["request_metadata"][i].as_py())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manual(tmp_path: Path, clock: FakeClock) -> Iterator[InferenceTables]:
    """No writer thread: ``tick()`` is the writer's step."""
    tables = InferenceTables(
        tmp_path, TablesSettings(flush_rows=3, flush_s=10, buffer_rows=5, compact_every=0), clock=clock, start=False
    )
    tables.enable_model("fraud")
    yield tables
    tables.close()


def test_wants_is_a_lookup_and_the_endpoint_table_wins(manual: InferenceTables, tmp_path: Path) -> None:
    assert manual.wants("fraud", None) and not manual.wants("other", None) and not manual.wants(None, None)
    manual.enable_endpoint("fraud-ep", CaptureSettings(catalog_name="ml", schema_name="serving"))
    assert manual.wants(None, "fraud-ep") and manual.wants("other", "fraud-ep")
    manual.capture(exchange("fraud", endpoint="fraud-ep"))
    manual.capture(exchange("fraud"))
    manual.capture(exchange("other"))  # not captured at all
    assert manual.tick(force=True) == 2
    assert read(tmp_path / "ml" / "serving" / "fraud-ep_payload").num_rows == 1
    assert read(tmp_path / "main" / "default" / "fraud_payload").num_rows == 1
    manual.disable_endpoint("fraud-ep")
    manual.enable_model("fraud", CaptureSettings(enabled=False))
    assert not manual.wants("fraud", "fraud-ep") and manual.target("fraud", "fraud-ep") is None


def test_commits_every_n_rows_or_t_seconds(manual: InferenceTables, clock: FakeClock, tmp_path: Path) -> None:
    manual.capture(exchange())
    manual.capture(exchange())
    assert manual.tick() == 0 and manual.buffered == 2  # neither 3 rows nor 10 s yet
    manual.capture(exchange())
    assert manual.tick() == 3 and manual.commits == 1  # flush_rows reached
    manual.capture(exchange())
    clock.now += 9.9
    assert manual.tick() == 0
    clock.now += 0.1
    assert manual.tick() == 1 and manual.written == 4  # flush_s after the previous commit
    assert read(tmp_path / "main" / "default" / "fraud_payload").num_rows == 4
    assert manual.last_commit_s > 0


def test_full_buffer_drops_counts_and_warns_at_most_once_per_interval(
    manual: InferenceTables, clock: FakeClock, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.WARNING, logger="server.ops.tables")
    for _ in range(12):
        manual.capture(exchange())  # never blocks, never raises
    assert manual.buffered == 5 and manual.dropped == 7
    assert len([r for r in caplog.records if "buffer full" in r.message]) == 1
    clock.now += 59
    manual.capture(exchange())
    assert len([r for r in caplog.records if "buffer full" in r.message]) == 1
    clock.now += 1
    manual.capture(exchange())
    assert manual.dropped == 9 and len([r for r in caplog.records if "buffer full" in r.message]) == 2
    manual.close()
    assert read(tmp_path / "main" / "default" / "fraud_payload").num_rows == 5  # every buffered row, none dropped


def test_close_commits_everything_buffered_with_the_writer_thread(tmp_path: Path) -> None:
    tables = InferenceTables(tmp_path, TablesSettings(flush_rows=10_000, flush_s=3600, buffer_rows=10_000))
    tables.enable_model("fraud")
    for i in range(1234):
        tables.capture(exchange(timestamp=T0 + i))
    assert tables.close(timeout=60)
    assert read(tmp_path / "main" / "default" / "fraud_payload").num_rows == 1234
    assert tables.written == 1234 and tables.dropped == 0 and tables.commits == 1
    tables.capture(exchange())  # after close: counted, never written
    assert tables.dropped == 1 and tables.close(timeout=5)


def test_flush_waits_for_a_commit_and_rows_past_flush_rows_wake_the_writer(tmp_path: Path) -> None:
    tables = InferenceTables(tmp_path, TablesSettings(flush_rows=50, flush_s=3600))
    tables.enable_model("fraud")
    try:
        for _ in range(7):
            tables.capture(exchange())
        assert tables.flush(timeout=60)
        assert read(tmp_path / "main" / "default" / "fraud_payload").num_rows == 7
        for _ in range(50):
            tables.capture(exchange())
        assert tables.flush(timeout=60) and tables.written == 57
    finally:
        tables.close(timeout=60)


def test_sampling_captures_that_fraction_and_records_it(tmp_path: Path, clock: FakeClock) -> None:
    draws = itertools.cycle([0.1, 0.3, 0.6, 0.9])
    tables = InferenceTables(tmp_path, TablesSettings(), clock=clock, sample=lambda: next(draws), start=False)
    tables.enable_model("fraud", CaptureSettings(sampling_fraction=0.25))
    tables.enable_model("never", CaptureSettings(sampling_fraction=0.0))
    assert not tables.wants("never", None)
    for _ in range(40):
        tables.capture(exchange())
    tables.close()
    table = read(tmp_path / "main" / "default" / "fraud_payload")
    assert table.num_rows == 10
    assert set(table["sampling_fraction"].to_pylist()) == {0.25}


def test_large_bodies_are_truncated_and_marked(tmp_path: Path, clock: FakeClock) -> None:
    tables = InferenceTables(tmp_path, clock=clock, start=False)
    tables.enable_model("fraud", CaptureSettings(max_payload_bytes=10))
    tables.capture(exchange(request=b'{"data": [[' + b"1, " * 100 + b"1]]}", response=b'{"p": [1]}'))
    tables.capture(exchange(request="é".encode() * 6, response=b"\x00\xffARROW"))  # cut inside a character; binary
    tables.close()
    table = read(tmp_path / "main" / "default" / "fraud_payload")
    assert table["request"][0].as_py() == '{"data": [' and table["response"][0].as_py() == '{"p": [1]}'
    first = meta(table, 0)
    assert first["request_truncated"] == "true" and first["request_bytes"] == "315"
    assert "response_truncated" not in first and "request_encoding" not in first
    assert table["request"][1].as_py() == "ééééé"  # 10 bytes = 5 characters, none half-kept
    second = meta(table, 1)
    assert second["request_truncated"] == "true" and second["response_encoding"] == "base64"
    assert base64.b64decode(table["response"][1].as_py()) == b"\x00\xffARROW"


def test_schema_and_failed_requests_read_back_with_pyarrow(tmp_path: Path, clock: FakeClock) -> None:
    tables = InferenceTables(tmp_path, clock=clock, start=False)
    tables.enable_model("fraud")
    tables.capture(exchange(latency_s=0.0423, client_request_id="client-7"))
    tables.capture(
        exchange(status=400, response=b'{"error_code": "BAD_REQUEST"}', error="missing column", timestamp=T0 + 1)
    )
    tables.capture(exchange(status=500, response=None, timestamp=T0 + 86400))  # the next UTC day
    tables.close()
    path = tmp_path / "main" / "default" / "fraud_payload"
    dt_table = DeltaTable(path)
    assert dt_table.metadata().partition_columns == ["date"]
    table = read(path)
    assert table.schema == SCHEMA
    ok, bad, failed = table.to_pylist()
    assert ok["date"] == dt.date(2026, 1, 1) and failed["date"] == dt.date(2026, 1, 2)
    assert ok["timestamp_ms"] == int(T0 * 1000) and ok["execution_time_ms"] == 42 and ok["status_code"] == 200
    assert ok["client_request_id"] == "client-7" and ok["databricks_request_id"].startswith("req-")
    assert ok["request"] == '{"data": [[1, 2]]}' and ok["response"] == '{"predictions": [0.5]}'
    assert dict(ok["request_metadata"]) == {
        "door": "rest", "rows": "1", "execution_time_us": "42300", "model_name": "fraud", "model_version": "3",
        "model_alias": "champion", "caller": "alice@example.com", "content_type": "application/json",
    }  # fmt: skip
    assert bad["status_code"] == 400 and dict(bad["request_metadata"])["error"] == "missing column"
    assert failed["status_code"] == 500 and failed["response"] is None
    one_day = dt_table.to_pyarrow_table(filters=[("date", "=", dt.date(2026, 1, 2))])
    assert one_day.num_rows == 1


def test_duckdb_reads_the_table(tmp_path: Path, clock: FakeClock) -> None:
    duckdb = pytest.importorskip("duckdb")
    tables = InferenceTables(tmp_path, clock=clock, start=False)
    tables.enable_model("fraud")
    for status in (200, 200, 503):
        tables.capture(exchange(status=status))
    tables.close()
    dataset = DeltaTable(tmp_path / "main" / "default" / "fraud_payload").to_pyarrow_dataset()
    con = duckdb.connect()
    con.register("payload", dataset)
    rows = con.execute(
        "SELECT request_metadata['model_name'] AS model, count(*) AS n, count(*) FILTER (WHERE status_code >= 500) "
        "FROM payload GROUP BY 1"
    ).fetchall()
    assert [(m if isinstance(m, str) else m[0], n, e) for m, n, e in rows] == [("fraud", 3, 1)]


def test_polars_reads_the_table(tmp_path: Path, clock: FakeClock) -> None:
    polars = pytest.importorskip("polars")
    tables = InferenceTables(tmp_path, clock=clock, start=False)
    tables.enable_model("fraud")
    tables.capture(exchange())
    tables.close()
    frame = polars.scan_delta(str(tmp_path / "main" / "default" / "fraud_payload")).collect()
    assert frame.height == 1 and frame["status_code"].to_list() == [200]
    assert frame["date"].to_list() == [dt.date(2026, 1, 1)]


def test_compaction_every_k_commits_keeps_every_row(tmp_path: Path, clock: FakeClock) -> None:
    tables = InferenceTables(tmp_path, TablesSettings(flush_rows=1, compact_every=3), clock=clock, start=False)
    tables.enable_model("fraud")
    for _ in range(6):
        tables.capture(exchange())
        tables.tick()
    tables.close()
    path = tmp_path / "main" / "default" / "fraud_payload"
    operations = [h["operation"] for h in DeltaTable(path).history()]
    assert operations.count("OPTIMIZE") == 2 and operations.count("WRITE") == 6
    assert read(path).num_rows == 6
    assert len(DeltaTable(path).file_uris()) == 1
    assert len(list(path.rglob("*.parquet"))) == 8  # 6 appends + 2 compactions: vacuum (7 days) kept all


def test_a_failed_commit_counts_its_rows_and_the_writer_goes_on(tmp_path: Path, clock: FakeClock) -> None:
    tables = InferenceTables(tmp_path, clock=clock, start=False)
    tables.enable_model("fraud")
    tables.enable_model("ok", CaptureSettings(schema_name="good"))
    (tmp_path / "main" / "default").mkdir(parents=True)
    (tmp_path / "main" / "default" / "fraud_payload").write_text("not a directory")
    tables.capture(exchange("fraud"))
    tables.capture(exchange("ok"))
    tables.close()
    assert tables.failed == 1 and tables.written == 1
    assert read(tmp_path / "main" / "good" / "ok_payload").num_rows == 1


def test_recorder_hands_exchanges_of_captured_models_to_the_tables(manual: InferenceTables, tmp_path: Path) -> None:
    recorder = Recorder(capture=manual)
    state = {"request_id": "r1", "model": "fraud", "version": 3, "rows": 2, "body": b"{}", "response": b"[]"}
    recorder.record("mcp", state, 200, 0.0)
    recorder.record("mcp", {"model": "other"}, 200, 0.0)
    manual.close()
    table = read(tmp_path / "main" / "default" / "fraud_payload")
    assert table.num_rows == 1 and meta(table)["door"] == "mcp" and meta(table)["model_version"] == "3"


def test_settings_turn_capture_on_per_deployment(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path,
        deployments=(
            DeploymentSpec(model="models:/Fraud Model@champion", capture=CaptureSettings(sampling_fraction=0.5)),
            DeploymentSpec(model="models:/plain/1"),
        ),
    )
    tables = InferenceTables.from_settings(settings, start=False)
    target = tables.target("Fraud Model", None)
    assert target is not None and target.name == "main.default.Fraud_Model_payload"
    assert target.path == tmp_path / "tables" / "main" / "default" / "Fraud_Model_payload"
    assert target.sampling_fraction == 0.5 and not tables.wants("plain", None)
    tables.close()
    assert default_prefix("-x.y") == "_-x_y"


@pytest.mark.parametrize("bad", [{"catalog_name": "../etc"}, {"schema_name": "a/b"}, {"table_name_prefix": ""}])
def test_table_names_are_one_path_segment(bad: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="should match pattern"):
        CaptureSettings(**bad)  # type: ignore[arg-type]
