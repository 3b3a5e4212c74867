"""``modelport usage``: requests, rows, errors, p50/p99 latency and estimated cost from the inference tables.

Reads ``<state_dir>/tables`` (``server/ops/usage.py``) with no server running, or next to one (Delta readers see
committed rows; the writer commits every ``tables.flush_s`` seconds). A terminal table, or ``--json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from server.settings import Settings
from server.tokens_cli import parse_duration

COST_BASIS = "execution time x cost.cpu_core_per_hour (request-time estimate; /metrics attributes busy time)"


def add_parser(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:  # type: ignore[type-arg]
    usage = sub.add_parser(
        "usage", help="requests, rows, errors, latency and cost per model, endpoint or caller (inference tables)"
    )
    usage.add_argument("--since", default="1h", metavar="DURATION", help="window: 90m, 1h, 7d, ... (default 1h)")
    usage.add_argument(
        "--by", choices=["model", "endpoint", "caller"], default="model", help="group by (default: model)"
    )
    usage.add_argument("--json", action="store_true", help="one JSON object on stdout")
    common(usage)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from server.ops.usage import find_tables, table_name, usage

    try:
        since_s = parse_duration(args.since)
    except ValueError as exc:
        print(f"modelport: {exc}", file=sys.stderr)
        return 2
    root = settings.state_dir / "tables"
    now = time.time()
    tables = find_tables(root)
    try:
        groups = usage(tables, since_s=since_s, by=args.by, cost=settings.cost, now=now)
    except OSError as exc:  # an unreadable or corrupt table: one clear line
        print(f"modelport: {root}: {exc}", file=sys.stderr)
        return 1
    since = datetime.fromtimestamp(now - since_s, UTC).isoformat(timespec="seconds")
    if args.json:
        report = {
            "since": since,
            "window_s": since_s,
            "by": args.by,
            "tables": [table_name(root, t) for t in tables],
            "cost_basis": COST_BASIS if settings.cost.cpu_core_per_hour is not None else None,
            "groups": [g.as_dict() for g in groups],
        }
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(f"Usage since {since} ({args.since}), by {args.by}: {len(tables)} table(s) under {root}")
    if not groups:
        print("  no captured requests in this window (capture is set per model: deployments[].capture)")
        return 0
    header = (args.by.upper(), "REQUESTS", "ROWS", "ERRORS", "P50 MS", "P99 MS", "COST")
    lines = [header] + [
        (g.key, str(g.requests), str(g.rows), str(g.errors), _num(g.p50_ms), _num(g.p99_ms), _cost(g.cost))
        for g in groups
    ]
    width = max(len(line[0]) for line in lines)
    for line in lines:
        print(f"  {line[0]:<{width}}  " + "  ".join(f"{cell:>9}" for cell in line[1:]))
    if settings.cost.cpu_core_per_hour is None:
        print("  cost: set cost.cpu_core_per_hour in the settings to estimate it")
    else:
        print(f"  cost: {COST_BASIS}")
    return 0


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cost(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
