"""One replica's HTTP server: modelport's app on a ``SO_REUSEPORT`` socket, in its own thread and event loop.

The socket is bound at once but listens only after the app's lifespan has loaded the models (uvicorn calls
``listen()`` when it starts serving): until then the kernel sends the shared port's connections to the replicas that
are ready, never into the backlog of one still loading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import uvicorn

from server.ops.limits import LocalLimiter
from server.settings import Settings

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class Ongoing:
    """ASGI wrapper counting the HTTP requests in progress: the load a replica reports to the autoscaler.

    A plain wrapper, not Starlette middleware, so the scoring fast path stays on (about 0.3 µs per request).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.requests = 0
        self.total = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.requests += 1
        self.total += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.requests -= 1


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` with ``SO_REUSEPORT``, not yet listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the process owner (Ray's worker, the driver) handles signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ReplicaServer:
    """modelport's app (``server.main.build``) served by uvicorn on the shared port, from a background thread.

    Args:
        settings: The process settings (``host``/``port`` are the shared address).
        graceful_shutdown_s: On ``stop``, how long open requests may take to finish.
        listen: ``None``: the shared ``host:port`` of the settings (``SO_REUSEPORT``). An address: a free port of
            it, plain HTTP (``port`` is the one bound), behind the front; the settings' ``host`` still decides
            whether auth is on.
        endpoints: The Databricks endpoints it restores and follows: ``None`` all, ``()`` none (a replica serving
            one model), or some names (a replica serving those endpoints).
    """

    def __init__(
        self, settings: Settings, *, graceful_shutdown_s: float = 20.0, listen: str | None = None,
        endpoints: tuple[str, ...] | None = None,
    ) -> None:  # fmt: skip
        from server.main import build, uvicorn_config

        if listen is not None:  # the front terminates TLS
            settings = settings.model_copy(update={"ssl_certfile": None, "ssl_keyfile": None})
        self.settings = settings
        self.components = build(settings, only_endpoints=endpoints)
        self.app = Ongoing(self.components.app)
        self.sock = reuseport_socket(settings.host, settings.port) if listen is None else reuseport_socket(listen, 0)
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn_config(settings, self.app, graceful_shutdown_s=graceful_shutdown_s)
        self.server = QuietServer(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="modelport-http", daemon=True)
        self._failed: BaseException | None = None

    def _run(self) -> None:
        try:
            factory = self.server.config.get_loop_factory()
            loop = factory() if factory is not None else asyncio.new_event_loop()
            with contextlib.closing(loop):
                loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._failed = exc
            log.exception("replica HTTP server failed")

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.serve(sockets=[self.sock])

    def start(self, timeout_s: float = 600.0) -> None:
        """Start serving; returns once the models are loaded and the socket listens.

        Raises:
            RuntimeError: the server stopped (or never started) within ``timeout_s``.
        """
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"replica did not start: {self._failed or 'timed out'}")
            self._thread.join(0.05)  # wait on the thread, bounded: it ends only if start-up failed
        if not self.components.service.list() and self.settings.all_deployments():
            log.warning("replica serves no model: %s", self.components.service.failures())

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self.server.should_exit

    @property
    def ongoing(self) -> int:
        """HTTP requests in progress now."""
        return self.app.requests

    def stats(self) -> dict[str, float]:
        """What the replica reports to the autoscaler: ongoing requests and the batchers' queued requests."""
        queued = 0
        for deployment in self.components.table.all():
            s = deployment.batcher.stats
            queued += s.queue_depth + s.waiting
        return {"ongoing": float(self.app.requests), "queued": float(queued), "served": float(self.app.total)}

    def notify_alias(self, name: str) -> None:
        """Another replica received a registry webhook for ``name``: check its aliases now (from any thread)."""
        follower, loop = self.components.follower, self.loop
        if follower is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(follower.notify, name)

    def share_limits(self, replicas: int) -> None:
        """``replicas`` share this deployment's traffic: enforce ``1/replicas`` of each rate limit here."""
        gate = self.components.gate
        limiter = None if gate is None else gate.limits.limiter
        if isinstance(limiter, LocalLimiter):
            limiter.share = 1.0 / max(replicas, 1)
            observability = self.components.observability
            gauges = None if observability is None else observability.metrics.gauges
            if gauges is not None and "modelport_rate_limit_share" not in gauges:  # once: it reads the share live
                gauges["modelport_rate_limit_share"] = lambda: limiter.share

    def follow_endpoint(self, name: str) -> None:
        """Another replica changed Databricks endpoint ``name``: take it from the shared store (from any thread)."""
        endpoints, loop = self.components.endpoints, self.loop
        if endpoints is not None and loop is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(endpoints.follow(name), loop)

    async def call(self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Response:
        """Serve one request given whole (the driver's wake-up listener forwards through this)."""
        if self.loop is None:
            raise RuntimeError("replica not started")
        future = asyncio.run_coroutine_threadsafe(asgi_call(self.app, method, path, headers, body), self.loop)
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        """Stop accepting, finish open requests (bounded), unload the models."""
        self.server.should_exit = True
        self._thread.join((self.server.config.timeout_graceful_shutdown or 30) + 10)


Response = tuple[int, list[tuple[bytes, bytes]], bytes]


async def asgi_call(app: ASGIApp, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Response:
    """Run one HTTP request through an ASGI app in-process; the status, headers and body it answered."""
    raw_path, _, query = path.partition("?")
    scope: Scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": raw_path, "raw_path": raw_path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": headers, "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0), "state": {},
    }  # fmt: skip
    sent = False
    status = 500
    out_headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # nothing more to read: wait to be cancelled, as a live connection does
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, out_headers
        if message["type"] == "http.response.start":
            status = message["status"]
            out_headers = list(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, out_headers, b"".join(chunks)
