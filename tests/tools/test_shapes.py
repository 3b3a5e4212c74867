"""Tool schemas from signatures: portable to every provider's rules for a zoo of awkward names and columns."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from registry import ColumnSpec, ModelSignature, ParamSpec
from server.schema import OutputKind
from tools.checks import RULE_SETS, portability_report, provider_problems, tool_problems
from tools.naming import assign_names
from tools.shapes import build_shape, portable_key, portable_keys

ZOO: dict[str, tuple[ModelSignature, OutputKind]] = {
    "Order Value model": (
        ModelSignature(
            (
                ColumnSpec("Order Value (EUR)", "double", description="Basket value", unit="EUR"),
                ColumnSpec("âge", "long", description="Customer age"),
                ColumnSpec("age", "long", optional=True),
                ColumnSpec("a b", "string"),
                ColumnSpec("a_b", "string", optional=True),
                ColumnSpec("x" * 100, "float"),
                ColumnSpec("main.price", "double"),
                ColumnSpec("💰", "double"),
            )
        ),
        OutputKind("regression"),
    ),
    "2024 churn model": (
        ModelSignature(
            (
                ColumnSpec("segment", "string", categories=("basic", "premium"), closed=True),
                ColumnSpec("channel", "string", categories=("web", "store")),
                ColumnSpec("signup", "datetime", optional=True),
                ColumnSpec("blob", "binary", optional=True),
                ColumnSpec("is_foreign", "long"),
            ),
            params=(ParamSpec("threshold", "double", 0.5), ParamSpec("top_k", "long", None)),
        ),
        OutputKind("classification", ("churns", "stays"), True),
    ),
    "image classifier": (
        ModelSignature((ColumnSpec("pixels", "float", shape=(2, 3)), ColumnSpec("scale", "double", shape=(-1,)))),
        OutputKind("classification", (True, False)),
    ),
    "été / prévisions": (
        ModelSignature((ColumnSpec("température", "double"),)),
        OutputKind("tensor"),
    ),
    "labels with spaces": (
        ModelSignature((ColumnSpec("x", "double"),)),
        OutputKind("classification", ("class A", "class-B", "été"), True),
    ),
}


def _names() -> dict[str, str]:
    return assign_names((f"{name}/1", name, "1") for name in ZOO)


@pytest.mark.parametrize("model", list(ZOO))
def test_every_zoo_tool_passes_every_rule_set(model: str) -> None:
    signature, kind = ZOO[model]
    shape = build_shape(signature, kind, max_rows=100)
    name = _names()[f"{model}/1"]
    assert portability_report(name, shape.input_schema) == {rule_set: [] for rule_set in RULE_SETS}
    assert tool_problems(name, shape.input_schema, shape.output_schema) == []
    for node in _nodes(shape.input_schema):  # the limits are in words, not keywords
        assert not {"minItems", "maxItems", "format", "minimum", "maximum", "default", "pattern"} & node.keys()
    _check_output(shape.output_schema)


def test_full_dialect_keeps_every_bound_and_passes_the_mcp_checklist() -> None:
    signature, kind = ZOO["2024 churn model"]
    shape = build_shape(signature, kind, max_rows=7, dialect="full")
    inputs = shape.input_schema["properties"]["inputs"]
    assert (inputs["minItems"], inputs["maxItems"]) == (1, 7)
    record = inputs["items"]
    assert record["properties"]["signup"]["format"] == "date-time"
    assert record["required"] == ["segment", "channel", "is_foreign"]
    assert shape.input_schema["required"] == ["inputs"]
    assert shape.input_schema["properties"]["params"]["properties"]["threshold"]["default"] == 0.5
    assert tool_problems("churn", shape.input_schema, shape.output_schema) == []
    assert provider_problems("churn", shape.input_schema, "openai-strict-legacy")  # the reason it is not the default
    tensor = build_shape(*ZOO["image classifier"], max_rows=3, dialect="full").input_schema
    pixels = tensor["properties"]["inputs"]["items"]["properties"]["pixels"]
    assert (pixels["minItems"], pixels["items"]["maxItems"]) == (2, 3)


def test_portable_keys_are_deterministic_collision_free_and_titled() -> None:
    signature, kind = ZOO["Order Value model"]
    keys = portable_keys(signature.input_names)
    assert keys["Order Value (EUR)"] == "Order_Value_EUR"
    assert keys["âge"] == "age_2"  # "age" is a real column: it keeps its name, the accented one moves aside
    assert keys["age"] == "age" and keys["a_b"] == "a_b" and keys["a b"] == "a_b_2"
    assert keys["main.price"] == "main.price" and keys["💰"] == "column"
    assert len(keys["x" * 100]) <= 64
    assert len(set(keys.values())) == len(keys)
    assert portable_keys(signature.input_names) == keys
    assert portable_key("Order Value (EUR)") == "Order_Value_EUR"
    props = build_shape(signature, kind, max_rows=5).input_schema["properties"]["inputs"]["items"]["properties"]
    assert props["Order_Value_EUR"]["title"] == "Order Value (EUR)"
    assert 'Column "Order Value (EUR)"' in props["Order_Value_EUR"]["description"]
    assert "Unit: EUR." in props["Order_Value_EUR"]["description"]
    assert "title" not in props["age"]


def test_rows_map_keys_back_to_columns_and_null_means_absent() -> None:
    shape = build_shape(*ZOO["Order Value model"], max_rows=5)
    rows = shape.rows([{"Order_Value_EUR": 12.5, "age_2": 40, "age": None, "a_b_2": "x", "a_b": None}])
    assert rows == [{"Order Value (EUR)": 12.5, "âge": 40, "a b": "x"}]
    churn = build_shape(*ZOO["2024 churn model"], max_rows=5)
    assert churn.params(None) is None
    assert churn.params({"threshold": None, "top_k": 3}) == {"top_k": 3}


def test_categories_follow_what_the_encoder_does() -> None:
    shape = build_shape(*ZOO["2024 churn model"], max_rows=5)
    props = shape.input_schema["properties"]["inputs"]["items"]["properties"]
    assert props["segment"]["enum"] == ["basic", "premium"]  # the encoder fails on others: refuse them
    assert "enum" not in props["channel"] and props["channel"]["examples"] == ["web", "store"]
    assert 'Known values: "web", "store"; other values are accepted' in props["channel"]["description"]
    validator = jsonschema.Draft202012Validator(shape.input_schema)
    row = {"segment": "basic", "channel": "gold", "signup": None, "blob": None, "is_foreign": 1}
    assert validator.is_valid({"inputs": [row], "params": None})
    assert not validator.is_valid({"inputs": [row | {"segment": "gold"}], "params": None})


def test_classifier_outputs_have_one_property_per_class() -> None:
    shape = build_shape(*ZOO["labels with spaces"], max_rows=5)
    item = shape.output_schema["properties"]["predictions"]["items"]
    probs = item["properties"]["probabilities"]
    assert sorted(probs["properties"]) == ["class-B", "class_A", "ete"]
    assert probs["required"] == list(probs["properties"]) and probs["additionalProperties"] is False
    out = shape.output(
        {"predictions": [{"label": "class A", "probabilities": {"class A": 0.7, "class-B": 0.2, "été": 0.1}}]}
    )
    assert out == {"predictions": [{"label": "class A", "probabilities": {"class_A": 0.7, "class-B": 0.2, "ete": 0.1}}]}
    jsonschema.validate(out, shape.output_schema)
    unsure = build_shape(*ZOO["labels with spaces"], max_rows=5, probabilities=False)
    out = unsure.output({"predictions": [{"label": "class A"}]})
    assert out == {"predictions": [{"label": "class A", "probabilities": None}]}
    jsonschema.validate(out, unsure.output_schema)


def _nodes(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for key, value in node.items():
            if key not in ("examples", "enum"):
                found += _nodes(value)
    elif isinstance(node, list):
        for value in node:
            found += _nodes(value)
    return found


def _check_output(schema: dict[str, Any]) -> None:
    """Object roots closed, every property required (fastmcp and strict clients keep only declared properties)."""
    for node in _nodes(schema):
        if node.get("type") == "object":
            assert node.get("additionalProperties") is False, node
            assert sorted(node.get("required", [])) == sorted(node.get("properties", {})), node
