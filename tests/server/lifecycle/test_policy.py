"""ServingPolicy: listed vs registry mode, name patterns, tags."""

from __future__ import annotations

from server.lifecycle.policy import ServingPolicy
from server.settings import PolicySettings


def test_listed_mode_loads_nothing_on_demand() -> None:
    policy = ServingPolicy()
    assert not policy.on_demand
    assert not policy.allows_name("anything")
    assert "listed" in policy.describe()


def test_registry_mode_filters_names_by_pattern() -> None:
    policy = ServingPolicy(PolicySettings(mode="registry", names=("fraud_*", "churn")))
    assert policy.allows_name("fraud_detector")
    assert policy.allows_name("churn")
    assert not policy.allows_name("churn_v2")
    assert not policy.allows_name("sales_forecast")
    assert "fraud_*" in policy.describe()


def test_tags_must_all_match_and_star_means_any_value() -> None:
    policy = ServingPolicy(PolicySettings(mode="registry", tags={"serving": "approved", "team": "*"}))
    assert policy.needs_tags
    assert policy.allows_tags({"serving": "approved", "team": "risk", "other": "x"})
    assert not policy.allows_tags({"serving": "approved"})
    assert not policy.allows_tags({"serving": "pending", "team": "risk"})
    assert not ServingPolicy(PolicySettings(mode="registry")).needs_tags
