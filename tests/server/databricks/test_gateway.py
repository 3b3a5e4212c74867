"""AI Gateway bodies and the legacy rate limits: what databricks-sdk sends parses, defaults match Databricks, what
modelport does not enforce is refused (errors name the field), and the value renders back in the SDK's shape."""

from __future__ import annotations

from typing import Any

import pytest
from databricks.sdk.service import serving as sdk
from databricks.sdk.service.serving import (
    AiGatewayConfig,
    AiGatewayGuardrailParameters,
    AiGatewayGuardrails,
    AiGatewayInferenceTableConfig,
    AiGatewayRateLimit,
    AiGatewayRateLimitKey,
    AiGatewayRateLimitRenewalPeriod,
    AiGatewayUsageTrackingConfig,
    RateLimitKey,
    RateLimitRenewalPeriod,
)

from server.databricks.gateway import AiGateway, parse_ai_gateway, parse_limits
from server.errors import InvalidInput
from server.ops.limits import RateLimit

MINUTE = AiGatewayRateLimitRenewalPeriod.MINUTE


def test_parses_what_the_sdk_sends_and_renders_it_back() -> None:
    config = AiGatewayConfig(
        rate_limits=[
            AiGatewayRateLimit(calls=100, key=AiGatewayRateLimitKey.USER, renewal_period=MINUTE),
            AiGatewayRateLimit(calls=1000, key=AiGatewayRateLimitKey.ENDPOINT, renewal_period=MINUTE),
        ],
        usage_tracking_config=AiGatewayUsageTrackingConfig(enabled=True),
        inference_table_config=AiGatewayInferenceTableConfig(enabled=False, catalog_name="main"),
        guardrails=AiGatewayGuardrails(input=AiGatewayGuardrailParameters(safety=False)),
    )
    body = config.as_dict()
    gateway = parse_ai_gateway(body)
    assert gateway.rate_limits == (RateLimit(100, "user"), RateLimit(1000, "endpoint"))
    assert gateway.extra["usage_tracking_config"] == {"enabled": True}
    assert gateway.render() == body
    assert AiGatewayConfig.from_dict(gateway.render()) == config
    assert parse_ai_gateway(gateway.render()) == gateway


def test_key_defaults_to_endpoint_and_empty_means_nothing() -> None:
    assert parse_limits([{"calls": 5, "renewal_period": "minute"}]) == (RateLimit(5, "endpoint"),)
    assert parse_limits([{"calls": 5}]) == (RateLimit(5, "endpoint", "minute"),)
    assert parse_ai_gateway(None) == AiGateway() and parse_ai_gateway({}).empty
    assert parse_ai_gateway({}).render() == {}
    assert parse_limits(None) == () and parse_limits([]) == ()


def test_the_legacy_rate_limits_shape() -> None:
    legacy = [sdk.RateLimit(calls=3, key=RateLimitKey.USER, renewal_period=RateLimitRenewalPeriod.MINUTE).as_dict()]
    limits = parse_limits(legacy)
    assert limits == (RateLimit(3, "user"),)
    gateway = AiGateway(extra={"usage_tracking_config": {"enabled": True}}).with_rate_limits(limits)
    assert gateway.render() == {
        "usage_tracking_config": {"enabled": True},
        "rate_limits": [{"calls": 3, "key": "user", "renewal_period": "minute"}],
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"rate_limit": []}, "rate_limit"),
        ({"rate_limits": {"calls": 1}}, "rate_limits"),
        ({"rate_limits": [7]}, "rate_limits[0]"),
        ({"rate_limits": [{"key": "user"}]}, "rate_limits[0].calls"),
        ({"rate_limits": [{"calls": -1}]}, "rate_limits[0].calls"),
        ({"rate_limits": [{"calls": "10"}]}, "rate_limits[0].calls"),
        ({"rate_limits": [{"calls": True}]}, "rate_limits[0].calls"),
        ({"rate_limits": [{"calls": 1, "key": "ip"}]}, "rate_limits[0].key"),
        ({"rate_limits": [{"calls": 1, "key": "user_group", "principal": "g"}]}, "rate_limits[0].key"),
        ({"rate_limits": [{"calls": 1, "key": "user", "principal": "alice"}]}, "rate_limits[0].key"),
        ({"rate_limits": [{"calls": 1, "renewal_period": "hour"}]}, "rate_limits[0].renewal_period"),
        ({"rate_limits": [{"tokens": 1000, "renewal_period": "minute"}]}, "rate_limits[0].tokens"),
        ({"rate_limits": [{"calls": 1, "burst": 5}]}, "rate_limits[0].burst"),
        ({"usage_tracking_config": True}, "usage_tracking_config"),
        ({"guardrails": {"input": {"safety": True}}}, "guardrails.input"),
        ({"guardrails": {"output": {"pii": {"behavior": "MASK"}}}}, "guardrails.output"),
        ({"guardrails": {"input": {"invalid_keywords": ["secret"]}}}, "guardrails.input"),
    ],
)
def test_invalid_bodies_name_the_field(body: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_ai_gateway(body)
    assert caught.value.field == field


def test_a_create_body_names_fields_under_ai_gateway() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_ai_gateway({"rate_limits": [{"calls": 1, "key": "nobody"}]}, "ai_gateway.")
    assert caught.value.field == "ai_gateway.rate_limits[0].key"
    with pytest.raises(InvalidInput) as caught:
        parse_ai_gateway("on", "ai_gateway.")
    assert caught.value.field == "ai_gateway"


def test_disabled_guardrails_are_kept() -> None:
    off = {"input": {"safety": False, "pii": {"behavior": "NONE"}, "invalid_keywords": []}}
    assert parse_ai_gateway({"guardrails": off}).render() == {"guardrails": off}
