"""A closed-loop HTTP/1.1 keep-alive load generator in plain asyncio, spread over processes.

For machines without wrk (the GPU machine): each process opens its share of the connections and sends the same
pre-built request on each as soon as the previous answer is in. Use enough processes that the generator is not the
bottleneck (``--self-check`` in bench/gpu_bench.py measures it against a trivial endpoint first).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def request_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _connection(host: str, port: int, request: bytes, until: float, out: list[float], bad: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            out.append(time.perf_counter() - t0)
            if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                bad[0] += 1
    finally:
        writer.close()


def _worker(args: tuple[str, int, bytes, int, float, float]) -> tuple[list[float], int]:
    host, port, request, connections, start_at, seconds = args

    async def run() -> tuple[list[float], int]:
        await asyncio.sleep(max(0.0, start_at - time.time()))  # all processes start together
        latencies: list[float] = []
        bad = [0]
        until = time.perf_counter() + seconds
        await asyncio.gather(*(_connection(host, port, request, until, latencies, bad) for _ in range(connections)))
        return latencies, bad[0]

    return asyncio.run(run())


def drive(
    host: str, port: int, path: str, body: bytes, *, connections: int, seconds: float, processes: int = 4,
    headers: dict[str, str] | None = None,
) -> LoadResult:  # fmt: skip
    """Run ``connections`` closed-loop connections (split over ``processes``) for ``seconds``."""
    request = request_bytes(host, port, path, body, {"Content-Type": "application/json", **(headers or {})})
    processes = max(1, min(processes, connections))
    shares = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    start_at = time.time() + 0.5
    with mp.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_worker, [(host, port, request, n, start_at, seconds) for n in shares])
    latencies = sorted(x for part, _ in parts for x in part)
    errors = sum(bad for _, bad in parts)
    if not latencies:
        return LoadResult(0, errors, seconds, 0.0, 0.0)
    return LoadResult(
        len(latencies), errors, seconds, latencies[len(latencies) // 2] * 1e3,
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
    )  # fmt: skip
