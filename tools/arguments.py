"""Server-side validation of tool arguments, with errors an LLM can fix in one try.

The SDK validates nothing; we check the arguments against the published ``inputSchema`` and report every problem
of the call in one message, grouped by row, values written as JSON (``true``, ``null``, ``"34"``), with hints
where models usually go wrong: a single row where a list is expected, a numeric string, a boolean for a 0/1
column, a misspelled field. The limits the portable schema leaves to the description (rows per call, at least one
row) are enforced here.
"""

from __future__ import annotations

import difflib
import json
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from server.columns import show_value, unknown_category
from server.errors import InvalidInput, PayloadTooLarge

MAX_MESSAGE = 3000
"""Characters of problems reported in one message (then "and N more")."""
_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object",
    "null": "null",
}
_UNKNOWN, _WRONG, _MISSING = 0, 1, 2
"""Order within a row: unknown fields first (usually a misspelling), then wrong values, then what is missing."""
Problem = tuple[int | None, str, str, int]
"""(row or None, field, what is wrong, order)."""
_REST_KEYS = ("dataframe_records", "dataframe_split", "instances", "data")


def validate_arguments(
    input_schema: Mapping[str, Any], arguments: Mapping[str, Any] | None, *, max_rows: int | None = None
) -> InvalidInput | None:
    """``None`` when the arguments are valid; else an ``InvalidInput`` (``PayloadTooLarge`` for too many rows)
    naming every problem of the call."""
    args = dict(arguments or {})
    record = _record_schema(input_schema)
    shape = _shape_problem(args, record)
    if shape is not None:
        return shape
    rows = args["inputs"]
    limit = max_rows if max_rows is not None else (input_schema["properties"]["inputs"].get("maxItems"))
    if isinstance(limit, int) and len(rows) > limit:
        return PayloadTooLarge(f"'inputs' has {len(rows)} rows; a tool call takes at most {limit}", field="inputs")
    validator = Draft202012Validator(input_schema)
    problems: list[Problem] = []
    for error in validator.iter_errors(args):
        problems.extend(_explain(error))
    if not problems:
        return None
    position = {name: i for i, name in enumerate((record.get("properties") or {}).keys())}
    problems.sort(key=lambda p: (-1 if p[0] is None else p[0], p[3], position.get(p[1].split(".")[0], len(position))))
    return InvalidInput(_report(problems), field=_field(problems[0]))


def _record_schema(input_schema: Mapping[str, Any]) -> Mapping[str, Any]:
    inputs = (input_schema.get("properties") or {}).get("inputs") or {}
    items = inputs.get("items")
    return items if isinstance(items, Mapping) else {}


def _shape_problem(args: dict[str, Any], record: Mapping[str, Any]) -> InvalidInput | None:
    """The call's overall shape: ``inputs`` present, a non-empty list (hints for the usual mistakes)."""
    columns = set((record.get("properties") or {}).keys())
    rows = args.get("inputs")
    if "inputs" not in args:
        if args and set(args) <= columns | {"params"}:
            hint = (
                'put the row in a list under "inputs": {"inputs": ['
                + _short_json({k: v for k, v in args.items() if k != "params"})
                + "]}"
            )
            return InvalidInput(f"missing 'inputs'; {hint}", field="inputs")
        rest = next((k for k in args if k in _REST_KEYS), None)
        if rest is not None:
            return InvalidInput(
                f"'{rest}' is the REST body format; a tool call takes the rows under 'inputs': "
                '{"inputs": [{column: value}, ...]}',
                field=rest,
            )
        return InvalidInput("missing 'inputs': call with {\"inputs\": [{column: value}, ...]}", field="inputs")
    if isinstance(rows, Mapping):
        return InvalidInput(
            "'inputs' must be a list of rows, got one object: wrap the row in a list: "
            '{"inputs": [' + _short_json(rows) + "]}",
            field="inputs",
        )
    if isinstance(rows, str):
        return InvalidInput(
            "'inputs' must be a list of row objects, got a string: send the list itself, not JSON text",
            field="inputs",
        )
    if not isinstance(rows, Sequence):
        return InvalidInput(f"'inputs' must be a list of row objects, got {show_value(rows)}", field="inputs")
    if not rows:
        return InvalidInput("'inputs' is empty: send at least one row", field="inputs")
    return None


def _explain(error: ValidationError) -> Iterator[Problem]:
    """(row or None, field, problem in words) for one validation error (several for a union's branch)."""
    path = list(error.absolute_path)
    row = path[1] if len(path) >= 2 and path[0] == "inputs" and isinstance(path[1], int) else None
    field = ".".join(str(p) for p in (path[2:] if row is not None else path)) or "arguments"
    kind = error.validator
    if kind == "anyOf" and isinstance(error.validator_value, list):
        branches = [b for b in error.validator_value if b != {"type": "null"}]
        if len(branches) == 1:  # a nullable value: explain against its non-null schema
            for sub in Draft202012Validator(branches[0]).iter_errors(error.instance):
                sub.path.extendleft(reversed(path))  # type: ignore[attr-defined]
                yield from _explain(sub)
            return
    if kind == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = list((error.schema.get("properties") or {}).keys()) if isinstance(error.schema, Mapping) else []
        for extra in [k for k in error.instance if k not in allowed]:
            where = f"{field}.{extra}" if field != "arguments" else str(extra)
            yield row, where, _unknown_field(str(extra), allowed), _UNKNOWN
        return
    if kind == "required" and isinstance(error.instance, Mapping):
        missing = [r for r in error.validator_value if r not in error.instance]
        for name in missing:
            where = f"{field}.{name}" if field != "arguments" else str(name)
            yield row, where, "missing (required" + (", null if unknown)" if _nullable(error, name) else ")"), _MISSING
        return
    yield row, field, _wrong_value(error), _WRONG


def _nullable(error: ValidationError, name: str) -> bool:
    prop = ((error.schema.get("properties") or {}) if isinstance(error.schema, Mapping) else {}).get(name)
    return isinstance(prop, Mapping) and {"type": "null"} in (prop.get("anyOf") or ())


def _unknown_field(name: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown field; did you mean '{close[0]}'?"
    shown = ", ".join(f"'{a}'" for a in allowed[:30]) + (" ..." if len(allowed) > 30 else "")
    return f"unknown field; the fields are {shown}"


def _wrong_value(error: ValidationError) -> str:
    value, kind = error.instance, error.validator
    if kind == "enum":
        return unknown_category(value, error.validator_value)
    if kind == "type":
        wanted = error.validator_value
        words = _TYPE_WORDS.get(str(wanted), str(wanted))
        text = f"expected {words}, got {show_value(value) if not isinstance(value, dict | list) else _kind(value)}"
        return text + _hint(wanted, value)
    if kind == "const":
        return f"must be {show_value(error.validator_value)}, got {show_value(value)}"
    return error.message


def _hint(wanted: Any, value: Any) -> str:
    if value is None:
        return " (null is not allowed here)"
    if wanted in ("integer", "number") and isinstance(value, bool):
        return f" (use {int(value)} for {json.dumps(value)})"
    if wanted in ("integer", "number") and isinstance(value, str):
        try:
            number = json.loads(value.strip())
        except ValueError:
            return ""
        if isinstance(number, int | float) and not isinstance(number, bool):
            return f" (send {json.dumps(number)}, not {json.dumps(value)})"
    if wanted == "integer" and isinstance(value, float):
        return " (send a whole number)"
    if wanted == "boolean" and value in (0, 1, "true", "false", "0", "1"):
        return f" (send {json.dumps(value in (1, 'true', '1'))})"
    if wanted == "object" and isinstance(value, list):
        return " (each row is an object {column: value}, not a list of values)"
    if wanted == "array" and isinstance(value, dict):
        return " (wrap it in a list)"
    return ""


def _kind(value: Any) -> str:
    return "a list" if isinstance(value, list) else "an object"


def _report(problems: list[Problem]) -> str:
    """Problems (sorted by row, kind, column) grouped by row, cut at ``MAX_MESSAGE`` characters (then a count)."""
    by_row: defaultdict[int | None, list[Problem]] = defaultdict(list)
    for problem in problems:
        by_row[problem[0]].append(problem)
    order = sorted(by_row, key=lambda r: -1 if r is None else r)
    lines: list[str] = []
    for row in order:
        body = "; ".join(f"{field}: {text}" for _, field, text, _ in by_row[row])
        lines.append(body if row is None else f"row {row}: {body}")
    rows = sum(1 for r in by_row if r is not None)
    head = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}" + (f" in {rows} row(s)" if rows else "")
    out: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        if used + len(line) > MAX_MESSAGE and out:
            rest = sum(len(by_row[r]) for r in order[i:])
            out.append(f"... and {rest} more problem(s) in {len(order) - i} more row(s)")
            break
        out.append(line)
        used += len(line)
    return head + ":\n" + "\n".join(out)


def _field(problem: Problem) -> str:
    row, field, _, _ = problem
    return f"inputs[{row}].{field}" if row is not None else field


def _short_json(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, default=str, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 3] + "..."
