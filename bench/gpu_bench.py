"""The GPU check: modelport's runtime and HTTP path on onnxruntime-gpu, with an MLP built here (no MLflow needed).

Reports raw onnxruntime rows/s by batch size (numpy in/out, and IOBinding with the input already on the device),
what several runs in flight on one session buy, the batcher under 256 concurrent 1-row submitters against the
unbatched path (goal >= 5x), and over HTTP (uvicorn + modelport's scoring fast path): 256 concurrent 1-row JSON
clients, and large v2 binary batches against raw ORT rows/s at the same batch (goal >= 30%); mean batch sizes and
GPU utilisation (nvidia-smi) alongside. Runs on CPU too (``--providers cpu``) to check the script itself.

On the GPU machine (see docs/performance.md for carrying the wheels there)::

    PYTHONPATH=/tmp/site:$PWD python3 -m bench.gpu_bench [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import uvicorn

from bench.httpload import LoadResult, drive
from bench.runtime_bench import mlp_model, timed_loop
from registry import ColumnSpec, ConvertedModel, ModelRef, ModelSignature, ModelVersionInfo
from server.decode import Decoder
from server.deployments import Deployment, DeploymentTable
from server.rest.fast import ScoringFastPath
from server.runtime.batcher import Batcher, BatcherConfig
from server.runtime.session import OnnxSession
from server.schema import OutputKind, build_schema
from server.service import InferenceService


def gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True)  # fmt: skip
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "no GPU (nvidia-smi not available)"


class Utilisation:
    """Samples GPU utilisation (%) with nvidia-smi while inside the ``with`` block."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5, check=True)  # fmt: skip
                self.samples.append(float(out.stdout.split()[0]))
            except (OSError, subprocess.SubprocessError, ValueError, IndexError):
                return

    def __enter__(self) -> Utilisation:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def mean(self) -> str:
        return f"{statistics.fmean(self.samples):.0f}%" if self.samples else "-"


def raw_ort(session: OnnxSession, width: int, batches: list[int], seconds: float) -> dict[int, float]:
    rng = np.random.default_rng(0)
    out: dict[int, float] = {}
    print(f"\nraw onnxruntime on {session.provider}: rows/s (numpy in/out)")
    for n in batches:
        x = rng.normal(size=(n, width)).astype(np.float32)
        calls, elapsed = timed_loop(lambda x=x: session.run({"x": x}), seconds)
        out[n] = calls * n / elapsed
        print(f"  batch {n:>6}: {out[n]:>14,.0f} rows/s")
    return out


def iobinding(session: OnnxSession, width: int, batches: list[int], seconds: float) -> None:
    """Input already on the device, output left there: the ceiling without host<->device copies."""
    import onnxruntime as ort

    inner = session._session  # the onnxruntime session (bench code may look inside)
    print("\nIOBinding (input on device, output on device): rows/s")
    for n in batches:
        x = ort.OrtValue.ortvalue_from_numpy(np.ones((n, width), np.float32), "cuda", 0)
        binding = inner.io_binding()
        binding.bind_ortvalue_input("x", x)
        binding.bind_output("y", "cuda")
        calls, elapsed = timed_loop(lambda b=binding: inner.run_with_iobinding(b), seconds)
        print(f"  batch {n:>6}: {calls * n / elapsed:>14,.0f} rows/s")


def threads_in_flight(session: OnnxSession, width: int, seconds: float) -> None:
    x = np.ones((256, width), np.float32)
    print("\nruns in flight on one session, batch 256: rows/s")
    for k in (1, 2, 4, 8):
        counts = [0] * k
        end = time.perf_counter() + seconds

        def loop(i: int, end: float = end, counts: list[int] = counts) -> None:
            while time.perf_counter() < end:
                session.run({"x": x})
                counts[i] += 1

        workers = [threading.Thread(target=loop, args=(i,)) for i in range(k)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        print(f"  {k} in flight: {sum(counts) * 256 / seconds:>14,.0f} rows/s")


async def batched(session: OnnxSession, width: int, clients: int, in_flight: int, seconds: float) -> dict[str, float]:
    batcher = Batcher(session.run, BatcherConfig(max_batch_rows=4096, max_queue_requests=8192,
                                                 max_concurrent_batches=in_flight), name="gpu")  # fmt: skip
    rows: list[int] = []
    batcher.add_listener(lambda r: rows.append(r.rows))
    await batcher.start()
    x = np.ones((1, width), np.float32)
    await batcher.submit({"x": x})
    rows.clear()
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            await batcher.submit({"x": x})
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - t0
    await batcher.stop()
    latencies.sort()
    return {
        "rows_s": len(latencies) / elapsed,
        "mean_batch": statistics.fmean(rows) if rows else 0.0,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
    }


def deployment(session: OnnxSession, width: int, in_flight: int) -> Deployment:
    """A served model built by hand (what the loader builds from the registry)."""
    sig = ModelSignature((ColumnSpec("x", "float", shape=(width,)),), is_tensor=True)
    info = ModelVersionInfo(name="mlp", version="1", aliases=("champion",), source="bench", run_id=None,
                            experiment_id=None, model_description="bench MLP", version_description=None, tags={},
                            metrics={}, params={}, flavors=("onnx",), signature=sig, input_example=None)  # fmt: skip
    kind = OutputKind("regression")
    config = BatcherConfig(max_batch_rows=65536, max_queue_requests=8192, max_concurrent_batches=in_flight)
    return Deployment(
        ref=ModelRef("mlp", alias="champion"), model=info,
        converted=ConvertedModel(runtime="onnx", flavor="onnx", model_dir=Path(".")), signature=sig,
        schema=build_schema(sig), output_kind=kind, decoder=Decoder(sig, max_rows=1_000_000),
        session=session, batcher=Batcher(session.run, config, name="mlp"),
        to_feeds=lambda cols, _n: {"x": cols["x"]}, from_outputs=lambda out: (out["y"][:, 0], None, None),
    )  # fmt: skip


class App:
    """The scoring fast path alone (plus GET /ping), with the batcher started in uvicorn's lifespan."""

    def __init__(self, dep: Deployment) -> None:
        table = DeploymentTable()
        table.add(dep)
        self.dep = dep
        self.fast = ScoringFastPath(InferenceService(table, max_body_bytes=512 * 1024 * 1024))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self.dep.batcher.start()
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await self.dep.batcher.stop()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        handler = self.fast.route(scope)
        if handler is not None:
            await self.fast.serve(handler, scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})


def serve(app: App) -> tuple[uvicorn.Server, int]:
    from server.rest.protocol import SingleWriteProtocol

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    config = uvicorn.Config(app, http=SingleWriteProtocol, log_level="warning", access_log=False, lifespan="on",
                            backlog=1024)  # fmt: skip
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)  # bench code: wait for the thread's server
    return server, sock.getsockname()[1]


def v2_binary(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    raw = x.astype("<f4").tobytes()
    head = orjson.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}})  # fmt: skip
    return head + raw, {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--processes", type=int, default=6, help="load generator processes")
    parser.add_argument("--quick", action="store_true", help="fewer points, 1.5 s each")
    args = parser.parse_args(argv)
    seconds = 1.5 if args.quick else args.seconds
    if args.providers != "cpu":
        try:
            import onnxruntime as ort

            ort.preload_dlls()  # the CUDA/cuDNN libraries of the pip wheels (onnxruntime-gpu >= 1.21)
        except (AttributeError, OSError, ImportError):
            pass
    session = OnnxSession(mlp_model(args.width, args.hidden), providers=args.providers)
    cuda = session.provider.startswith("CUDA")
    print(f"device: {gpu_name()}; provider {session.provider} ({session.placement_reason}); "
          f"model: MLP {args.width}->{args.hidden}->{args.hidden}->1")  # fmt: skip
    big = 8192 if args.quick else 65536
    raw = raw_ort(session, args.width, [1, 64, 1024, 8192] + ([] if args.quick else [65536]), seconds)
    if cuda:
        iobinding(session, args.width, [1024, big], seconds)
        threads_in_flight(session, args.width, seconds)

    print("\nbatcher, 256 concurrent 1-row submitters (vs unbatched sequential 1-row runs):")
    best = (0.0, 1)
    for in_flight in (1, 2, 4) if cuda else (1,):
        r = asyncio.run(batched(session, args.width, 256, in_flight, seconds))
        best = max(best, (r["rows_s"], in_flight))
        print(f"  {in_flight} in flight: {r['rows_s']:>12,.0f} rows/s = {r['rows_s'] / raw[1]:.1f}x unbatched, "
              f"mean batch {r['mean_batch']:.0f}, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms")  # fmt: skip

    dep = deployment(session, args.width, best[1])
    server, port = serve(App(dep))
    try:
        results: list[tuple[str, LoadResult, float, str]] = []
        one = orjson.dumps({"inputs": np.ones((1, args.width), np.float32)}, option=orjson.OPT_SERIALIZE_NUMPY)
        path = "/model/mlp/champion/invocations"
        drive("127.0.0.1", port, path, one, connections=16, seconds=1.0, processes=2)  # warm-up
        before = dep.batcher.stats
        with Utilisation() as util:
            r = drive("127.0.0.1", port, path, one, connections=256, seconds=seconds * 2, processes=args.processes)
        after = dep.batcher.stats
        mean = (after.rows - before.rows) / max(1, after.batches - before.batches)
        results.append(("HTTP JSON 1 row, 256 conns", r, r.rps / raw[1], f"mean batch {mean:.0f}, GPU {util.mean}"))
        body, headers = v2_binary(np.ones((big, args.width), np.float32))
        for conns in (1, 4, 8):
            with Utilisation() as util:
                r = drive("127.0.0.1", port, "/v2/models/mlp/infer", body, connections=conns, seconds=seconds * 2,
                          processes=min(conns, args.processes), headers=headers)  # fmt: skip
            rows_s = r.rps * big
            results.append((f"HTTP v2 binary {big} rows, {conns} conns", r, rows_s / raw[big],
                             f"{rows_s:,.0f} rows/s vs raw {raw[big]:,.0f}; GPU {util.mean}"))  # fmt: skip
    finally:
        server.should_exit = True
    print("\nHTTP (uvicorn + fast path, single-write protocol):")
    for label, r, ratio, note in results:
        print(f"  {label:<36} {r.rps:>10,.0f} req/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  "
              f"ratio {ratio:6.2f}  errors {r.errors}  {note}")  # fmt: skip
    print(
        "\nratios: 1-row HTTP vs unbatched raw 1-row runs (goal >= 5x); v2 binary vs raw ORT at that batch "
        "(goal >= 0.30)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
