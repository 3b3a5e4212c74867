"""A serving-oriented view of an MLflow model signature.

The signature is the single source of truth for request decoding, REST validation, OpenAPI and MCP tool
schemas. ``ColumnSpec`` carries what MLflow knows (name, type, optional) plus what modelport adds from
the model's metadata (description, unit) and from the converted model (categories).

Column types use MLflow's names: ``boolean, integer, long, float, double, string, binary, datetime``.
A TensorSpec input becomes one column whose ``shape`` is the per-row shape (e.g. ``(4,)``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

#: MLflow column type -> numpy dtype used to decode it.
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "boolean": np.dtype(np.bool_),
    "integer": np.dtype(np.int32),
    "long": np.dtype(np.int64),
    "float": np.dtype(np.float32),
    "double": np.dtype(np.float64),
    "string": np.dtype(object),
    "binary": np.dtype(object),
    "datetime": np.dtype("datetime64[ns]"),
}

_TENSOR_TYPES = {
    "bool": "boolean",
    "int8": "integer",
    "int16": "integer",
    "int32": "integer",
    "int64": "long",
    "uint8": "integer",
    "uint16": "integer",
    "uint32": "long",
    "uint64": "long",
    "float16": "float",
    "float32": "float",
    "float64": "double",
    "str": "string",
    "object": "string",
}


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One input or output column."""

    name: str
    type: str
    optional: bool = False
    shape: tuple[int, ...] = ()
    description: str | None = None
    unit: str | None = None
    categories: tuple[Any, ...] | None = None
    closed: bool = False
    """Only ``categories`` are valid: the model's encoder fails on any other value (else unknown values score)."""

    @property
    def dtype(self) -> np.dtype[Any]:
        return NUMPY_DTYPES[self.type]


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """An inference parameter from the signature's params schema."""

    name: str
    type: str
    default: Any = None
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class ModelSignature:
    """Inputs, outputs and params of a model, in signature order."""

    inputs: tuple[ColumnSpec, ...]
    outputs: tuple[ColumnSpec, ...] = ()
    params: tuple[ParamSpec, ...] = ()
    is_tensor: bool = False
    output_description: str | None = None
    output_unit: str | None = None

    @property
    def input_names(self) -> list[str]:
        return [c.name for c in self.inputs]

    def column(self, name: str) -> ColumnSpec | None:
        return next((c for c in self.inputs if c.name == name), None)

    def with_categories(
        self, categories: Mapping[str, tuple[Any, ...]], closed: Collection[str] = ()
    ) -> ModelSignature:
        """Return a copy whose input columns carry the given category lists (``closed``: columns that accept no
        other value)."""
        cols = tuple(
            replace(c, categories=categories[c.name], closed=c.name in closed) if c.name in categories else c
            for c in self.inputs
        )
        return replace(self, inputs=cols)

    @classmethod
    def from_mlflow(cls, signature: Any, metadata: Mapping[str, Any] | None = None) -> ModelSignature:
        """Build from an ``mlflow.models.ModelSignature`` and the model's metadata.

        Column descriptions and units come from ``metadata["modelport"]`` (see docs/registry.md)::

            {"modelport": {"columns": {"year": {"description": "...", "unit": "year"}},
                           "output": {"description": "...", "unit": "EUR"}}}
        """
        meta = dict((metadata or {}).get("modelport") or {})
        col_meta: Mapping[str, Mapping[str, Any]] = meta.get("columns") or {}
        out_meta: Mapping[str, Any] = meta.get("output") or {}
        inputs, is_tensor = _specs(signature.inputs, col_meta)
        outputs, _ = _specs(signature.outputs, {}) if signature.outputs is not None else ((), False)
        params = tuple(
            ParamSpec(p.name, _type_name(p.dtype), p.default, tuple(p.shape) if p.shape else None)
            for p in (signature.params.params if signature.params is not None else [])
        )
        return cls(inputs, outputs, params, is_tensor, out_meta.get("description"), out_meta.get("unit"))


def _type_name(dtype: Any) -> str:
    name = getattr(dtype, "name", None) or str(dtype)
    return str(name)


def _specs(schema: Any, col_meta: Mapping[str, Mapping[str, Any]]) -> tuple[tuple[ColumnSpec, ...], bool]:
    if schema is None:
        return (), False
    if schema.is_tensor_spec():
        specs = []
        for i, t in enumerate(schema.inputs):
            name = t.name or ("input" if len(schema.inputs) == 1 else f"input_{i}")
            shape = tuple(int(d) for d in t.shape[1:]) if t.shape else ()
            kind = _TENSOR_TYPES.get(np.dtype(t.type).name, "double")
            m = col_meta.get(name, {})
            specs.append(ColumnSpec(name, kind, False, shape, m.get("description"), m.get("unit")))
        return tuple(specs), True
    specs = []
    for i, c in enumerate(schema.inputs):
        name = c.name if c.name is not None else str(i)
        m = col_meta.get(name, {})
        kind = _type_name(c.type)
        optional = not getattr(c, "required", not getattr(c, "optional", False))  # MLflow >= 2.x: ColSpec.required
        specs.append(ColumnSpec(name, kind, optional, (), m.get("description"), m.get("unit")))
    return tuple(specs), False
