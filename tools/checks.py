"""The schema checklist every generated tool passes before it is published, and server-side argument validation.

A tool that fails the checklist is left out of ``tools/list`` with a logged reason: one bad schema must never break
the whole list (with the ``mcp`` SDK one invalid tool fails ``tools/list`` for every client). The rules are the
portable subset every major client accepts (docs/mcp.md, "Schema checklist").
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

from server.errors import InvalidInput, PayloadTooLarge
from tools.naming import MAX_NAME_LENGTH

_NAME = re.compile(rf"^[a-z0-9_-]{{1,{MAX_NAME_LENGTH}}}$")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "not", "contains", "additionalItems", "propertyNames", "if", "then", "else")
_SCHEMA_MAPS = ("properties", "patternProperties", "dependentSchemas")
_MAX_REPORTED = 5
_PRIORITY = {"additionalProperties": 0, "required": 2}
"""Unknown fields first (usually a misspelling), then wrong values, then what is missing."""


def _subschemas(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Any]]:
    for key in _SCHEMA_ONE:
        if key in schema:
            yield f"{path}.{key}", schema[key]
    for key in _SCHEMA_LISTS:
        for i, sub in enumerate(schema.get(key) or ()):
            yield f"{path}.{key}[{i}]", sub
    for key in _SCHEMA_MAPS:
        for name, sub in (schema.get(key) or {}).items():
            yield f"{path}.{key}.{name}", sub
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        yield f"{path}.additionalProperties", extra


def portability_problems(schema: Any, path: str = "$") -> list[str]:
    """Rules beyond JSON Schema validity that clients enforce: no refs, unions, untyped or item-less schemas."""
    if not isinstance(schema, Mapping):
        return [f"{path}: boolean or non-object schema"]
    problems: list[str] = []
    for key in ("$ref", "$defs", "definitions", "$dynamicRef"):
        if key in schema:
            problems.append(f"{path}: uses {key} (inline everything)")
    kind = schema.get("type")
    if isinstance(kind, list):
        problems.append(f"{path}: type union {kind}")
    elif kind is None and not any(k in schema for k in ("enum", "const", "anyOf", "oneOf")):
        problems.append(f"{path}: untyped schema")
    if kind == "array" and not isinstance(schema.get("items"), Mapping):
        problems.append(f"{path}: array without items")
    for sub_path, sub in _subschemas(schema, path):
        problems.extend(portability_problems(sub, sub_path))
    return problems


def root_problems(schema: Any, what: str) -> list[str]:
    """Rules for an ``inputSchema``/``outputSchema`` root: a valid 2020-12 object schema without top-level unions."""
    if not isinstance(schema, Mapping):
        return [f"{what}: not a JSON object"]
    problems: list[str] = []
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        problems.append(f"{what}: not a valid JSON Schema 2020-12: {exc.message}")
    if schema.get("type") != "object":
        problems.append(f"{what}: root type must be 'object'")
    for key in ("oneOf", "anyOf", "allOf"):
        if key in schema:
            problems.append(f"{what}: top-level {key}")
    problems.extend(portability_problems(schema, what))
    return problems


def tool_problems(
    name: str,
    input_schema: Mapping[str, Any],
    output_schema: Mapping[str, Any] | None,
    example: Mapping[str, Any] | None = None,
) -> list[str]:
    """Everything that would keep a tool from being published; empty when it passes the checklist."""
    problems: list[str] = []
    if not _NAME.match(name):
        problems.append(f"name {name!r} must match {_NAME.pattern}")
    problems.extend(root_problems(input_schema, "inputSchema"))
    if problems or not isinstance(input_schema, Mapping):
        return problems
    inputs = (input_schema.get("properties") or {}).get("inputs")
    if (
        not isinstance(inputs, Mapping)
        or inputs.get("type") != "array"
        or not inputs.get("minItems")
        or not inputs.get("maxItems")
    ):
        problems.append("inputSchema: 'inputs' must be an array with minItems and maxItems")
    if input_schema.get("additionalProperties") is not False:
        problems.append("inputSchema: additionalProperties must be false")
    if output_schema is not None:
        problems.extend(root_problems(output_schema, "outputSchema"))
    if example is not None and not problems:
        errors = list(Draft202012Validator(input_schema).iter_errors(example))
        if errors:
            problems.append(f"example call does not match inputSchema: {_describe(errors[0])}")
    return problems


def _location(error: ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "arguments"


def _describe(error: ValidationError) -> str:
    message = error.message
    if error.validator == "additionalProperties" and isinstance(error.schema, Mapping):
        allowed = sorted((error.schema.get("properties") or {}).keys())
        message += f"; allowed fields: {allowed}"
    return f"{_location(error)}: {message}"


def validate_arguments(
    input_schema: Mapping[str, Any], arguments: Mapping[str, Any] | None, *, max_rows: int | None = None
) -> InvalidInput | None:
    """Check tool arguments against the published ``inputSchema`` (the SDK does not).

    Returns:
        ``None`` when valid; otherwise an ``InvalidInput`` (``PayloadTooLarge`` for too many rows) whose message
        names each offending path and the reason, in words an agent can act on.
    """
    args = dict(arguments or {})
    rows = args.get("inputs")
    if isinstance(rows, Sequence) and not isinstance(rows, str):
        limit = max_rows if max_rows is not None else _max_items(input_schema)
        if limit is not None and len(rows) > limit:
            return PayloadTooLarge(f"'inputs' has {len(rows)} rows; a tool call takes at most {limit}", field="inputs")
    errors = sorted(
        Draft202012Validator(input_schema).iter_errors(args),
        key=lambda e: (_PRIORITY.get(str(e.validator), 1), list(map(str, e.absolute_path))),
    )
    if not errors:
        return None
    lines: list[str] = []
    missing: dict[str, list[str]] = {}
    for error in errors:
        if error.validator == "required" and isinstance(error.instance, Mapping):
            missing[_location(error)] = [r for r in error.validator_value if r not in error.instance]
        else:
            lines.append(_describe(error))
    lines += [f"{where}: missing required field(s) {names}" for where, names in missing.items()]
    shown = lines[:_MAX_REPORTED] + (
        [f"... and {len(lines) - _MAX_REPORTED} more problem(s)"] if len(lines) > _MAX_REPORTED else []
    )
    return InvalidInput("invalid arguments: " + "; ".join(shown), field=_location(errors[0]))


def _max_items(input_schema: Mapping[str, Any]) -> int | None:
    inputs = (input_schema.get("properties") or {}).get("inputs") or {}
    value = inputs.get("maxItems")
    return int(value) if isinstance(value, int) else None
