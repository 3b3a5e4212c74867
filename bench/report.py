"""The suite's table, ratios and machine description (markdown, printable as is)."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench.inproc import Stage
from bench.load import Result


def _version(*dists: str) -> str:
    for dist in dists:
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "-"


def machine() -> str:
    """One line naming the machine and the software measured."""
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    load = os.getloadavg()[0]
    return (
        f"machine: {os.cpu_count()} x {cpu}, {mem:.0f} GiB, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; onnxruntime {_version('onnxruntime-gpu', 'onnxruntime')}, "
        f"mlflow {_version('mlflow')}, uvicorn {_version('uvicorn')}, uvloop {_version('uvloop')}, "
        f"httptools {_version('httptools')}; wrk -t1 on the same cores; load1 at start {load:.2f}"
    )


def header() -> str:
    return (
        "| server | body | rows/req | conns | req/s | rows/s | p50 ms | p99 ms | server CPU ms/req | errors |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )


def row(r: Result) -> str:
    return (
        f"| {r.server} | {r.case} | {r.rows} | {r.connections} | {r.rps:,.0f} | {r.rows_per_s:,.0f} | "
        f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_ms_per_request:.3f} | {r.errors} |"
    )


def _find(results: list[Result], server: str, case: str, rows: int, conns: int | None = None) -> Result | None:
    found = [r for r in results if r.server == server and r.case == case and r.rows == rows]
    if conns is not None:
        found = [r for r in found if r.connections == conns]
    return max(found, key=lambda r: r.rps, default=None)


def _stage(stages: list[Stage], name: str, rows: int) -> Stage | None:
    return next((s for s in stages if s.stage == name and s.rows == rows), None)


def ratios(results: list[Result], stages: list[Stage], ours: str = "modelport") -> list[str]:
    """The issue's targets for server ``ours``, each with its measured ratio (runs with errors do not count)."""
    results = [r for r in results if not r.errors]
    lines = ["| target | measured | met |", "| --- | --- | --- |"]

    def add(target: str, measured: str, ok: bool | None) -> None:
        lines.append(f"| {target} | {measured} | {'-' if ok is None else 'yes' if ok else '**no**'} |")

    mp, ml = _find(results, ours, "JSON", 1, 64), _find(results, "mlflow", "JSON", 1, 64)
    if mp and ml and ml.rps:
        add(
            ">= 20x mlflow req/s, 1 row, 64 conns, lower p99",
            f"{mp.rps / ml.rps:.1f}x ({mp.rps:,.0f} vs {ml.rps:,.0f} req/s); p99 {mp.p99_ms:.1f} vs {ml.p99_ms:.1f} ms",
            mp.rps >= 20 * ml.rps and mp.p99_ms < ml.p99_ms,
        )
    for conns in (1, 8, 64, 256):
        mp, ec = _find(results, ours, "JSON", 1, conns), _find(results, "echo", "JSON", 1, conns)
        if mp and ec and ec.rps:
            add(
                f">= 50% of echo req/s, 1 row, {conns} conns",
                f"{mp.rps / ec.rps:.0%} ({mp.rps:,.0f} vs {ec.rps:,.0f} req/s)",
                mp.rps >= 0.5 * ec.rps,
            )
    for rows in (64, 1024):
        mp, ec = _find(results, ours, "JSON", rows), _find(results, "echo", "JSON", rows)
        if mp and ec and ec.rps:
            add(f"modelport/echo, {rows} rows (best conns)", f"{mp.rps / ec.rps:.0%}", None)
        mp, ml = _find(results, ours, "JSON", rows), _find(results, "mlflow", "JSON", rows)
        if mp and ml and ml.rps:
            add(f"modelport/mlflow, {rows} rows (best conns)", f"{mp.rps / ml.rps:.1f}x", None)
    limit = _stage(stages, "decode JSON + ORT", 1024)
    mp = _find(results, ours, "JSON", 1024)
    if mp and limit:
        add(
            "JSON 1024 rows >= 50% of in-process decode + ORT rows/s",
            f"{mp.rows_per_s / limit.rows_per_s:.0%} ({mp.rows_per_s:,.0f} vs {limit.rows_per_s:,.0f} rows/s)",
            mp.rows_per_s >= 0.5 * limit.rows_per_s,
        )
    ort = _stage(stages, "ORT run", 1024)
    for case in ("Arrow IPC", "v2 binary"):
        mp = _find(results, ours, case, 1024)
        if mp and ort:
            add(
                f"{case} 1024 rows >= 50% of raw ORT rows/s",
                f"{mp.rows_per_s / ort.rows_per_s:.0%} ({mp.rows_per_s:,.0f} vs {ort.rows_per_s:,.0f} rows/s)",
                mp.rows_per_s >= 0.5 * ort.rows_per_s,
            )
    return lines


def render(
    machine_line: str, results: list[Result], stages: list[Stage], mcp_line: str, seconds: float, wall_s: float
) -> str:
    out = [f"# modelport bench ({seconds:g} s per point, {wall_s:.0f} s in all)", "", machine_line, "", header()]
    out += [row(r) for r in results]
    if stages:
        out += ["", "In-process, one core, no HTTP (median per call):", "",
                "| stage | rows | us/call | rows/s |", "| --- | ---: | ---: | ---: |"]  # fmt: skip
        out += [f"| {s.stage} | {s.rows} | {s.us:,.1f} | {s.rows_per_s:,.0f} |" for s in stages]
    for ours in dict.fromkeys(r.server for r in results if r.server.startswith("modelport")):
        out += ["", f"Targets (issue 5), {ours}:", "", *ratios(results, stages, ours)]
    if mcp_line:
        out += ["", mcp_line]
    out += ["", f"load1 at end {os.getloadavg()[0]:.2f}"]
    return "\n".join(out)
