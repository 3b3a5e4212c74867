"""Helpers for tests that run ``modelport`` as a real subprocess and read its log lines."""

from __future__ import annotations

import queue
import socket


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(lines: queue.Queue[str], needle: str, timeout: float) -> str:
    """The first line containing ``needle`` (each line waited for at most ``timeout`` s); fails with what was seen."""
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{needle!r} not logged; got:\n{''.join(seen)}") from None
        seen.append(line)
        if needle in line:
            return line
