"""The MCP door: every served model deployment as a typed MCP tool, on the same runtime as REST.

Public surface:

* ``McpDoor(service, settings, gate=gate)``: ``.install(app)`` / ``.routes()`` / ``.asgi_app()`` (Streamable HTTP at
  ``/mcp``, both protocol eras; with auth on an OAuth 2.1 resource server over the shared ``Gate``, see
  ``tools/auth.py``), ``.lifespan()``, ``.run_stdio()``, ``.server`` (for in-process clients).
* ``CatalogBuilder`` / ``ToolSpec``: deployments → tool specifications (pure).
* ``tool_problems``: the schema checklist every published tool passes.
"""

from __future__ import annotations

from tools.arguments import validate_arguments
from tools.catalog import Catalog, CatalogBuilder, ToolSpec
from tools.checks import tool_problems
from tools.door import MCP_PATH, McpDoor
from tools.server import ToolServer

__all__ = [
    "MCP_PATH",
    "Catalog",
    "CatalogBuilder",
    "McpDoor",
    "ToolServer",
    "ToolSpec",
    "tool_problems",
    "validate_arguments",
]
