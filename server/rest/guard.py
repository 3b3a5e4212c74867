"""Who may call which REST route: the REST door's side of the shared ``Gate`` (identity → permission → rate limit).

One table names, for every route, the resource it touches and the level it needs. The FastAPI routes run it as an
app-wide dependency (not middleware: the scoring fast path stays on); the fast path calls ``enter`` itself before
reading the body. The principal lands in the request state (``principal``) for handlers that filter listings and for
the access log. ``/mcp`` is guarded by the MCP SDK's own auth pieces over the same ``Gate`` (``tools/auth.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fastapi import Request

from server.errors import ModelNotFound
from server.ops.gate import Gate, bearer
from server.ops.identity import Level, Principal, Resource

Target = Literal["model", "endpoint", "endpoint_id", "single", "none"]


@dataclass(frozen=True, slots=True)
class Rule:
    """What a route needs. ``access``: ``public`` (no check), ``optional`` (identify when credentials are given;
    handlers show less without them), ``authenticated`` (any valid caller; handlers filter or check themselves), or
    ``guarded`` (``level`` on the resource named by the path parameter ``param``)."""

    access: Literal["public", "optional", "authenticated", "guarded"]
    level: Level = Level.NONE
    target: Target = "none"
    param: str = "name"


PUBLIC = Rule("public")
OPTIONAL = Rule("optional")
AUTHENTICATED = Rule("authenticated")


def _model(level: Level) -> Rule:
    return Rule("guarded", level, "model")


def _endpoint(level: Level, target: Target = "endpoint", param: str = "name") -> Rule:
    return Rule("guarded", level, target, param)


_V, _Q, _M = Level.CAN_VIEW, Level.CAN_QUERY, Level.CAN_MANAGE
_EP = "/api/2.0/serving-endpoints"
_PERM = "/api/2.0/permissions/serving-endpoints/{serving_endpoint_id}"

RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/ping"): PUBLIC,
    ("GET", "/health"): OPTIONAL,
    ("GET", "/v2/health/live"): PUBLIC,
    ("GET", "/v2/health/ready"): PUBLIC,
    ("GET", "/.well-known/databricks-config"): PUBLIC,
    ("POST", "/webhooks/mlflow"): PUBLIC,  # authenticated by its HMAC signature
    ("GET", "/openapi.json"): OPTIONAL,
    ("GET", "/metrics"): OPTIONAL,  # the handler checks: admin, a '*=CAN_VIEW' grant, or auth.public_metrics
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/assets/{asset}"): PUBLIC,
    ("GET", "/dashboard"): PUBLIC,  # the page; its feed shows only what the caller may view
    ("GET", "/dashboard/assets/{name}"): PUBLIC,
    ("GET", "/dashboard/feed.json"): AUTHENTICATED,
    ("POST", "/invocations"): Rule("guarded", _Q, "single"),
    ("POST", "/model/{name}/{version_or_alias}/invocations"): _model(_Q),
    ("GET", "/models/{name}"): _model(_V),
    ("GET", "/models/{name}/{version_or_alias}"): _model(_V),
    ("GET", "/v2/models/{name}"): _model(_V),
    ("GET", "/v2/models/{name}/versions/{version}"): _model(_V),
    ("GET", "/v2/models/{name}/ready"): _model(_V),
    ("GET", "/v2/models/{name}/versions/{version}/ready"): _model(_V),
    ("GET", "/v2/models/{name}/config"): _model(_V),
    ("GET", "/v2/models/{name}/versions/{version}/config"): _model(_V),
    ("POST", "/v2/models/{name}/infer"): _model(_Q),
    ("POST", "/v2/models/{name}/versions/{version}/infer"): _model(_Q),
    ("GET", _EP + "/{name}"): _endpoint(_V),
    ("GET", _EP + "/{name}/openapi"): _endpoint(_V),
    ("GET", _EP + "/{name}/metrics"): _endpoint(_V),
    ("PUT", _EP + "/{name}/config"): _endpoint(_M),
    ("DELETE", _EP + "/{name}"): _endpoint(_M),
    ("PATCH", _EP + "/{name}/tags"): _endpoint(_M),
    ("PUT", _EP + "/{name}/ai-gateway"): _endpoint(_M),
    ("PUT", _EP + "/{name}/rate-limits"): _endpoint(_M),
    ("GET", _PERM): _endpoint(_V, "endpoint_id", "serving_endpoint_id"),
    ("PUT", _PERM): _endpoint(_M, "endpoint_id", "serving_endpoint_id"),
    ("PATCH", _PERM): _endpoint(_M, "endpoint_id", "serving_endpoint_id"),
    ("GET", _PERM + "/permissionLevels"): _endpoint(_V, "endpoint_id", "serving_endpoint_id"),
    ("POST", "/serving-endpoints/{name}/invocations"): _endpoint(_Q),
    ("POST", "/serving-endpoints/{name}/served-models/{served}/invocations"): _endpoint(_Q),
}
"""(method, route path) → rule. Routes not listed need an authenticated caller (safe default)."""


class RestGuard:
    """Applies ``RULES`` with a ``Gate``.

    Args:
        gate: the shared identity/permission/rate-limit gate.
        single_model: the name of the only served model (for ``/invocations``); raises ``ModelNotFound``.
        endpoint_name: an endpoint's name from its id or name (for the permissions API); raises ``ModelNotFound``.
    """

    def __init__(
        self,
        gate: Gate,
        single_model: Callable[[], str],
        endpoint_name: Callable[[str], str] | None = None,
    ) -> None:
        self.gate = gate
        self.single_model = single_model
        self.endpoint_name = endpoint_name
        self._models: dict[str, Resource] = {}

    def rule(self, method: str, route_path: str) -> Rule:
        return RULES.get((method, route_path), AUTHENTICATED)

    async def check(self, request: Request) -> None:
        """The app-wide FastAPI dependency: apply the route's rule, keep the principal in the request state."""
        route = request.scope.get("route")
        path = getattr(route, "path", request.url.path)
        method = "GET" if request.method == "HEAD" else request.method
        rule = self.rule(method, path)
        if rule.access == "public":
            return
        authorization = request.headers.get("authorization")
        state = request.scope.setdefault("state", {})
        if rule.access == "optional" and bearer(authorization) is None and self.gate.enabled:
            return
        if rule.target == "endpoint_id":  # identify before looking the id up: no existence oracle for strangers
            principal = await self.gate.identify(authorization)
            state["principal"], state["caller"] = principal.name, principal
            self.gate.check(principal, self.resource(rule, request.path_params), rule.level)
            return
        resource = self.resource(rule, request.path_params)
        await self.gate.enter(authorization, resource, rule.level, state)

    def resource(self, rule: Rule, params: dict[str, str]) -> Resource | None:
        if rule.target == "model":
            return Resource("model", params[rule.param])
        if rule.target == "endpoint":
            return Resource("endpoint", params[rule.param])
        if rule.target == "endpoint_id":
            if self.endpoint_name is None:
                raise ModelNotFound("serving endpoints are not enabled on this server", field=rule.param)
            return Resource("endpoint", self.endpoint_name(params[rule.param]))
        if rule.target == "single":
            return Resource("model", self.single_model())
        return None

    async def enter_model(self, state: dict[str, object], authorization: bytes | None, model: str | None) -> None:
        """The fast path's check (scoring a model; ``None`` = the single served model) before it reads the body."""
        gate = self.gate
        if not gate.enabled and not gate.limits.active:
            return
        name = model if model is not None else self.single_model()
        resource = self._models.get(name)
        if resource is None:
            if len(self._models) > 10_000:
                self._models.clear()
            resource = self._models[name] = Resource("model", name)
        await gate.enter(authorization, resource, Level.CAN_QUERY, state)


def caller(request: Request) -> Principal | None:
    """The principal the guard identified for this request (``None`` for public routes without credentials)."""
    found = request.scope.get("state", {}).get("caller")
    return found if isinstance(found, Principal) else None
