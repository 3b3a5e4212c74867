"""A/B two modelport configurations under the same noise: both servers run at once, short wrk runs alternate.

On a shared machine absolute figures drift by tens of percent from minute to minute; alternating short runs
between two live servers and comparing medians keeps the comparison fair::

    python -m bench.ab --a MODELPORT_INTRA_OP_THREADS=1 --b MODELPORT_INTRA_OP_THREADS=2 [--rows 1] [--connections 64]

Each side is ``modelport serve`` of the demo ``sales_forecast`` model with the given extra environment
(``PYTHONPATH=<other checkout>`` compares code).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.load import Result, run_wrk
from bench.payloads import Body, write_bodies
from bench.servers import Server, free_port, modelport
from bench.suite import MODEL, SCORING, prepare_state


def _env(pairs: list[str]) -> dict[str, str]:
    return dict(p.split("=", 1) for p in pairs)


def alternate(
    sides: dict[str, tuple[Server, str]],
    path: str,
    body: Body,
    *,
    rows: int,
    fmt: str,
    connections: int,
    rounds: int,
    seconds: float,
) -> dict[str, list[Result]]:
    """Start every side (server, extra request header), warm each up, then alternate short wrk runs between them."""
    results: dict[str, list[Result]] = {name: [] for name in sides}
    try:
        for server, _ in sides.values():
            server.start()
        for name, (server, header) in sides.items():  # warm-up
            run_wrk(server.url + path, body.path, server=name, case="warm", rows=rows, connections=8,
                    seconds=1.0, pid=server.pid, content_type=body.content_type, header=header)  # fmt: skip
        for i in range(rounds):
            order = list(sides.items()) if i % 2 == 0 else list(reversed(sides.items()))
            for name, (server, header) in order:
                load = {"server": name, "case": fmt, "rows": rows, "connections": connections}
                result = run_wrk(server.url + path, body.path, seconds=seconds, pid=server.pid,
                                 content_type=body.content_type, header=header, **load)  # fmt: skip
                results[name].append(result)
    finally:
        for server, _ in sides.values():
            server.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", action="append", default=[], metavar="K=V", help="env of side A (repeatable)")
    parser.add_argument("--b", action="append", default=[], metavar="K=V", help="env of side B (repeatable)")
    parser.add_argument("--rows", type=int, default=1, choices=[1, 64, 1024])
    parser.add_argument("--format", default="json", choices=["json", "arrow", "v2", "v2bin"])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="modelport-ab-"))
    state = work / "state"
    prepare_state(state)
    body = write_bodies(work / "bodies", (args.rows,))[(args.format, args.rows)]
    path = "/v2/models/sales_forecast/infer" if args.format.startswith("v2") else SCORING["modelport"]
    sides = {
        "A": modelport(state, MODEL, free_port(), log=work / "a.log", **_env(args.a)),
        "B": modelport(state, MODEL, free_port(), log=work / "b.log", **_env(args.b)),
    }
    results = alternate(
        {name: (server, body.header) for name, server in sides.items()}, path, body,
        rows=args.rows, fmt=args.format, connections=args.connections, rounds=args.rounds, seconds=args.seconds,
    )  # fmt: skip
    print(f"{args.format} {args.rows} row(s), {args.connections} connections, {args.rounds} x {args.seconds:g} s each")
    medians = {}
    for name, runs in results.items():
        rps = statistics.median(r.rps for r in runs)
        medians[name] = rps
        print(
            f"{name} {' '.join(getattr(args, name.lower())) or '(defaults)'}: median {rps:,.0f} req/s "
            f"(runs {', '.join(f'{r.rps:,.0f}' for r in runs)}), p99 median "
            f"{statistics.median(r.p99_ms for r in runs):.2f} ms, CPU/req median "
            f"{statistics.median(r.cpu_ms_per_request for r in runs):.3f} ms"
        )
    print(f"B/A = {medians['B'] / medians['A']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
