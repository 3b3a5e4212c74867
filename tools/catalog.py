"""Served deployments → MCP tool specifications. Pure: no ``mcp`` import, no I/O.

The input and output schemas come unchanged from ``server.schema`` (``ModelSchema.tool_input`` / ``.output``), the
single source of truth shared with REST. This module adds what an agent needs to choose and call a tool without
guessing: a deterministic name (``tools.naming``), a title, a description of what the model predicts (and in what
unit), of every input column, an example call, and where bulk scoring goes. Every spec passes the checklist in
``tools.checks`` before it is published; one that fails is left out with a logged reason.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from server.deployments import DeploymentInfo
from tools.checks import tool_problems, validate_arguments
from tools.naming import assign_names

log = logging.getLogger(__name__)

MAX_DESCRIPTION = 2048
"""Longest description we publish; some clients truncate longer ones."""
META_KEY = "modelport/model"
"""The ``_meta`` key carrying the real model name, version, aliases and URIs of a tool."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """Everything published about one deployment's tool, and how to route a call to it."""

    name: str
    title: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    meta: dict[str, Any]
    key: str
    """The deployment key (``name@alias`` or ``name/version``)."""
    model_name: str
    selector: str
    """The alias or version the deployment was made with (what ``InferenceService`` is called with)."""
    version: str
    example: dict[str, Any] | None
    rest_path: str
    card_uri: str


@dataclass(frozen=True, slots=True)
class Catalog:
    """The tools of one snapshot of the deployment table, sorted by name."""

    tools: tuple[ToolSpec, ...] = ()
    skipped: Mapping[str, str] = field(default_factory=dict)
    """Deployment key → why it has no tool."""

    def get(self, name: str) -> ToolSpec | None:
        return next((t for t in self.tools if t.name == name), None)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tools]


def selector_of(info: DeploymentInfo) -> str:
    """The alias or version a deployment was made with (from its key ``name@alias`` / ``name/version``)."""
    rest = info.key[len(info.name) + 1 :] if info.key.startswith(info.name) else info.version
    return rest or info.version


def rest_path(name: str, selector: str) -> str:
    """The REST scoring path for bulk requests."""
    return f"/model/{quote(name, safe='')}/{quote(selector, safe='')}/invocations"


def card_uri(name: str, selector: str) -> str:
    """The MCP resource URI of a deployment's model card."""
    return f"modelport://models/{quote(name, safe='')}/{quote(selector, safe='')}"


class CatalogBuilder:
    """Builds catalogs from ``InferenceService.list()``, reusing specs of deployments that did not change."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], ToolSpec | str] = {}

    def build(self, infos: Iterable[DeploymentInfo]) -> Catalog:
        """One tool per deployment (failed deployments and invalid schemas are skipped with a reason)."""
        infos = [i for i in infos if i.state != "FAILED"]
        names = assign_names((i.key, i.name, selector_of(i)) for i in infos)
        cache: dict[tuple[Any, ...], ToolSpec | str] = {}
        tools: list[ToolSpec] = []
        skipped: dict[str, str] = {}
        for info in infos:
            ident = (info.key, info.version, info.loaded_at, names[info.key])
            spec = self._cache.get(ident)
            if spec is None:
                spec = _build_or_reason(info, names[info.key])
                if isinstance(spec, str):
                    log.warning("model %s is not published as an MCP tool: %s", info.key, spec)
            cache[ident] = spec
            if isinstance(spec, str):
                skipped[info.key] = spec
            else:
                tools.append(spec)
        self._cache = cache
        return Catalog(tuple(sorted(tools, key=lambda t: t.name)), skipped)


def _build_or_reason(info: DeploymentInfo, name: str) -> ToolSpec | str:
    problems = tool_problems(name, info.schema.tool_input, info.schema.output)
    if problems:
        return "; ".join(problems)
    try:
        spec = build_spec(info, name)
    except Exception as exc:  # a broken model must never break tools/list
        return f"could not build its tool: {exc!r}"
    problems = tool_problems(spec.name, spec.input_schema, spec.output_schema, spec.example)
    return "; ".join(problems) if problems else spec


def build_spec(info: DeploymentInfo, name: str) -> ToolSpec:
    """The tool spec of one deployment (not yet checked)."""
    selector = selector_of(info)
    input_schema = info.schema.tool_input
    example = _example(info, input_schema)
    path, uri = rest_path(info.name, selector), card_uri(info.name, selector)
    title = f"{info.name} v{info.version}" + "".join(f" @{a}" for a in info.aliases)
    meta = {
        META_KEY: {
            "name": info.name,
            "version": info.version,
            "aliases": list(info.aliases),
            "deployment": info.key,
            "modelUri": info.ref,
            "runtime": info.runtime,
            "provider": info.provider,
            "card": uri,
            "restPath": path,
            "example": example,
        }
    }
    description = describe(info, input_schema, example, path)
    return ToolSpec(
        name,
        title,
        description,
        input_schema,
        info.schema.output,
        meta,
        info.key,
        info.name,
        selector,
        info.version,
        example,
        path,
        uri,
    )


# -- descriptions ------------------------------------------------------------------------------------------------


def describe(
    info: DeploymentInfo, input_schema: Mapping[str, Any], example: Mapping[str, Any] | None, path: str
) -> str:
    """The tool description: what it predicts, its inputs, an example call, and where bulk scoring goes."""
    full = _description(info, input_schema, example, path, compact=False)
    if len(full) <= MAX_DESCRIPTION:
        return full
    compact = _description(info, input_schema, example, path, compact=True)
    return compact if len(compact) <= MAX_DESCRIPTION else compact[: MAX_DESCRIPTION - 1] + "…"


def _description(
    info: DeploymentInfo,
    input_schema: Mapping[str, Any],
    example: Mapping[str, Any] | None,
    path: str,
    *,
    compact: bool,
) -> str:
    aliases = f" (alias {', '.join('@' + a for a in info.aliases)})" if info.aliases else ""
    parts = [f"Score rows with the MLflow model '{info.name}' version {info.version}{aliases}."]
    parts += [d.strip() for d in (info.model.model_description, info.model.version_description) if d and d.strip()]
    parts.append('Returns {"predictions": [...]}, one entry per input row, in order: ' + _output_words(info))
    inputs = input_schema["properties"]["inputs"]
    record = inputs["items"]
    required = set(record.get("required") or ())
    lines = [
        f"Input: 'inputs' is a list of {inputs.get('minItems', 1)} to {inputs.get('maxItems')} rows; "
        "each row is an object with these fields:"
    ]
    for col, prop in record.get("properties", {}).items():
        spec = info.signature.column(col)
        unit = f", {spec.unit}" if spec is not None and spec.unit else ""
        text = (spec.description if spec is not None else prop.get("description")) or ""
        line = f"- {col} ({_type_words(prop)}{unit}, {'required' if col in required else 'optional'})"
        lines.append(line + (f": {_sentence(text)}" if text and not compact else ""))
    params = input_schema["properties"].get("params")
    if params:
        lines.append(
            "Optional 'params': "
            + ", ".join(
                f"{k} ({_type_words(v)}" + (f", default {json.dumps(v['default'])})" if "default" in v else ")")
                for k, v in params.get("properties", {}).items()
            )
            + "."
        )
    parts.append("\n".join(lines))
    if example is not None:
        parts.append("Example arguments: " + json.dumps(example, separators=(",", ":")))
    parts.append(
        f"For more than {inputs.get('maxItems')} rows, use the REST endpoint POST {path} (MLflow scoring format)."
    )
    return "\n\n".join(parts)


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _output_words(info: DeploymentInfo) -> str:
    kind, sig = info.output_kind, info.signature
    if kind.kind == "classification":
        classes = [c.item() if hasattr(c, "item") else c for c in (kind.classes or ())]
        return (
            "an object with 'label' (the most likely class"
            + (f", one of {json.dumps(classes)}" if classes else "")
            + ") and 'probabilities' (the probability of each class, keyed by class)."
        )
    words = "a number" if kind.kind == "regression" else "an array of numbers"
    if sig.output_description:
        words += f": {sig.output_description.strip().rstrip('.')}"
    return words + (f", in {sig.output_unit}." if sig.output_unit else ".")


def _type_words(prop: Mapping[str, Any]) -> str:
    kind = prop.get("type", "value")
    if kind == "array":
        n = prop.get("maxItems")
        return (f"array of {n} " if n else "array of ") + _type_words(prop.get("items") or {})
    if "enum" in prop:
        return f"{kind}, one of {json.dumps(prop['enum'])}"
    if prop.get("format") == "date-time":
        return "date-time string (ISO 8601)"
    return str(kind)


# -- example calls -----------------------------------------------------------------------------------------------


def _example(info: DeploymentInfo, input_schema: Mapping[str, Any]) -> dict[str, Any] | None:
    """The logged input example's first row, else a synthetic row; ``None`` if neither fits the schema."""
    record = input_schema["properties"]["inputs"]["items"]
    required = set(record.get("required") or ())
    rows = [_clean(info.schema.example_record)] if info.schema.example_record else []
    rows.append({col: _synthetic(prop) for col, prop in record.get("properties", {}).items() if col in required})
    for row in rows:
        if validate_arguments(input_schema, {"inputs": [row]}) is None:
            return {"inputs": [row]}
    return None


def _clean(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        value = value.tolist() if hasattr(value, "tolist") else value
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue
        out[str(key)] = value
    return out


def _synthetic(prop: Mapping[str, Any]) -> Any:
    if "enum" in prop:
        return prop["enum"][0]
    kind = prop.get("type")
    if kind == "array":
        return [_synthetic(prop.get("items") or {})] * max(int(prop.get("minItems", 1)), 1)
    if prop.get("format") == "date-time":
        return "2025-01-01T00:00:00Z"
    return {"integer": 0, "number": 0.0, "boolean": False, "string": "text"}.get(str(kind), "text")
