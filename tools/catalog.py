"""Served deployments → MCP tool specifications. Pure: no ``mcp`` import, no I/O.

The input and output schemas come from the model's signature through ``tools.shapes`` (portable to every
provider's function-calling rules by default, setting ``mcp_schema``). This module adds what an agent needs to
choose and call a tool without guessing: a deterministic name (``tools.naming``), a title, a description of what
the model predicts (and in what unit), of every input column, an example call, and where bulk scoring goes. Every
spec passes the checklist in ``tools.checks`` before it is published; one that fails is left out with a logged
reason.
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
from server.schema import ColumnSpec
from tools.arguments import validate_arguments
from tools.checks import tool_problems
from tools.naming import assign_names
from tools.shapes import Dialect, ToolShape, build_shape

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
    shape: ToolShape
    """The schemas and the mapping of argument keys to model columns (``shape.rows``)."""
    max_rows: int
    """Rows per call (stated in the description, enforced by ``validate_arguments``)."""


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

    def __init__(self, *, dialect: Dialect = "portable", max_rows: int = 100) -> None:
        self.dialect: Dialect = dialect
        self.max_rows = max_rows
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
                spec = _build_or_reason(info, names[info.key], self.dialect, self.max_rows)
                if isinstance(spec, str):
                    log.warning("model %s is not published as an MCP tool: %s", info.key, spec)
            cache[ident] = spec
            if isinstance(spec, str):
                skipped[info.key] = spec
            else:
                tools.append(spec)
        self._cache = cache
        return Catalog(tuple(sorted(tools, key=lambda t: t.name)), skipped)


def _build_or_reason(info: DeploymentInfo, name: str, dialect: Dialect, max_rows: int) -> ToolSpec | str:
    try:
        spec = build_spec(info, name, dialect=dialect, max_rows=max_rows)
    except _Unpublishable as exc:
        return str(exc)
    except Exception as exc:  # a broken model must never break tools/list
        return f"could not build its tool: {exc!r}"
    problems = tool_problems(spec.name, spec.input_schema, spec.output_schema, spec.example)
    return "; ".join(problems) if problems else spec


class _Unpublishable(ValueError):
    """The generated schemas fail the checklist (the message names each rule)."""


def build_spec(info: DeploymentInfo, name: str, *, dialect: Dialect = "portable", max_rows: int = 100) -> ToolSpec:
    """The tool spec of one deployment (its schemas checked; its example call not yet)."""
    selector = selector_of(info)
    probabilities = "probabilities" in info.output_dtypes or info.output_kind.prediction_is_probabilities
    shape = build_shape(
        info.signature, info.output_kind, max_rows=max_rows, dialect=dialect, probabilities=probabilities
    )
    input_schema = shape.input_schema
    problems = tool_problems(name, input_schema, shape.output_schema)
    if problems:
        raise _Unpublishable("; ".join(problems))
    example = _example(info, shape)
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
    if shape.renamed:
        meta[META_KEY]["columns"] = shape.renamed
    description = describe(info, input_schema, example, path, max_rows)
    return ToolSpec(
        name,
        title,
        description,
        input_schema,
        shape.output_schema,
        meta,
        info.key,
        info.name,
        selector,
        info.version,
        example,
        path,
        uri,
        shape,
        max_rows,
    )


# -- descriptions ------------------------------------------------------------------------------------------------


def describe(
    info: DeploymentInfo,
    input_schema: Mapping[str, Any],
    example: Mapping[str, Any] | None,
    path: str,
    max_rows: int = 100,
) -> str:
    """The tool description: what it predicts, its inputs, an example call, and where bulk scoring goes."""
    full = _description(info, input_schema, example, path, max_rows, compact=False)
    if len(full) <= MAX_DESCRIPTION:
        return full
    compact = _description(info, input_schema, example, path, max_rows, compact=True)
    return compact if len(compact) <= MAX_DESCRIPTION else compact[: MAX_DESCRIPTION - 1] + "…"


def _description(
    info: DeploymentInfo,
    input_schema: Mapping[str, Any],
    example: Mapping[str, Any] | None,
    path: str,
    max_rows: int,
    *,
    compact: bool,
) -> str:
    aliases = f" (alias {', '.join('@' + a for a in info.aliases)})" if info.aliases else ""
    parts = [f"Score rows with the MLflow model '{info.name}' version {info.version}{aliases}."]
    parts += [d.strip() for d in (info.model.model_description, info.model.version_description) if d and d.strip()]
    parts.append('Returns {"predictions": [...]}, one entry per input row, in order: ' + _output_words(info))
    inputs = input_schema["properties"]["inputs"]
    record = inputs["items"]
    # Each column's type, unit, meaning and allowed values are in the input schema (every client sends it to the
    # model): the description names the columns once and does not repeat them.
    columns = list(record.get("properties", {}))
    optional = [
        c for c, p in record.get("properties", {}).items() if c not in set(record.get("required") or ()) or _nullable(p)
    ]
    names = f"{len(columns)} fields" if compact and len(columns) > 20 else ", ".join(columns)
    needs = f"optional, null if unknown: {', '.join(optional)}" if optional else "all required"
    line = (
        f"Input: 'inputs', a list of 1 to {max_rows} rows, each an object "
        f"with the fields {names} ({needs}); each field's type, unit, meaning and allowed values are in the input "
        "schema."
    )
    params = input_schema["properties"].get("params")
    if params:
        params = next((b for b in params.get("anyOf", ()) if b.get("type") == "object"), params)
        line += f" Optional 'params': {', '.join(params.get('properties', {}))} (see the input schema)."
    parts.append(line)
    if example is not None:
        parts.append("Example arguments: " + json.dumps(example, separators=(",", ":")))
    parts.append(f"More than {max_rows} rows: POST {path} (REST, MLflow scoring format).")
    return "\n\n".join(parts)


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


# -- example calls -----------------------------------------------------------------------------------------------


def _example(info: DeploymentInfo, shape: ToolShape) -> dict[str, Any] | None:
    """The logged input example's first row, else a synthetic row, keyed by property key; ``None`` if neither
    fits the schema."""
    rows = [_clean(info.schema.example_record)] if info.schema.example_record else []
    rows.append({c.name: _synthetic(c) for c in info.signature.inputs if not c.optional})
    record = shape.input_schema["properties"]["inputs"]["items"]
    for row in rows:
        keyed = {shape.keys.get(k, k): v for k, v in row.items()}
        keyed |= {k: None for k in record.get("required", ()) if k not in keyed}  # nullable optional columns
        args: dict[str, Any] = {"inputs": [keyed]}
        if "params" in shape.input_schema["required"]:
            args["params"] = None
        if validate_arguments(shape.input_schema, args, max_rows=1) is None:
            return args
    return None


def _clean(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        value = value.tolist() if hasattr(value, "tolist") else value
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue
        out[str(key)] = value
    return out


def _synthetic(col: ColumnSpec) -> Any:
    if col.categories:
        value: Any = col.categories[0].item() if hasattr(col.categories[0], "item") else col.categories[0]
    elif col.type == "datetime":
        value = "2025-01-01T00:00:00Z"
    else:
        value = {"integer": 0, "long": 0, "float": 0.0, "double": 0.0, "boolean": False}.get(col.type, "text")
    for dim in reversed(col.shape):
        value = [value] * max(dim, 1)
    return value


def _nullable(prop: Mapping[str, Any]) -> bool:
    return {"type": "null"} in (prop.get("anyOf") or ())
