"""Deployments → tool specs: names, descriptions, schemas from tools.shapes, the checklist gate."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import pytest

from registry import ModelSignature
from server.deployments import DeploymentInfo
from tests.tools.models import MAX_TOOL_ROWS, ltv_deployment, propensity_deployment
from tools import catalog as catalog_module
from tools.catalog import META_KEY, CatalogBuilder, build_spec
from tools.checks import tool_problems
from tools.shapes import ToolShape


@pytest.fixture
def ltv() -> DeploymentInfo:
    return ltv_deployment().info()


@pytest.fixture
def propensity() -> DeploymentInfo:
    return propensity_deployment().info()


def test_one_tool_per_deployment_sorted_by_name(ltv: DeploymentInfo, propensity: DeploymentInfo) -> None:
    catalog = CatalogBuilder().build([propensity, ltv])
    assert catalog.names == ["customer_ltv", "customer_propensity"]
    assert catalog.skipped == {}
    assert catalog.get("customer_ltv") is not None and catalog.get("nope") is None


def test_schemas_are_the_shapes_of_the_signature(ltv: DeploymentInfo) -> None:
    spec = build_spec(ltv, "customer_ltv", max_rows=MAX_TOOL_ROWS)
    assert spec.input_schema is spec.shape.input_schema and spec.output_schema is spec.shape.output_schema
    assert spec.max_rows == MAX_TOOL_ROWS and "maxItems" not in spec.input_schema["properties"]["inputs"]
    assert f"1 to {MAX_TOOL_ROWS} rows" in spec.input_schema["properties"]["inputs"]["description"]
    assert tool_problems(spec.name, spec.input_schema, spec.output_schema, spec.example) == []
    full = build_spec(ltv, "customer_ltv", dialect="full", max_rows=MAX_TOOL_ROWS)
    assert full.input_schema["properties"]["inputs"]["maxItems"] == MAX_TOOL_ROWS


def test_title_meta_and_routing_carry_the_real_model(ltv: DeploymentInfo) -> None:
    spec = build_spec(ltv, "customer_ltv")
    assert spec.title == "customer_ltv v3 @champion"
    assert (spec.model_name, spec.selector, spec.version, spec.key) == (
        "customer_ltv",
        "champion",
        "3",
        "customer_ltv@champion",
    )
    meta = spec.meta[META_KEY]
    assert meta["name"] == "customer_ltv" and meta["version"] == "3" and meta["aliases"] == ["champion"]
    assert meta["modelUri"] == "models:/customer_ltv@champion"
    assert meta["restPath"] == "/model/customer_ltv/champion/invocations"
    assert meta["card"] == "modelport://models/customer_ltv/champion"


def test_description_lets_an_agent_call_without_guessing(ltv: DeploymentInfo) -> None:
    text = build_spec(ltv, "customer_ltv", max_rows=MAX_TOOL_ROWS).description
    assert text.startswith("Score rows with the MLflow model 'customer_ltv' version 3 (alias @champion).")
    assert "Predicts a customer's lifetime value." in text  # registered-model description
    assert "Version 3, trained on synthetic data." in text  # version description
    assert "one entry per input row, in order: a number: the customer's expected lifetime value, in EUR." in text
    assert "a list of 1 to 10 rows" in text
    assert "the fields tenure_months, monthly_spend, segment (all required)" in text
    assert "Months since the customer signed up" not in text  # said once: in the input schema
    example = json.loads(text.split("Example arguments: ", 1)[1].split("\n", 1)[0])
    assert example == {"inputs": [{"tenure_months": 12, "monthly_spend": 40.5, "segment": "premium"}]}
    assert "POST /model/customer_ltv/champion/invocations" in text


def test_classifier_description_names_classes_and_probabilities(propensity: DeploymentInfo) -> None:
    text = build_spec(propensity, "customer_propensity").description
    assert "'label' (the most likely class, one of [0, 1])" in text
    assert "'probabilities'" in text


def test_a_synthetic_example_replaces_an_invalid_input_example(ltv: DeploymentInfo) -> None:
    broken = dataclasses.replace(ltv, schema=dataclasses.replace(ltv.schema, example_record={"segment": "gold"}))
    spec = build_spec(broken, "customer_ltv")
    assert spec.example == {"inputs": [{"tenure_months": 0, "monthly_spend": 0.0, "segment": "basic"}]}


def test_a_tool_that_fails_the_checklist_is_skipped_with_a_reason(
    ltv: DeploymentInfo, propensity: DeploymentInfo, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = catalog_module.build_shape

    def broken(signature: ModelSignature, *args: Any, **kwargs: Any) -> ToolShape:
        shape = real(signature, *args, **kwargs)
        if "segment" not in signature.input_names:
            return shape
        return dataclasses.replace(shape, input_schema={"type": "array", "items": {"type": "number"}})

    monkeypatch.setattr(catalog_module, "build_shape", broken)
    with caplog.at_level(logging.WARNING, logger="tools.catalog"):
        catalog = CatalogBuilder().build([ltv, propensity])
    assert catalog.names == ["customer_propensity"]
    assert "root type must be 'object'" in catalog.skipped["customer_ltv@champion"]
    assert "customer_ltv@champion is not published" in caplog.text


def test_failed_deployments_get_no_tool(ltv: DeploymentInfo) -> None:
    assert CatalogBuilder().build([dataclasses.replace(ltv, state="FAILED")]).names == []


def test_specs_are_reused_until_the_deployment_changes(ltv: DeploymentInfo, propensity: DeploymentInfo) -> None:
    builder = CatalogBuilder()
    first = builder.build([ltv, propensity]).get("customer_ltv")
    assert builder.build([ltv, propensity]).get("customer_ltv") is first
    reloaded = dataclasses.replace(ltv, loaded_at=ltv.loaded_at + 1)
    assert builder.build([reloaded, propensity]).get("customer_ltv") is not first


def test_two_versions_of_one_model_get_distinct_names() -> None:
    infos = [ltv_deployment().info(), ltv_deployment(version="4", alias=None).info()]
    catalog = CatalogBuilder().build(infos)
    assert catalog.names == ["customer_ltv_champion", "customer_ltv_v4"]
    assert catalog.get("customer_ltv_v4").selector == "4"  # type: ignore[union-attr]
