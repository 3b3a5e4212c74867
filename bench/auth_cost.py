"""The cost of token auth on the hot path: modelport with auth off and with auth on (a non-admin token with a grant,
so the permission lookup runs too), both live at once, short wrk runs alternating (``bench/ab.py``), medians compared.

``make bench`` prints it; alone: ``python -m bench.auth_cost [--rounds 5] [--seconds 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench.ab import alternate
from bench.payloads import Body, write_bodies
from bench.servers import BIN, free_port, modelport

MODEL = "models:/sales_forecast@champion"
PATH = "/model/sales_forecast/champion/invocations"


def create_token(state: Path) -> str:
    cmd = [str(BIN / "modelport"), "tokens", "create", "bench", "--grant", "sales_forecast=CAN_QUERY",
           "--state-dir", str(state)]  # fmt: skip
    subprocess.run([str(BIN / "modelport"), "tokens", "revoke", "bench", "--state-dir", str(state)],
                   capture_output=True, check=False)  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def measure(
    state: Path, work: Path, body: Body, *, rounds: int = 5, seconds: float = 2.0, connections: int = 64
) -> str:
    """One markdown paragraph: auth off vs on, req/s and server CPU per request, medians, and the ratio."""
    token = create_token(state)
    sides = {
        "auth off": (modelport(state, MODEL, free_port(), log=work / "auth-off.log"), ""),
        "auth on": (
            modelport(state, MODEL, free_port(), log=work / "auth-on.log", MODELPORT_AUTH='{"required": true}'),
            f"Authorization: Bearer {token}",
        ),
    }
    results = alternate(sides, PATH, body, rows=1, fmt="json", connections=connections, rounds=rounds,
                        seconds=seconds)  # fmt: skip
    if any(r.errors for runs in results.values() for r in runs):
        raise RuntimeError(f"auth cost: non-2xx answers ({ {k: [r.errors for r in v] for k, v in results.items()} })")
    rps = {k: statistics.median(r.rps for r in v) for k, v in results.items()}
    cpu = {k: statistics.median(r.cpu_ms_per_request for r in v) * 1000 for k, v in results.items()}
    return (
        f"Token auth cost (1 row, {connections} clients, median of {rounds} alternating {seconds:g} s runs): "
        f"off {rps['auth off']:,.0f} req/s, {cpu['auth off']:.1f} us CPU/request; "
        f"on {rps['auth on']:,.0f} req/s, {cpu['auth on']:.1f} us CPU/request; "
        f"on/off = {rps['auth on'] / rps['auth off']:.1%} of req/s (target >= 95%)"
    )


def main(argv: list[str] | None = None) -> int:
    from bench.suite import prepare_state

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="modelport-auth-"))
    prepare_state(work / "state")
    body = write_bodies(work / "bodies", (1,))[("json", 1)]
    print(measure(work / "state", work, body, rounds=args.rounds, seconds=args.seconds, connections=args.connections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
