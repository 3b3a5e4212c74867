"""Generated schemas: valid JSON Schema 2020-12, portable (no refs/unions), typed from the signature."""

from __future__ import annotations

import json

import jsonschema
import pytest

from registry import ColumnSpec, ModelSignature, ParamSpec
from server.schema import OutputKind, build_schema

SIG = ModelSignature(
    (
        ColumnSpec("year", "long", description="Calendar year", unit="year"),
        ColumnSpec("product", "string", categories=("product_A", "product_B")),
        ColumnSpec("units", "double", optional=True),
    ),
    params=(ParamSpec("horizon", "long", 1),),
    output_description="Forecast revenue",
    output_unit="EUR",
)


def _walk(node: object) -> list[dict]:
    found = []
    if isinstance(node, dict):
        found.append(node)
        for v in node.values():
            found += _walk(v)
    elif isinstance(node, list):
        for v in node:
            found += _walk(v)
    return found


@pytest.mark.parametrize("kind", [OutputKind("regression"), OutputKind("classification", (0, 1), True)])
def test_schemas_are_valid_and_portable(kind: OutputKind) -> None:
    schema = build_schema(SIG, kind, max_items=50, example=[{"year": 2025, "product": "product_A", "units": 1.0}])
    for s in (schema.tool_input, schema.output, schema.rest_request, schema.record):
        jsonschema.Draft202012Validator.check_schema(s)
        text = json.dumps(s)
        assert "$ref" not in text and "$defs" not in text
        if s is not schema.rest_request:  # what agents see: no combinators (the REST body is for OpenAPI clients)
            assert not {"oneOf", "anyOf", "allOf"} & set(s)
        for node in _walk(s):
            assert not isinstance(node.get("type"), list), node
            if node.get("type") == "array":
                assert "items" in node
    assert schema.tool_input["type"] == "object"
    assert schema.output["type"] == "object"


def test_rest_request_schema_says_exactly_one_format_with_typed_rows() -> None:
    """OpenAPI clients (and schemathesis) get the body MLflow takes: one format, at least one row, typed cells."""
    body = build_schema(SIG, OutputKind("regression"), max_items=50).rest_request
    validator = jsonschema.Draft202012Validator(body)
    assert validator.is_valid({"data": [[2025, "product_A", 1.0]]})
    assert validator.is_valid({"data": [[2025, "product_A", None]]})  # units is optional
    assert validator.is_valid({"dataframe_records": [{"year": 2025, "product": "product_A", "units": 1.0}]})
    bad_bodies = [{}, {"data": []}, {"data": [[2025]]}, {"data": [["x", "product_A", 1.0]]},
                  {"data": [[2025, "product_A", 1.0]], "inputs": [{"year": 2025, "product": "product_A"}]}]  # fmt: skip
    for bad in bad_bodies:
        assert not validator.is_valid(bad), bad


def test_record_schema_types_required_enums_and_descriptions() -> None:
    schema = build_schema(SIG, OutputKind("regression"), max_items=50)
    record = schema.record
    assert record["properties"]["year"] == {"type": "integer", "description": "Calendar year. Unit: year."}
    assert record["properties"]["product"]["enum"] == ["product_A", "product_B"]
    assert record["properties"]["units"]["type"] == "number"
    assert record["required"] == ["year", "product"]
    assert record["additionalProperties"] is False
    inputs = schema.tool_input["properties"]["inputs"]
    assert inputs["minItems"] == 1 and inputs["maxItems"] == 50
    assert schema.tool_input["properties"]["params"]["properties"]["horizon"]["type"] == "integer"


def test_tool_schema_accepts_good_and_rejects_bad_arguments() -> None:
    schema = build_schema(SIG, OutputKind("regression"), max_items=2)
    validator = jsonschema.Draft202012Validator(schema.tool_input)
    assert validator.is_valid({"inputs": [{"year": 2025, "product": "product_A", "units": 3.5}]})
    assert not validator.is_valid({"inputs": [{"year": 2025, "product": "product_Z"}]})
    assert not validator.is_valid({"inputs": [{"year": 2025, "product": "product_A", "extra": 1}]})
    assert not validator.is_valid({"inputs": []})
    assert not validator.is_valid({"inputs": [{"year": 1, "product": "product_A"}] * 3})


def test_classifier_output_has_label_and_probabilities() -> None:
    schema = build_schema(SIG, OutputKind("classification", (0, 1), True), max_items=5)
    item = schema.output["properties"]["predictions"]["items"]
    assert item["properties"]["label"]["type"] == "integer"
    assert item["properties"]["probabilities"]["additionalProperties"] == {"type": "number"}
    assert "EUR" in item["description"]
