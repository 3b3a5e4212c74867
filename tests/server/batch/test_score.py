"""``server.batch.score``: every format in and out, options, and what a failure leaves behind (nothing)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from server.batch import BatchError, BatchModel, Cancelled, SchemaMismatch, score
from tests.server.batch.conftest import assert_parity, rows_for

pytestmark = pytest.mark.integration


def expected(model: BatchModel, table: pa.Table) -> np.ndarray:
    """The model's predictions for ``table`` in one runtime call (the reference every format must give)."""
    return np.asarray(model.predict({n: table.column(n) for n in model.signature.input_names}).to_pylist())


def write_input(table: pa.Table, path: Path, fmt: str) -> Path:
    if fmt == "parquet":
        pq.write_table(table, path := path / "in.parquet", row_group_size=300)
    elif fmt == "parquet-folder":
        ds.write_dataset(
            table, path := path / "in", format="parquet", partitioning=["product"], partitioning_flavor="hive"
        )
    elif fmt == "delta":
        write_deltalake(str(path := path / "in_delta"), table)
    else:
        pacsv.write_csv(table, path := path / "in.csv")
    return path


def read_output(path: Path) -> pa.Table:
    if (path / "_delta_log").is_dir():
        return DeltaTable(str(path)).to_pyarrow_table()
    if path.suffix == ".csv":
        return pacsv.read_csv(path)
    return ds.dataset(path, format="parquet", partitioning="hive").to_table()


def nothing_left(folder: Path, *expected_names: str) -> None:
    """Only the files the test made are in ``folder``: no output, no temporary."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected_names)


@pytest.mark.parametrize("in_fmt", ["parquet", "parquet-folder", "delta", "csv"])
@pytest.mark.parametrize(
    ("out_name", "out_fmt"), [("out.parquet", None), ("outdir", "parquet"), ("outdelta", "delta"), ("out.csv", None)]
)
def test_every_format_in_and_out(
    sales: BatchModel, tmp_path: Path, in_fmt: str, out_name: str, out_fmt: str | None
) -> None:
    table = rows_for(sales, 1000, seed=3)
    source = write_input(table, tmp_path, in_fmt)
    out = tmp_path / out_name
    assert score(sales, source, out, output_format=out_fmt, keep=["id"], chunk_rows=256) is None
    got = read_output(out).sort_by("id")
    assert got.column_names == ["id", "prediction"]
    assert got.column("id").to_pylist() == list(range(1000))
    assert_parity(sales, got.column("prediction").to_numpy(), expected(sales, table))


def test_chunking_changes_nothing_and_keeps_order(sales: BatchModel) -> None:
    table = rows_for(sales, 2000, seed=4)
    small = score(sales, table, keep=["*"], chunk_rows=7)
    large = score(sales, table, keep=["*"], chunk_rows=100_000)
    assert small is not None and large is not None
    assert small.column_names == [*table.column_names, "prediction"]
    assert small.column("id").to_pylist() == list(range(2000))
    assert_parity(sales, small.column("prediction").to_numpy(), large.column("prediction").to_numpy())


def test_from_a_model_uri_and_a_dataframe(batch_settings: object, sales: BatchModel) -> None:
    frame = rows_for(sales, 50).to_pandas()
    out = score("models:/sales_forecast@champion", frame, settings=batch_settings)  # type: ignore[arg-type]
    assert out is not None and out.column_names == ["prediction"] and out.num_rows == 50


def test_columns_rename_and_prediction_column(sales: BatchModel, tmp_path: Path) -> None:
    table = rows_for(sales, 100).rename_columns(["id", "yr", "product", "qty"])
    for columns in ({"year": "yr", "units": "qty"}, ["year=yr", "units=qty", "product"]):
        out = score(sales, table, columns=columns, keep=["id"], prediction_column="revenue")
        assert out is not None and out.column_names == ["id", "revenue"]
        assert_parity(sales, out.column("revenue").to_numpy(), expected(sales, rows_for(sales, 100)))
    with pytest.raises(BatchError, match="'colour' is not an input of models:/sales_forecast@champion"):
        score(sales, table, columns={"colour": "yr"})
    with pytest.raises(BatchError, match="also a kept input column"):
        score(sales, rows_for(sales, 10), keep=["id"], prediction_column="id")
    with pytest.raises(BatchError, match="--keep column 'nope' is not in the input"):
        score(sales, rows_for(sales, 10), keep=["nope"])


def test_classifier_probabilities_are_a_list_column_and_csv_columns(fraud: BatchModel, tmp_path: Path) -> None:
    table = rows_for(fraud, 300, seed=5)
    out = score(fraud, table, keep=["id"])
    assert out is not None and out.schema.field("prediction").type == pa.list_(pa.float32())
    probabilities = np.asarray(out.column("prediction").to_pylist())
    assert probabilities.shape == (300, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    score(fraud, table, tmp_path / "fraud.csv", keep=["id"])
    csv = pacsv.read_csv(tmp_path / "fraud.csv")
    assert csv.column_names == ["id", "prediction_0", "prediction_1"]
    assert_parity(fraud, csv.column("prediction_1").to_numpy(), probabilities[:, 1])


def test_partitioned_parquet_folder_and_delta(sales: BatchModel, tmp_path: Path) -> None:
    table = rows_for(sales, 500, seed=6)
    score(sales, table, tmp_path / "parts", output_format="parquet", keep=["id", "product"], partition_by=["product"])
    folders = sorted(p.name for p in (tmp_path / "parts").iterdir())
    assert folders == sorted(f"product={p}" for p in set(table.column("product").to_pylist()))
    assert read_output(tmp_path / "parts").num_rows == 500
    score(sales, table, tmp_path / "d", output_format="delta", keep=["id", "product"], partition_by=["product"])
    assert DeltaTable(str(tmp_path / "d")).metadata().partition_columns == ["product"]
    with pytest.raises(BatchError, match="--partition-by column 'year' is not in the output"):
        score(sales, table, tmp_path / "p2", output_format="parquet", partition_by=["year"])
    with pytest.raises(BatchError, match="--partition-by needs a folder output"):
        score(sales, table, tmp_path / "p.parquet", keep=["product"], partition_by=["product"])
    nothing_left(tmp_path, "parts", "d")


def test_modes_error_overwrite_and_delta_append(sales: BatchModel, tmp_path: Path) -> None:
    table = rows_for(sales, 200, seed=7)
    target = tmp_path / "t"
    score(sales, table, target, output_format="delta", keep=["id"])
    with pytest.raises(BatchError, match="exists; pass --mode overwrite or append"):
        score(sales, table, target, keep=["id"])
    score(sales, table, target, keep=["id"], mode="append")
    dt = DeltaTable(str(target))
    assert dt.version() == 1 and dt.to_pyarrow_table().num_rows == 400  # one commit per run
    score(sales, table.slice(0, 10), target, keep=["id"], mode="overwrite")
    assert DeltaTable(str(target)).to_pyarrow_table().num_rows == 10
    file = tmp_path / "f.parquet"
    score(sales, table, file)
    with pytest.raises(BatchError, match=r"exists; pass --mode overwrite$"):
        score(sales, table, file)
    score(sales, table.slice(0, 5), file, mode="overwrite")
    assert pq.read_table(file).num_rows == 5
    with pytest.raises(BatchError, match="--mode append needs a Delta output"):
        score(sales, table, file, mode="append")


def test_bad_paths_and_formats(sales: BatchModel, tmp_path: Path) -> None:
    table = rows_for(sales, 10)
    with pytest.raises(BatchError, match="does not exist"):
        score(sales, tmp_path / "missing.parquet", tmp_path / "o.parquet")
    with pytest.raises(BatchError, match="cannot tell the output format"):
        score(sales, table, tmp_path / "o.txt")
    with pytest.raises(BatchError, match=r"output folder .* does not exist"):
        score(sales, table, tmp_path / "no" / "o.parquet")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BatchError, match="cannot tell the format"):
        score(sales, tmp_path / "notes.txt", tmp_path / "o.parquet")
    nothing_left(tmp_path, "notes.txt")


def test_empty_input_writes_an_empty_output(sales: BatchModel, tmp_path: Path) -> None:
    score(sales, rows_for(sales, 0), tmp_path / "e.parquet", keep=["id"])
    out = pq.read_table(tmp_path / "e.parquet")
    assert out.num_rows == 0 and out.column_names == ["id", "prediction"]


# -- the table does not fit the signature: the column is named and nothing is written ---------------------------


def test_missing_column_is_named_before_scoring(sales: BatchModel, tmp_path: Path) -> None:
    source = write_input(rows_for(sales, 100).drop_columns(["units"]), tmp_path, "parquet")
    with pytest.raises(SchemaMismatch, match="input has no column 'units', which the model requires") as info:
        score(sales, source, tmp_path / "o.parquet")
    assert info.value.column == "units"
    nothing_left(tmp_path, "in.parquet")


def test_wrong_type_is_named_before_scoring(sales: BatchModel, tmp_path: Path) -> None:
    table = rows_for(sales, 100)
    table = table.set_column(3, "units", pa.array(["many"] * 100))
    with pytest.raises(SchemaMismatch, match="column 'units' is string, but the model takes double"):
        score(sales, table, tmp_path / "o.parquet")
    with pytest.raises(SchemaMismatch, match=r"column 'qty' \(model input 'units'\) is string"):
        score(sales, table.rename_columns(["id", "year", "product", "qty"]), columns={"units": "qty"})
    nothing_left(tmp_path)


def test_nulls_from_parquet_statistics_before_scoring(sales: BatchModel, tmp_path: Path, monkeypatch) -> None:
    table = rows_for(sales, 1000)
    units = table.column("units").to_pylist()
    units[900] = None
    source = write_input(table.set_column(3, "units", pa.array(units, pa.float64())), tmp_path, "parquet")
    monkeypatch.setattr(BatchModel, "run", lambda *_: pytest.fail("a row was scored"))
    with pytest.raises(SchemaMismatch, match="column 'units' holds 1 null"):
        score(sales, source, tmp_path / "o.parquet")
    nothing_left(tmp_path, "in.parquet")


def test_nulls_in_a_later_chunk_name_column_and_row(sales: BatchModel, tmp_path: Path) -> None:
    table = rows_for(sales, 1000)
    products = table.column("product").to_pylist()
    products[777] = None
    source = write_input(table.set_column(2, "product", pa.array(products, pa.string())), tmp_path, "csv")
    with pytest.raises(SchemaMismatch, match=r"column 'product' row 777: value is null but the model requires it"):
        score(sales, source, tmp_path / "o.parquet", chunk_rows=100)
    nothing_left(tmp_path, "in.csv")


def test_bad_values_in_a_later_chunk_name_the_row(sales: BatchModel, tmp_path: Path) -> None:
    table = rows_for(sales, 500)
    units = table.column("units").to_numpy().copy()
    units[321] = np.inf
    with pytest.raises(SchemaMismatch, match=r"units.*row 321"):
        score(sales, table.set_column(3, "units", pa.array(units)), tmp_path / "o.parquet", chunk_rows=50)
    nothing_left(tmp_path)


# -- interrupted runs leave no output -------------------------------------------------------------------------------


def failing_after(chunks: int, monkeypatch: pytest.MonkeyPatch, action=None) -> None:
    """Make the runtime step fail (or call ``action``) on chunk ``chunks`` + 1: a fault mid-stream."""
    real = BatchModel.run
    seen = [0]

    def run(self: BatchModel, prepared: object) -> pa.Array:
        seen[0] += 1
        if seen[0] > chunks:
            if action is None:
                raise RuntimeError("the model crashed")
            action()
        return real(self, prepared)  # type: ignore[arg-type]

    monkeypatch.setattr(BatchModel, "run", run)


@pytest.mark.parametrize(("name", "fmt"), [("o.parquet", None), ("o.csv", None), ("od", "parquet"), ("dl", "delta")])
def test_failure_mid_stream_leaves_no_output(
    sales: BatchModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, fmt: str | None
) -> None:
    failing_after(3, monkeypatch)
    with pytest.raises(RuntimeError, match="the model crashed"):
        score(sales, rows_for(sales, 2000), tmp_path / name, output_format=fmt, chunk_rows=100)
    nothing_left(tmp_path)


def test_failure_mid_stream_keeps_the_previous_output(
    sales: BatchModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = rows_for(sales, 2000)
    score(sales, table.slice(0, 10), tmp_path / "o.parquet")
    score(sales, table.slice(0, 10), tmp_path / "dl", output_format="delta")
    failing_after(3, monkeypatch)
    with pytest.raises(RuntimeError):
        score(sales, table, tmp_path / "o.parquet", mode="overwrite", chunk_rows=100)
    with pytest.raises(RuntimeError):
        score(sales, table, tmp_path / "dl", mode="append", chunk_rows=100)
    assert pq.read_table(tmp_path / "o.parquet").num_rows == 10
    dt = DeltaTable(str(tmp_path / "dl"))
    assert dt.version() == 0 and dt.to_pyarrow_table().num_rows == 10  # the append committed nothing
    nothing_left(tmp_path, "o.parquet", "dl")


def test_cancel_stops_between_chunks_and_writes_nothing(
    sales: BatchModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cancel = threading.Event()
    failing_after(2, monkeypatch, action=cancel.set)
    with pytest.raises(Cancelled, match=r"interrupted after .* rows; no output was written"):
        score(sales, rows_for(sales, 5000), tmp_path / "o.parquet", chunk_rows=100, cancel=cancel)
    nothing_left(tmp_path)
