"""Drive a server with wrk (one thread, a Lua POST script) and read back req/s, latency percentiles and server CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.servers import cpu_seconds

LUA = Path(__file__).with_name("post.lua")


@dataclass(frozen=True, slots=True)
class Result:
    """One wrk run against one server.

    Attributes:
        server: Server name.
        case: What was sent (e.g. ``json 1 row``).
        rows: Rows per request.
        connections: Concurrent connections (closed loop: each sends its next request when the answer arrives).
        requests: Answered requests.
        seconds: Measured duration.
        p50_ms: Median latency.
        p99_ms: 99th percentile latency.
        cpu_ms_per_request: Server CPU (all threads, user + system) per answered request.
        errors: Socket errors plus non-2xx answers.
    """

    server: str
    case: str
    rows: int
    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rps * self.rows


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    body: Path,
    *,
    server: str,
    case: str,
    rows: int,
    connections: int,
    seconds: float,
    pid: int,
    content_type: str = "application/json",
    header: str = "",
) -> Result:
    """One closed-loop wrk run (``-t1``: the load generator takes at most one of the machine's cores)."""
    env = {**os.environ, "BODY": str(body), "CONTENT_TYPE": content_type, "HEADER": header}
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s", "-s", str(LUA), url]
    cpu0 = cpu_seconds(pid)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    cpu = cpu_seconds(pid) - cpu0
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-500:]}")
    data = json.loads(line[len("BENCH ") :])
    n = data["requests"]
    return Result(
        server=server,
        case=case,
        rows=rows,
        connections=connections,
        requests=n,
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1e3,
        p99_ms=data["p99_us"] / 1e3,
        cpu_ms_per_request=cpu * 1e3 / n if n else 0.0,
        errors=data["socket_errors"] + data["non2xx"],
    )
