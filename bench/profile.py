"""Profile modelport under load with py-spy: where does a request's time go?

Starts ``modelport serve`` on the demo ``sales_forecast`` model, drives it with wrk (1-row JSON, 64 connections by
default) and records py-spy samples of every thread meanwhile; writes the collapsed stacks (speedscope.app renders them)
and prints the frames with the most samples (own and inclusive)::

    python -m bench.profile [--rows 1] [--connections 64] [--seconds 8] [--env MODELPORT_LOG_LEVEL=WARNING]

Needs py-spy (``pip install -e '.[bench]'``) and permission to ptrace the child (root, or ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from bench.load import run_wrk
from bench.payloads import write_bodies
from bench.servers import BIN, free_port, modelport
from bench.suite import MODEL, SCORING, prepare_state


def top_frames(collapsed: Path, n: int = 25) -> str:
    """The ``n`` frames with most samples: own (the frame itself was running) and inclusive (it was on the stack)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples, frames = int(count), stack.split(";")
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    out = [f"{total} samples", "own:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(n)]
    out += ["inclusive:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(n)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1, choices=[1, 64, 1024])
    parser.add_argument("--format", default="json", choices=["json", "arrow", "v2", "v2bin"])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--env", action="append", default=[], metavar="K=V", help="extra env for modelport")
    parser.add_argument("--out", type=Path, help="directory for profile.txt and the logs (default: a temp dir)")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(BIN / "py-spy")
    if not Path(spy).exists():
        print("bench.profile: py-spy is needed (pip install -e '.[bench]')")
        return 2
    work = args.out or Path(tempfile.mkdtemp(prefix="modelport-profile-"))
    work.mkdir(parents=True, exist_ok=True)
    state = work / "state"
    prepare_state(state)
    body = write_bodies(work / "bodies", (args.rows,))[(args.format, args.rows)]
    env = dict(kv.split("=", 1) for kv in args.env)
    server = modelport(state, MODEL, free_port(), log=work / "modelport.log", **env)
    path = "/v2/models/sales_forecast/infer" if args.format.startswith("v2") else SCORING["modelport"]
    with server:
        load = dict(server="modelport", case=args.format, rows=args.rows, connections=args.connections,
                    pid=server.pid, content_type=body.content_type, header=body.header)  # fmt: skip
        run_wrk(server.url + path, body.path, seconds=2.0, **load)  # type: ignore[arg-type]
        results = []
        driver = threading.Thread(
            target=lambda: results.append(run_wrk(server.url + path, body.path, seconds=args.seconds + 2, **load))  # type: ignore[arg-type]
        )
        driver.start()
        record = [spy, "record", "-p", str(server.pid), "-d", f"{args.seconds:g}", "-r", str(args.rate),
                  "--nonblocking", "--threads"]  # fmt: skip
        subprocess.run([*record, "-f", "raw", "-o", str(work / "profile.txt")], check=True, capture_output=True)
        driver.join()
    print(top_frames(work / "profile.txt"))
    if results:
        r = results[0]
        print(f"\nunder profiling: {r.rps:,.0f} req/s, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, "
              f"{r.cpu_ms_per_request:.3f} ms server CPU per request")  # fmt: skip
    print(f"\ncollapsed stacks: {work / 'profile.txt'} (flamegraph.pl or speedscope.app render them)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
