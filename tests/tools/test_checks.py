"""The schema checklist and server-side argument validation."""

from __future__ import annotations

from typing import Any

import pytest

from server.errors import InvalidInput, PayloadTooLarge
from tools.checks import portability_problems, tool_problems, validate_arguments


def tool_input(record: dict[str, Any], max_items: int = 3) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["inputs"],
        "properties": {"inputs": {"type": "array", "minItems": 1, "maxItems": max_items, "items": record}},
    }


RECORD = {
    "type": "object",
    "additionalProperties": False,
    "required": ["age", "segment"],
    "properties": {
        "age": {"type": "number"},
        "segment": {"type": "string", "enum": ["a", "b"]},
        "note": {"type": "string"},
    },
}
OUTPUT = {
    "type": "object",
    "required": ["predictions"],
    "properties": {"predictions": {"type": "array", "items": {"type": "number"}}},
}


def test_a_portable_tool_passes() -> None:
    assert tool_problems("ok_tool", tool_input(RECORD), OUTPUT, {"inputs": [{"age": 1, "segment": "a"}]}) == []


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "array"}, "array without items"),
        ({"type": "array", "items": {}}, "untyped schema"),
        ({"type": ["string", "null"]}, "type union"),
        ({"description": "anything"}, "untyped schema"),
        ({"$ref": "#/$defs/x", "type": "object"}, "uses $ref"),
        ({"type": "object", "properties": {"x": True}}, "boolean or non-object schema"),
    ],
)
def test_portability_rules(schema: dict[str, Any], problem: str) -> None:
    assert portability_problems({"type": "object", "properties": {"x": {"type": "number"}}}) == []
    problems = portability_problems({"type": "object", "properties": {"x": schema}})
    assert any(p.startswith("$.properties.x") and problem in p for p in problems), problems


def test_root_rules() -> None:
    assert any(
        "root type must be 'object'" in p
        for p in tool_problems("t", tool_input(RECORD), {"type": "array", "items": {"type": "number"}})
    )
    bad_root = tool_input(RECORD) | {"anyOf": [{"required": ["inputs"]}]}
    assert any("top-level anyOf" in p for p in tool_problems("t", bad_root, OUTPUT))
    assert any("not a valid JSON Schema" in p for p in tool_problems("t", tool_input({"type": 5}), OUTPUT))
    assert any("must match" in p for p in tool_problems("Has.Dots", tool_input(RECORD), OUTPUT))
    no_limit = tool_input(RECORD)
    del no_limit["properties"]["inputs"]["maxItems"]
    assert any("minItems and maxItems" in p for p in tool_problems("t", no_limit, OUTPUT))
    assert any("example call" in p for p in tool_problems("t", tool_input(RECORD), OUTPUT, {"inputs": [{}]}))


def test_valid_arguments_pass() -> None:
    assert validate_arguments(tool_input(RECORD), {"inputs": [{"age": 3.5, "segment": "b"}]}) is None


def test_invalid_arguments_name_the_path_and_the_reason() -> None:
    err = validate_arguments(tool_input(RECORD), {"inputs": [{"age": "old", "segment": "c", "extra": 1}]})
    assert isinstance(err, InvalidInput) and not isinstance(err, PayloadTooLarge)
    assert "inputs[0].age: 'old' is not of type 'number'" in err.message
    assert "inputs[0].segment: 'c' is not one of ['a', 'b']" in err.message
    assert "allowed fields: ['age', 'note', 'segment']" in err.message
    assert err.field == "inputs[0]"


def test_missing_fields_and_empty_inputs() -> None:
    missing = validate_arguments(tool_input(RECORD), {"inputs": [{"age": 1}]})
    assert missing is not None and "inputs[0]: missing required field(s) ['segment']" in missing.message
    empty = validate_arguments(tool_input(RECORD), {"inputs": []})
    assert empty is not None and "inputs: [] should be non-empty" in empty.message
    none = validate_arguments(tool_input(RECORD), None)
    assert none is not None and "arguments: missing required field(s) ['inputs']" in none.message


def test_too_many_rows_is_payload_too_large() -> None:
    err = validate_arguments(tool_input(RECORD, max_items=2), {"inputs": [{"age": 1, "segment": "a"}] * 3})
    assert isinstance(err, PayloadTooLarge)
    assert err.field == "inputs" and "3 rows" in err.message and "at most 2" in err.message
