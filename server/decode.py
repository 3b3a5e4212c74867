"""Decode scoring requests straight to typed per-column numpy arrays, driven by the signature.

Accepted JSON bodies (exactly one input key, plus optional ``params``), as ``mlflow models serve`` and
Databricks accept them:

* ``{"dataframe_split": {"columns": [...], "data": [[...], ...]}}`` (``columns`` optional: signature order)
* ``{"dataframe_records": [{col: value}, ...]}``
* ``{"instances": ...}`` / ``{"inputs": ...}``: records, a dict of columns, or rows (tensor models: nested lists)
* ``{"data": [[2025, "product_A", 100]]}``: rows in signature column order (Databricks' legacy form)

and ``text/csv`` with a header row (as ``pandas.DataFrame.to_csv()`` writes it: ``\\n``, ``\\r\\n`` or ``\\r`` line
ends, an optional UTF-8 BOM, an optional leading unnamed index column, ``True``/``False`` booleans; spaces around
names and values are stripped). No pandas on this path. Errors are ``InvalidInput`` naming the field.

Like ``mlflow models serve``, columns, params and top-level fields the model does not take are ignored by default
and reported in ``ModelInput.ignored``; a ``strict`` decoder refuses them. A model with one tensor input also takes
``dataframe_split``/``dataframe_records`` frames: the columns, in order, become the tensor's last axis (MLflow's
``DataFrame.to_numpy()``).
"""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from registry import ColumnSpec, ModelSignature, ParamSpec
from server.columns import MISSING as _MISSING
from server.columns import column_array, short, show_names, to_array
from server.columns import field_name as _field
from server.columns import fits as _fits
from server.errors import InvalidInput, PayloadTooLarge

INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs", "data")
_INPUT_SET = frozenset(INPUT_KEYS)
_EXTRA_KEYS = {"params", "client_request_id", "databricks_options"}
#: What pandas' ``read_csv`` reads as missing by default (its ``na_values``).
_CSV_NA = frozenset(
    {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",
     "NULL", "NaN", "None", "n/a", "nan", "null"}
)  # fmt: skip
_CSV_TRUE = frozenset({"True", "true", "TRUE", "1"})
_CSV_FALSE = frozenset({"False", "false", "FALSE", "0"})
_csv_limit_lock = threading.Lock()


@dataclass(slots=True)
class ModelInput:
    """A decoded request: one array per signature column (leading dimension = rows) and params.

    ``ignored`` names what the request gave that the model does not take (columns; params as ``params.<name>``;
    top-level fields), in request order, each once.
    """

    columns: dict[str, np.ndarray]
    rows: int
    params: dict[str, Any] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()


class Decoder:
    """Decodes request bodies for one signature. Built once per deployment.

    Args:
        signature: The model's signature.
        max_rows: More rows than this is ``PayloadTooLarge``.
        strict: Refuse columns, params and top-level fields the model does not take (``mlflow models serve``
            ignores them, and so does a default decoder, listing them in ``ModelInput.ignored``).
    """

    def __init__(self, signature: ModelSignature, *, max_rows: int = 100_000, strict: bool = False) -> None:
        self.signature = signature
        self.max_rows = max_rows
        self.strict = strict
        self._names = signature.input_names
        self._known = set(self._names)
        self._params_by_name: dict[str, ParamSpec] = {p.name: p for p in signature.params}
        self._single_tensor = signature.is_tensor and len(signature.inputs) == 1

    # -- entry points -------------------------------------------------------------------------------------------

    def decode_json(self, body: bytes) -> ModelInput:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"request body is not valid JSON: {short(exc, 200)}", field="body") from None
        if not isinstance(payload, dict):
            raise InvalidInput("request body must be a JSON object with one of: " + ", ".join(INPUT_KEYS), field="body")
        return self.decode_payload(payload)

    def decode_payload(self, payload: Mapping[str, Any]) -> ModelInput:
        if len(payload) == 1:  # the common case: exactly one input key and nothing else
            (key,) = payload
            if key in _INPUT_SET:
                ignored: list[str] = []
                return self._finish(self._columns(key, payload[key], ignored), None, ignored)
        keys = [k for k in INPUT_KEYS if k in payload]
        unknown = [k for k in payload if k not in _INPUT_SET and k not in _EXTRA_KEYS]
        if unknown and (self.strict or not keys):
            raise InvalidInput(
                f"unknown top-level field(s) {show_names(unknown)}; expected one of {list(INPUT_KEYS)} plus optional "
                "'params'",
                field=_field(unknown[0]),
            )
        if len(keys) != 1:
            raise InvalidInput(
                f"request must contain exactly one of {list(INPUT_KEYS)}; got {keys or 'none'}", field="body"
            )
        key = keys[0]
        ignored = list(unknown)
        return self._finish(self._columns(key, payload[key], ignored), payload.get("params"), ignored)

    def decode_records(
        self,
        records: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any] | None = None,
        *,
        field_name: str = "inputs",
    ) -> ModelInput:
        ignored: list[str] = []
        return self._finish(self._from_records(records, field_name, ignored), params, ignored)

    def decode_columns(
        self,
        columns: Mapping[str, np.ndarray],
        params: Mapping[str, Any] | None = None,
        *,
        field_name: str = "inputs",
        strict: bool | None = None,
    ) -> ModelInput:
        """Check and cast already-columnar input (Arrow IPC, v2 tensors): one array per column, rows first.

        Scalar columns may come as ``(n,)`` or ``(n, 1)``; numeric arrays are cast without a per-value Python step
        when they fit the signature type; anything else goes through the same per-value checks as JSON.
        ``strict`` (default: the decoder's) refuses columns the model does not take.
        """
        strict = self.strict if strict is None else strict
        ignored = [k for k in columns if k not in self._known]
        if ignored and strict:
            extra = sorted(ignored)
            raise InvalidInput(
                f"unknown {field_name} {show_names(extra)}; the model takes {show_names(self._names)}",
                field=_field(extra[0]),
            )
        n: int | None = None
        for name, arr in columns.items():
            shape = getattr(arr, "shape", ())
            if not shape:
                raise InvalidInput(f"column '{short(name)}' must have a leading row dimension", field=_field(name))
            if n is None:
                n = shape[0]
            elif shape[0] != n:
                raise InvalidInput("columns have different lengths", field=_field(name))
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
        checked = self._params(params, ignored, strict)
        return ModelInput(out, n, checked, tuple(dict.fromkeys(ignored)))

    def decode_csv(self, body: bytes) -> ModelInput:
        """A CSV body with a header row, as ``pandas.DataFrame.to_csv()`` writes it (see the module docstring)."""
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidInput("CSV body is not UTF-8", field="body") from None
        _allow_csv_fields(len(text))
        rows = _csv_rows(text)
        rows = [r for r in rows if r and not (len(r) == 1 and not r[0].strip())]  # blank lines
        if not rows:
            raise InvalidInput("CSV body needs a header row naming the columns", field="body")
        header = [h.strip() for h in rows[0]]
        lines = rows[1:]
        width = len(header)
        for i, row in enumerate(lines):
            if len(row) != width:
                raise InvalidInput(f"CSV row {i + 1} has {len(row)} values, header has {width}", field=f"row {i + 1}")
        first = 1 if width > 1 and header[0] == "" else 0  # pandas' index column (df.to_csv() writes it unnamed)
        if self._single_tensor:  # the columns, in order, are the tensor's last axis
            tensor = [[_csv_number(v.strip()) for v in r[first:]] for r in lines]
            return self._finish({self._names[0]: tensor}, None, [])
        raw: dict[str, list[Any]] = {}
        for j in range(first, width):
            name = header[j]
            if name in raw:
                raise InvalidInput(f"CSV header names column '{short(name)}' twice", field=_field(name))
            col = self.signature.column(name)
            raw[name] = [_csv_value(col, r[j].strip()) for r in lines] if col is not None else [None] * len(lines)
        return self._finish(raw, None, [])

    # -- body shapes --------------------------------------------------------------------------------------------

    def _columns(self, key: str, value: Any, ignored: list[str]) -> dict[str, list[Any]]:
        if key == "dataframe_split":
            return self._from_split(value)
        if key == "dataframe_records":
            if self._single_tensor:
                return self._tensor_records(value, key)
            return self._from_records(value, key, ignored)
        if key == "data":
            return self._from_value(value, key, ignored, rows_by_position=True)
        return self._from_value(value, key, ignored, rows_by_position=self.signature.is_tensor)

    def _from_split(self, value: Any) -> dict[str, list[Any]]:
        if not isinstance(value, dict) or "data" not in value:
            raise InvalidInput(
                "dataframe_split must be an object with 'data' (and optionally 'columns')", field="dataframe_split"
            )
        given = value.get("columns")
        if given is not None and not isinstance(given, list):
            raise InvalidInput(
                "dataframe_split.columns must be a list of column names", field="dataframe_split.columns"
            )
        key = "dataframe_split.data"
        if self._single_tensor:  # MLflow: DataFrame.to_numpy(), whatever the columns are called
            rows = value["data"]
            if given is not None:
                self._check_widths(rows, given, key)
            elif not isinstance(rows, list):
                raise InvalidInput(f"{key} must be a list of rows", field=key)
            return {self._names[0]: _frame_rows(rows)}
        return self._from_rows(value["data"], self._names if given is None else given, key)

    def _from_value(self, value: Any, key: str, ignored: list[str], *, rows_by_position: bool) -> dict[str, list[Any]]:
        if isinstance(value, dict):  # dict of columns
            for k, v in value.items():
                scalar = isinstance(v, int | float | str | bool)
                if not isinstance(v, list) and (self.signature.is_tensor or not scalar):
                    raise InvalidInput(f"{key}.{short(k)} must be a list of values", field=f"{key}.{short(k)}")
            return {k: (v if isinstance(v, list) else [v]) for k, v in value.items()}
        if not isinstance(value, list):
            raise InvalidInput(f"{key} must be a list of rows or an object of columns", field=key)
        if value and isinstance(value[0], dict):
            return self._from_records(value, key, ignored)
        if self._single_tensor:
            return {self._names[0]: value}
        if not rows_by_position and value and not isinstance(value[0], list):
            raise InvalidInput(f"{key} must be a list of row objects", field=key)
        return self._from_rows(value, self._names, key)

    def _from_records(self, records: Any, key: str, ignored: list[str]) -> dict[str, list[Any]]:
        if not isinstance(records, list):
            raise InvalidInput(f"{key} must be a list of row objects", field=key)
        out: dict[str, list[Any]] = {name: [] for name in self._names}
        known = self._known
        extras: dict[str, None] = {}
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise InvalidInput(f"{key}[{i}] must be an object of column values", field=f"{key}[{i}]")
            if not rec.keys() <= known:
                extra = [k for k in rec if k not in known]
                if self.strict:
                    raise InvalidInput(
                        f"{key}[{i}] has unknown column(s) {show_names(extra)}; the model takes "
                        f"{show_names(self._names)}",
                        field=f"{key}[{i}].{short(extra[0])}",
                    )
                extras.update(dict.fromkeys(extra))
            for name, values in out.items():
                values.append(rec.get(name, _MISSING))
        ignored.extend(extras)
        return out

    def _tensor_records(self, records: Any, key: str) -> dict[str, list[Any]]:
        """Records for a single tensor input: each record's values, in column order, are one tensor row."""
        if not isinstance(records, list):
            raise InvalidInput(f"{key} must be a list of row objects", field=key)
        name = self._names[0]
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise InvalidInput(f"{key}[{i}] must be an object of column values", field=f"{key}[{i}]")
        if all(rec.keys() == {name} for rec in records):
            return {name: [rec[name] for rec in records]}
        order = list(dict.fromkeys(k for rec in records for k in rec))  # pandas' column order: first appearance
        rows: list[Any] = []
        for i, rec in enumerate(records):
            if len(rec) != len(order):
                lacking = next(k for k in order if k not in rec)
                raise InvalidInput(
                    f"{key}[{i}] has no value for column '{short(lacking)}'", field=f"{key}[{i}].{short(lacking)}"
                )
            rows.append([rec[k] for k in order])
        return {name: _frame_rows(rows)}

    def _check_widths(self, rows: Any, names: list[Any], key: str) -> None:
        if not isinstance(rows, list):
            raise InvalidInput(f"{key} must be a list of rows", field=key)
        width = len(names)
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width:
                got = len(row) if isinstance(row, list) else type(row).__name__
                raise InvalidInput(
                    f"{key}[{i}] must be a list of {width} values ({show_names(names)}); got {got}",
                    field=f"{key}[{i}]",
                )

    def _from_rows(self, rows: Any, names: list[Any], key: str) -> dict[str, list[Any]]:
        self._check_widths(rows, names, key)
        out: dict[str, list[Any]] = {}
        for j, name in enumerate(names):
            name = str(name)
            if name in out:
                raise InvalidInput(f"column '{short(name)}' is given twice", field=_field(name))
            out[name] = [row[j] for row in rows]
        return out

    # -- typing -------------------------------------------------------------------------------------------------

    def _finish(self, raw: dict[str, list[Any]], params: Any, ignored: list[str]) -> ModelInput:
        lengths = {len(v) for v in raw.values()}
        if len(lengths) > 1:
            raise InvalidInput("columns have different lengths", field="body")
        if not raw.keys() <= self._known:
            extra = [k for k in raw if k not in self._known]
            if self.strict:
                raise InvalidInput(
                    f"unknown column(s) {show_names(extra)}; the model takes {show_names(self._names)}",
                    field=_field(extra[0]),
                )
            ignored.extend(extra)
        n = lengths.pop() if lengths else 0
        self._check_rows(n)
        columns: dict[str, np.ndarray] = {}
        for col in self.signature.inputs:
            values = raw.get(col.name)
            columns[col.name] = self._absent(col, n) if values is None else to_array(col, values)
        checked = self._params(params, ignored, self.strict)
        return ModelInput(columns, n, checked, tuple(dict.fromkeys(ignored)) if ignored else ())

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

    def _params(self, params: Any, ignored: list[str], strict: bool) -> dict[str, Any]:
        if params is None:
            return {}
        if not isinstance(params, dict):
            raise InvalidInput("params must be an object", field="params")
        known = self._params_by_name
        out: dict[str, Any] = {}
        unknown: list[str] = []
        for name, value in params.items():
            spec = known.get(name)
            if spec is None:
                unknown.append(name)
            elif value is not None:
                _check_param(spec, value)
                out[name] = value
        if unknown:
            if strict:
                unknown.sort()
                accepted = show_names(sorted(known)) if known else "none"
                raise InvalidInput(
                    f"unknown param(s) {show_names(unknown)}; the model accepts {accepted}",
                    field=f"params.{short(unknown[0])}",
                )
            ignored.extend(f"params.{name}" for name in unknown)
        return out


def _check_param(spec: ParamSpec, value: Any) -> None:
    """A param value must have its declared type (a list of them when the param has a shape)."""
    values = value if spec.shape else [value]
    if spec.shape and not isinstance(value, list):
        raise InvalidInput(f"param '{spec.name}' must be a list of {spec.type}", field=f"params.{spec.name}")
    for v in values:
        if not _fits(spec.type, v):
            raise InvalidInput(
                f"param '{spec.name}' must be {spec.type}; got {short(repr(v), 40)}", field=f"params.{spec.name}"
            )


def _frame_rows(rows: list[Any]) -> list[Any]:
    """Rows of a frame for one tensor input: a single column that holds whole tensor rows gives them as they are."""
    if rows and all(isinstance(r, list) and len(r) == 1 for r in rows) and any(isinstance(r[0], list) for r in rows):
        return [r[0] for r in rows]
    return rows


def _allow_csv_fields(size: int) -> None:
    """Let the csv module read fields as long as the body (its default limit is 131,072 characters)."""
    if csv.field_size_limit() < size:
        with _csv_limit_lock:
            if csv.field_size_limit() < size:
                csv.field_size_limit(size)


def _csv_rows(text: str) -> list[list[str]]:
    """Rows of a CSV text as pandas' parser reads them.

    ``newline=""``: ``\\r``, ``\\n`` and ``\\r\\n`` end rows, quoted fields keep theirs. Text after a closing quote
    (``"x"y``, ``"x" ``) is kept like pandas keeps it; a quoted field the body ends inside is refused like pandas
    refuses it ("EOF inside string").
    """
    try:
        return list(csv.reader(io.StringIO(text, newline=""), skipinitialspace=True, strict=True))
    except csv.Error as exc:
        if "end of data" in str(exc):
            raise InvalidInput("CSV body ends inside a quoted field", field="body") from None
    try:
        return list(csv.reader(io.StringIO(text, newline=""), skipinitialspace=True))
    except csv.Error as exc:
        raise InvalidInput(f"CSV body cannot be parsed: {short(exc, 200)}", field="body") from None


def _csv_value(col: ColumnSpec, text: str) -> Any:
    """One stripped CSV field typed by its column, as ``pandas.read_csv`` with the signature's dtypes reads it."""
    kind = col.type
    if kind in ("string", "binary", "datetime"):
        return None if text == "" else text
    if text in _CSV_NA:
        return None
    if kind == "boolean":
        if text in _CSV_TRUE:
            return True
        if text in _CSV_FALSE:
            return False
        return text
    return _csv_number(text)


def _csv_number(text: str) -> Any:
    if text in _CSV_NA:
        return None
    if not text.isascii() or "_" in text:  # int() and float() also take "1_000" and non-ASCII digits; pandas does not
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text
