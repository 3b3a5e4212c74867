"""Token buckets and Databricks rate-limit parsing."""

from __future__ import annotations

import pytest

from server.errors import InvalidInput
from server.ops.identity import Resource
from server.ops.limits import LimitTable, LocalLimiter, RateLimit, TokenBucket, parse_rate_limits


def test_bucket_allows_capacity_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket(capacity=3, rate=1.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(1.0)
    assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.take(1.0) == 0.0  # refilled one token


def test_bucket_with_zero_calls_never_admits() -> None:
    bucket = TokenBucket(capacity=0, rate=0.0, now=0.0)
    assert bucket.take(10.0) == float("inf")


def test_user_key_limits_each_principal_and_endpoint_key_all_together() -> None:
    table = LimitTable()
    per_user, shared = Resource("endpoint", "a"), Resource("endpoint", "b")
    table.set(per_user, [RateLimit(1, "user")])
    table.set(shared, [RateLimit(1, "endpoint")])
    assert table.hit(per_user, "alice") == 0.0
    assert table.hit(per_user, "bob") == 0.0
    assert table.hit(per_user, "alice") > 0.0
    assert table.hit(shared, "alice") == 0.0
    assert table.hit(shared, "bob") > 0.0
    assert table.hit(Resource("model", "free"), "alice") == 0.0
    table.set(per_user, [])
    assert table.hit(per_user, "alice") == 0.0 and table.active


def test_parse_databricks_rate_limits() -> None:
    assert parse_rate_limits([{"calls": 10, "key": "endpoint", "renewal_period": "minute"}]) == (
        RateLimit(10, "endpoint", "minute"),
    )
    assert parse_rate_limits([{"calls": 5}]) == (RateLimit(5, "user", "minute"),)
    assert parse_rate_limits(None) == ()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"calls": 1}, "rate_limits"),
        ([{"calls": -1}], "rate_limits[0].calls"),
        ([{"calls": True}], "rate_limits[0].calls"),
        ([{"calls": 1, "key": "ip"}], "rate_limits[0].key"),
        ([{"calls": 1, "renewal_period": "hour"}], "rate_limits[0].renewal_period"),
        (["x"], "rate_limits[0]"),
    ],
)
def test_bad_rate_limits_name_the_field(raw: object, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_rate_limits(raw)
    assert info.value.field == field


def test_a_replica_enforces_its_share_of_each_limit() -> None:
    limiter = LocalLimiter()
    limiter.share = 0.25  # four replicas share the traffic
    table = LimitTable(limiter)
    model = Resource("model", "m")
    table.set(model, [RateLimit(8)])
    assert [table.hit(model, "ann") == 0.0 for _ in range(3)] == [True, True, False]  # 8 / 4 = 2 here
    assert table.hit(model, "ann") == pytest.approx(1 / (8 / 60 * 0.25), rel=0.05)  # refilled at a quarter rate
    table.set(model, [RateLimit(1)])
    assert table.hit(model, "bob") == 0.0  # a limit above zero keeps one call per period on each replica
    assert table.hit(model, "bob") > 0.0
    table.set(model, [RateLimit(0)])
    assert table.hit(model, "eve") == float("inf")  # zero stays zero
