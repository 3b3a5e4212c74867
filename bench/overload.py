"""Overload: does modelport keep its goodput when driven past capacity, and does it recover at once?

Starts ``modelport serve`` on the demo ``sales_forecast`` model and drives it at 1x, 2x, 5x and 10x its capacity, with
1-row and 1,024-row ``dataframe_split`` bodies. Capacity (1x) is the concurrency at which the server reaches its peak
throughput in the suite's table (docs/performance.md): 64 connections for 1 row, 8 for 1,024 rows; k x capacity is
k times as many closed-loop connections, each sending its next request as soon as an answer arrives, and retrying at
once after a 503 (no back-off, ``Retry-After`` ignored: the worst client). The issue's own point (3,000 connections,
1,024-row bodies, 15 s) runs last.

Each point reports goodput (200s per second), 503s per second, other failures, p50/p99 of the 200s, then, once the
load has stopped by every client dropping its connection mid-request, the server's RSS and the latency of the next
request (a 1-row request on a new connection; "normal" is the same request on an idle server, measured first), RSS
read 2 s after the load stopped::

    python -m bench.overload                       # ~4 minutes; make bench-full runs it
    python -m bench.overload --seconds 5 --no-issue
    python -m bench.overload --root ../before      # the same against another checkout (PYTHONPATH)

The load generator is plain asyncio (uvloop when installed) in several processes on the same machine (bench/
httpload.py's approach), so it competes with the server for the cores: figures are comparable with each other, not
with wrk's.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import resource
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import report
from bench.httpload import request_bytes
from bench.payloads import dataframe_split, sales_columns
from bench.servers import Server, free_port, modelport
from bench.suite import MODEL, SCORING, prepare_state

CAPACITY_CONNECTIONS = {1: 64, 1024: 8}
"""Closed-loop connections at which the server reaches its peak throughput (1x) per body size."""
FACTORS = (1, 2, 5, 10)
RSS_AFTER_S = 2.0
"""RSS is read this long after the load stopped (modelport returns freed heap to the OS a second after a burst)."""
ISSUE_POINT = (1024, 3000, 15.0)
"""The issue's measurement: 1,024-row bodies, 3,000 connections, 15 s."""


@dataclass(frozen=True, slots=True)
class Point:
    rows: int
    factor: str
    connections: int
    seconds: float
    ok: int
    refused: int
    other: int
    failed_connections: int
    p50_ms: float
    p99_ms: float
    rss_mb: float
    next_ms: str

    @property
    def goodput(self) -> float:
        return self.ok / self.seconds

    @property
    def refused_rate(self) -> float:
        return self.refused / self.seconds


# ---------------------------------------------------------------- load generator (runs in child processes)


async def _connection(
    port: int, request: bytes, stop_at: float, latencies: list[float], counts: dict[int, int]
) -> None:
    writer: asyncio.StreamWriter | None = None
    try:
        while time.perf_counter() < stop_at:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, close = 0, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and b"close" in value.lower():
                    close = True
            await reader.readexactly(length)
            if status == 200:
                latencies.append(time.perf_counter() - t0)
            counts[status] = counts.get(status, 0) + 1
            if close:
                writer.transport.abort()
                writer = None
    except (ConnectionError, asyncio.IncompleteReadError, OSError):
        counts[-1] = counts.get(-1, 0) + 1
    finally:
        if writer is not None:
            writer.transport.abort()  # a client that goes away mid-request: reset, no goodbye


def _worker(args: tuple[int, bytes, int, float, float]) -> tuple[list[float], dict[int, int]]:
    port, request, connections, start_at, seconds = args
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def run() -> tuple[list[float], dict[int, int]]:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        stop_at = time.perf_counter() + seconds
        latencies: list[float] = []
        counts: dict[int, int] = {}
        tasks = [
            asyncio.create_task(_connection(port, request, stop_at, latencies, counts)) for _ in range(connections)
        ]
        await asyncio.wait(tasks, timeout=seconds + 0.05)
        for task in tasks:
            task.cancel()  # requests still in flight are abandoned: their sockets are reset
        await asyncio.gather(*tasks, return_exceptions=True)
        return latencies, counts

    return asyncio.run(run())


def drive(
    port: int, path: str, body: bytes, connections: int, seconds: float, processes: int
) -> tuple[list[float], dict[int, int]]:
    """``connections`` closed-loop connections over ``processes`` processes for ``seconds``; every one is reset at the
    end, whatever it was waiting for."""
    request = request_bytes("127.0.0.1", port, path, body, {"Content-Type": "application/json"})
    processes = max(1, min(processes, connections))
    shares = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    start_at = time.time() + 0.5 + connections / 5000  # every process starts together, connections opened
    with mp.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_worker, [(port, request, n, start_at, seconds) for n in shares])
    latencies = sorted(x for part, _ in parts for x in part)
    counts: dict[int, int] = {}
    for _, part in parts:
        for status, n in part.items():
            counts[status] = counts.get(status, 0) + n
    return latencies, counts


# ---------------------------------------------------------------- probes


def one_request(port: int, path: str, body: bytes) -> tuple[float, int]:
    """One request on a new connection: milliseconds from connect to the last byte of the answer, and its status."""
    request = request_bytes("127.0.0.1", port, path, body, {"Content-Type": "application/json", "Connection": "close"})
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return (time.perf_counter() - t0) * 1e3, int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else 0


def next_request(port: int, path: str, body: bytes) -> str:
    """The first request after a load: its latency, and when it is not a 200, how long until one is."""
    t0 = time.perf_counter()
    ms, first = one_request(port, path, body)
    if first == 200:
        return f"{ms:.1f}"
    status = first
    while status != 200 and time.perf_counter() - t0 < 120:
        time.sleep(0.05)  # bench code: asking again, as a client would, until the server answers
        _, status = one_request(port, path, body)
    if status != 200:
        return f"{ms:.1f} ({first}; no 200 within 120 s)"
    return f"{ms:.1f} ({first}; a 200 after {time.perf_counter() - t0:.1f} s)"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))] * 1e3


def measure(
    server: Server, rows: int, factor: str, connections: int, seconds: float, bodies: dict[int, bytes], processes: int
) -> Point:
    path = SCORING["modelport"]
    latencies, counts = drive(server.port, path, bodies[rows], connections, seconds, processes)
    stopped = time.perf_counter()
    next_ms = next_request(server.port, path, bodies[1])
    time.sleep(max(0.0, stopped + RSS_AFTER_S - time.perf_counter()))  # bench code: RSS once the burst is over
    ok = counts.get(200, 0)
    refused = counts.get(503, 0)
    other = sum(n for status, n in counts.items() if status not in (200, 503, -1))
    return Point(rows, factor, connections, seconds, ok, refused, other, counts.get(-1, 0),
                 percentile(latencies, 0.5), percentile(latencies, 0.99), rss_mb(server.pid), next_ms)  # fmt: skip


# ---------------------------------------------------------------- report


def table(points: list[Point], idle_ms: float, rss_start: float) -> str:
    lines = [
        "| rows/req | load | conns | goodput (200/s) | 503/s | other errors | p50 ms (200s) | p99 ms (200s) "
        "| RSS 2 s after MB | next request after ms |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in points:
        lines.append(
            f"| {p.rows} | {p.factor} | {p.connections:,} | {p.goodput:,.0f} | {p.refused_rate:,.0f} | "
            f"{p.other + p.failed_connections} | {p.p50_ms:.1f} | {p.p99_ms:.1f} | {p.rss_mb:.0f} | {p.next_ms} |"
        )
    out = [
        "\n".join(lines),
        f"RSS before the load {rss_start:.0f} MB; one 1-row request on an idle server {idle_ms:.1f} ms.",
    ]
    for rows in sorted({p.rows for p in points}):
        base = next((p for p in points if p.rows == rows and p.factor == "1x"), None)
        top = next((p for p in points if p.rows == rows and p.factor == "10x"), None)
        if base and top and base.goodput:
            ratio = top.goodput / base.goodput
            verdict = "met" if ratio >= 0.8 else "NOT met"
            out.append(f"{rows} row(s): goodput at 10x = {ratio:.0%} of 1x (target >= 80%: {verdict})")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per load point (default 10)")
    parser.add_argument("--rows", default="1,1024", help="body sizes (rows per request), comma-separated")
    parser.add_argument("--factors", default=",".join(map(str, FACTORS)), help="multiples of capacity")
    parser.add_argument("--no-issue", action="store_true", help="skip the issue's 3,000-connection point")
    parser.add_argument("--processes", type=int, default=4, help="load generator processes")
    parser.add_argument("--state-dir", type=Path, help="reuse a demo state dir (default: a fresh temporary one)")
    parser.add_argument("--root", type=Path, help="serve this checkout instead (PYTHONPATH), e.g. the code before")
    parser.add_argument("--env", action="append", default=[], metavar="K=V", help="extra env for modelport")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = parser.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # thousands of sockets, here and in the server
    work = Path(tempfile.mkdtemp(prefix="modelport-overload-"))
    state = args.state_dir or work / "state"
    machine = report.machine().replace("wrk -t1 on the same cores", "asyncio load generator on the same cores")
    print(machine, flush=True)
    prepare_state(state)
    sizes = tuple(int(x) for x in args.rows.split(","))
    bodies = {n: dataframe_split(sales_columns(n)) for n in {1, *sizes}}
    env = dict(kv.split("=", 1) for kv in args.env)
    if args.root is not None:
        env["PYTHONPATH"] = str(args.root.resolve())
    server = modelport(state, MODEL, free_port(), log=work / "modelport.log", **env)
    points: list[Point] = []
    with server:
        path = SCORING["modelport"]
        for n in sizes:  # warm-up (compiles nothing, but fills caches and the inline-batch statistics)
            drive(server.port, path, bodies[n], 8, 1.0, 1)
        idle_ms = statistics.median(one_request(server.port, path, bodies[1])[0] for _ in range(20))
        rss_start = rss_mb(server.pid)
        print(f"idle: one request {idle_ms:.1f} ms, RSS {rss_start:.0f} MB", flush=True)
        for rows in sizes:
            for k in (int(x) for x in args.factors.split(",")):
                conns = k * CAPACITY_CONNECTIONS[rows]
                point = measure(server, rows, f"{k}x", conns, args.seconds, bodies, args.processes)
                print(table([point], idle_ms, rss_start).splitlines()[2], flush=True)
                points.append(point)
        if not args.no_issue and 1024 in bodies:
            rows, conns, seconds = ISSUE_POINT
            point = measure(server, rows, "issue", conns, seconds, bodies, args.processes)
            print(table([point], idle_ms, rss_start).splitlines()[2], flush=True)
            points.append(point)
    text = f"{machine}\n\n{table(points, idle_ms, rss_start)}"
    print("\n" + text)
    if args.out:
        args.out.write_text(text + "\n")
    print(f"(server log in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
