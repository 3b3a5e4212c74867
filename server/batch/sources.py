"""Where the rows come from: Parquet files or folders, Delta Lake tables, CSV files, or in-memory tables.

Every input is opened as a ``pyarrow.dataset`` and read as a stream of record batches of at most ``chunk_rows``
rows, reading only the columns the job needs; nothing holds more than a chunk (plus Arrow's read-ahead).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from server.batch.errors import BatchError

FORMATS = ("parquet", "delta", "csv")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
#: Statistics are read from at most this many files for the up-front null check (one footer read each).
_STATS_FILES = 2000

#: A path (str or Path), a ``pyarrow.Table``, a ``pyarrow.dataset.Dataset`` or a pandas DataFrame.
Input = Any


def is_delta(path: Path) -> bool:
    return (path / "_delta_log").is_dir()


def detect_format(path: Path, given: str | None = None) -> str:
    """``given``, else the format the path says: a ``_delta_log`` folder, ``.parquet``/``.pq``, ``.csv``, or a
    folder holding Parquet files."""
    if given is not None:
        if given not in FORMATS:
            raise BatchError(f"unknown format '{given}'; use one of {', '.join(FORMATS)}")
        return given
    if path.is_dir():
        if is_delta(path):
            return "delta"
        if any(path.rglob("*.parquet")):
            return "parquet"
        if any(path.rglob("*.csv")):
            return "csv"
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise BatchError(f"cannot tell the format of '{path}'; pass --input-format ({'|'.join(FORMATS)})")
    return fmt


@dataclass
class Source:
    """An opened input: its Arrow schema and a way to stream its rows.

    Attributes:
        name: the path (or ``<table>``) for messages.
        format: ``parquet``, ``delta``, ``csv`` or ``table``.
        dataset: the pyarrow dataset read.
    """

    name: str
    format: str
    dataset: ds.Dataset

    @property
    def schema(self) -> pa.Schema:
        return self.dataset.schema

    def count_rows(self) -> int | None:
        """Rows in the input when that is cheap to know (Parquet footers, Delta, in-memory), else ``None``."""
        if self.format == "csv":
            return None
        try:
            return int(self.dataset.count_rows())
        except (pa.ArrowException, OSError):
            return None

    def batches(self, columns: Sequence[str], chunk_rows: int) -> Iterator[pa.RecordBatch]:
        """The rows of ``columns``, in record batches of at most ``chunk_rows`` rows, in input order."""
        options: dict[str, Any] = {}
        if self.format in ("parquet", "delta"):
            # NOTE: no pre-buffering of whole row groups and one batch of read-ahead: memory stays at about one row
            # group (decoded) plus the chunks in flight; measured as fast on local files (bench/batch_score.py).
            options["fragment_scan_options"] = ds.ParquetFragmentScanOptions(pre_buffer=False)
        scanner = self.dataset.scanner(
            columns=list(columns), batch_size=chunk_rows, batch_readahead=1, fragment_readahead=1, **options
        )
        try:
            for batch in scanner.to_batches():
                if batch.num_rows:
                    yield batch
        except (pa.ArrowException, OSError) as exc:
            raise BatchError(f"cannot read {self.name}: {_first_line(exc)}") from None

    def null_counts(self, columns: Sequence[str]) -> Mapping[str, int] | None:
        """Nulls per column from Parquet statistics, without reading any data; ``None`` when any file lacks them."""
        if self.format not in ("parquet", "delta"):
            return None
        counts = dict.fromkeys(columns, 0)
        try:
            fragments = list(self.dataset.get_fragments())
            if len(fragments) > _STATS_FILES:
                return None
            for fragment in fragments:
                meta = fragment.metadata
                paths = {meta.schema.column(j).path: j for j in range(meta.num_columns)}
                for name in columns:
                    j = paths.get(name)
                    if j is None:
                        return None  # a partition column, or a file written before the column existed
                    for g in range(meta.num_row_groups):
                        stats = meta.row_group(g).column(j).statistics
                        if stats is None or not stats.has_null_count:
                            return None
                        counts[name] += stats.null_count
        except (AttributeError, pa.ArrowException, OSError):
            return None
        return counts


def open_source(
    input: Input, format: str | None = None, *, csv_types: Mapping[str, pa.DataType] | None = None
) -> Source:
    """Open an input for streaming.

    Args:
        input: a path (Parquet file or folder, Delta table folder, CSV file or folder), a ``pyarrow.Table``, a
            ``pyarrow.dataset.Dataset`` or a pandas DataFrame.
        format: ``parquet``, ``delta`` or ``csv``; default: from the path.
        csv_types: column → Arrow type for CSV inputs (the signature's types, so ``"007"`` stays a string).

    Raises:
        BatchError: the path does not exist, its format is unknown or it cannot be opened.
    """
    if isinstance(input, ds.Dataset):
        return Source("<dataset>", "table", input)
    if isinstance(input, pa.Table):
        return Source("<table>", "table", ds.dataset(input))
    if hasattr(input, "to_numpy") and hasattr(input, "columns"):  # a pandas DataFrame
        return Source("<dataframe>", "table", ds.dataset(pa.Table.from_pandas(input, preserve_index=False)))
    path = Path(input)
    if not path.exists():
        raise BatchError(f"input '{path}' does not exist")
    fmt = detect_format(path, format)
    try:
        if fmt == "delta":
            from deltalake import DeltaTable

            if not is_delta(path):
                raise BatchError(f"input '{path}' is not a Delta table (no _delta_log folder)")
            return Source(str(path), fmt, DeltaTable(str(path)).to_pyarrow_dataset())
        if fmt == "csv":
            import pyarrow.csv as pacsv

            options = pacsv.ConvertOptions(column_types=dict(csv_types or {}), strings_can_be_null=True)
            return Source(str(path), fmt, ds.dataset(path, format=ds.CsvFileFormat(convert_options=options)))
        return Source(str(path), fmt, ds.dataset(path, format="parquet", partitioning="hive"))
    except BatchError:
        raise
    except Exception as exc:  # pyarrow and delta-rs raise many kinds; each is one line for the user
        raise BatchError(f"cannot open {fmt} input '{path}': {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:500]
