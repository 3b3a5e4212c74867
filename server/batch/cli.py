"""``modelport score`` (a table through a model) and ``modelport sql`` (DuckDB with ``ai_query``).

Failures are one line on stderr, never a traceback: exit 2 for bad input, options or a table that does not fit
the model (nothing is written), 1 when the model itself fails, 130 when interrupted (Ctrl-C; nothing is written).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.batch.errors import BatchError, Cancelled
from server.settings import Settings

#: The same as ``sources.FORMATS``, ``sinks.MODES`` and ``model.DEFAULT_CHUNK_ROWS`` (not imported: the ``modelport``
#: command parses its arguments without importing pyarrow or MLflow).
FORMATS = ("parquet", "delta", "csv")
MODES = ("error", "overwrite", "append")
DEFAULT_CHUNK_ROWS = 65_536

log = logging.getLogger(__name__)


def add_parsers(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:  # type: ignore[type-arg]
    score = sub.add_parser("score", help="score a Parquet, Delta or CSV table with a model, in chunks")
    score.add_argument("model", metavar="MODEL_URI", help="models:/name@alias, models:/name/3, name@alias or name/3")
    score.add_argument("--input", "-i", required=True, help="Parquet file or folder, Delta table folder, CSV file")
    score.add_argument("--output", "-o", required=True, help="Parquet file or folder, Delta table folder, CSV file")
    score.add_argument("--input-format", choices=FORMATS, help="default: from the path")
    score.add_argument("--output-format", choices=FORMATS, help="default: from the path (a folder needs it)")
    score.add_argument(
        "--columns",
        type=_names,
        metavar="INPUT[=COLUMN],...",
        help="read model input INPUT from table column COLUMN (e.g. units=qty); others by their own name",
    )
    score.add_argument(
        "--keep", type=_names, default=[], metavar="COLUMN,...", help="input columns to carry to the output (* = all)"
    )
    score.add_argument("--prediction-column", default="prediction", help="default %(default)s")
    score.add_argument(
        "--mode", choices=MODES, default="error", help="when the output exists: error (default), overwrite, append"
    )
    score.add_argument("--partition-by", type=_names, default=[], metavar="COLUMN,...", help="hive-style partitions")
    score.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, help="rows per runtime call (%(default)s)")
    score.add_argument("--providers", choices=["auto", "cpu", "cuda"], help="onnxruntime execution provider")
    common(score)
    sql = sub.add_parser("sql", help="DuckDB SQL with ai_query('name@alias', struct_pack(...)) over registry models")
    sql.add_argument("-c", "--command", dest="sql", metavar="SQL", help="run these statements and exit (else a shell)")
    sql.add_argument("--format", choices=["table", "csv"], default="table", help="result format (default table)")
    sql.add_argument("--max-rows", type=int, default=40, help="rows shown per result in table format (%(default)s)")
    common(sql)


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def run_score(args: argparse.Namespace, settings: Settings) -> int:
    from server.batch.job import score
    from server.batch.model import BatchModel

    cancel = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda _sig, _frame: cancel.set())
    try:
        model = BatchModel.load(args.model, settings, chunk_rows=max(args.chunk_rows, 1), progress=_loading())
        if cancel.is_set():
            raise Cancelled("interrupted while loading the model; no output was written")
        score(
            model,
            Path(args.input),
            Path(args.output),
            input_format=args.input_format,
            output_format=args.output_format,
            columns=args.columns,
            keep=args.keep,
            prediction_column=args.prediction_column,
            mode=args.mode,
            partition_by=args.partition_by,
            chunk_rows=args.chunk_rows,
            show_progress=True,
            cancel=cancel,
        )
    except Cancelled as exc:
        print(f"modelport: score: {exc.message}", file=sys.stderr)
        return 130
    except BatchError as exc:
        print(f"modelport: score: {exc.message}", file=sys.stderr)
        return 2
    except Exception as exc:  # the model failed on some rows: one line, never a traceback
        log.debug("score failed", exc_info=True)
        print(f"modelport: score: the model failed: {_one_line(exc)}; no output was written", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0


def run_sql(args: argparse.Namespace, settings: Settings) -> int:
    from server.batch.sql import SqlSession

    session = SqlSession(settings)
    if args.sql is not None:
        return _run_statements(session, args.sql, args)
    return _shell(session, args)


def _run_statements(session: Any, text: str, args: argparse.Namespace) -> int:
    try:
        for table in session.execute(text):
            if table is not None:
                _print(table, args)
    except BatchError as exc:
        print(f"modelport: sql: {exc.message}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"modelport: sql: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def _shell(session: Any, args: argparse.Namespace) -> int:
    """A small REPL: statements end with ``;``; ``.quit`` or Ctrl-D leaves, Ctrl-C drops the current input."""
    with contextlib.suppress(ImportError):  # line editing and history for input(), where the platform has it
        import readline  # noqa: F401
    tty = sys.stdin.isatty()
    if tty:
        print("modelport sql (DuckDB): end statements with ';', .quit to leave", file=sys.stderr)
    buffer: list[str] = []
    status = 0
    while True:
        try:
            line = input(("...> " if buffer else "sql> ") if tty else "")
        except EOFError:
            break
        except KeyboardInterrupt:
            print(file=sys.stderr)
            buffer.clear()
            continue
        if not buffer and line.strip() in (".quit", ".exit", "\\q"):
            break
        buffer.append(line)
        if line.rstrip().endswith(";"):
            status = _run_statements(session, "\n".join(buffer), args) or status
            buffer.clear()
    if any(part.strip() for part in buffer):
        status = _run_statements(session, "\n".join(buffer), args) or status
    return status if not tty else 0


def _print(table: Any, args: argparse.Namespace) -> None:
    if args.format == "csv":
        import pyarrow as pa
        import pyarrow.csv as pacsv

        from server.batch.sinks import flatten

        batches = table.to_batches() or [pa.RecordBatch.from_pylist([], schema=table.schema)]
        out = pa.BufferOutputStream()
        with pacsv.CSVWriter(out, flatten(batches[0]).schema) as writer:
            for batch in batches:
                writer.write_batch(flatten(batch))
        sys.stdout.buffer.write(out.getvalue().to_pybytes())
        sys.stdout.flush()
        return
    import duckdb

    duckdb.from_arrow(table).show(max_rows=args.max_rows)


def _loading() -> Callable[[str], None]:
    if sys.stderr.isatty():
        return lambda msg: print(f"  … {msg}", file=sys.stderr, flush=True)
    return lambda msg: log.info(msg)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:500]}" if text else type(exc).__name__
