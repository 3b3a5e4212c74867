"""What the operations layers cost on the hot path, measured side by side: three modelport servers live at once,
short wrk runs alternating between them (``bench/ab.py``), medians compared:

* ``bare``: observability off (``MODELPORT_OBSERVE=false``), auth off;
* ``observed``: metrics on (the default), auth off → the observability layer's cost = observed / bare;
* ``observed+auth``: metrics on, token auth on with a non-admin token and a grant (the permission lookup runs too)
  → the security layer's cost = observed+auth / observed.

``make bench`` prints it; alone: ``python -m bench.layer_cost [--rounds 5] [--seconds 2]``.
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
    """A markdown paragraph: req/s and server CPU per request of each side (medians) and the two ratios."""
    token = create_token(state)
    auth = '{"required": true}'
    sides = {
        "bare": (modelport(state, MODEL, free_port(), log=work / "bare.log", MODELPORT_OBSERVE="false"), ""),
        "observed": (modelport(state, MODEL, free_port(), log=work / "observed.log"), ""),
        "observed+auth": (
            modelport(state, MODEL, free_port(), log=work / "auth.log", MODELPORT_AUTH=auth),
            f"Authorization: Bearer {token}",
        ),
    }
    results = alternate(sides, PATH, body, rows=1, fmt="json", connections=connections, rounds=rounds,
                        seconds=seconds)  # fmt: skip
    if any(r.errors for runs in results.values() for r in runs):
        raise RuntimeError(f"layer cost: non-2xx answers ({ {k: [r.errors for r in v] for k, v in results.items()} })")
    rps = {k: statistics.median(r.rps for r in v) for k, v in results.items()}
    cpu = {k: statistics.median(r.cpu_ms_per_request for r in v) * 1000 for k, v in results.items()}
    sides_text = "; ".join(f"{k} {rps[k]:,.0f} req/s, {cpu[k]:.1f} us CPU/request" for k in rps)
    return (
        f"Operations layers on the hot path (1 row, {connections} clients, median of {rounds} alternating "
        f"{seconds:g} s runs): {sides_text}. "
        f"Observability (metrics) = observed/bare {rps['observed'] / rps['bare']:.1%} of req/s, "
        f"{cpu['observed'] - cpu['bare']:+.1f} us CPU/request; token auth = observed+auth/observed "
        f"{rps['observed+auth'] / rps['observed']:.1%} of req/s, {cpu['observed+auth'] - cpu['observed']:+.1f} us "
        "CPU/request (targets: each >= 95%)"
    )


def main(argv: list[str] | None = None) -> int:
    from bench.suite import prepare_state

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="modelport-layers-"))
    prepare_state(work / "state")
    body = write_bodies(work / "bodies", (1,))[("json", 1)]
    print(measure(work / "state", work, body, rounds=args.rounds, seconds=args.seconds, connections=args.connections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
