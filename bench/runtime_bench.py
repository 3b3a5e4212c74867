"""Micro-benchmark of the runtime: raw onnxruntime throughput by batch size, and the Batcher under concurrent 1-row
submitters versus unbatched sequential 1-row calls.

Standalone: needs only numpy, onnx and onnxruntime (plus this repository on the path, added below).

    python bench/runtime_bench.py [--seconds 1.0] [--providers auto] [--width 32] [--hidden 256]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.runtime.batcher import Batcher, BatcherConfig, BatchRecord
from server.runtime.session import OnnxSession


def mlp_model(width: int, hidden: int, seed: int = 0) -> bytes:
    """A float32 MLP ``[N, width] -> hidden -> hidden -> 1`` with ReLUs."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    sizes = [width, hidden, hidden, 1]
    current = "x"
    last = len(sizes) - 2
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        w = rng.normal(scale=n_in**-0.5, size=(n_in, n_out)).astype(np.float32)
        inits.append(helper.make_tensor(f"w{i}", TensorProto.FLOAT, w.shape, w.ravel().tolist()))
        inits.append(helper.make_tensor(f"b{i}", TensorProto.FLOAT, [n_out], [0.0] * n_out))
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], ["y" if i == last else f"z{i}"]))
        if i < last:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [f"a{i}"]))
            current = f"a{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def timed_loop(fn: Callable[[], object], seconds: float) -> tuple[int, float]:
    """Call ``fn`` until ``seconds`` pass; return (calls, elapsed)."""
    fn()  # warm up
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        calls += 1
    return calls, elapsed


async def batcher_run(session: OnnxSession, width: int, concurrency: int, seconds: float) -> dict[str, float]:
    """``concurrency`` tasks each submit 1-row requests back to back for ``seconds``."""
    batcher = Batcher(session.run, BatcherConfig(max_batch_rows=1024, max_queue_requests=4096), name="bench")
    records: list[BatchRecord] = []
    batcher.add_listener(records.append)
    await batcher.start()
    latencies: list[float] = []
    x = np.random.default_rng(1).normal(size=(1, width)).astype(np.float32)
    await batcher.submit({"x": x})  # warm up
    records.clear()
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await batcher.submit({"x": x})
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await batcher.stop()
    latencies.sort()
    return {
        "rows_s": len(latencies) / elapsed,
        "mean_batch": statistics.fmean(r.rows for r in records) if records else 0.0,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
    }


async def executor_run(session: OnnxSession, width: int, concurrency: int, seconds: float) -> float:
    """No batching: every 1-row request is its own ``session.run`` in a one-thread pool (rows/s)."""
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=1)
    x = np.random.default_rng(1).normal(size=(1, width)).astype(np.float32)
    done = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await loop.run_in_executor(pool, session.run, {"x": x})
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    pool.shutdown()
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0, help="duration of each measurement")
    parser.add_argument("--providers", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    args = parser.parse_args()

    session = OnnxSession(mlp_model(args.width, args.hidden), providers=args.providers, intra_op_threads=args.threads)
    print(f"model: MLP {args.width}->{args.hidden}->{args.hidden}->1 on {session.provider}\n")

    rng = np.random.default_rng(0)
    print("raw onnxruntime (sequential session.run)")
    print(f"{'batch':>7} {'calls/s':>10} {'rows/s':>12} {'us/row':>9}")
    raw: dict[int, float] = {}
    for batch in (1, 8, 64, 256, 1024):
        x = rng.normal(size=(batch, args.width)).astype(np.float32)
        calls, elapsed = timed_loop(functools.partial(session.run, {"x": x}), args.seconds)
        raw[batch] = calls * batch / elapsed
        print(f"{batch:>7} {calls / elapsed:>10.0f} {raw[batch]:>12.0f} {1e6 / raw[batch]:>9.2f}")
    baseline = raw[1]

    print("\nBatcher, 1-row requests from N concurrent submitters (vs unbatched sequential 1-row calls)")
    print(f"{'N':>5} {'rows/s':>12} {'x unbatched':>12} {'mean batch':>11} {'p50 ms':>8} {'p99 ms':>8}")
    for concurrency in (1, 64, 256):
        result = asyncio.run(batcher_run(session, args.width, concurrency, args.seconds))
        print(
            f"{concurrency:>5} {result['rows_s']:>12.0f} {result['rows_s'] / baseline:>12.2f} "
            f"{result['mean_batch']:>11.1f} {result['p50_ms']:>8.2f} {result['p99_ms']:>8.2f}"
        )
    for concurrency in (1, 64):
        rows_s = asyncio.run(executor_run(session, args.width, concurrency, args.seconds))
        print(f"{concurrency:>5} {rows_s:>12.0f} {rows_s / baseline:>12.2f} {'(unbatched, 1 run per request)':>28}")
    print(f"\nunbatched sequential baseline: {baseline:.0f} rows/s; raw batch-1024 ceiling: {raw[1024]:.0f} rows/s")


if __name__ == "__main__":
    main()
