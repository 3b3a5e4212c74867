"""Decode scoring requests straight to typed per-column numpy arrays, driven by the signature.

Accepted JSON bodies (exactly one input key, plus optional ``params``), as ``mlflow models serve`` and
Databricks accept them:

* ``{"dataframe_split": {"columns": [...], "data": [[...], ...]}}`` (``columns`` optional: signature order)
* ``{"dataframe_records": [{col: value}, ...]}``
* ``{"instances": ...}`` / ``{"inputs": ...}``: records, a dict of columns, or rows (tensor models: nested lists)
* ``{"data": [[2025, "product_A", 100]]}``: rows in signature column order (Databricks' legacy form)

and ``text/csv`` with a header row. No pandas on this path. Errors are ``InvalidInput`` naming the field.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from registry import ColumnSpec, ModelSignature
from server.columns import MISSING as _MISSING
from server.columns import column_array, to_array
from server.errors import InvalidInput, PayloadTooLarge

INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs", "data")
_INPUT_SET = frozenset(INPUT_KEYS)
_EXTRA_KEYS = {"params", "client_request_id", "databricks_options"}


@dataclass(slots=True)
class ModelInput:
    """A decoded request: one array per signature column (leading dimension = rows) and params."""

    columns: dict[str, np.ndarray]
    rows: int
    params: dict[str, Any] = field(default_factory=dict)


class Decoder:
    """Decodes request bodies for one signature. Built once per deployment."""

    def __init__(self, signature: ModelSignature, *, max_rows: int = 100_000) -> None:
        self.signature = signature
        self.max_rows = max_rows
        self._names = signature.input_names
        self._known = set(self._names)

    # -- entry points -------------------------------------------------------------------------------------------

    def decode_json(self, body: bytes) -> ModelInput:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"request body is not valid JSON: {exc}", field="body") from None
        if not isinstance(payload, dict):
            raise InvalidInput("request body must be a JSON object with one of: " + ", ".join(INPUT_KEYS), field="body")
        return self.decode_payload(payload)

    def decode_payload(self, payload: Mapping[str, Any]) -> ModelInput:
        if len(payload) == 1:  # the common case: exactly one input key and nothing else
            (key,) = payload
            if key in _INPUT_SET:
                return self._finish(self._columns(key, payload[key]), {})
        keys = [k for k in INPUT_KEYS if k in payload]
        unknown = sorted(set(payload) - set(INPUT_KEYS) - _EXTRA_KEYS)
        if unknown:
            raise InvalidInput(
                f"unknown top-level field(s) {unknown}; expected one of {list(INPUT_KEYS)} plus optional 'params'",
                field=unknown[0],
            )
        if len(keys) != 1:
            raise InvalidInput(
                f"request must contain exactly one of {list(INPUT_KEYS)}; got {keys or 'none'}", field="body"
            )
        key = keys[0]
        return self._finish(self._columns(key, payload[key]), self._params(payload.get("params")))

    def _columns(self, key: str, value: Any) -> dict[str, list[Any]]:
        if key == "dataframe_split":
            return self._from_split(value)
        if key == "dataframe_records":
            return self._from_records(value, key)
        if key == "data":
            return self._from_value(value, key, rows_by_position=True)
        return self._from_value(value, key, rows_by_position=self.signature.is_tensor)

    def decode_records(
        self,
        records: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any] | None = None,
        *,
        field_name: str = "inputs",
    ) -> ModelInput:
        return self._finish(self._from_records(records, field_name), self._params(params))

    def decode_columns(
        self, columns: Mapping[str, np.ndarray], params: Mapping[str, Any] | None = None, *, field_name: str = "inputs"
    ) -> ModelInput:
        """Check and cast already-columnar input (Arrow IPC, v2 tensors): one array per column, rows first.

        Scalar columns may come as ``(n,)`` or ``(n, 1)``; numeric arrays are cast without a per-value Python step
        when they fit the signature type; anything else goes through the same per-value checks as JSON.
        """
        extra = sorted(set(columns) - self._known)
        if extra:
            raise InvalidInput(f"unknown {field_name} {extra}; the model takes {self._names}", field=extra[0])
        n: int | None = None
        for name, arr in columns.items():
            shape = getattr(arr, "shape", ())
            if not shape:
                raise InvalidInput(f"column '{name}' must have a leading row dimension", field=name)
            if n is None:
                n = shape[0]
            elif shape[0] != n:
                raise InvalidInput("columns have different lengths", field=name)
        if n is None:
            raise InvalidInput("request has no columns", field="body")
        self._check_rows(n)
        out: dict[str, np.ndarray] = {}
        for col in self.signature.inputs:
            given = columns.get(col.name)
            if given is None:
                out[col.name] = self._absent(col, n)
            else:
                out[col.name] = column_array(col, np.asarray(given))
        return ModelInput(out, n, self._params(params))

    def decode_csv(self, body: bytes) -> ModelInput:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("CSV body is not UTF-8", field="body") from None
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if not header:
            raise InvalidInput("CSV body needs a header row naming the columns", field="body")
        header = [h.strip() for h in header]
        lines = [r for r in reader if r]
        for i, row in enumerate(lines):
            if len(row) != len(header):
                raise InvalidInput(
                    f"CSV row {i + 1} has {len(row)} values, header has {len(header)}", field=f"row {i + 1}"
                )
        raw = {name: [r[j] for r in lines] for j, name in enumerate(header)}
        return self._finish({k: [_parse_csv(v) for v in vals] for k, vals in raw.items()}, {})

    # -- body shapes --------------------------------------------------------------------------------------------

    def _from_split(self, value: Any) -> dict[str, list[Any]]:
        if not isinstance(value, dict) or "data" not in value:
            raise InvalidInput(
                "dataframe_split must be an object with 'data' (and optionally 'columns')", field="dataframe_split"
            )
        cols = value.get("columns", self._names)
        if not isinstance(cols, list):
            raise InvalidInput(
                "dataframe_split.columns must be a list of column names", field="dataframe_split.columns"
            )
        return self._from_rows(value["data"], cols, "dataframe_split.data")

    def _from_value(self, value: Any, key: str, *, rows_by_position: bool) -> dict[str, list[Any]]:
        if isinstance(value, dict):  # dict of columns
            for k, v in value.items():
                if not isinstance(v, list) and (self.signature.is_tensor or not isinstance(v, (int, float, str, bool))):
                    raise InvalidInput(f"{key}.{k} must be a list of values", field=f"{key}.{k}")
            return {k: (v if isinstance(v, list) else [v]) for k, v in value.items()}
        if not isinstance(value, list):
            raise InvalidInput(f"{key} must be a list of rows or an object of columns", field=key)
        if value and isinstance(value[0], dict):
            return self._from_records(value, key)
        if self.signature.is_tensor and len(self.signature.inputs) == 1:
            return {self._names[0]: value}
        if not rows_by_position and value and not isinstance(value[0], list):
            raise InvalidInput(f"{key} must be a list of row objects", field=key)
        return self._from_rows(value, self._names, key)

    def _from_records(self, records: Any, key: str) -> dict[str, list[Any]]:
        if not isinstance(records, list):
            raise InvalidInput(f"{key} must be a list of row objects", field=key)
        out: dict[str, list[Any]] = {name: [] for name in self._names}
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise InvalidInput(f"{key}[{i}] must be an object of column values", field=f"{key}[{i}]")
            extra = rec.keys() - self._known
            if extra:
                raise InvalidInput(
                    f"{key}[{i}] has unknown column(s) {sorted(extra)}; the model takes {self._names}",
                    field=f"{key}[{i}].{sorted(extra)[0]}",
                )
            for name, values in out.items():
                values.append(rec.get(name, _MISSING))
        return out

    def _from_rows(self, rows: Any, names: list[Any], key: str) -> dict[str, list[Any]]:
        if not isinstance(rows, list):
            raise InvalidInput(f"{key} must be a list of rows", field=key)
        width = len(names)
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width:
                got = len(row) if isinstance(row, list) else type(row).__name__
                raise InvalidInput(
                    f"{key}[{i}] must be a list of {width} values ({', '.join(map(str, names))}); got {got}",
                    field=f"{key}[{i}]",
                )
        return {str(name): [row[j] for row in rows] for j, name in enumerate(names)}

    # -- typing -------------------------------------------------------------------------------------------------

    def _finish(self, raw: dict[str, list[Any]], params: dict[str, Any]) -> ModelInput:
        if not raw.keys() <= self._known:
            extra = sorted(set(raw) - self._known)
            raise InvalidInput(f"unknown column(s) {extra}; the model takes {self._names}", field=extra[0])
        lengths = {len(v) for v in raw.values()}
        if len(lengths) > 1:
            raise InvalidInput("columns have different lengths", field="body")
        n = lengths.pop() if lengths else 0
        self._check_rows(n)
        columns: dict[str, np.ndarray] = {}
        for col in self.signature.inputs:
            values = raw.get(col.name)
            columns[col.name] = self._absent(col, n) if values is None else to_array(col, values)
        return ModelInput(columns, n, params)

    def _check_rows(self, n: int) -> None:
        if not n:
            raise InvalidInput("request has no rows", field="body")
        if n > self.max_rows:
            raise PayloadTooLarge(f"request has {n} rows; the limit is {self.max_rows}", field="body")

    @staticmethod
    def _absent(col: ColumnSpec, n: int) -> np.ndarray:
        """The array for a column the request left out: nulls when optional, else an error naming it."""
        if not col.optional:
            raise InvalidInput(f"missing required column '{col.name}' ({col.type})", field=col.name)
        return to_array(col, [_MISSING] * n)

    def _params(self, params: Any) -> dict[str, Any]:
        if params is None:
            return {}
        if not isinstance(params, dict):
            raise InvalidInput("params must be an object", field="params")
        known = {p.name: p for p in self.signature.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise InvalidInput(
                f"unknown param(s) {unknown}; the model accepts {sorted(known) or 'none'}", field=f"params.{unknown[0]}"
            )
        return dict(params)


def _parse_csv(text: str) -> Any:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text
