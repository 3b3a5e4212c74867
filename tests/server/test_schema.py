"""REST schemas generated from a signature: valid JSON Schema 2020-12, typed from the signature (tool schemas:
tests/tools/test_shapes.py)."""

from __future__ import annotations

import json

import jsonschema

from registry import ColumnSpec, ModelSignature, ParamSpec
from server.schema import build_schema

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


def test_schemas_are_valid_and_portable() -> None:
    schema = build_schema(SIG, example=[{"year": 2025, "product": "product_A", "units": 1.0}])
    for s in (schema.rest_request, schema.record):
        jsonschema.Draft202012Validator.check_schema(s)
        text = json.dumps(s)
        assert "$ref" not in text and "$defs" not in text
        for node in _walk(s):
            assert not isinstance(node.get("type"), list), node
            if node.get("type") == "array":
                assert "items" in node
    assert schema.example_record == {"year": 2025, "product": "product_A", "units": 1.0}


def test_rest_request_schema_says_exactly_one_format_with_typed_rows() -> None:
    """OpenAPI clients (and schemathesis) get the body MLflow takes: one format, at least one row, typed cells."""
    body = build_schema(SIG).rest_request
    validator = jsonschema.Draft202012Validator(body)
    assert validator.is_valid({"data": [[2025, "product_A", 1.0]]})
    assert validator.is_valid({"data": [[2025, "product_A", None]]})  # units is optional
    assert validator.is_valid({"dataframe_records": [{"year": 2025, "product": "product_A", "units": 1.0}]})
    bad_bodies = [{}, {"data": []}, {"data": [[2025]]}, {"data": [["x", "product_A", 1.0]]},
                  {"data": [[2025, "product_A", 1.0]], "inputs": [{"year": 2025, "product": "product_A"}]}]  # fmt: skip
    for bad in bad_bodies:
        assert not validator.is_valid(bad), bad


def test_record_schema_types_required_enums_and_descriptions() -> None:
    record = build_schema(SIG).record
    assert record["properties"]["year"] == {"type": "integer", "description": "Calendar year. Unit: year."}
    assert record["properties"]["product"]["enum"] == ["product_A", "product_B"]
    assert record["properties"]["units"]["type"] == "number"
    assert record["required"] == ["year", "product"]
    assert record["additionalProperties"] is False
