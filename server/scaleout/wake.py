"""The driver's listener while no replica runs (scale to zero).

With ``min_replicas: 0`` and every replica gone, nothing listens on the shared port. The driver then binds it
(``SO_REUSEPORT``, like the replicas) and forwards each request it accepts, whole, through a Serve handle
(``forward``): the request queued at the handle is what Serve's autoscaler reads to start a replica from zero, and
it is answered by that replica as soon as it runs. Every answer carries ``Connection: close`` so clients reconnect
and reach the replicas directly once they listen; the driver closes its listener as soon as one replica runs.
A request still without a replica after ``wake_timeout_s`` is answered 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import uvicorn

from server.scaleout.replica import QuietServer, Response, reuseport_socket
from server.settings import Settings

log = logging.getLogger(__name__)

DEPLOYMENT_HEADER = b"x-modelport-deployment"  # set by the front (server.scaleout.front) on what it forwards

Forward = Callable[[str | None, str, str, list[tuple[bytes, bytes]], bytes], Awaitable[Response]]
"""``(deployment, method, path, headers, body)`` → the answer of a replica of that deployment (``None``: the only
one, under ``ingress: direct``)."""


class WakeApp:
    """ASGI app forwarding each request through ``forward`` (a Serve handle call), bounded by ``timeout_s``."""

    def __init__(self, forward: Forward, timeout_s: float) -> None:
        self.forward = forward
        self.timeout_s = timeout_s
        self.forwarded = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        path = scope["path"] + (f"?{scope['query_string'].decode()}" if scope.get("query_string") else "")
        deployment = next((v.decode() for k, v in scope["headers"] if k == DEPLOYMENT_HEADER), None)
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"connection", DEPLOYMENT_HEADER)]
        try:
            status, out, body = await asyncio.wait_for(
                self.forward(deployment, scope["method"], path, headers, b"".join(chunks)), self.timeout_s
            )
            self.forwarded += 1
        except Exception as exc:  # no replica in time (or the call failed): the client may retry
            log.warning("no replica to answer a request held at the driver: %s", exc or type(exc).__name__)
            status, body = (
                503,
                orjson.dumps({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "no replica is running yet; retry"}),
            )
            out = [(b"content-type", b"application/json"), (b"retry-after", b"1")]
        out = [(k, v) for k, v in out if k.lower() not in (b"content-length", b"connection")]
        out += [(b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})


class WakeListener:
    """Holds the shared port for the driver: ``open()`` while no replica runs, ``close()`` once one does.

    With ``private``, it listens on a free loopback port instead (``port`` once open), for the front to use as
    every backend's backup server, and stays open.
    """

    def __init__(self, settings: Settings, app: Callable[..., Awaitable[None]], *, private: bool = False) -> None:
        self.settings = settings
        self.app = app
        self.private = private
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def open(self) -> None:
        if self._server is not None:
            return
        from server.main import uvicorn_config

        settings = self.settings
        if self.private:  # behind the front: plain HTTP on loopback
            settings = settings.model_copy(update={"ssl_certfile": None, "ssl_keyfile": None, "host": "127.0.0.1"})
            sock = reuseport_socket("127.0.0.1", 0)
        else:
            sock = reuseport_socket(settings.host, settings.port)
        self.port = sock.getsockname()[1]
        config = uvicorn_config(settings, self.app, graceful_shutdown_s=settings.scaleout.wake_timeout_s)
        server = QuietServer(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="wake-listener")
        while not server.started and not self._task.done():
            await asyncio.sleep(0.01)  # uvicorn exposes no start event; bounded by its own start-up
        if self._task.done():
            self._server = None
            await self._task  # raises what stopped it
            raise RuntimeError("the driver's listener stopped at start")
        if not self.private:
            log.info("no replica running: the driver holds %s:%s", settings.host, settings.port)

    async def close(self) -> None:
        server, task = self._server, self._task
        if server is None or task is None:
            return
        self._server = self._task = None
        server.should_exit = True  # stop accepting; requests already held finish (forwarded to the replica)
        await task
        if not self.private:
            log.info("a replica is running: the driver released the port")
