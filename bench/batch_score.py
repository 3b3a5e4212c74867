"""Batch scoring, side by side on one machine: ``modelport score`` vs raw onnxruntime vs pandas + MLflow pyfunc.

On one Parquet table of ``--rows`` rows (default 1M) drawn for a demo model (default ``sales_forecast``):

* **raw onnxruntime**: the converted ONNX file in a bare ``onnxruntime.InferenceSession``, fed chunks of
  ``--chunk-rows`` rows already decoded in memory (no read, no decode, no write: the ceiling);
* **raw onnxruntime, file to file**: the shortest hand-written job with the same I/O (Parquet batches → numpy feeds
  → the session → Parquet), the reference for the 80% target ("decode and write included");
* **modelport score**: ``server.batch.score`` from the Parquet file to a Parquet file (read, decode, run, write);
* **pandas + pyfunc**: ``pd.read_parquet`` → ``mlflow.pyfunc`` ``predict`` on the whole frame → ``to_parquet``
  (what ``mlflow models predict`` does in-process, without its CSV/JSON round trip or process start);
* **mlflow models predict**: the command itself (``--env-manager local``) on the same rows as CSV.

Each is run ``--repeats`` times, interleaved; medians and the ratios are printed. Then the peak RSS of a whole
``modelport score`` process (``VmHWM``) on the table and on one of ``--rss-rows`` rows (10M with ``--rss-rows
10000000``; generated chunk by chunk, a few hundred MB on disk), to show that memory follows the chunk size, not
the table.

    python -m bench.batch_score [--rows 1000000] [--chunk-rows 65536] [--repeats 3] [--rss-rows 10000000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.batch import BatchModel, score
from server.settings import Settings


def make_table(model: BatchModel, rows: int, path: Path, seed: int = 0, part: int = 1_000_000) -> None:
    """``rows`` rows around the model's input example (strings from its categories), written part by part."""
    rng = np.random.default_rng(seed)
    example = (model.deployment.model.input_example or [{}])[0]
    writer = None
    for start in range(0, rows, part):
        n = min(part, rows - start)
        cols: dict[str, pa.Array] = {"id": pa.array(np.arange(start, start + n, dtype=np.int64))}
        for col in model.signature.inputs:
            base = example.get(col.name, 1)
            if col.type == "string":
                cats = [str(c) for c in (col.categories or (base,))]
                cols[col.name] = pa.array(np.asarray(cats, dtype=object)[rng.integers(0, len(cats), n)], pa.string())
            elif col.type in ("long", "integer"):
                spread = max(abs(int(base)) // 4, 1)
                cols[col.name] = pa.array(rng.integers(int(base) - spread, int(base) + spread + 1, n, dtype=np.int64))
            else:
                cols[col.name] = pa.array(float(base) * rng.uniform(0.5, 1.5, n))
        table = pa.table(cols)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()


def raw_onnxruntime(model: BatchModel, path: Path, chunk_rows: int, *, tuned: bool) -> Callable[[], float]:
    """Seconds for a bare InferenceSession over the table's chunks, decoded to feeds beforehand.

    ``tuned``: the session options ``OnnxSession`` uses (all graph optimisations, no spinning intra-op threads);
    else onnxruntime's defaults.
    """
    import onnxruntime as ort

    converted = model.deployment.converted
    assert converted.onnx_path is not None, "the model is not served by onnxruntime"
    options = ort.SessionOptions()
    if tuned:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(converted.onnx_path), options, providers=["CPUExecutionProvider"])
    table = pq.read_table(path)
    names = model.signature.input_names
    feeds = [model.prepare({n: b.column(n) for n in names}).feeds for b in table.to_batches(chunk_rows)]

    def run() -> float:
        started = time.perf_counter()
        for feed in feeds:
            session.run(None, feed)
        return time.perf_counter() - started

    return run


def raw_file_to_file(model: BatchModel, path: Path, out: Path, chunk_rows: int) -> Callable[[], float]:
    """Seconds for the shortest hand-written job with the same I/O: Parquet batches → numpy feeds (a cast and a
    reshape per column, no checks) → the tuned ``InferenceSession`` → id + prediction to Parquet.

    The fair reference for ``modelport score``: the same read, decode, run and write, without modelport's checks,
    pipeline threads or progress.
    """
    import onnxruntime as ort

    converted = model.deployment.converted
    assert converted.onnx_path is not None, "the model is not served by onnxruntime"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(converted.onnx_path), options, providers=["CPUExecutionProvider"])
    names = model.signature.input_names
    dtypes = {name: np.dtype(d) for name, d in converted.input_dtypes.items()}
    output = str(converted.prediction_output)

    def feeds(batch: pa.RecordBatch) -> dict[str, np.ndarray]:
        if converted.input_layout == "matrix":
            matrix_input = str(converted.matrix_input)
            columns = [batch.column(n).to_numpy(zero_copy_only=False) for n in names]
            return {matrix_input: np.column_stack(columns).astype(dtypes.get(matrix_input, np.float32))}
        out: dict[str, np.ndarray] = {}
        for name in names:
            inp = converted.input_map.get(name, name)
            values = batch.column(name).to_numpy(zero_copy_only=False)
            out[inp] = values.astype(dtypes.get(inp, values.dtype)).reshape(-1, 1)
        return out

    def run() -> float:
        started = time.perf_counter()
        writer = None
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            predictions = session.run([output], feeds(batch))[0]
            if predictions.ndim == 2 and predictions.shape[1] == 1:
                predictions = predictions.reshape(-1)
            if predictions.ndim == 2:
                column = pa.FixedSizeListArray.from_arrays(pa.array(predictions.ravel()), predictions.shape[1])
            else:
                column = pa.array(predictions)
            table = pa.table({"id": batch.column("id"), "prediction": column})
            writer = writer or pq.ParquetWriter(out, table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()
        return time.perf_counter() - started

    return run


def modelport(model: BatchModel, path: Path, out: Path, chunk_rows: int) -> Callable[[], float]:
    def run() -> float:
        started = time.perf_counter()
        score(model, path, out, keep=["id"], mode="overwrite", chunk_rows=chunk_rows)
        return time.perf_counter() - started

    return run


def pandas_pyfunc(uri: str, tracking_uri: str, path: Path, out: Path) -> Callable[[], float]:
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(uri)

    def run() -> float:
        started = time.perf_counter()
        frame = pd.read_parquet(path)
        predictions = pyfunc.predict(frame.drop(columns=["id"]))
        values = np.asarray(predictions)
        column = list(values) if values.ndim > 1 else values  # classifiers: one list of probabilities per row
        pd.DataFrame({"id": frame["id"], "prediction": column}).to_parquet(out)
        return time.perf_counter() - started

    return run


def mlflow_models_predict(uri: str, tracking_uri: str, path: Path, work: Path) -> Callable[[], float]:
    """Seconds of the ``mlflow models predict`` command (local environment) on the same rows as CSV (Parquet is
    not one of its input types; the CSV is written beforehand, outside the timing)."""
    csv = work / f"{path.stem}.csv"
    if not csv.exists():
        import pyarrow.csv as pacsv

        pacsv.write_csv(pq.read_table(path).drop_columns(["id"]), csv)
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow), "models", "predict", "-m", uri, "-i", str(csv), "-t", "csv"]
    command += ["-o", str(work / "mlflow-predict.json"), "--env-manager", "local"]

    def run() -> float:
        started = time.perf_counter()
        env = os.environ | {"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_REGISTRY_URI": tracking_uri}
        subprocess.run(command, check=True, capture_output=True, env=env)
        return time.perf_counter() - started

    return run


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """Peak RSS (MB) and wall seconds of one ``modelport`` process.

    Read from ``VmHWM`` in ``/proc/<pid>/status`` while it runs (the kernel's high-water mark of the process since
    its exec; ``wait4``'s ``ru_maxrss`` would also count the pages of this big benchmark process it was forked from).
    """
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "server", *args], stderr=subprocess.DEVNULL)
    status = Path(f"/proc/{proc.pid}/status")
    peak_kb = 0
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    if proc.returncode != 0:
        raise SystemExit(f"modelport {' '.join(args)} exited {proc.returncode}")
    return peak_kb / 1024, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=65_536)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="sales_forecast", help="a demo model (default %(default)s)")
    parser.add_argument("--rss-rows", type=int, default=0, help="also measure peak RSS on a table this big (10M)")
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder (removed at the end)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelport-batch-bench-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        run(args, work)


def run(args: argparse.Namespace, work: Path) -> None:
    from registry.demo import ensure_demo_models

    state = work / "state"
    tracking = f"sqlite:///{state.resolve()}/mlflow.db"
    ensure_demo_models(tracking, state.resolve() / "artifacts")
    settings = Settings(state_dir=state, registry_uri=tracking)
    uri = f"models:/{args.model}@champion"
    model = BatchModel.load(uri, settings, chunk_rows=args.chunk_rows)
    table = work / f"{args.model}-{args.rows}.parquet"
    if not table.exists():
        make_table(model, args.rows, table)
    contenders = {
        "raw onnxruntime, defaults": raw_onnxruntime(model, table, args.chunk_rows, tuned=False),
        "raw onnxruntime, tuned": raw_onnxruntime(model, table, args.chunk_rows, tuned=True),
        "raw onnxruntime, file to file": raw_file_to_file(model, table, work / "raw.parquet", args.chunk_rows),
        "modelport score": modelport(model, table, work / "scored.parquet", args.chunk_rows),
        "pandas + pyfunc": pandas_pyfunc(uri, tracking, table, work / "pyfunc.parquet"),
        "mlflow models predict": mlflow_models_predict(uri, tracking, table, work),
    }
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            seconds[name].append(fn())
    rate = {name: args.rows / statistics.median(s) for name, s in seconds.items()}
    print(f"\n{args.model}, {args.rows:,} rows, chunks of {args.chunk_rows:,}, median of {args.repeats} (rows/s):")
    for name, r in rate.items():
        print(f"  {name:26} {r:>12,.0f}   runs: {', '.join(f'{s:.2f}s' for s in seconds[name])}")
    ours, raw = rate["modelport score"], max(rate["raw onnxruntime, defaults"], rate["raw onnxruntime, tuned"])
    print(f"  modelport score / raw onnxruntime, file to file: {ours / rate['raw onnxruntime, file to file']:.0%}"
          " (target >= 80%: the same read, decode, run and write)")  # fmt: skip
    print(f"  modelport score / best raw onnxruntime in memory (no I/O): {ours / raw:.0%}")
    print(f"  modelport score / pandas + pyfunc: {ours / rate['pandas + pyfunc']:.1f}x")
    print(f"  modelport score / mlflow models predict: {ours / rate['mlflow models predict']:.1f}x (target >= 10x)")
    common = ["--state-dir", str(state), "--registry-uri", tracking, "--chunk-rows", str(args.chunk_rows)]
    sizes = [(args.rows, table)]
    if args.rss_rows:
        big = work / f"{args.model}-{args.rss_rows}.parquet"
        if not big.exists():
            make_table(model, args.rss_rows, big, seed=1)
        sizes.append((args.rss_rows, big))
    print("\npeak RSS of a `modelport score` process (model load included):")
    for rows, path in sizes:
        out = work / f"rss-{rows}.parquet"
        mb, wall = peak_rss_mb(["score", uri, "-i", str(path), "-o", str(out), "--mode", "overwrite", *common])
        print(f"  {rows:>12,} rows: {mb:,.0f} MB peak RSS, {wall:.1f} s wall ({rows / wall:,.0f} rows/s incl. start)")


if __name__ == "__main__":
    main()
