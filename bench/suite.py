"""modelport against its peers on one machine, in one run: ``make bench`` (quick) or ``python -m bench.suite --full``.

Starts, one at a time on the same demo model and machine, modelport, ``mlflow models serve`` (the sklearn pyfunc) and
a bare uvicorn JSON echo endpoint (the Python HTTP floor); drives each with wrk (one thread, Lua POST script) and
prints req/s, rows/s, p50/p99 and server CPU per request, the ratios modelport/mlflow and modelport/echo, and the
in-process figures (decode-only, ORT-only, decode + ORT, full service path) that bound the HTTP ones.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import inproc, report
from bench.load import Result, run_wrk, wrk_available
from bench.payloads import Body, write_bodies
from bench.servers import BIN, Server, echo, free_port, mlflow_serve, modelport

MODEL = "models:/sales_forecast@champion"
SCORING = {"modelport": "/model/sales_forecast/champion/invocations", "mlflow": "/invocations", "echo": "/"}
V2_INFER = "/v2/models/sales_forecast/infer"


@dataclass(frozen=True, slots=True)
class Case:
    """One load point: body format, rows per request, concurrent connections, and which servers take it."""

    fmt: str
    rows: int
    connections: int
    servers: tuple[str, ...] = ("modelport", "mlflow", "echo")

    @property
    def label(self) -> str:
        return {"json": "JSON", "arrow": "Arrow IPC", "v2": "v2 JSON", "v2bin": "v2 binary"}[self.fmt]


def plan(full: bool) -> list[Case]:
    """Quick: the cases the targets are judged on. Full: every size at every concurrency, every binary format."""
    conns = (1, 8, 64, 256)
    if full:
        cases = [Case("json", n, c) for n in (1, 64, 1024) for c in conns]
        binary = ("arrow", "v2", "v2bin")
        cases += [Case(f, n, c, ("modelport",)) for f in binary for n in (64, 1024) for c in (1, 8, 64)]
        return cases
    cases = [Case("json", 1, c) for c in conns]
    cases += [Case("json", 64, 64), Case("json", 1024, 8)]
    cases += [Case(f, 1024, 8, ("modelport",)) for f in ("arrow", "v2bin")]
    return cases


def prepare_state(state_dir: Path) -> None:
    """Register the demo models in ``state_dir`` (idempotent)."""
    cmd = [str(BIN / "modelport"), "demo", "--no-serve", "--state-dir", str(state_dir), "--log-level", "WARNING"]
    subprocess.run(cmd, check=True, capture_output=True)


def drive(server: Server, cases: list[Case], bodies: dict[tuple[str, int], Body], seconds: float) -> list[Result]:
    results: list[Result] = []
    kind = server.name.rstrip("+")
    mine = [c for c in cases if kind in c.servers]
    if not mine:
        return results
    warm = bodies[("json", 1)]
    run_wrk(server.url + SCORING[kind], warm.path, server=server.name, case="warm-up", rows=1, connections=8,
            seconds=1.0, pid=server.pid)  # fmt: skip
    for case in mine:
        body = bodies[(case.fmt, case.rows)]
        path = V2_INFER if case.fmt.startswith("v2") else SCORING[kind]
        result = run_wrk(
            server.url + path, body.path, server=server.name, case=case.label, rows=case.rows,
            connections=case.connections, seconds=seconds, pid=server.pid, content_type=body.content_type,
            header=body.header,
        )  # fmt: skip
        print(report.row(result), flush=True)
        results.append(result)
    return results


def _servers(args: argparse.Namespace, state: Path, work: Path) -> list[Server]:
    """The servers to measure, in order: echo, mlflow, modelport, and modelport with toggles (``modelport+``)."""
    wanted = set(args.servers.split(","))
    env = dict(kv.split("=", 1) for kv in args.env)
    out: list[Server] = []
    if "echo" in wanted:
        out.append(echo(free_port(), log=work / "echo.log"))
    if "mlflow" in wanted:
        out.append(mlflow_serve(state, MODEL, free_port(), log=work / "mlflow.log"))
    if "modelport" in wanted:
        out.append(modelport(state, MODEL, free_port(), log=work / "modelport.log", **env))
    if args.toggles:
        toggled = {"PYTHONPATH": str(Path(__file__).with_name("toggles")), "MODELPORT_BENCH_TOGGLES": args.toggles}
        variant = modelport(state, MODEL, free_port(), log=work / "modelport+.log", **env, **toggled)
        variant.name = "modelport+"
        out.append(variant)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="every size x concurrency x format, 10 s per point")
    parser.add_argument("--seconds", type=float, help="seconds per load point (default 3 quick, 10 full)")
    parser.add_argument("--servers", default="modelport,mlflow,echo", help="comma-separated subset")
    parser.add_argument("--state-dir", type=Path, help="reuse a demo state dir (default: a fresh temporary one)")
    parser.add_argument("--no-inproc", action="store_true", help="skip the in-process figures")
    parser.add_argument("--no-mcp", action="store_true", help="skip the MCP-over-REST latency figure")
    parser.add_argument("--no-layers", action="store_true", help="skip the observability/auth cost figures")
    parser.add_argument("--out", type=Path, help="also write the report (markdown) here")
    parser.add_argument("--env", action="append", default=[], metavar="K=V", help="extra env for modelport")
    parser.add_argument("--toggles", default="", help="also run 'modelport+' with these bench/toggles switched on")
    args = parser.parse_args(argv)
    if not wrk_available():
        print("bench: wrk is needed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    seconds = args.seconds or (10.0 if args.full else 3.0)
    cases = plan(args.full)
    work = Path(tempfile.mkdtemp(prefix="modelport-bench-"))
    state = args.state_dir or work / "state"
    started = time.time()
    machine = report.machine()
    print(machine, flush=True)
    prepare_state(state)
    bodies = write_bodies(work / "bodies", (1, 64, 1024))

    stages = [] if args.no_inproc else inproc.measure(state, MODEL, (1, 64, 1024))
    results: list[Result] = []
    mcp_line = ""
    print(report.header(), flush=True)
    for server in _servers(args, state, work):
        with server:
            results += drive(server, cases, bodies, seconds)
            if server.name == "modelport" and not args.no_mcp:
                from bench import mcp_bench

                mcp_line = mcp_bench.compare(server.url, bodies[("json", 1)].path)
    if "modelport" in args.servers.split(",") and not args.no_layers:
        from bench import layer_cost

        layers = layer_cost.measure(state, work, bodies[("json", 1)], seconds=max(2.0, seconds / 2))
        print(layers, flush=True)
        mcp_line = "\n\n".join(x for x in (mcp_line, layers) if x)
    text = report.render(machine, results, stages, mcp_line, seconds, time.time() - started)
    print("\n" + text)
    if args.out:
        args.out.write_text(text)
    print(f"(logs and bodies in {work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
