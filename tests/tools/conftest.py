"""Fixtures for the MCP door: a real InferenceService over tiny ONNX deployments, and the door over it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from server.service import InferenceService
from server.settings import Settings
from tests.tools.models import start_service, stop_service
from tools import McpDoor


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def service() -> AsyncIterator[InferenceService]:
    svc = await start_service()
    try:
        yield svc
    finally:
        await stop_service(svc)


@pytest.fixture
def settings() -> Settings:
    return Settings(max_tool_rows=10)


@pytest.fixture
async def door(service: InferenceService, settings: Settings) -> AsyncIterator[McpDoor]:
    """The door with change notifications running (no HTTP)."""
    d = McpDoor(service, settings)
    async with d.notifications():
        yield d
