"""``modelport serve --workers N``: N server processes sharing the port (``SO_REUSEPORT``), without Ray.

Each worker is a ``ReplicaServer``: its own models, batchers, MCP sessions and metrics (an MCP session lives on the
worker that opened it; a client keeps its connection, so it stays there). The parent only starts the workers,
replaces one that dies, and on SIGINT/SIGTERM stops them (each drains its open requests).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from multiprocessing.process import BaseProcess
from typing import Any

from server.settings import Settings

log = logging.getLogger(__name__)


def _worker(settings: Settings, intra_op_threads: int | None) -> None:
    from server.logging import configure_logging
    from server.scaleout.replica import ReplicaServer

    configure_logging(settings.log_format, settings.log_level)
    if settings.intra_op_threads is None and intra_op_threads:
        settings = settings.model_copy(update={"intra_op_threads": intra_op_threads})
    server = ReplicaServer(settings, graceful_shutdown_s=settings.scaleout.graceful_shutdown_s)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    while not stop.wait(1.0) and server.alive:
        pass
    server.stop()


def run_workers(settings: Settings, n: int) -> int:
    """Run ``n`` workers until SIGINT/SIGTERM; a worker that dies is replaced."""
    import os

    ctx = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // n)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def spawn() -> BaseProcess:
        process: Any = ctx.Process(target=_worker, args=(settings, threads), daemon=False)
        process.start()
        return process  # type: ignore[no-any-return]

    workers = [spawn() for _ in range(n)]
    log.info("serving with %d worker processes", n, extra={"url": f"http://{settings.host}:{settings.port}"})
    while not stop.wait(0.5):
        for i, process in enumerate(workers):
            if not process.is_alive():
                log.warning("worker %d exited with %s: replaced", process.pid, process.exitcode)
                workers[i] = spawn()
    for process in workers:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    for process in workers:
        process.join(settings.scaleout.graceful_shutdown_s + 10)
    return 0
