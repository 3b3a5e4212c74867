"""``python -m tests.tools.stdio_server [--auth-required]``: the door over stdio with the two test models (for the
stdio tests); ``--auth-required`` gives the door a gate that requires credentials (stdio must not ask for any)."""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from pathlib import Path

from server.main import build_gate
from server.ops.gate import Gate
from server.settings import Settings
from tests.tools.models import MAX_TOOL_ROWS, start_service, stop_service
from tools import McpDoor


async def main(gate: Gate | None = None) -> None:
    service = await start_service()
    try:
        await McpDoor(service, Settings(max_tool_rows=MAX_TOOL_ROWS), gate=gate).run_stdio()
    finally:
        await stop_service(service)


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    logging.getLogger("tests.tools.stdio_server").info("serving the test models over stdio")
    if "--auth-required" in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as state:
            gate = build_gate(Settings(state_dir=Path(state), auth={"required": True}))
            assert gate.enabled
            asyncio.run(main(gate))
            gate.tokens.db.close()
    else:
        asyncio.run(main())
