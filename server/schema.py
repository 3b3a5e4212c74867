"""JSON Schemas generated from a model's signature for the REST door: OpenAPI request and response bodies.

Built once per deployment (``build_schema``). The MCP door derives its tool schemas from the same signature in
``tools.shapes`` (portable to every LLM provider's function-calling rules).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from registry import ColumnSpec, ModelSignature, ParamSpec

__all__ = [
    "ColumnSpec",
    "ModelSchema",
    "ModelSignature",
    "OutputKind",
    "build_schema",
    "column_schema",
    "describe",
    "json_type",
]
"""``ColumnSpec``/``ModelSignature`` are re-exported for the doors, which may not import ``registry``."""

_JSON_TYPES = {
    "boolean": "boolean",
    "integer": "integer",
    "long": "integer",
    "float": "number",
    "double": "number",
    "string": "string",
    "binary": "string",
    "datetime": "string",
}


@dataclass(frozen=True, slots=True)
class OutputKind:
    """What the model's predictions look like, for output schemas and rendering."""

    kind: str
    """``regression`` (one number per row), ``classification`` (label + probabilities), or ``tensor``."""
    classes: tuple[Any, ...] | None = None
    prediction_is_probabilities: bool = False
    """True when the MLflow pyfunc returns class probabilities (``pyfunc_predict_fn="predict_proba"``)."""


@dataclass(frozen=True, slots=True)
class ModelSchema:
    """All generated schemas of one deployment."""

    record: dict[str, Any]
    params: dict[str, Any] | None
    rest_request: dict[str, Any]
    rest_response: dict[str, Any]
    example_record: dict[str, Any] | None


def json_type(signature_type: str) -> str:
    """The JSON Schema ``type`` of a signature type (``long`` → ``integer``, ``double`` → ``number``...)."""
    return _JSON_TYPES.get(signature_type, "string")


def column_schema(col: ColumnSpec) -> dict[str, Any]:
    """JSON Schema of one column value (a scalar, or nested arrays for tensor columns)."""
    schema: dict[str, Any] = {"type": json_type(col.type)}
    if col.type == "datetime":
        schema["format"] = "date-time"
    if col.categories:
        schema["enum"] = [c.item() if hasattr(c, "item") else c for c in col.categories]
    for dim in reversed(col.shape):
        schema = {"type": "array", "items": schema} | ({"minItems": dim, "maxItems": dim} if dim > 0 else {})
    text = describe(col.description, col.unit)
    if text:
        schema["description"] = text
    return schema


def record_schema(signature: ModelSignature) -> dict[str, Any]:
    """JSON Schema of one input row ``{column: value}``."""
    return {
        "type": "object",
        "properties": {c.name: column_schema(c) for c in signature.inputs},
        "required": [c.name for c in signature.inputs if not c.optional],
        "additionalProperties": False,
    }


def params_schema(params: Sequence[ParamSpec]) -> dict[str, Any] | None:
    if not params:
        return None
    props: dict[str, Any] = {}
    for p in params:
        prop: dict[str, Any] = {"type": json_type(p.type)}
        if p.shape:
            prop = {"type": "array", "items": prop}
        if p.default is not None:
            prop["default"] = p.default.tolist() if hasattr(p.default, "tolist") else p.default
        props[p.name] = prop
    return {"type": "object", "properties": props, "additionalProperties": False}


def describe(description: str | None, unit: str | None) -> str:
    """``"Customer age. Unit: years."`` from a description and a unit, either of which may be missing."""
    parts = [description.rstrip(". ") + "." if description else None, f"Unit: {unit}." if unit else None]
    return " ".join(p for p in parts if p)


def _open_enum(prop: dict[str, Any]) -> dict[str, Any]:
    if "enum" not in prop:
        return prop
    known = prop["enum"]
    return {k: v for k, v in prop.items() if k != "enum"} | {"examples": known}


def _rest_request(signature: ModelSignature, record: dict[str, Any], params: dict[str, Any] | None) -> dict[str, Any]:
    """The MLflow scoring body for this signature: exactly one of the formats, rows typed column by column."""
    # Known categories as examples, not enum: encoders that ignore unknown categories score them (MLflow does too)
    props = {n: _open_enum(p) for n, p in record.get("properties", {}).items()}
    record = {**record, "properties": props}
    required = set(record.get("required", ()))
    names = list(signature.input_names)
    cells = [
        props[n] if n in required else {"anyOf": [props[n], {"type": "null"}]} if n in props else {} for n in names
    ]
    row: dict[str, Any] = {"type": "array", "items": {}, "minItems": 1}
    if cells and all(cells):
        row = {"type": "array", "prefixItems": cells, "items": False, "minItems": len(cells)}
    rows = {"type": "array", "items": row, "minItems": 1}
    # MLflow ignores columns the signature does not name (so does modelport by default: X-Modelport-Ignored)
    records = {"type": "array", "items": {**record, "additionalProperties": True}, "minItems": 1}
    formats: dict[str, Any] = {
        "dataframe_split": {
            "type": "object",
            "properties": {"columns": {"type": "array", "items": {"type": "string", "enum": names}}, "data": rows},
            "required": ["data"],
        },
        "dataframe_records": records,
        "instances": records,
        "inputs": records,
        "data": rows | {"description": "Rows in signature column order."},
    }
    if cells and all(cells):  # the split's columns, when given, are the signature's, in order
        formats["dataframe_split"]["properties"]["columns"] = {"const": names}
    return {
        "type": "object",
        "description": "Exactly one of dataframe_split, dataframe_records, instances, inputs or data "
        f"(rows in column order: {', '.join(names)}).",
        "properties": {**formats, **({"params": params} if params else {})},
        "oneOf": [{"required": [key]} for key in formats],
    }


def build_schema(signature: ModelSignature, example: Sequence[Mapping[str, Any]] | None = None) -> ModelSchema:
    """Generate every schema of a deployment from its signature."""
    record = record_schema(signature)
    params = params_schema(signature.params)
    rest_request = _rest_request(signature, record, params)
    rest_response = {
        "type": "object",
        "properties": {"predictions": {"type": "array", "items": {}}},
        "required": ["predictions"],
    }
    example_record = dict(example[0]) if example else None
    return ModelSchema(record, params, rest_request, rest_response, example_record)
