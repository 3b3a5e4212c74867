"""``score()``: stream a table through a model and write (or return) the predictions.

The job checks everything it can before reading a row (model, input schema against the signature, output path
and mode, Parquet null statistics), then runs a three-stage pipeline with bounded queues, so memory stays at a few
chunks whatever the table size:

    read + decode (thread)  →  runtime session (thread)  →  write into a temporary (thread)

and commits the output (one rename, or one Delta transaction) only after the last chunk. Any failure, Ctrl-C or
``cancel`` event removes the temporary and leaves the target as it was.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from server.batch.errors import BatchError, Cancelled, SchemaMismatch
from server.batch.model import CSV_TYPES, DEFAULT_CHUNK_ROWS, BatchModel, Prepared
from server.batch.progress import Progress
from server.batch.sinks import Mode, open_sink
from server.batch.sources import Input, open_source
from server.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Chunks waiting between two stages; memory is about (2 x depth + 3) chunks.
QUEUE_DEPTH = 2
_DONE = object()


def score(
    model: str | BatchModel,
    input: Input,
    output: str | Path | None = None,
    *,
    input_format: str | None = None,
    output_format: str | None = None,
    columns: Mapping[str, str] | Sequence[str] | None = None,
    keep: Sequence[str] = (),
    prediction_column: str = "prediction",
    mode: Mode = "error",
    partition_by: Sequence[str] = (),
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    settings: Settings | None = None,
    show_progress: bool = False,
    cancel: threading.Event | None = None,
) -> pa.Table | None:
    """Score every row of ``input`` with ``model``, as the endpoint would, in chunks of ``chunk_rows`` rows.

    Args:
        model: a model URI (``models:/name@alias``, ``name/3`` ...) or a ``BatchModel`` loaded once for many jobs.
        input: a Parquet file or folder, a Delta table folder, a CSV file, a ``pyarrow.Table`` or a DataFrame.
        output: where to write; ``None`` returns the result as a ``pyarrow.Table`` instead (it must fit in memory).
        input_format, output_format: ``parquet``, ``delta`` or ``csv`` when the path does not say.
        columns: model input → input column (``{"units": "qty"}`` or ``["units=qty"]``); others by their own name.
        keep: input columns carried to the output before the prediction (ids); ``["*"]`` keeps every column.
        prediction_column: name of the prediction column (a list column for 2-D outputs such as probabilities).
        mode: ``error`` (refuse an existing output), ``overwrite``, or ``append`` (Delta only).
        partition_by: output columns to partition a Parquet folder or Delta table by (hive-style).
        chunk_rows: rows per chunk handed to the runtime; memory grows with it, not with the table.
        settings: registry, state dir (conversion cache), providers, threads; default: env and defaults.
        show_progress: a progress bar on a terminal (stderr), log lines otherwise.
        cancel: set it (e.g. from a signal handler) to stop between chunks; nothing is written.

    Returns:
        The scored table when ``output`` is ``None``, else ``None``.

    Raises:
        SchemaMismatch: the input does not fit the signature (names the column, and the row once read).
        BatchError: bad input, output, mode or options; ``Cancelled`` when ``cancel`` was set.
    """
    if chunk_rows < 1:
        raise BatchError(f"--chunk-rows must be at least 1, got {chunk_rows}")
    bm = model if isinstance(model, BatchModel) else BatchModel.load(model, settings, chunk_rows=chunk_rows)
    mapping = column_mapping(columns, bm)
    csv_types = {mapping.get(c.name, c.name): CSV_TYPES[c.type] for c in bm.signature.inputs if c.type in CSV_TYPES}
    source = open_source(input, input_format, csv_types=csv_types)
    bm.check_schema(source.schema, mapping)
    kept = _kept(keep, source.schema)
    if prediction_column in kept:
        raise BatchError(f"--prediction-column '{prediction_column}' is also a kept input column; pick another name")
    schema = pa.schema([source.schema.field(k) for k in kept] + [pa.field(prediction_column, bm.output_type)])
    sink = open_sink(output, output_format, mode, partition_by) if output is not None else None
    if sink is not None:
        sink.check(schema)
    elif partition_by:
        raise BatchError("--partition-by needs an output path")
    inputs = {c.name: mapping.get(c.name, c.name) for c in bm.signature.inputs}
    inputs = {name: src for name, src in inputs.items() if src in source.schema.names}
    _check_null_stats(source.null_counts([src for src in bm.required(mapping) if src in source.schema.names]), bm)
    progress = Progress(source.count_rows() if show_progress else None, bm.uri, enabled=show_progress)
    halt = threading.Event()  # set when the job ends, whatever happened: the pipeline's threads stop
    threads: list[threading.Thread] = []

    def prepared() -> Iterator[tuple[pa.RecordBatch, Prepared]]:
        offset = 0
        for batch in source.batches(list(dict.fromkeys([*kept, *inputs.values()])), chunk_rows):
            yield batch, bm.prepare({name: batch.column(src) for name, src in inputs.items()}, offset)
            offset += batch.num_rows

    def scored() -> Iterator[pa.RecordBatch]:
        for batch, chunk in _prefetch(prepared(), halt, "modelport-batch-read", threads):
            arrays = [batch.column(k) for k in kept] + [bm.run(chunk)]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)

    interrupted = threading.Event()

    def counted(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if interrupted.is_set() or (cancel is not None and cancel.is_set()):
                raise Cancelled(f"interrupted after {progress.rows:,} rows; no output was written")
            progress.advance(batch.num_rows)
            yield batch

    def run() -> pa.Table | None:
        stream = counted(_prefetch(scored(), halt, "modelport-batch-run", threads))
        if sink is None:
            return pa.Table.from_batches(list(stream), schema=schema)
        failure: list[BaseException] = []
        try:
            sink.write(pa.RecordBatchReader.from_batches(schema, _capture(stream, failure)))
            if failure:  # a writer that swallowed the reader's error
                raise failure[0]
            sink.commit()
        except BaseException as exc:
            sink.abort()
            if failure and failure[0] is not exc:
                raise failure[0] from None  # the reader's own error, not the native writer's wrapping of it
            raise
        return None

    ok = False
    try:
        result = _in_worker(run, interrupted)
        ok = True
        return result
    finally:
        halt.set()
        for thread in threads:  # never leave one inside onnxruntime or Arrow while the interpreter exits
            thread.join()
        progress.finish(ok)


def _in_worker(fn: Callable[[], T], interrupted: threading.Event) -> T:
    """``fn()`` in a worker thread while this thread waits in short joins.

    A native writer (delta-rs, Arrow) pulls the batches; this thread stays in Python, so a Ctrl-C
    (``KeyboardInterrupt``) or a signal handler setting ``cancel`` runs at once. On ``KeyboardInterrupt`` the worker
    is told to stop (between chunks), cleans up and is waited for; then the interrupt goes on.
    """
    outcome: list[Any] = []

    def work() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:
            outcome.append((False, exc))

    worker = threading.Thread(target=work, name="modelport-batch-write", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
    except BaseException:
        interrupted.set()
        worker.join()
        raise
    done, value = outcome[0]
    if not done:
        raise value
    return value  # type: ignore[no-any-return]


def column_mapping(columns: Mapping[str, str] | Sequence[str] | None, bm: BatchModel) -> dict[str, str]:
    """``--columns`` as model input → input column, each name a model input."""
    if columns is None:
        return {}
    if isinstance(columns, Mapping):
        pairs = list(columns.items())
    else:
        pairs = []
        for item in columns:
            target, _, src = item.partition("=")
            pairs.append((target.strip(), (src or target).strip()))
    names = bm.signature.input_names
    for target, src in pairs:
        if target not in names:
            raise BatchError(f"--columns: '{target}' is not an input of {bm.uri} (it takes {', '.join(names)})")
        if not src:
            raise BatchError(f"--columns: '{target}=' names no input column")
    return dict(pairs)


def _kept(keep: Sequence[str], schema: pa.Schema) -> list[str]:
    if list(keep) == ["*"]:
        return list(schema.names)
    for name in keep:
        if schema.get_field_index(name) < 0:
            raise BatchError(f"--keep column '{name}' is not in the input (it has: {', '.join(schema.names[:30])})")
    return list(dict.fromkeys(keep))


def _check_null_stats(counts: Mapping[str, int] | None, bm: BatchModel) -> None:
    for name, nulls in (counts or {}).items():
        if nulls:
            raise SchemaMismatch(
                f"column '{name}' holds {nulls:,} null(s) but the model requires a value; nothing was scored",
                column=name,
            )


def _capture(batches: Iterator[T], failure: list[BaseException]) -> Iterator[T]:
    """Yield ``batches``, keeping the first exception so it survives a trip through a native writer."""
    try:
        yield from batches
    except BaseException as exc:
        failure.append(exc)
        raise


def _prefetch(items: Iterator[T], stop: threading.Event, name: str, threads: list[threading.Thread]) -> Iterator[T]:
    """Run ``items`` in a daemon thread, ``QUEUE_DEPTH`` ahead of the consumer; its exceptions re-raise here.

    The thread ends with ``items``, or within 0.1 s of ``stop`` (set when the job ends, e.g. after a failure
    downstream).
    """
    slots: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if stop.is_set() or not put(item):
                    return
            put(_DONE)
        except BaseException as exc:
            put(exc)

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    threads.append(thread)
    while True:
        try:
            item = slots.get(timeout=0.1)
        except queue.Empty:
            if not thread.is_alive() and slots.empty():
                raise BatchError(f"{name} stopped without finishing") from None
            continue
        if item is _DONE:
            return
        if isinstance(item, BaseException):
            raise item
        yield item
