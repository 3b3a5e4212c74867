"""``ai_query`` in DuckDB: vectorised through the runtime, the same predictions as ``score``, errors in model terms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from server.batch import BatchError, BatchModel, SchemaMismatch, SqlSession, score
from server.settings import Settings
from tests.server.batch.conftest import assert_parity, rows_for

pytestmark = pytest.mark.integration

SALES = "struct_pack(year := year, product := product, units := units)"


@pytest.fixture
def session(batch_settings: Settings, sales: BatchModel, fraud: BatchModel) -> SqlSession:
    s = SqlSession(batch_settings)
    s.models.update({"models:/sales_forecast@champion": sales, "models:/fraud_detector@champion": fraud})
    return s


def one(session: SqlSession, sql: str) -> pa.Table:
    (table,) = list(session.execute(sql))
    assert table is not None
    return table


def test_ai_query_over_a_parquet_file_matches_score(session: SqlSession, sales: BatchModel, tmp_path: Path) -> None:
    table = rows_for(sales, 5000, seed=11)
    pq.write_table(table, tmp_path / "plan.parquet")
    got = one(session, f"SELECT id, ai_query('sales_forecast@champion', {SALES}) AS p FROM '{tmp_path}/plan.parquet'")
    want = score(sales, table, keep=["id"])
    assert want is not None
    got = got.sort_by("id")
    assert got.column("id").to_pylist() == list(range(5000))
    assert got.schema.field("p").type == pa.float32()
    assert_parity(sales, got.column("p").to_numpy(), want.column("prediction").to_numpy())


def test_ai_query_is_vectorised(session: SqlSession, sales: BatchModel, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = BatchModel.predict

    def predict(self: BatchModel, columns: dict, offset: int = 0) -> pa.Array:
        calls.append(len(next(iter(columns.values()))))
        return real(self, columns, offset)

    monkeypatch.setattr(BatchModel, "predict", predict)
    session.connection.register("plan", rows_for(sales, 10_000))
    total = one(session, f"SELECT count(ai_query('sales_forecast@champion', {SALES})) AS n FROM plan")
    assert total.column("n").to_pylist() == [10_000]
    assert sum(calls) == 10_000 and len(calls) <= 10  # whole DuckDB vectors (2,048 rows), never one call per row


def test_classifier_returns_probabilities_and_versions_mix(session: SqlSession, fraud: BatchModel) -> None:
    session.connection.register("tx", rows_for(fraud, 100))
    fields = ", ".join(f"{c} := {c}" for c in fraud.signature.input_names)
    got = one(
        session,
        f"SELECT ai_query('fraud_detector@champion', struct_pack({fields})) AS a, "
        f"ai_query('fraud_detector/1', struct_pack({fields})) AS b FROM tx",
    )
    a = np.asarray(got.column("a").to_pylist())
    assert a.shape == (100, 2)
    np.testing.assert_array_equal(a, np.asarray(got.column("b").to_pylist()))  # @champion is version 1


def test_statements_run_in_order(session: SqlSession) -> None:
    results = list(
        session.execute(
            "CREATE TABLE plan AS SELECT 2025 AS year, 'product_A' AS product, 100.0 AS units; "
            f"SELECT ai_query('sales_forecast@champion', {SALES}) AS p FROM plan"
        )
    )
    assert results[0] is None and results[1] is not None
    assert results[1].column("p").to_pylist()[0] == pytest.approx(2647.46, rel=1e-4)  # the README's example


@pytest.mark.parametrize(
    ("struct", "message"),
    [
        (
            "struct_pack(year := 2025, units := 1.0)",
            r"the struct has no 'product' \(VARCHAR\), which the model requires",
        ),
        ("struct_pack(year := 2025, product := 3, units := 1.0)", "column 'product' is INTEGER, but the model takes"),
        (
            "struct_pack(year := 2025, product := 'product_A', units := 1.0, colour := 'red')",
            "the model takes no 'colour'",
        ),
    ],
)
def test_a_struct_that_does_not_fit_names_the_column(session: SqlSession, struct: str, message: str) -> None:
    with pytest.raises(BatchError, match=message):
        list(session.execute(f"SELECT ai_query('sales_forecast@champion', {struct})"))


def test_nulls_and_unknown_models(session: SqlSession) -> None:
    with pytest.raises(SchemaMismatch, match="column 'product': value is null but the model requires it"):
        list(session.execute("SELECT ai_query('sales_forecast@champion', struct_pack(year := 2025, "
                             "product := NULL::VARCHAR, units := 1.0))"))  # fmt: skip
    with pytest.raises(BatchError, match="cannot load models:/nope@champion"):
        list(session.execute("SELECT ai_query('nope@champion', struct_pack(a := 1))"))
    with pytest.raises(BatchError, match="same inputs and output type"):
        list(session.execute(f"SELECT ai_query('sales_forecast@champion', {SALES}), "
                             "ai_query('fraud_detector@champion', struct_pack(amount := 1.0)) FROM plan"))  # fmt: skip
    with pytest.raises(BatchError, match="syntax error"):
        list(session.execute("SELEC 1"))
