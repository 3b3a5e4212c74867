"""Where scored rows go: a Parquet file or (partitioned) folder, a Delta Lake table, a CSV file.

Nothing is half-written. Files and folders are written under a hidden temporary name next to the target
(``.<name>.modelport-tmp-<random>``) and renamed onto it only once every row is written (``commit``); any failure
or Ctrl-C removes the temporary (``abort``). A Delta append or overwrite of an existing table writes its data files
and commits one transaction at the end: an aborted run adds no version (its unreferenced files, if any, are what
``vacuum`` removes). Readers skip hidden names, so a temporary is never read as part of a dataset.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pyarrow as pa

from server.batch.errors import BatchError
from server.batch.sources import FORMATS, _first_line, is_delta

Mode = Literal["error", "overwrite", "append"]
MODES = ("error", "overwrite", "append")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


def output_format(path: Path, given: str | None = None) -> str:
    """``given``, else from the path: ``.parquet``/``.pq``, ``.csv``, or an existing Delta table."""
    if given is not None:
        if given not in FORMATS:
            raise BatchError(f"unknown format '{given}'; use one of {', '.join(FORMATS)}")
        return given
    if path.is_dir() and is_delta(path):
        return "delta"
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise BatchError(
            f"cannot tell the output format of '{path}'; pass --output-format ({'|'.join(FORMATS)}): a folder "
            "path is a Parquet dataset or a Delta table"
        )
    return fmt


class Sink:
    """Writes one stream of record batches to ``path`` atomically. Check with ``open_sink`` before scoring."""

    def __init__(self, path: Path, format: str, mode: Mode, partition_by: Sequence[str]) -> None:
        self.path = path
        self.format = format
        self.mode = mode
        self.partition_by = list(partition_by)
        self.folder = format == "delta" or (format == "parquet" and path.suffix.lower() not in (".parquet", ".pq"))
        self._tmp = path.parent / f".{path.name}.modelport-tmp-{secrets.token_hex(4)}"
        self._in_place = format == "delta" and is_delta(path)  # an existing Delta table commits by itself

    def check(self, schema: pa.Schema) -> None:
        """Refuse, before any row is scored, what cannot be written: partition columns absent from the output."""
        missing = [c for c in self.partition_by if c not in schema.names]
        if missing:
            raise BatchError(
                f"--partition-by column '{missing[0]}' is not in the output (columns: {', '.join(schema.names)}); "
                "carry it with --keep"
            )

    def write(self, reader: pa.RecordBatchReader) -> None:
        """Consume ``reader`` into the temporary location (or the Delta transaction). Call ``commit`` after."""
        try:
            if self.format == "delta":
                self._write_delta(reader)
            elif self.format == "csv":
                self._write_csv(reader)
            elif self.folder:
                import pyarrow.dataset as ds

                ds.write_dataset(
                    reader,
                    self._tmp,
                    format="parquet",
                    partitioning=self.partition_by or None,
                    partitioning_flavor="hive" if self.partition_by else None,
                    basename_template="part-{i}.parquet",
                )
            else:
                import pyarrow.parquet as pq

                with pq.ParquetWriter(self._tmp, reader.schema) as writer:
                    for batch in reader:
                        writer.write_batch(batch)
        except (pa.ArrowException, OSError) as exc:
            raise BatchError(f"cannot write {self.format} output '{self.path}': {_first_line(exc)}") from None

    def commit(self) -> None:
        """Put the written output in place (an atomic rename; a replaced folder is swapped out, then removed)."""
        if self._in_place:
            return
        if self.folder and self.path.exists():
            old = self.path.parent / f".{self.path.name}.modelport-old-{secrets.token_hex(4)}"
            self.path.rename(old)
            self._tmp.rename(self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Remove whatever was written; the target is as it was."""
        if self._tmp.is_dir():
            shutil.rmtree(self._tmp, ignore_errors=True)
        elif self._tmp.exists():
            self._tmp.unlink(missing_ok=True)

    def _write_delta(self, reader: pa.RecordBatchReader) -> None:
        from deltalake import write_deltalake
        from deltalake.exceptions import DeltaError

        target = str(self.path if self._in_place else self._tmp)
        partition_by = self.partition_by or None
        try:
            if self.mode == "append":
                write_deltalake(target, reader, mode="append", partition_by=partition_by)
            elif self._in_place:  # overwrite an existing table: one new version, the new schema
                write_deltalake(target, reader, mode="overwrite", partition_by=partition_by, schema_mode="overwrite")
            else:
                write_deltalake(target, reader, mode="error", partition_by=partition_by)
        except DeltaError as exc:
            raise BatchError(f"cannot write Delta table '{self.path}': {_first_line(exc)}") from None

    def _write_csv(self, reader: pa.RecordBatchReader) -> None:
        import pyarrow.csv as pacsv

        writer = None
        try:
            for batch in reader:
                flat = flatten(batch)
                if writer is None:
                    writer = pacsv.CSVWriter(self._tmp, flat.schema)
                writer.write_batch(flat)
            if writer is None:  # no rows: a header only
                empty = pa.RecordBatch.from_pylist([], schema=reader.schema)
                writer = pacsv.CSVWriter(self._tmp, flatten(empty).schema)
        finally:
            if writer is not None:
                writer.close()


def open_sink(path: str | Path, format: str | None, mode: Mode, partition_by: Sequence[str] = ()) -> Sink:
    """Check that ``path`` can take the output (before any row is scored) and return its sink.

    Raises:
        BatchError: unknown format or mode, the target exists under ``mode="error"``, append to a non-Delta
            output, partitions of a single file, or a missing parent folder.
    """
    path = Path(path)
    fmt = output_format(path, format)
    if mode not in MODES:
        raise BatchError(f"unknown mode '{mode}'; use one of {', '.join(MODES)}")
    if mode == "append" and fmt != "delta":
        raise BatchError("--mode append needs a Delta output (--output-format delta)")
    if not path.parent.is_dir():
        raise BatchError(f"output folder '{path.parent}' does not exist")
    if path.exists():
        if mode == "error":
            hint = "--mode overwrite or append" if fmt == "delta" else "--mode overwrite"
            raise BatchError(f"output '{path}' exists; pass {hint}")
        if fmt == "delta" and not is_delta(path):
            raise BatchError(f"output '{path}' exists and is not a Delta table; remove it or pick another path")
    sink = Sink(path, fmt, mode, partition_by)
    if partition_by and not sink.folder:
        raise BatchError(f"--partition-by needs a folder output (a Parquet folder or a Delta table), not {fmt} file")
    if sink.folder and path.exists() and not path.is_dir():
        raise BatchError(f"output '{path}' is a file; a {fmt} folder output needs a folder path")
    return sink


# -- CSV: list columns (class probabilities) become one column per element ---------------------------------------


def flatten(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A batch CSV can hold: a list column ``p`` of width k becomes ``p_0`` … ``p_{k-1}``."""
    names: list[str] = []
    arrays: list[pa.Array] = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_list(field.type) or pa.types.is_fixed_size_list(field.type):
            width = len(column[0].as_py()) if len(column) else 0
            values = column.flatten()
            for i in range(width):
                names.append(f"{field.name}_{i}")
                arrays.append(values[i::width] if width else values)
        else:
            names.append(field.name)
            arrays.append(column)
    return pa.record_batch(arrays, names=names)
