"""Argument validation: every problem of a call in one message, values as JSON, hints a model can act on."""

from __future__ import annotations

import pytest

from registry import ColumnSpec, ModelSignature
from server.errors import InvalidInput, PayloadTooLarge
from server.schema import OutputKind
from tools.arguments import MAX_MESSAGE, validate_arguments
from tools.shapes import build_shape

SIGNATURE = ModelSignature(
    (
        ColumnSpec("tenure_months", "long"),
        ColumnSpec("monthly_spend", "double"),
        ColumnSpec("segment", "string", categories=("basic", "premium"), closed=True),
        ColumnSpec("is_foreign", "long"),
        ColumnSpec("has_app", "boolean", optional=True),
    )
)
SCHEMA = build_shape(SIGNATURE, OutputKind("regression"), max_rows=3).input_schema
GOOD = {"tenure_months": 12, "monthly_spend": 40.5, "segment": "basic", "is_foreign": 0, "has_app": None}


def _error(arguments: object, max_rows: int | None = 3) -> InvalidInput:
    error = validate_arguments(SCHEMA, arguments, max_rows=max_rows)  # type: ignore[arg-type]
    assert isinstance(error, InvalidInput)
    return error


def test_valid_arguments_pass() -> None:
    assert validate_arguments(SCHEMA, {"inputs": [GOOD, GOOD]}, max_rows=3) is None


def test_values_are_written_as_json_with_a_hint() -> None:
    error = _error({"inputs": [GOOD | {"tenure_months": "34", "has_app": 1, "is_foreign": True}]})
    message = error.message
    assert 'tenure_months: expected an integer, got "34" (send 34, not "34")' in message
    assert "is_foreign: expected an integer, got true (use 1 for true)" in message
    assert "has_app: expected true or false, got 1 (send true)" in message
    assert "True" not in message and "'34'" not in message
    assert error.field == "inputs[0].tenure_months"  # the first problem, in column order


def test_every_problem_is_reported_grouped_by_row() -> None:
    rows = [GOOD | {"tenure_months": None}, dict(GOOD), GOOD | {"segment": "gold", "monthly_spend": "x"}]
    for row in rows:
        row.pop("is_foreign")
    message = _error({"inputs": rows}).message
    assert message.startswith("6 problems in 3 row(s):\n")
    lines = message.splitlines()[1:]
    assert lines[0].startswith("row 0: ") and "tenure_months: expected an integer, got null" in lines[0]
    assert lines[1] == "row 1: is_foreign: missing (required)"
    assert lines[2].startswith("row 2: ")
    assert 'segment: "gold" is not a category this model knows; use one of ["basic", "premium"]' in lines[2]
    assert lines[2].endswith("is_foreign: missing (required)")  # missing fields come last in a row


def test_a_misspelled_field_gets_a_suggestion() -> None:
    row = {k: v for k, v in GOOD.items() if k != "tenure_months"} | {"tenure_month": 3}
    message = _error({"inputs": [row]}).message
    assert "tenure_month: unknown field; did you mean 'tenure_months'?" in message
    assert message.index("unknown field") < message.index("missing (required)")
    message = _error({"inputs": [GOOD | {"zzz": 1}]}).message
    assert "zzz: unknown field; the fields are 'tenure_months', 'monthly_spend'" in message


def test_nullable_missing_fields_say_null_is_fine() -> None:
    row = {k: v for k, v in GOOD.items() if k != "has_app"}
    assert "has_app: missing (required, null if unknown)" in _error({"inputs": [row]}).message


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"inputs": GOOD}, 'wrap the row in a list: {"inputs": [{"tenure_months":12'),
        (GOOD, 'missing \'inputs\'; put the row in a list under "inputs": {"inputs": [{"tenure_months":12'),
        ({"dataframe_records": [GOOD]}, "'dataframe_records' is the REST body format"),
        ({"inputs": "[{}]"}, "send the list itself, not JSON text"),
        ({"inputs": []}, "'inputs' is empty: send at least one row"),
        ({"inputs": [[12, 40.5, "basic", 0, None]]}, "each row is an object {column: value}, not a list of values"),
        (None, "missing 'inputs'"),
    ],
)
def test_shape_mistakes_get_hints(arguments: object, words: str) -> None:
    assert words in _error(arguments).message


def test_too_many_rows_is_payload_too_large() -> None:
    error = _error({"inputs": [GOOD] * 4})
    assert isinstance(error, PayloadTooLarge)
    assert error.field == "inputs" and "4 rows" in error.message and "at most 3" in error.message


def test_long_reports_are_capped_with_a_count_of_the_rest() -> None:
    rows = [GOOD | {"tenure_months": "x" * 50, "monthly_spend": "y" * 50, "segment": "z" * 50}] * 200
    message = _error({"inputs": rows}, max_rows=None).message
    assert message.startswith("600 problems in 200 row(s):")
    assert len(message) < MAX_MESSAGE + 400
    assert message.rstrip().splitlines()[-1].startswith("... and ")
