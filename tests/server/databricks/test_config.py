"""Endpoint configs: Databricks' fields (served_entities and the older served_models), defaults and validation."""

from __future__ import annotations

from typing import Any

import pytest

from server.databricks.config import check_name, parse_config
from server.errors import InvalidInput


def test_served_entities_with_defaults_and_an_even_split() -> None:
    config = parse_config(
        {
            "served_entities": [
                {"entity_name": "churn", "entity_version": "3"},
                {"entity_name": "churn", "entity_version": 4},
            ]
        }
    )
    assert [e.name for e in config.served] == ["churn-3", "churn-4"]
    assert [e.model_uri for e in config.served] == ["models:/churn/3", "models:/churn/4"]
    assert config.routes == (("churn-3", 50), ("churn-4", 50))
    assert config.served[0].workload_size == "Small" and not config.served[0].scale_to_zero_enabled
    three = parse_config({"served_entities": [{"entity_name": "m", "entity_version": str(v)} for v in (1, 2, 3)]})
    assert [p for _, p in three.routes] == [34, 33, 33]


def test_legacy_served_models_and_alias_versions() -> None:
    config = parse_config(
        {
            "served_models": [
                {"name": "a", "model_name": "fraud", "model_version": "champion", "scale_to_zero_enabled": True},
                {"name": "b", "model_name": "fraud", "model_version": "@challenger", "workload_size": "Medium"},
            ],
            "traffic_config": {
                "routes": [
                    {"served_model_name": "a", "traffic_percentage": 90},
                    {"served_entity_name": "b", "traffic_percentage": 10},
                ]
            },
        },
        version=7,
    )
    assert [e.model_uri for e in config.served] == ["models:/fraud@champion", "models:/fraud@challenger"]
    assert config.served[1].segment == "challenger"
    assert config.routes == (("a", 90), ("b", 10)) and config.version == 7
    rendered = config.render({"a": ("DEPLOYMENT_READY", "ok")}, 1, "me")
    assert rendered["served_models"][0]["model_name"] == "fraud"
    assert rendered["served_entities"][0]["state"] == {
        "deployment": "DEPLOYMENT_READY",
        "deployment_state_message": "ok",
    }
    assert rendered["served_entities"][1]["state"]["deployment"] == "DEPLOYMENT_CREATING"
    assert rendered["config_version"] == 7
    assert parse_config(config.to_input(), 7) == config


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (None, "config"),
        ({"served_entities": []}, "served_entities"),
        ({"served_entities": [{"entity_version": "1"}]}, "served_entities[0].entity_name"),
        ({"served_entities": [{"entity_name": "m"}]}, "served_entities[0].entity_version"),
        ({"served_entities": [{"entity_name": "m", "entity_version": "1 2"}]}, "served_entities[0].entity_version"),
        ({"served_entities": [{"entity_name": "m", "entity_version": "1", "name": "a b"}]}, "served_entities[0].name"),
        (
            {"served_entities": [{"entity_name": "m", "entity_version": "1", "external_model": {"x": 1}}]},
            "served_entities[0]",
        ),
        ({"served_entities": [{"entity_name": "m", "entity_version": "1"}] * 2}, "served_entities"),
        ({"served_entities": [{"entity_name": "m", "entity_version": "1"}], "served_models": [{}]}, "served_models"),
        (
            {
                "served_entities": [{"entity_name": "m", "entity_version": "1"}],
                "traffic_config": {"routes": [{"served_model_name": "m-1", "traffic_percentage": 90}]},
            },
            "traffic_config.routes",
        ),
        (
            {
                "served_entities": [{"entity_name": "m", "entity_version": "1"}],
                "traffic_config": {"routes": [{"served_model_name": "x", "traffic_percentage": 100}]},
            },
            "traffic_config.routes[0]",
        ),
    ],
)
def test_invalid_configs_name_the_field(config: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_config(config)
    assert err.value.field == field


def test_endpoint_names() -> None:
    assert check_name("my-endpoint_1") == "my-endpoint_1"
    for bad in ("", "a" * 64, "has space", "databricks-x", None):
        with pytest.raises(InvalidInput):
            check_name(bad)
