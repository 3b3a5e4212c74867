"""Typing one column's JSON values (or an array) into its signature dtype, with errors naming the bad row.

Fast paths let numpy convert whole lists; the per-value path runs only to fill optional nulls or to find the first
bad value for the error message.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from registry import ColumnSpec
from server.errors import InvalidInput


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()
"""Marks a column value absent from a record (distinct from JSON null)."""


def to_array(col: ColumnSpec, values: list[Any]) -> np.ndarray:
    """Convert one column's JSON values to its signature dtype, or raise InvalidInput naming the bad row."""
    kind = col.type
    if kind in ("string", "binary"):
        if all(type(v) is str for v in values):
            return np.array(values, dtype=object)
        return _slow(col, values)
    if kind == "boolean":
        if all(type(v) is bool for v in values):
            return np.array(values, dtype=np.bool_)
        return _slow(col, values)
    if kind == "datetime":
        try:
            return np.array(values, dtype="datetime64[ns]")
        except (ValueError, TypeError):
            return _slow(col, values)
    if col.shape:
        try:
            arr = np.asarray(values, dtype=col.dtype)
        except (ValueError, TypeError):
            raise InvalidInput(
                f"column '{col.name}' must be nested lists of numbers of shape {list(col.shape)}", field=col.name
            ) from None
        expected = tuple(d for d in col.shape)
        if any(e > 0 and e != a for e, a in zip(expected, arr.shape[1:], strict=False)) or arr.ndim != 1 + len(
            expected
        ):
            raise InvalidInput(
                f"column '{col.name}' must have per-row shape {list(col.shape)}; got {list(arr.shape[1:])}",
                field=col.name,
            )
        return arr
    if len(values) <= _SMALL:
        return _small_numbers(col, values)
    try:
        arr = np.array(values)
    except (ValueError, TypeError):
        return _slow(col, values)
    if arr.dtype.kind in "iu":
        return arr.astype(col.dtype, copy=False)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            return _slow(col, values)
        if kind in ("integer", "long") and not np.array_equal(arr, np.floor(arr)):
            return _slow(col, values)
        return arr.astype(col.dtype, copy=False)
    return _slow(col, values)


_NUMERIC = frozenset({"integer", "long", "float", "double"})
#: Up to this many values, numeric columns are checked per value in Python: cheaper than numpy's ufunc calls.
_SMALL = 16


def _small_numbers(col: ColumnSpec, values: list[Any]) -> np.ndarray:
    """A short numeric column: every value a finite number (integral for integer columns), else ``_slow``."""
    integral = col.type in ("integer", "long")
    for v in values:
        kind = type(v)
        if kind is int:
            continue
        if kind is float and math.isfinite(v) and (not integral or v.is_integer()):
            continue
        return _slow(col, values)
    try:
        return np.array(values, dtype=col.dtype)
    except (OverflowError, ValueError):
        return _slow(col, values)


def column_array(col: ColumnSpec, arr: np.ndarray) -> np.ndarray:
    """Check and cast one already-typed column (rows first) to its signature dtype, or raise InvalidInput."""
    if not col.shape and arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 + len(col.shape) or any(e > 0 and e != a for e, a in zip(col.shape, arr.shape[1:], strict=False)):
        want = f"per-row shape {list(col.shape)}" if col.shape else "one value per row"
        raise InvalidInput(f"column '{col.name}' must have {want}; got shape {list(arr.shape)}", field=col.name)
    kind, dtype = col.type, arr.dtype
    if kind in _NUMERIC:
        if dtype.kind in "iu":
            return arr.astype(col.dtype, copy=False)
        if dtype.kind == "f" and np.isfinite(arr).all():
            if kind in ("integer", "long") and not np.array_equal(arr, np.floor(arr)):
                return _per_value(col, arr)
            return arr.astype(col.dtype, copy=False)
    elif kind == "boolean" and dtype.kind == "b":
        return arr
    elif kind in ("string", "binary"):
        if dtype.kind == "U":
            return arr.astype(object)
        if dtype.kind == "O" and all(type(v) is str for v in arr.ravel()):
            return arr
    elif kind == "datetime" and dtype.kind == "M":
        return arr.astype(col.dtype, copy=False)
    return _per_value(col, arr)


def _per_value(col: ColumnSpec, arr: np.ndarray) -> np.ndarray:
    values = arr.tolist()
    if col.shape:
        return to_array(col, values)
    return to_array(col, [None if isinstance(v, float) and math.isnan(v) else v for v in values])


def _slow(col: ColumnSpec, values: list[Any]) -> np.ndarray:
    """Per-value path: fills optional nulls and finds the first bad value for the error message."""
    kind = col.type
    numeric = kind in ("integer", "long", "float", "double")
    out: list[Any] = []
    for i, v in enumerate(values):
        if v is None or v is MISSING:
            if not col.optional:
                what = "missing" if v is MISSING else "null"
                raise InvalidInput(
                    f"column '{col.name}' row {i}: value is {what} but the column is required ({kind})", field=col.name
                )
            out.append(math.nan if numeric else None)
            continue
        ok = (
            (kind in ("string", "binary") and isinstance(v, str))
            or (kind == "boolean" and isinstance(v, bool))
            or (kind in ("integer", "long") and _is_int(v))
            or (
                kind in ("float", "double")
                and isinstance(v, (int, float))
                and not isinstance(v, bool)
                and math.isfinite(v)
            )
            or (kind == "datetime" and isinstance(v, str))
        )
        if not ok:
            raise InvalidInput(
                f"column '{col.name}' row {i}: expected {_expected(kind)}, got {_show(v)}", field=col.name
            )
        out.append(v)
    if numeric and any(isinstance(v, float) and math.isnan(v) for v in out):
        if kind in ("integer", "long"):
            return np.array(out, dtype=np.float64)  # optional ints with nulls become float with NaN, as pandas does
        return np.array(out, dtype=col.dtype)
    if not numeric and any(v is None for v in out):
        return np.array(out, dtype=object)  # optional non-numeric nulls stay None, as pandas keeps them
    try:
        return np.array(out, dtype=col.dtype)
    except OverflowError:
        raise InvalidInput(f"column '{col.name}': a value is out of range for {kind}", field=col.name) from None
    except ValueError as exc:
        raise InvalidInput(f"column '{col.name}': {exc}", field=col.name) from None


def _is_int(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, float) and math.isfinite(v) and v.is_integer()


def _expected(kind: str) -> str:
    return {
        "integer": "an integer",
        "long": "an integer",
        "float": "a finite number",
        "double": "a finite number",
        "boolean": "true or false",
        "datetime": "an ISO 8601 date-time string",
    }.get(kind, "a string")


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."
