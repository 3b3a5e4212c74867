"""The schema checklist and server-side argument validation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tools.checks import RULE_SETS, portability_problems, portability_report, provider_problems, tool_problems


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
    assert any("must match" in p for p in tool_problems("2024_model", tool_input(RECORD), OUTPUT))  # Gemini
    not_rows = tool_input(RECORD) | {"properties": {"inputs": {"type": "string"}}}
    assert any("'inputs' must be an array" in p for p in tool_problems("t", not_rows, OUTPUT))
    assert any("example call" in p for p in tool_problems("t", tool_input(RECORD), OUTPUT, {"inputs": [{}]}))


PORTABLE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["inputs"],
    "properties": {
        "inputs": {
            "type": "array",
            "description": "1 to 3 rows",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["age", "segment"],
                "properties": {
                    "age": {"anyOf": [{"type": "number"}, {"type": "null"}]},
                    "segment": {"type": "string", "enum": ["a", "b"]},
                },
            },
        }
    },
}


def test_a_portable_schema_passes_every_rule_set() -> None:
    assert portability_report("score_it", PORTABLE) == {key: [] for key in RULE_SETS}


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        # the bounds the default schema used to carry: OpenAI's legacy strict rules and Anthropic strict refuse them
        ({"maxItems": 3}, {"openai-strict-legacy", "anthropic-strict"}),
        ({"minItems": 2}, {"openai-strict-legacy", "anthropic-strict"}),
        ({"minItems": 1}, {"openai-strict-legacy"}),
        ({"format": "date-time"}, {"openai-strict-legacy"}),
        ({"default": []}, {"openai-strict", "openai-strict-legacy"}),
    ],
)
def test_keywords_each_provider_refuses(change: dict[str, Any], failing: set[str]) -> None:
    schema = json.loads(json.dumps(PORTABLE))
    schema["properties"]["inputs"] |= change
    failed = {rule_set for rule_set, problems in portability_report("t", schema).items() if problems}
    assert failed == failing


def test_optional_properties_fail_openai_strict_only() -> None:
    schema = json.loads(json.dumps(PORTABLE))
    schema["properties"]["inputs"]["items"]["required"] = ["segment"]
    failed = {rule_set for rule_set, problems in portability_report("t", schema).items() if problems}
    assert failed == {"openai-strict", "openai-strict-legacy"}


def test_open_objects_and_numeric_bounds() -> None:
    schema = json.loads(json.dumps(PORTABLE))
    record = schema["properties"]["inputs"]["items"]
    record["properties"]["age"] = {"type": "number", "minimum": 0}
    del record["additionalProperties"]
    report = portability_report("t", schema)
    assert any("additionalProperties: false" in p for p in report["anthropic-strict"])
    assert any("'minimum' is not supported" in p for p in report["anthropic-strict"])
    assert any("'minimum' is not supported" in p for p in report["openai-strict-legacy"])
    assert not any("minimum" in p for p in report["openai-strict"])  # current strict mode takes numeric bounds


def test_names_and_property_keys() -> None:
    assert provider_problems("2024_churn_model", PORTABLE, "gemini")  # Gemini: a letter or _ first
    assert not provider_problems("model_2024_churn_model", PORTABLE, "gemini")
    assert provider_problems("has.dot", PORTABLE, "openai-strict")
    schema = json.loads(json.dumps(PORTABLE))
    record = schema["properties"]["inputs"]["items"]
    record["properties"]["Order Value (EUR)"] = {"type": "number"}
    record["required"].append("Order Value (EUR)")
    for rule_set in ("anthropic", "anthropic-strict", "openai-strict"):
        assert any("Order Value (EUR)" in p for p in provider_problems("t", schema, rule_set)), rule_set


def test_openai_legacy_limits() -> None:
    schema = json.loads(json.dumps(PORTABLE))
    record = schema["properties"]["inputs"]["items"]
    record["properties"] = {f"c{i}": {"type": "number"} for i in range(120)}
    record["required"] = list(record["properties"])
    assert any("properties in all" in p for p in provider_problems("t", schema, "openai-strict-legacy"))
    assert not provider_problems("t", schema, "openai-strict")
    with pytest.raises(ValueError, match="unknown rule set"):
        provider_problems("t", schema, "nope")
