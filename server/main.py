"""Composition root: settings → registry client → loader → deployments → service → REST + MCP doors.

Nothing else imports this module. ``create_app`` is what uvicorn serves; the CLI calls ``serve``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import uvicorn
from fastapi import FastAPI

from registry.client import RegistryClient
from server.deployments import DeploymentTable
from server.loader import ModelLoader, Progress
from server.manager import ModelManager
from server.rest.app import create_rest_app
from server.service import InferenceService
from server.settings import Settings
from tools import McpDoor

log = logging.getLogger(__name__)


@dataclass
class Components:
    """Everything a running modelport process is made of (tests reach in here)."""

    settings: Settings
    table: DeploymentTable
    service: InferenceService
    manager: ModelManager
    app: FastAPI
    door: McpDoor | None = None


def terminal_progress() -> Progress:
    """Progress lines on a terminal (stderr), log lines otherwise."""
    if sys.stderr.isatty():
        return lambda msg: print(f"  … {msg}", file=sys.stderr, flush=True)
    return lambda msg: log.info(msg)


def build(settings: Settings, *, mcp: bool = True, progress: Progress | None = None) -> Components:
    """Wire one process. Models load in the app's lifespan (so uvicorn answers /ping only once they are ready)."""
    table = DeploymentTable()
    service = InferenceService(table, max_body_bytes=settings.max_body_bytes, max_tool_rows=settings.max_tool_rows)
    registry = RegistryClient(settings.effective_registry_uri, settings.effective_tracking_uri)
    manager = ModelManager(ModelLoader(registry, settings, progress=progress), table)
    door = McpDoor(service, settings) if mcp else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if door is not None:
                await stack.enter_async_context(door.lifespan())
            await manager.deploy_all(settings.all_deployments())
            log.info(
                "serving",
                extra={
                    "models": [d.key for d in service.list()],
                    "failed": service.failures(),
                    "url": f"http://{settings.host}:{settings.port}",
                },
            )
            try:
                yield
            finally:
                await manager.stop_all()

    app = create_rest_app(service, lifespan=lifespan, version=_version())
    if door is not None:
        door.install(app)  # exactly /mcp (a mount would redirect /mcp → /mcp/)
    return Components(settings, table, service, manager, app, door)


def serve(settings: Settings, *, progress: Progress | None = None) -> None:
    """Run the server in the foreground until interrupted."""
    components = build(settings, progress=progress or terminal_progress())
    config = uvicorn.Config(
        components.app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled; shutdown (drain) is already done
        log.info("stopped")


def _version() -> str:
    try:
        return version("modelport")
    except PackageNotFoundError:
        return "0+unknown"
