"""Memory and time per MCP session, and what a flood does: ``python -m bench.mcp_sessions [--sessions 2000]``.

Opens ``--sessions`` handshake-era sessions (``initialize`` without ``DELETE``) against ``modelport serve`` from
one client, twice: with the per-owner bound set high enough to keep them all (memory per session), then with the
default bound (what a flood costs). Prints RSS before/after, KB per session, and whether a new client still gets in.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx

from bench.servers import free_port, modelport
from bench.suite import MODEL, prepare_state

CLIENT = {"name": "bench", "version": "1"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": CLIENT}}  # fmt: skip
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def rss_mb(pid: int) -> float:
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def flood(state: Path, work: Path, sessions: int, per_owner: int | None) -> str:
    env = {} if per_owner is None else {"MODELPORT_MCP_SESSIONS_PER_OWNER": str(per_owner)}
    server = modelport(state, MODEL, free_port(), log=work / f"sessions-{per_owner}.log", **env)
    with server, httpx.Client(base_url=server.url, timeout=30) as c:
        before = rss_mb(server.pid)
        started = time.perf_counter()
        for _ in range(sessions):
            assert c.post("/mcp", json=INITIALIZE, headers=HEADERS).status_code == 200
        elapsed = time.perf_counter() - started
        after = rss_mb(server.pid)
        fresh = c.post("/mcp", json=INITIALIZE, headers=HEADERS).status_code
    bound = "kept all" if per_owner is not None else "default bound (100 per owner)"
    return (f"| {bound} | {sessions:,} | {elapsed:.1f} s | {before:.0f} → {after:.0f} MB | "
            f"{(after - before) * 1024 / sessions:.1f} KB | {fresh} |")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=2000)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="modelport-sessions-"))
    prepare_state(work / "state")
    print("| sessions kept | initialize calls | time | RSS | per session | a new client then gets |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(flood(work / "state", work, args.sessions, args.sessions + 1), flush=True)
    print(flood(work / "state", work, args.sessions, None), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
