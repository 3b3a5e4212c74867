"""A real uvicorn server on 127.0.0.1 serving the door inside a FastAPI app, started in a thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from server.deployments import DeploymentTable
from server.ops.gate import Gate
from server.service import InferenceService
from server.settings import Settings
from tests.tools.models import MAX_TOOL_ROWS, ltv_deployment, propensity_deployment
from tools import McpDoor


@dataclass
class LiveDoor:
    url: str
    """The MCP endpoint, ``http://127.0.0.1:<port>/mcp``."""
    service: InferenceService
    door: McpDoor


def bind() -> socket.socket:
    """A listening socket on a free 127.0.0.1 port (requests queue until uvicorn serves it: no polling)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def door_lifespan(table: DeploymentTable, door: McpDoor) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """An app lifespan as the real server's: the table's batchers start in uvicorn's loop, then the door runs."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        for dep in table.all():
            await dep.batcher.start()
        async with door.lifespan():
            yield
        for dep in table.all():
            await dep.batcher.stop()

    return lifespan


@contextmanager
def serve_door(
    *, settings: Settings | None = None, gate: Gate | None = None, sock: socket.socket | None = None
) -> Iterator[LiveDoor]:
    """Serve the two test models; batchers start in uvicorn's loop (the app lifespan), like the real server.

    ``settings``/``gate`` go to the door (auth tests); ``sock`` is a socket from ``bind()`` when the port must be
    known before the settings are (an OAuth audience).
    """
    table = DeploymentTable()
    for dep in (ltv_deployment(), propensity_deployment()):
        table.add(dep)
    service = InferenceService(table, max_tool_rows=MAX_TOOL_ROWS)
    door = McpDoor(service, settings or Settings(max_tool_rows=MAX_TOOL_ROWS), gate=gate)

    app = FastAPI(lifespan=door_lifespan(table, door))

    @app.get("/ping")
    def ping() -> str:
        return "ok"

    door.install(app)
    sock = sock or bind()
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield LiveDoor(f"http://127.0.0.1:{port}/mcp", service, door)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "uvicorn did not stop"
