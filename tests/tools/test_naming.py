"""Tool names: portable, short, unique and deterministic."""

from __future__ import annotations

import re

from tools.naming import MAX_NAME_LENGTH, assign_names, sanitize

PORTABLE = re.compile(r"^[a-z0-9_-]{1,40}$")


def test_sanitize_keeps_only_portable_characters() -> None:
    assert sanitize("Sales Forecast") == "sales_forecast"
    assert sanitize("main.analytics.churn-model") == "main_analytics_churn-model"
    assert sanitize("  ..weird//name__ ") == "weird_name"
    assert sanitize("...") == "model"


def test_one_deployment_per_model_uses_the_model_name() -> None:
    names = assign_names(
        [("sales_forecast@champion", "sales_forecast", "champion"), ("fraud_detector/2", "fraud_detector", "2")]
    )
    assert names == {"sales_forecast@champion": "sales_forecast", "fraud_detector/2": "fraud_detector"}


def test_several_deployments_of_a_model_get_their_alias_or_version() -> None:
    names = assign_names([("m@champion", "m", "champion"), ("m/3", "m", "3")])
    assert names == {"m@champion": "m_champion", "m/3": "m_v3"}


def test_sanitized_collisions_are_resolved_with_a_stable_hash() -> None:
    items = [("a.b/1", "a.b", "1"), ("a_b/1", "a_b", "1")]
    names = assign_names(items)
    assert len(set(names.values())) == 2
    assert all(n.startswith("a_b_") and PORTABLE.match(n) for n in names.values())
    assert assign_names(reversed(items)) == names  # independent of order


def test_long_names_are_cut_to_40_characters_and_stay_unique() -> None:
    long_a = "catalog.schema." + "x" * 60 + "_a"
    long_b = "catalog.schema." + "x" * 60 + "_b"
    names = assign_names([(f"{long_a}/1", long_a, "1"), (f"{long_b}/1", long_b, "1")])
    assert all(len(n) <= MAX_NAME_LENGTH and PORTABLE.match(n) for n in names.values())
    assert len(set(names.values())) == 2
