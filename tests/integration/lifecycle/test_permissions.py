"""Serving endpoint security with the real databricks-sdk against a real modelport with auth on: the permissions API
(get/set/update permissions, permission levels), creator ownership, listing filtered by permission, CAN_QUERY vs
CAN_MANAGE, 401 without a token, AI Gateway and legacy rate limits enforced on the data plane (429 + Retry-After,
which the SDK honours), and everything surviving a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.clock import Clock
from databricks.sdk.config import Config
from databricks.sdk.credentials_provider import CredentialsProvider, CredentialsStrategy
from databricks.sdk.errors import NotFound, PermissionDenied, TooManyRequests, Unauthenticated
from databricks.sdk.service.serving import (
    AiGatewayConfig,
    AiGatewayRateLimit,
    AiGatewayRateLimitKey,
    AiGatewayRateLimitRenewalPeriod,
    AiGatewayUsageTrackingConfig,
    EndpointCoreConfigInput,
    RateLimit,
    RateLimitKey,
    RateLimitRenewalPeriod,
    ServedEntityInput,
    ServingEndpointAccessControlRequest,
    ServingEndpointDetailedPermissionLevel,
    ServingEndpointPermissionLevel,
    ServingEndpointPermissions,
)

from server.ops.identity import Level, Resource
from tests.conftest import start_server
from tests.lifecycle import Live, ScorerRegistry, answer, live

pytestmark = pytest.mark.integration

MINUTE = AiGatewayRateLimitRenewalPeriod.MINUTE
PERMS = "/api/2.0/permissions/serving-endpoints"
ROWS = [{"x": 2.0}]


@dataclass
class Secured:
    server: Live
    model: str
    tokens: dict[str, str]

    def ws(self, who: str, **config: Any) -> WorkspaceClient:
        return WorkspaceClient(config=Config(host=self.server.url, token=self.tokens[who], **config))

    def create(self, who: str, name: str, version: str = "1", **kwargs: Any) -> str:
        """Create an endpoint as ``who``, wait until it serves; returns its id."""
        entity = ServedEntityInput(entity_name=self.model, entity_version=version, workload_size="Small")
        w = self.ws(who)
        w.serving_endpoints.create(
            name=name, config=EndpointCoreConfigInput(name=name, served_entities=[entity]), **kwargs
        )
        assert self.server.components.endpoints.wait_settled(name, 30)
        endpoint_id = w.serving_endpoints.get(name).id
        assert endpoint_id is not None
        return endpoint_id


def _tokens(server: Live) -> dict[str, str]:
    store = server.components.gate.tokens
    return {
        "admin": store.create("admin", admin=True),
        "bob": store.create("bob"),
        "dave": store.create("dave"),
        "carol": store.create("carol", grants={"endpoints/carol-ep": Level.CAN_MANAGE}),
        "robot": store.create("robot", kind="service_principal", grants={"*": Level.CAN_MANAGE}),
    }


@pytest.fixture(scope="module")
def secured(scorers: ScorerRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    name = scorers.register("perm", [1, 2])
    settings = scorers.settings(tmp_path_factory.mktemp("perm"), auth={"required": True})
    with live(settings) as server:
        yield Secured(server, name, _tokens(server))


def _acl(perms: ServingEndpointPermissions) -> dict[str, str]:
    out = {}
    for entry in perms.access_control_list or []:
        who = entry.user_name or entry.service_principal_name or entry.group_name
        [permission] = entry.all_permissions or []
        assert permission.inherited is False and permission.permission_level is not None
        out[str(who)] = permission.permission_level.value
    return out


def _grant(who: str, level: str, kind: str = "user_name") -> ServingEndpointAccessControlRequest:
    return ServingEndpointAccessControlRequest(**{kind: who}, permission_level=ServingEndpointPermissionLevel(level))


def test_permissions_api_and_levels(secured: Secured) -> None:
    endpoint_id = secured.create("admin", "guarded")
    admin, bob, dave = secured.ws("admin"), secured.ws("bob"), secured.ws("dave")
    ep = admin.serving_endpoints.get("guarded")
    assert ep.creator == "admin" and ep.permission_level == ServingEndpointDetailedPermissionLevel.CAN_MANAGE

    # nobody else may see it yet
    assert "guarded" not in [e.name for e in bob.serving_endpoints.list()]
    with pytest.raises(PermissionDenied):
        bob.serving_endpoints.get("guarded")
    with pytest.raises(PermissionDenied):
        bob.serving_endpoints.query("guarded", dataframe_records=ROWS)
    with pytest.raises(PermissionDenied):
        bob.serving_endpoints.get_permissions(endpoint_id)

    # the creator manages it; the permissions API takes the endpoint's id (or its name)
    perms = admin.serving_endpoints.get_permissions(endpoint_id)
    assert perms.object_id == f"/serving-endpoints/{endpoint_id}" and perms.object_type == "serving-endpoint"
    assert _acl(perms) == {"admin": "CAN_MANAGE"}
    assert _acl(admin.serving_endpoints.get_permissions("guarded")) == {"admin": "CAN_MANAGE"}
    levels = admin.serving_endpoints.get_permission_levels(endpoint_id).permission_levels or []
    assert [(lvl.permission_level.value if lvl.permission_level else None) for lvl in levels] == [
        "CAN_MANAGE",
        "CAN_QUERY",
        "CAN_VIEW",
    ]

    # PUT replaces the list, PATCH adds to it
    perms = admin.serving_endpoints.set_permissions(endpoint_id, access_control_list=[_grant("bob", "CAN_QUERY")])
    assert _acl(perms) == {"bob": "CAN_QUERY"}
    perms = admin.serving_endpoints.update_permissions(
        endpoint_id, access_control_list=[_grant("users", "CAN_VIEW", "group_name")]
    )
    assert _acl(perms) == {"bob": "CAN_QUERY", "users": "CAN_VIEW"}
    assert admin.serving_endpoints.get("guarded").permission_level == ServingEndpointDetailedPermissionLevel.CAN_MANAGE

    # CAN_QUERY: list, get, query and read permissions; not change anything
    assert "guarded" in [e.name for e in bob.serving_endpoints.list()]
    assert bob.serving_endpoints.get("guarded").permission_level == ServingEndpointDetailedPermissionLevel.CAN_QUERY
    assert bob.serving_endpoints.query("guarded", dataframe_records=ROWS).predictions == [2.0]
    assert _acl(bob.serving_endpoints.get_permissions(endpoint_id)) == {"bob": "CAN_QUERY", "users": "CAN_VIEW"}
    entity = ServedEntityInput(entity_name=secured.model, entity_version="2", workload_size="Small")
    refused = [
        lambda: bob.serving_endpoints.update_config(name="guarded", served_entities=[entity]),
        lambda: bob.serving_endpoints.put_ai_gateway(
            "guarded", rate_limits=[AiGatewayRateLimit(calls=1, renewal_period=MINUTE)]
        ),
        lambda: bob.serving_endpoints.put("guarded", rate_limits=[]),
        lambda: bob.serving_endpoints.set_permissions(endpoint_id, access_control_list=[_grant("bob", "CAN_MANAGE")]),
        lambda: bob.serving_endpoints.update_permissions(endpoint_id, access_control_list=[]),
        lambda: bob.serving_endpoints.delete("guarded"),
    ]
    for call in refused:
        with pytest.raises(PermissionDenied):
            call()

    # CAN_VIEW through the all-users group: listed and described, not queried
    assert dave.serving_endpoints.get("guarded").permission_level == ServingEndpointDetailedPermissionLevel.CAN_VIEW
    assert "guarded" in [e.name for e in dave.serving_endpoints.list()]
    with pytest.raises(PermissionDenied):
        dave.serving_endpoints.query("guarded", dataframe_records=ROWS)

    # deleting the endpoint forgets its ACL
    admin.serving_endpoints.delete("guarded")
    assert secured.server.components.gate.acl.entries(Resource("endpoint", "guarded")) == []
    with pytest.raises(NotFound):
        admin.serving_endpoints.get_permissions(endpoint_id)


def test_invalid_permission_bodies_are_refused_with_the_field(secured: Secured) -> None:
    secured.create("admin", "strict")
    auth = {"Authorization": f"Bearer {secured.tokens['admin']}"}
    with secured.server.client(headers=auth) as c:
        bad_level = {"access_control_list": [{"user_name": "bob", "permission_level": "CAN_RUN"}]}
        r = c.put(f"{PERMS}/strict", json=bad_level)
        assert r.status_code == 400 and r.json()["error_code"] == "BAD_REQUEST"
        assert r.json()["field"] == "access_control_list[0].permission_level"
        no_principal = {"access_control_list": [{"permission_level": "CAN_VIEW"}]}
        r = c.patch(f"{PERMS}/strict", json=no_principal)
        assert r.status_code == 400 and r.json()["field"] == "access_control_list[0]"
        r = c.put("/api/2.0/serving-endpoints/strict/ai-gateway", json={"rate_limits": [{"calls": 1, "key": "ip"}]})
        assert r.status_code == 400 and r.json()["field"] == "rate_limits[0].key"
        assert c.get(f"{PERMS}/strict").json()["access_control_list"][0]["user_name"] == "admin"  # unchanged
        assert c.get(f"{PERMS}/nope").status_code == 404
        config = {"served_entities": [{"entity_name": secured.model, "entity_version": "1"}]}
        limit = {"calls": 5, "key": "user", "renewal_period": "minute"}
        both = {"name": "twice", "config": config, "rate_limits": [limit], "ai_gateway": {"rate_limits": [limit]}}
        r = c.post("/api/2.0/serving-endpoints", json=both)
        assert r.status_code == 400 and r.json()["field"] == "rate_limits"
        bad = {"name": "bad", "config": config, "ai_gateway": {"rate_limits": [{"key": "user"}]}}
        r = c.post("/api/2.0/serving-endpoints", json=bad)
        assert r.status_code == 400 and r.json()["field"] == "ai_gateway.rate_limits[0].calls"
        r = c.post("/api/2.0/serving-endpoints", json={"name": "legacy", "config": config, "rate_limits": [limit]})
        assert r.status_code == 200 and r.json()["ai_gateway"] == {"rate_limits": [limit]}
        assert secured.server.components.endpoints.wait_settled("legacy", 30)
        assert c.delete("/api/2.0/serving-endpoints/legacy").status_code == 200
        assert c.delete("/api/2.0/serving-endpoints/strict").status_code == 200


def test_creating_needs_manage_on_the_name_and_makes_the_creator_manager(secured: Secured) -> None:
    with pytest.raises(PermissionDenied):
        secured.create("bob", "bobs")
    with pytest.raises(PermissionDenied):
        secured.create("carol", "not-carols")  # her token manages 'carol-ep' only
    endpoint_id = secured.create("carol", "carol-ep")
    carol = secured.ws("carol")
    assert carol.serving_endpoints.get("carol-ep").creator == "carol"
    assert _acl(carol.serving_endpoints.get_permissions(endpoint_id)) == {"carol": "CAN_MANAGE"}
    assert [e.name for e in carol.serving_endpoints.list()] == ["carol-ep"]
    assert "carol-ep" not in [e.name for e in secured.ws("bob").serving_endpoints.list()]

    robot_id = secured.create("robot", "robots")  # a service principal with a '*' grant
    perms = secured.ws("admin").serving_endpoints.get_permissions(robot_id)
    assert [(e.service_principal_name, e.user_name) for e in perms.access_control_list or []] == [("robot", None)]
    for who, name in (("carol", "carol-ep"), ("robot", "robots")):
        secured.ws(who).serving_endpoints.delete(name)


class _NoCredentials(CredentialsStrategy):
    """A client that sends no Authorization header at all."""

    def auth_type(self) -> str:
        return "none"

    def __call__(self, cfg: Config) -> CredentialsProvider:
        return lambda: {}


def test_no_or_a_wrong_token_is_unauthenticated(secured: Secured) -> None:
    anonymous = WorkspaceClient(config=Config(host=secured.server.url, credentials_strategy=_NoCredentials()))
    with pytest.raises(Unauthenticated):
        anonymous.serving_endpoints.list()
    wrong = WorkspaceClient(host=secured.server.url, token="dapi-not-a-modelport-token")
    with pytest.raises(Unauthenticated):
        wrong.serving_endpoints.list()
    with secured.server.client() as c:
        r = c.get("/api/2.0/serving-endpoints")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error_code"] == "UNAUTHENTICATED"
        assert c.post("/serving-endpoints/anything/invocations", json=answer()).status_code == 401


class _NoWaitClock(Clock):
    """The SDK's clock, advanced instead of slept on (the SDK sleeps Retry-After before retrying a 429)."""

    def __init__(self) -> None:
        self.now = time.time()
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _throttled(c: httpx.Client, name: str) -> int:
    """Assert one call over the limit is refused as Databricks does; returns its Retry-After."""
    r = c.post(f"/serving-endpoints/{name}/invocations", json=answer())
    assert r.status_code == 429, r.text
    assert r.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    retry_after = int(r.headers["retry-after"])
    assert 1 <= retry_after <= 60
    return retry_after


def test_ai_gateway_rate_limits_on_the_data_plane(secured: Secured) -> None:
    gateway = AiGatewayConfig(
        rate_limits=[AiGatewayRateLimit(calls=2, key=AiGatewayRateLimitKey.USER, renewal_period=MINUTE)]
    )
    endpoint_id = secured.create("admin", "metered", ai_gateway=gateway)
    admin, bob = secured.ws("admin"), secured.ws("bob")
    got = admin.serving_endpoints.get("metered").ai_gateway
    assert got is not None and got.rate_limits == gateway.rate_limits
    admin.serving_endpoints.set_permissions(endpoint_id, access_control_list=[_grant("bob", "CAN_QUERY")])
    limits = secured.server.components.gate.limits
    resource = Resource("endpoint", "metered")

    # two calls a minute per user: bob's third is refused, with Retry-After, which the SDK sleeps before retrying
    for _ in range(2):
        assert bob.serving_endpoints.query("metered", dataframe_records=ROWS).predictions == [2.0]
    with secured.server.client(headers={"Authorization": f"Bearer {secured.tokens['bob']}"}) as c:
        retry_after = _throttled(c, "metered")
    clock = _NoWaitClock()
    patient = secured.ws("bob", clock=clock, retry_timeout_seconds=1)
    with pytest.raises(TimeoutError) as caught:
        patient.serving_endpoints.query("metered", dataframe_records=ROWS)
    assert isinstance(caught.value.__cause__, TooManyRequests)
    assert caught.value.__cause__.error_code == "REQUEST_LIMIT_EXCEEDED"
    assert clock.slept and clock.slept[0] >= retry_after - 1
    assert admin.serving_endpoints.query("metered", dataframe_records=ROWS).predictions == [2.0]  # own bucket

    # AI Gateway PUT replaces the config: one call a minute for the whole endpoint
    put = admin.serving_endpoints.put_ai_gateway(
        "metered",
        rate_limits=[AiGatewayRateLimit(calls=1, key=AiGatewayRateLimitKey.ENDPOINT, renewal_period=MINUTE)],
        usage_tracking_config=AiGatewayUsageTrackingConfig(enabled=True),
    )
    assert put.usage_tracking_config == AiGatewayUsageTrackingConfig(enabled=True)
    assert [(r.calls, r.key) for r in put.rate_limits or []] == [(1, AiGatewayRateLimitKey.ENDPOINT)]
    assert [(r.calls, r.key) for r in limits.get(resource)] == [(1, "endpoint")]
    assert admin.serving_endpoints.query("metered", dataframe_records=ROWS).predictions == [2.0]
    with secured.server.client(headers={"Authorization": f"Bearer {secured.tokens['bob']}"}) as c:
        _throttled(c, "metered")  # the endpoint's one call is used up, by anyone

    # the legacy rate limits API replaces the rate limits only
    legacy = admin.serving_endpoints.put(
        "metered",
        rate_limits=[RateLimit(calls=50, key=RateLimitKey.USER, renewal_period=RateLimitRenewalPeriod.MINUTE)],
    )
    assert [(r.calls, r.key) for r in legacy.rate_limits or []] == [(50, RateLimitKey.USER)]
    got = admin.serving_endpoints.get("metered").ai_gateway
    assert got is not None and got.usage_tracking_config == AiGatewayUsageTrackingConfig(enabled=True)
    assert [(r.calls, r.key) for r in got.rate_limits or []] == [(50, AiGatewayRateLimitKey.USER)]
    assert bob.serving_endpoints.query("metered", dataframe_records=ROWS).predictions == [2.0]

    # an empty AI Gateway lifts the limits; deleting the endpoint forgets them
    assert not admin.serving_endpoints.put_ai_gateway("metered").rate_limits
    assert limits.get(resource) == () and admin.serving_endpoints.get("metered").ai_gateway is None
    admin.serving_endpoints.put(
        "metered", rate_limits=[RateLimit(calls=5, renewal_period=RateLimitRenewalPeriod.MINUTE)]
    )
    assert [(r.calls, r.key) for r in limits.get(resource)] == [(5, "endpoint")]
    admin.serving_endpoints.delete("metered")
    assert limits.get(resource) == ()


def test_ownership_gateway_and_limits_survive_a_restart(scorers: ScorerRegistry, tmp_path: Path) -> None:
    name = scorers.register("permkept", [1])
    settings = scorers.settings(tmp_path, auth={"required": True})
    gateway = AiGatewayConfig(
        rate_limits=[AiGatewayRateLimit(calls=1, key=AiGatewayRateLimitKey.ENDPOINT, renewal_period=MINUTE)]
    )
    with live(settings) as first:
        tokens = _tokens(first)
        secured = Secured(first, name, tokens)
        endpoint_id = secured.create("robot", "kept", ai_gateway=gateway)
        secured.ws("robot").serving_endpoints.update_permissions(
            endpoint_id, access_control_list=[_grant("bob", "CAN_QUERY")]
        )
    with live(settings) as second:
        secured = Secured(second, name, tokens)
        bob = secured.ws("bob")
        ep = bob.serving_endpoints.get("kept")
        assert ep.creator == "robot" and ep.permission_level == ServingEndpointDetailedPermissionLevel.CAN_QUERY
        assert ep.ai_gateway is not None and ep.ai_gateway.rate_limits == gateway.rate_limits
        assert _acl(bob.serving_endpoints.get_permissions(endpoint_id)) == {"robot": "CAN_MANAGE", "bob": "CAN_QUERY"}
        assert bob.serving_endpoints.query("kept", dataframe_records=ROWS).predictions == [2.0]
        with second.client(headers={"Authorization": f"Bearer {tokens['bob']}"}) as c:
            _throttled(c, "kept")


def test_an_app_built_without_a_gate_says_the_permissions_api_is_off(scorers: ScorerRegistry, tmp_path: Path) -> None:
    from server.main import build
    from server.rest.app import create_rest_app

    components = build(scorers.settings(tmp_path), mcp=False)
    app = create_rest_app(components.service, endpoints=components.endpoints)  # no gate: no identities, no ACLs
    server, thread, url = start_server(components, app)
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            for method in ("GET", "PUT", "PATCH"):
                r = c.request(method, f"{PERMS}/anything", json={"access_control_list": []})
                assert r.status_code == 501 and r.json()["error_code"] == "NOT_IMPLEMENTED", r.text
            assert c.get(f"{PERMS}/anything/permissionLevels").status_code == 501
            assert c.get("/api/2.0/serving-endpoints").json() == {"endpoints": []}
    finally:
        server.should_exit = True
        thread.join(timeout=30)
