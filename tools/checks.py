"""The schema checklist every generated tool passes before it is published, and providers' function-calling rules.

``tool_problems`` is the floor: a tool that fails it is left out of ``tools/list`` with a logged reason (with the
``mcp`` SDK one invalid tool fails ``tools/list`` for every client). ``provider_problems`` checks a tool against the
rules an LLM provider applies when an agent hands it the tool (``RULE_SETS``, docs/mcp.md "Portability"): the
default (``portable``) schemas pass all of them, which the tests check for the demo models and a zoo of awkward
names and columns.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from tools.naming import MAX_NAME_LENGTH

_NAME = re.compile(rf"^[a-z_][a-z0-9_-]{{0,{MAX_NAME_LENGTH - 1}}}$")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "not", "contains", "additionalItems", "propertyNames", "if", "then", "else")
_SCHEMA_MAPS = ("properties", "patternProperties", "dependentSchemas")


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
    *,
    rows: bool = True,
) -> list[str]:
    """Everything that would keep a tool from being published; empty when it passes the checklist (``rows``: a model
    tool, whose arguments are a list of ``inputs``; the catalogue tools take other arguments).

    This is the MCP floor (a valid, portable 2020-12 object schema, a closed argument object with a list of
    ``inputs``); whether it also passes each provider's function-calling rules is ``portability_report``.
    """
    problems: list[str] = []
    if not _NAME.match(name):
        problems.append(f"name {name!r} must match {_NAME.pattern}")
    problems.extend(root_problems(input_schema, "inputSchema"))
    if problems or not isinstance(input_schema, Mapping):
        return problems
    inputs = (input_schema.get("properties") or {}).get("inputs")
    if rows and (not isinstance(inputs, Mapping) or inputs.get("type") != "array"):
        problems.append("inputSchema: 'inputs' must be an array of rows")
    if input_schema.get("additionalProperties") is not False:
        problems.append("inputSchema: additionalProperties must be false")
    if output_schema is not None:
        problems.extend(root_problems(output_schema, "outputSchema"))
    if example is not None and not problems:
        errors = list(Draft202012Validator(input_schema).iter_errors(example))
        if errors:
            problems.append(f"example call does not match inputSchema: {errors[0].message}")
    return problems


# -- providers' function-calling rules -----------------------------------------------------------------------------

RULE_SETS = ("mcp", "openai-strict", "openai-strict-legacy", "anthropic-strict", "anthropic", "gemini")
"""``mcp``: the checklist above. ``openai-strict``: OpenAI strict function calling / Structured Outputs.
``openai-strict-legacy``: the same with the restrictions still documented for fine-tuned models. ``anthropic-strict``:
Anthropic strict tool use. ``anthropic``: Anthropic tool definitions without strict. ``gemini``: Gemini function
declarations (names)."""

_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_GEMINI_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$")
_PROPERTY_KEY = re.compile(r"^[a-zA-Z0-9_.-]{1,64}$")
_OPENAI_UNSUPPORTED = frozenset(
    {
        "allOf", "not", "if", "then", "else", "dependentRequired", "dependentSchemas", "patternProperties",
        "unevaluatedProperties", "propertyNames", "minProperties", "maxProperties", "unevaluatedItems", "contains",
        "minContains", "maxContains", "uniqueItems", "prefixItems", "minLength", "maxLength", "oneOf",
        "default",  # refused by Azure OpenAI's strict mode
    }
)  # fmt: skip
_OPENAI_LEGACY_UNSUPPORTED = frozenset(
    {"minItems", "maxItems", "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
     "multipleOf"}
)  # fmt: skip
_ANTHROPIC_UNSUPPORTED = frozenset(
    {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength",
     "maxItems", "uniqueItems", "contains", "minContains", "maxContains", "prefixItems", "patternProperties"}
)  # fmt: skip
_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid", "uri"})
#: OpenAI strict limits (current, legacy): properties in all, nesting depth, enum values in all, string length of
#: property names, enum and const values in all.
_OPENAI_LIMITS = {"openai-strict": (5000, 10, 1000, 120_000), "openai-strict-legacy": (100, 5, 500, 15_000)}


def provider_problems(name: str, input_schema: Mapping[str, Any], rule_set: str) -> list[str]:
    """Why a tool (its name and input schema) would be refused under ``rule_set``; empty when it passes."""
    if rule_set == "mcp":
        return tool_problems(name, input_schema, None, rows=False)
    if rule_set not in RULE_SETS:
        raise ValueError(f"unknown rule set {rule_set!r}; one of {RULE_SETS}")
    problems: list[str] = []
    pattern = _GEMINI_NAME if rule_set == "gemini" else _TOOL_NAME
    if not pattern.match(name):
        problems.append(f"name {name!r} must match {pattern.pattern}")
    if rule_set == "gemini":
        return problems
    for path, node in _nodes(input_schema, "$"):
        for key in (node.get("properties") or {}) if isinstance(node.get("properties"), Mapping) else ():
            if not _PROPERTY_KEY.match(str(key)):
                problems.append(f"{path}.properties: key {key!r} must match {_PROPERTY_KEY.pattern}")
        if rule_set != "anthropic":
            problems.extend(_strict_node_problems(path, node, rule_set))
    if rule_set.startswith("openai"):
        if input_schema.get("type") != "object" or "anyOf" in input_schema:
            problems.append("$: the root must be an object, not anyOf")
        problems.extend(_openai_limit_problems(input_schema, rule_set))
    return problems


def portability_report(name: str, input_schema: Mapping[str, Any]) -> dict[str, list[str]]:
    """Every rule set → the problems of this tool under it (empty lists: it passes)."""
    return {rule_set: provider_problems(name, input_schema, rule_set) for rule_set in RULE_SETS}


def _nodes(schema: Any, path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if not isinstance(schema, Mapping):
        return
    yield path, schema
    for sub_path, sub in _subschemas(schema, path):
        yield from _nodes(sub, sub_path)


def _strict_node_problems(path: str, node: Mapping[str, Any], rule_set: str) -> list[str]:
    problems: list[str] = []
    unsupported = _ANTHROPIC_UNSUPPORTED if rule_set == "anthropic-strict" else _OPENAI_UNSUPPORTED
    if rule_set == "openai-strict-legacy":
        unsupported = unsupported | _OPENAI_LEGACY_UNSUPPORTED
    problems += [f"{path}: '{key}' is not supported" for key in sorted(unsupported & node.keys())]
    if node.get("type") == "object" or "properties" in node:
        if node.get("additionalProperties") is not False:
            problems.append(f"{path}: objects need additionalProperties: false")
        props = node.get("properties") or {}
        missing = [k for k in props if k not in (node.get("required") or ())]
        if missing and rule_set.startswith("openai"):
            problems.append(f"{path}: every property must be required (optional ones nullable): {missing}")
    if "format" in node and node["format"] not in _FORMATS:
        problems.append(f"{path}: format {node['format']!r} is not supported")
    if rule_set == "anthropic-strict":
        if node.get("minItems", 0) not in (0, 1):
            problems.append(f"{path}: minItems may only be 0 or 1")
        if any(isinstance(v, dict | list) for v in node.get("enum") or ()):
            problems.append(f"{path}: enum values must be primitives")
    return problems


def _openai_limit_problems(schema: Mapping[str, Any], rule_set: str) -> list[str]:
    max_props, max_depth, max_enum, max_chars = _OPENAI_LIMITS[rule_set]
    props = enums = chars = 0
    for _path, node in _nodes(schema, "$"):
        found = node.get("properties")
        names: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        props += len(names)
        chars += sum(len(str(k)) for k in names)
        values = list(node.get("enum") or ()) + ([node["const"]] if "const" in node else [])
        enums += len(node.get("enum") or ())
        chars += sum(len(str(v)) for v in values)
    problems = []
    depth = _depth(schema)
    if props > max_props:
        problems.append(f"$: {props} properties in all; at most {max_props}")
    if depth > max_depth:
        problems.append(f"$: nested {depth} levels deep; at most {max_depth}")
    if enums > max_enum:
        problems.append(f"$: {enums} enum values in all; at most {max_enum}")
    if chars > max_chars:
        problems.append(f"$: {chars} characters of names and enum values; at most {max_chars}")
    return problems


def _depth(schema: Any) -> int:
    """Levels of object/array nesting (the root object is level 1); unions add no level."""
    if not isinstance(schema, Mapping):
        return 0
    own = 1 if schema.get("type") in ("object", "array") else 0
    return own + max((_depth(sub) for _path, sub in _subschemas(schema, "")), default=0)
