"""Models that failed to load, published to MCP clients: a line in the server's instructions and a resource.

``modelport://status`` (JSON) lists what is served and every configured model that is not, with its model URI and
the reason. It appears in ``resources/list`` while some model is failing (and is readable at any time). With auth on,
each caller sees only the models it may view, and the instructions (one text for every caller) say nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

import mcp.types as types

from server.service import InferenceService

STATUS_URI = "modelport://status"
MIME = "application/json"
MAX_NOTED = 5
"""Failed models named in the instructions; the rest are counted ("and N more")."""
REASON_CHARS = 160
"""A reason is cut to this many characters in the instructions (the resource has it in full)."""


def model_name(key: str) -> str:
    """The registered model name of a deployment key (``name@alias`` or ``name/version``)."""
    return key.split("@", 1)[0] if "@" in key else key.rsplit("/", 1)[0]


def unserved_failures(service: InferenceService) -> dict[str, str]:
    """Deployment key → reason for every failed deployment that is not served (a failed swap keeps the old one)."""
    served = {info.key for info in service.list()}
    return {key: reason for key, reason in sorted(service.failures().items()) if key not in served}


def failure_note(failures: Mapping[str, str]) -> str | None:
    """One short sentence per failed model (at most ``MAX_NOTED``), for the server's instructions."""
    if not failures:
        return None
    parts = [f"models:/{key} ({_short(reason)})" for key, reason in list(failures.items())[:MAX_NOTED]]
    more = len(failures) - MAX_NOTED
    listed = "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
    return f"These models failed to load and have no tool: {listed}. Details: resource {STATUS_URI}."


def status_resource() -> types.Resource:
    return types.Resource(
        uri=STATUS_URI,
        name="status",
        title="Served and failed models",
        description="Which models are served, and which failed to load (model URI and reason).",
        mime_type=MIME,
    )


def read_status(service: InferenceService, may_view: Callable[[str], bool] | None = None) -> types.ReadResourceResult:
    """The status document; ``may_view(model_name)`` filters it per caller (``None``: everything)."""
    allowed = may_view or (lambda _name: True)
    served = [
        {"deployment": info.key, "model_uri": info.ref, "name": info.name, "version": info.version}
        for info in service.list()
        if allowed(info.name)
    ]
    failed = [
        {"deployment": key, "model_uri": f"models:/{key}", "name": model_name(key), "reason": reason}
        for key, reason in unserved_failures(service).items()
        if allowed(model_name(key))
    ]
    text = json.dumps({"served": served, "failed": failed}, indent=2)
    return types.ReadResourceResult(contents=[types.TextResourceContents(uri=STATUS_URI, mime_type=MIME, text=text)])


def _short(reason: str) -> str:
    text = " ".join(reason.split())
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1].rstrip() + "…"
