"""The input and output schemas of a model's MCP tool, and the mapping between tool arguments and model columns.

Two dialects (setting ``mcp_schema``):

* ``portable`` (default): passes, as generated, OpenAI strict function calling (current and legacy rules), Anthropic
  strict and non-strict tool use and Gemini (``tools.checks.RULE_SETS``): no ``minItems``/``maxItems``/``format``/
  bounds/``default``, every object closed (``additionalProperties: false``) with every property required, optional
  values as ``anyOf [T, null]``. The limits those keywords would state (rows per call, tensor shapes, date-time
  strings) are in the descriptions and enforced by the server.
* ``full``: the plain JSON Schema with every bound (``minItems``/``maxItems``, tensor shapes, ``format``, optional
  columns and params left out of ``required``, param defaults), for clients that validate with it.

Column names that are not valid property keys everywhere (``^[A-Za-z0-9_.-]{1,64}$``: spaces, brackets, accents)
get a portable key (``portable_keys``); the real name stays in the property's ``title``, and ``ToolShape.rows``
maps keys back to columns. Classifier probabilities are a fixed object with one property per class.

Categories: a column whose encoder refuses unknown values (``ColumnSpec.closed``) is an ``enum``; one whose encoder
ignores them lists the known values as ``examples`` and in its description, so a tool call and a REST request with
the same row get the same answer.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from server.prediction import label_key
from server.schema import ColumnSpec, ModelSignature, OutputKind, describe, json_type

Dialect = Literal["portable", "full"]

KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
"""A property key every provider accepts (Anthropic's rule is the strictest)."""
_MAX_ENUM = 250
"""Closed category lists longer than this are described and checked by the server, not listed as an ``enum``."""
_MAX_EXAMPLES = 20


def portable_key(name: str) -> str:
    """``Order Value (EUR)`` → ``Order_Value_EUR``, ``âge`` → ``age``: ASCII letters, digits, ``_ . -``, ≤ 64."""
    if KEY.match(name):
        return name
    ascii_ = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    key = re.sub(r"[^A-Za-z0-9_.-]+", "_", ascii_).strip("_") or "column"
    if len(key) > 64:
        key = key[:57].rstrip("_") + "_" + hashlib.sha256(name.encode()).hexdigest()[:6]
    return key


def portable_keys(names: Sequence[str]) -> dict[str, str]:
    """Column name → property key: deterministic (a function of the names in order) and collision-free.

    Valid names keep their key; a renamed column that collides with a taken key gets ``_2``, ``_3``... appended.
    """
    taken = {n for n in names if KEY.match(n)}
    keys: dict[str, str] = {}
    for name in names:
        if KEY.match(name):
            keys[name] = name
            continue
        base = portable_key(name)
        key, n = base, 2
        while key in taken:
            key, n = f"{base[:60]}_{n}", n + 1
        taken.add(key)
        keys[name] = key
    return keys


@dataclass(frozen=True, slots=True)
class ToolShape:
    """A tool's schemas and the mapping from its arguments to the model's columns."""

    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    keys: Mapping[str, str]
    """Column name → property key (identical for most columns)."""
    class_keys: Mapping[str, str]
    """Class label (as ``Prediction.structured()`` writes it, ``label_key``) → property key in ``probabilities``."""
    nullable_probabilities: bool
    dialect: Dialect

    @property
    def renamed(self) -> dict[str, str]:
        """Only the columns whose key differs from their name."""
        return {name: key for name, key in self.keys.items() if name != key}

    def rows(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Validated tool rows → records keyed by column name (``null`` for an optional column means absent)."""
        columns = {key: name for name, key in self.keys.items()}
        return [{columns.get(k, k): v for k, v in row.items() if v is not None} for row in rows]

    def params(self, params: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """Validated tool params → model params (``null`` means the model's default)."""
        if not params:
            return None
        given = {k: v for k, v in params.items() if v is not None}
        return given or None

    def output(self, structured: dict[str, Any]) -> dict[str, Any]:
        """``Prediction.structured()`` → this tool's output schema (probabilities keyed by class key)."""
        if not self.class_keys and not self.nullable_probabilities:
            return structured
        rows = []
        for row in structured["predictions"]:
            if isinstance(row, dict) and "label" in row:
                probs = row.get("probabilities")
                if probs is not None and self.class_keys:
                    probs = {self.class_keys.get(k, k): p for k, p in probs.items()}
                row = {"label": row["label"], "probabilities": probs} if self.class_keys else {"label": row["label"]}
            rows.append(row)
        return {"predictions": rows}


def build_shape(
    signature: ModelSignature,
    kind: OutputKind,
    *,
    max_rows: int,
    dialect: Dialect = "portable",
    probabilities: bool = True,
) -> ToolShape:
    """The tool schemas of a model.

    Args:
        signature: the model's signature (with categories).
        kind: what its predictions look like.
        max_rows: rows per tool call (stated in the description; ``full`` also states it as ``maxItems``).
        dialect: ``portable`` or ``full`` (module docstring).
        probabilities: whether a classifier's predictions always carry class probabilities (else they may be
            ``null``).
    """
    full = dialect == "full"
    keys = portable_keys(signature.input_names)
    props = {keys[c.name]: column_schema(c, keys[c.name], full=full) for c in signature.inputs}
    required = [keys[c.name] for c in signature.inputs if full is False or not c.optional]
    record = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
    inputs: dict[str, Any] = {
        "type": "array",
        "description": f"Rows to score, one object per row: 1 to {max_rows} rows per call.",
        "items": record,
    }
    if full:
        inputs |= {"minItems": 1, "maxItems": max_rows}
    tool_props: dict[str, Any] = {"inputs": inputs}
    params = params_schema(signature, full=full)
    if params is not None:
        tool_props["params"] = params
    tool_required = list(tool_props) if not full else ["inputs"]
    input_schema = {
        "type": "object",
        "properties": tool_props,
        "required": tool_required,
        "additionalProperties": False,
    }
    class_keys = portable_keys_for_labels(kind.classes) if kind.kind == "classification" and kind.classes else {}
    nullable = kind.kind == "classification" and bool(class_keys) and not probabilities
    output_schema = {
        "type": "object",
        "properties": {
            "predictions": {"type": "array", "items": _prediction_item(kind, signature, class_keys, nullable)}
        },
        "required": ["predictions"],
        "additionalProperties": False,
    }
    return ToolShape(input_schema, output_schema, keys, class_keys, nullable, dialect)


def portable_keys_for_labels(classes: Sequence[Any]) -> dict[str, str]:
    """Class label → probability property key (portable and unique)."""
    labels = [label_key(c) for c in classes]
    keys = portable_keys(labels)
    return {label: keys[label] for label in labels}


def column_schema(col: ColumnSpec, key: str, *, full: bool) -> dict[str, Any]:
    """One column's value schema, with its description, unit, allowed or known values and (renamed) real name."""
    schema: dict[str, Any] = {"type": json_type(col.type)}
    words: list[str] = []
    if col.type == "datetime":
        if full:
            schema["format"] = "date-time"
        words.append("An ISO 8601 date-time string, e.g. 2025-01-31T12:00:00Z.")
    if col.type == "binary":
        words.append("Base64-encoded bytes.")
    known = [c.item() if hasattr(c, "item") else c for c in col.categories or ()]
    if known and col.closed and len(known) <= _MAX_ENUM:
        schema["enum"] = known
    elif known and col.closed:
        words.append(f"Only these values: {_listing(known)}.")
    elif known:
        schema["examples"] = known[:_MAX_EXAMPLES]
        words.append(f"Known values: {_listing(known)}; other values are accepted (the model ignores them).")
    for dim in reversed(col.shape):
        schema = {"type": "array", "items": schema} | ({"minItems": dim, "maxItems": dim} if full and dim > 0 else {})
    if col.shape:
        shape = " x ".join(str(d) if d > 0 else "any" for d in col.shape)
        words.append(f"Nested arrays of shape [{shape}].")
    text = " ".join(p for p in (describe(col.description, col.unit), *words) if p)
    if col.optional and not full:
        schema = {"anyOf": [schema, {"type": "null"}]}
        text = f"{text} Optional: null if unknown.".strip()
    if key != col.name:
        schema["title"] = col.name
        text = f"Column {json.dumps(col.name)}. {text}".strip()
    if text:
        schema["description"] = text
    return schema


def params_schema(signature: ModelSignature, *, full: bool) -> dict[str, Any] | None:
    """The optional inference parameters: an object (``full``) or a required, nullable object of nullable values."""
    if not signature.params:
        return None
    props: dict[str, Any] = {}
    for p in signature.params:
        prop: dict[str, Any] = {"type": json_type(p.type)}
        if p.shape:
            prop = {"type": "array", "items": prop}
        default = p.default.tolist() if hasattr(p.default, "tolist") else p.default
        if full and default is not None:
            prop["default"] = default
        if not full:
            prop = {"anyOf": [prop, {"type": "null"}]}
        prop["description"] = "null: the model's default" + (
            f" ({json.dumps(default)})." if default is not None else "."
        )
        props[p.name] = prop
    required = [] if full else list(props)
    params = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
    if full:
        return params | {"description": "Optional inference parameters."}
    return {"anyOf": [params, {"type": "null"}], "description": "Inference parameters, or null for the defaults."}


def _prediction_item(
    kind: OutputKind, signature: ModelSignature, class_keys: Mapping[str, str], nullable: bool
) -> dict[str, Any]:
    desc = describe(signature.output_description, signature.output_unit)
    if kind.kind == "classification":
        labels = list(kind.classes or ())
        item: dict[str, Any] = {
            "type": "object",
            "description": "Predicted class and the probability of each class." + (f" {desc}" if desc else ""),
            "properties": {"label": {"type": _value_type(labels), "description": "Most likely class."}},
            "required": ["label"],
            "additionalProperties": False,
        }
        if class_keys:
            probs: dict[str, Any] = {
                "type": "object",
                "description": "Probability of each class, keyed by class label.",
                "properties": {key: {"type": "number"} for key in class_keys.values()},
                "required": list(class_keys.values()),
                "additionalProperties": False,
            }
            if nullable:
                probs = {"anyOf": [probs, {"type": "null"}], "description": "Probability of each class, if known."}
            item["properties"]["probabilities"] = probs
            item["required"] = ["label", "probabilities"]
        return item
    item = {"type": "number"} if kind.kind == "regression" else {"type": "array", "items": {"type": "number"}}
    if desc:
        item["description"] = desc
    return item


def _listing(values: Sequence[Any], limit: int = _MAX_EXAMPLES) -> str:
    shown = ", ".join(json.dumps(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _value_type(values: Sequence[Any]) -> str:
    if values and all(isinstance(v, bool) for v in values):
        return "boolean"
    if values and all(isinstance(v, int) or (hasattr(v, "dtype") and v.dtype.kind in "iu") for v in values):
        return "integer"
    return "string"
