"""``python -m tests.tools.stdio_server``: the door over stdio with the two test models (for the stdio tests)."""

from __future__ import annotations

import asyncio
import logging
import sys

from server.settings import Settings
from tests.tools.models import MAX_TOOL_ROWS, start_service, stop_service
from tools import McpDoor


async def main() -> None:
    service = await start_service()
    try:
        await McpDoor(service, Settings(max_tool_rows=MAX_TOOL_ROWS)).run_stdio()
    finally:
        await stop_service(service)


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    logging.getLogger("tests.tools.stdio_server").info("serving the test models over stdio")
    asyncio.run(main())
