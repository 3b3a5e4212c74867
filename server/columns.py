"""Typing one column's JSON values (or an array) into its signature dtype, with errors naming the bad row.

Fast paths let numpy convert whole lists; the per-value path runs only to fill optional nulls or to find the first
bad value for the error message.

A value must fit the column's type: integers within the range of ``integer`` (int32) or ``long`` (int64), whole
floats for integer columns only up to ±2**53 (beyond that a float is not an exact integer: JSON integers past int64
reach us already rounded to a float), numbers for ``float`` (float32) columns within ±3.4e38. Anything else is an
``InvalidInput`` naming the column and row, never a wrapped, clamped or infinite value. ``check_feed`` applies the
same rule to the runtime's input types (an ONNX graph may take float32 where the signature says ``double``).

Error messages never grow with the input: lists of names are capped (``show_names``) and names and values are
shortened (``short``, ``_show``).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from itertools import chain, islice
from typing import Any

import numpy as np

from registry import ColumnSpec
from server.errors import InvalidInput


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()
"""Marks a column value absent from a record (distinct from JSON null)."""

#: How many names an error message lists before "and K more".
LIST_LIMIT = 10
#: Longest name (or value) an error message quotes in full.
NAME_LIMIT = 64


def short(text: Any, limit: int = NAME_LIMIT) -> str:
    """``text`` as a string of at most ``limit`` characters (``...`` marks a cut)."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def field_name(name: Any) -> str:
    """A request-given name as an error's ``field``: shortened, and ``''`` for the empty name (never falsy)."""
    return short(name) or "''"


def show_names(names: Iterable[Any], limit: int = LIST_LIMIT) -> str:
    """``['a', 'b'] and 3 more``: at most ``limit`` names, each shortened, for error messages and logs."""
    items = names if isinstance(names, list | tuple) else list(names)
    shown = ", ".join(repr(short(n)) for n in islice(items, limit))
    more = len(items) - limit
    return f"[{shown}]" + (f" and {more} more" if more > 0 else "")


_NUMERIC = frozenset({"integer", "long", "float", "double"})
_INT_RANGE = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_FLOAT_MAX = {"float": float(np.finfo(np.float32).max), "double": sys.float_info.max}
#: Whole floats are exact integers up to this magnitude; beyond it an integer column refuses floats.
_EXACT = 2**53
#: Up to this many values, numeric columns are checked per value in Python: cheaper than numpy's ufunc calls.
_SMALL = 16
_NUMBER_TYPES = frozenset({int, float})


def to_array(col: ColumnSpec, values: list[Any]) -> np.ndarray:
    """Convert one column's JSON values to its signature dtype, or raise InvalidInput naming the bad row."""
    kind = col.type
    if col.shape:
        return _tensor(col, values)
    if kind in ("string", "binary"):
        if all(type(v) is str for v in values):
            return np.array(values, dtype=object)
        return _slow(col, values)
    if kind == "boolean":
        if all(type(v) is bool for v in values):
            return np.array(values, dtype=np.bool_)
        return _slow(col, values)
    if kind not in _NUMERIC:  # datetime
        if all(type(v) is str for v in values):
            try:
                return np.array(values, dtype=col.dtype)
            except (ValueError, TypeError, OverflowError):
                pass
        return _slow(col, values)
    if len(values) <= _SMALL:
        return _small_numbers(col, values)
    if not set(map(type, values)) <= _NUMBER_TYPES:  # bools, strings, nulls, lists: numpy would coerce them
        return _slow(col, values)
    try:
        arr = np.array(values)
    except (ValueError, TypeError, OverflowError):
        return _slow(col, values)
    if arr.ndim != 1 or arr.dtype.kind not in "iuf":
        return _slow(col, values)
    out = _fit(col, arr)
    return _slow(col, values) if out is None else out


def _small_numbers(col: ColumnSpec, values: list[Any]) -> np.ndarray:
    """A short numeric column: every value a number that fits the column, else ``_slow`` (which names the bad one)."""
    bounds = _INT_RANGE.get(col.type)
    if bounds is not None:
        lo, hi = bounds
        for v in values:
            kind = type(v)
            if kind is int:
                if lo <= v <= hi:
                    continue
            elif kind is float and v.is_integer() and -_EXACT <= v <= _EXACT and lo <= v <= hi:
                continue
            return _slow(col, values)
    else:
        limit = _FLOAT_MAX[col.type]
        for v in values:
            kind = type(v)
            if (kind is float or kind is int) and -limit <= v <= limit:  # NaN and infinities compare False
                continue
            return _slow(col, values)
    try:
        return np.array(values, dtype=col.dtype)
    except (OverflowError, ValueError):
        return _slow(col, values)


def _fit(col: ColumnSpec, arr: np.ndarray, *, nonfinite: bool = False) -> np.ndarray | None:
    """Cast a numeric array (int, uint or float) to the column's dtype.

    Returns ``None`` when some value needs the per-value path (a non-finite float, unless ``nonfinite``; a fraction
    for an integer column); raises InvalidInput when a value is out of the column's range.
    """
    src = arr.dtype.kind
    bounds = _INT_RANGE.get(col.type)
    if bounds is not None:
        lo, hi = bounds
        if arr.size == 0:
            return arr.astype(col.dtype)
        if src == "f":
            if not np.isfinite(arr).all() or not np.array_equal(arr, np.floor(arr)):
                return None
            bad = (np.abs(arr) > _EXACT) | (arr < lo) | (arr > hi)
            if bad.any():
                raise _out_of_range(col, arr, bad)
        elif int(arr.min()) < lo or int(arr.max()) > hi:
            bad = arr > hi if src == "u" else (arr < lo) | (arr > hi)
            raise _out_of_range(col, arr, bad)
        return arr.astype(col.dtype, copy=False)
    if src == "f":
        finite = np.isfinite(arr)
        if not nonfinite and not finite.all():
            return None
        if col.type == "float" and arr.dtype.itemsize > 4:
            with np.errstate(invalid="ignore"):
                bad = finite & (np.abs(arr) > _FLOAT_MAX["float"])
            if bad.any():
                raise _out_of_range(col, arr, bad)
    return arr.astype(col.dtype, copy=False)


def check_feed(name: str, arr: np.ndarray, dtype: np.dtype[Any]) -> None:
    """Refuse values the runtime's input cannot hold: an ONNX graph may take float32 (or int32) where the signature
    says double (or long), and a cast would turn them into infinities or wrap them (scikit-learn refuses them)."""
    src = arr.dtype
    if src == dtype or src.kind not in "iuf" or dtype.kind not in "iuf" or not arr.size:
        return
    bad: np.ndarray | None = None
    if dtype.kind == "f":
        if src.kind == "f" and src.itemsize > dtype.itemsize:
            with np.errstate(invalid="ignore"):
                bad = np.isfinite(arr) & (np.abs(arr) > float(np.finfo(dtype).max))
    else:
        info = np.iinfo(dtype)
        if src.kind == "f":
            with np.errstate(invalid="ignore"):
                bad = ~np.isfinite(arr) | (arr != np.floor(arr)) | (arr < info.min) | (arr > info.max)
        elif int(arr.min()) < info.min or int(arr.max()) > info.max:
            bad = arr > info.max if src.kind == "u" else (arr < info.min) | (arr > info.max)
    if bad is not None and bad.any():
        flat = int(np.argmax(bad.ravel()))
        per_row = max(1, math.prod(arr.shape[1:]))
        value = arr.ravel()[flat].item()
        raise InvalidInput(
            f"column '{name}' row {flat // per_row}: {_show(value)} does not fit the model's {dtype.name} input",
            field=name,
        )


def _out_of_range(col: ColumnSpec, arr: np.ndarray, bad: np.ndarray) -> InvalidInput:
    flat = int(np.argmax(bad.ravel()))
    per_row = max(1, math.prod(arr.shape[1:]))
    value = arr.ravel()[flat].item()
    return InvalidInput(
        f"column '{col.name}' row {flat // per_row}: {_show(value)} is out of range for {col.type} ({col.dtype.name})",
        field=col.name,
    )


def _in_range(kind: str, v: Any) -> bool:
    """Whether a number (already checked to be an int or a finite float) fits the column type."""
    bounds = _INT_RANGE.get(kind)
    if bounds is not None:
        if isinstance(v, float) and abs(v) > _EXACT:
            return False
        return bounds[0] <= v <= bounds[1]
    limit = _FLOAT_MAX[kind]
    return -limit <= v <= limit


def fits(kind: str, v: Any) -> bool:
    """Whether one JSON value is a valid value of an MLflow type (numbers within its range)."""
    if kind in _INT_RANGE:
        return _is_int(v) and _in_range(kind, v)
    if kind in _FLOAT_MAX:
        return (
            isinstance(v, int | float)
            and not isinstance(v, bool)
            and (isinstance(v, int) or math.isfinite(v))
            and _in_range(kind, v)
        )
    if kind == "boolean":
        return isinstance(v, bool)
    if kind in ("string", "binary", "datetime"):
        return isinstance(v, str)
    return True


def _tensor(col: ColumnSpec, values: Any) -> np.ndarray:
    """A tensor column (per-row shape ``col.shape``): nested lists or an array, every element of the column type."""
    kind = col.type
    what = {"boolean": "true/false", "string": "strings", "binary": "strings", "datetime": "date-time strings",
            "integer": "integers", "long": "integers"}  # fmt: skip
    wanted = f"nested lists of {what.get(kind, 'numbers')} of shape {list(col.shape)}"
    try:
        arr = values if isinstance(values, np.ndarray) else np.asarray(values)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise InvalidInput(f"column '{col.name}' must be {wanted}", field=col.name) from None
    if arr.ndim != 1 + len(col.shape) or any(e > 0 and e != a for e, a in zip(col.shape, arr.shape[1:], strict=False)):
        raise InvalidInput(
            f"column '{col.name}' must have per-row shape {list(col.shape)}; got {list(arr.shape[1:])}", field=col.name
        )
    dk = arr.dtype.kind
    if kind in _NUMERIC:
        numbers = dk in "iuf" and (isinstance(values, np.ndarray) or not _has_bools(values, arr.ndim))
        if numbers:  # (numpy turns true/false among numbers into 1/0)
            out = _fit(col, arr, nonfinite=kind in ("float", "double"))
            if out is not None:
                return out
        elif dk == "O" and arr.size and all(type(v) is int for v in arr.ravel()):
            raise InvalidInput(f"column '{col.name}': a value is out of range for {kind}", field=col.name)
    elif kind == "boolean" and dk == "b":
        return arr
    elif kind in ("string", "binary") and (dk == "U" or (dk == "O" and all(type(v) is str for v in arr.ravel()))):
        return arr.astype(object)
    elif kind == "datetime" and (dk in "MU" or (dk == "O" and all(type(v) is str for v in arr.ravel()))):
        try:
            return arr.astype(col.dtype)
        except (ValueError, TypeError, OverflowError):
            pass
    raise InvalidInput(f"column '{col.name}' must be {wanted}", field=col.name)


def _has_bools(values: list[Any], ndim: int) -> bool:
    """Whether regular nested lists (numpy made a numeric array of ``ndim`` of them) hold a bool."""
    flat: Iterable[Any] = values
    for _ in range(ndim - 1):
        flat = chain.from_iterable(flat)
    return bool in set(map(type, flat))


def column_array(col: ColumnSpec, arr: np.ndarray) -> np.ndarray:
    """Check and cast one already-typed column (rows first) to its signature dtype, or raise InvalidInput."""
    if not col.shape and arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 + len(col.shape) or any(e > 0 and e != a for e, a in zip(col.shape, arr.shape[1:], strict=False)):
        want = f"per-row shape {list(col.shape)}" if col.shape else "one value per row"
        raise InvalidInput(f"column '{col.name}' must have {want}; got shape {list(arr.shape)}", field=col.name)
    if col.shape:
        return _tensor(col, arr)
    kind, dtype = col.type, arr.dtype
    if kind in _NUMERIC:
        if dtype.kind in "iuf":
            out = _fit(col, arr)
            if out is not None:
                return out
        elif dtype.kind in "mM":  # .tolist() would turn date-times into integers
            raise InvalidInput(f"column '{col.name}': expected {_expected(kind)}, got {dtype.name}", field=col.name)
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
    return to_array(col, [None if isinstance(v, float) and math.isnan(v) else v for v in values])


def _slow(col: ColumnSpec, values: list[Any]) -> np.ndarray:
    """Per-value path: fills optional nulls and finds the first bad value for the error message."""
    kind = col.type
    numeric = kind in _NUMERIC
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
                and isinstance(v, int | float)
                and not isinstance(v, bool)
                and (isinstance(v, int) or math.isfinite(v))
            )
            or (kind == "datetime" and isinstance(v, str))
        )
        if not ok:
            raise InvalidInput(
                f"column '{col.name}' row {i}: expected {_expected(kind)}, got {_show(v)}", field=col.name
            )
        if numeric and not _in_range(kind, v):
            raise InvalidInput(
                f"column '{col.name}' row {i}: {_show(v)} is out of range for {kind} ({col.dtype.name})",
                field=col.name,
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
        raise InvalidInput(f"column '{col.name}': {short(exc, 200)}", field=col.name) from None


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
    """A request value as JSON writes it (``true``, ``null``, ``"34"``), shortened; other objects by repr."""
    v = v.item() if isinstance(v, np.generic) else v
    try:
        text = json.dumps(v, allow_nan=True) if v is None or isinstance(v, str | bool | int | float) else repr(v)
    except ValueError:  # an int too long to print
        return f"<{type(v).__name__}>"
    return text if len(text) <= 40 else text[:37] + "..."


def show_value(v: Any) -> str:
    """``_show`` for other modules: a value in an error message, as JSON, shortened."""
    return _show(v)


def unknown_category(value: Any, known: Iterable[Any]) -> str:
    """The words both doors use when a value is not a category the model's encoder accepts."""
    shown = [x.item() if isinstance(x, np.generic) else x for x in islice(known, LIST_LIMIT * 2)]
    listing = json.dumps(shown)
    return f"{_show(value)} is not a category this model knows; use one of {listing}"


def check_categories(col: ColumnSpec, arr: np.ndarray) -> None:
    """Refuse a value outside ``col.categories`` for a column whose encoder fails on unknown categories."""
    known = set(col.categories or ())
    for row, value in enumerate(arr.ravel().tolist()):
        if value is not None and value not in known:
            raise InvalidInput(
                f"column '{short(col.name)}' row {row}: {unknown_category(value, col.categories or ())}",
                field=field_name(col.name),
            )
