"""Model cards as MCP resources: one per served deployment, plus a template to read any served name/version.

URI: ``modelport://models/{name}/{version}`` where ``version`` is a version number or an alias (the listed URI uses
what the deployment was made with, so it stays valid across promotions). The card is JSON: descriptions, the
signature and the tool's schemas, the input example, the training run's metrics and params, tags, lineage (source,
run and experiment), and how it is served (runtime, provider, conversion parity, REST path).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

import mcp.types as types
from mcp.shared.exceptions import MCPError

from server.deployments import DeploymentInfo
from server.errors import ModelNotFound
from server.service import InferenceService
from tools.catalog import Catalog, ToolSpec, card_uri, rest_path, selector_of

SCHEME = "modelport://models/"
TEMPLATE = SCHEME + "{name}/{version}"
MIME = "application/json"


def list_cards(tools: Iterable[ToolSpec]) -> list[types.Resource]:
    """One model-card resource per tool (``catalog.tools``, or those a caller may view)."""
    return [
        types.Resource(
            uri=tool.card_uri,
            name=f"{tool.name}-card",
            title=f"Model card: {tool.title}",
            description=f"Description, signature, metrics, lineage and runtime of the model behind the "
            f"'{tool.name}' tool.",
            mime_type=MIME,
        )
        for tool in tools
    ]


def card_templates() -> list[types.ResourceTemplate]:
    """The template for reading the card of any served model name and version or alias."""
    return [
        types.ResourceTemplate(
            uri_template=TEMPLATE,
            name="model-card",
            title="Model card by name and version",
            description="The model card of a served model; 'version' is a version number or an alias (e.g. champion).",
            mime_type=MIME,
        )
    ]


def parse_card_uri(uri: str) -> tuple[str, str] | None:
    """``(name, version_or_alias)`` of a card URI, or ``None`` when it is not one."""
    if not uri.startswith(SCHEME):
        return None
    name, sep, version = uri[len(SCHEME) :].partition("/")
    if not sep or not name or not version or "/" in version:
        return None
    return unquote(name), unquote(version)


def read_card(service: InferenceService, uri: str, catalog: Catalog) -> types.ReadResourceResult:
    """Read one model card; an unknown URI or model is a ``-32602`` error naming what is served."""
    parsed = parse_card_uri(uri)
    if parsed is None:
        raise MCPError(
            code=types.INVALID_PARAMS, message=f"Unknown resource: {uri}; expected {TEMPLATE}", data={"uri": uri}
        )
    try:
        info = service.describe(*parsed)
    except ModelNotFound as exc:
        raise MCPError(
            code=types.INVALID_PARAMS, message=f"Resource not found: {uri}: {exc.message}", data={"uri": uri}
        ) from None
    spec = next((t for t in catalog.tools if t.key == info.key), None)
    text = json.dumps(_jsonable(model_card(info, spec)), indent=2, allow_nan=False)
    return types.ReadResourceResult(contents=[types.TextResourceContents(uri=uri, mime_type=MIME, text=text)])


def model_card(info: DeploymentInfo, spec: ToolSpec | None = None) -> dict[str, Any]:
    """The card of one deployment, JSON-ready (with its tool's name and schemas when it has a tool)."""
    summary = info.summary()
    model = info.model
    selector = selector_of(info)
    return {
        "name": info.name,
        "version": info.version,
        "aliases": list(info.aliases),
        "model_uri": info.ref,
        "deployment": info.key,
        "tool": spec.name if spec is not None else None,
        "card_uri": card_uri(info.name, selector),
        "description": model.model_description,
        "version_description": model.version_description,
        "signature": summary["signature"],
        "input_schema": spec.input_schema if spec is not None else None,
        "output_schema": spec.output_schema if spec is not None else None,
        "columns": dict(spec.shape.renamed) if spec is not None else {},
        "input_example": model.input_example,
        "training_run": {
            "run_id": model.run_id,
            "experiment_id": model.experiment_id,
            "metrics": dict(model.metrics),
            "params": dict(model.params),
        },
        "tags": dict(model.tags),
        "lineage": {
            "source": model.source,
            "run_id": model.run_id,
            "experiment_id": model.experiment_id,
            "flavors": list(model.flavors),
            "created_at_ms": model.created_at_ms,
        },
        "serving": {
            "state": info.state,
            "runtime": info.runtime,
            "provider": info.provider,
            "flavor": info.flavor,
            "reason": info.reason,
            "parity": summary["parity"],
            "load_seconds": summary["load_seconds"],
            "rest_invocations": rest_path(info.name, selector),
        },
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
