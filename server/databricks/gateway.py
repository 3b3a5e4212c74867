"""An endpoint's AI Gateway config as Databricks writes it (``PUT .../ai-gateway``, ``ai_gateway`` of a create), and
the legacy ``rate_limits`` (``PUT .../rate-limits``), parsed and validated into an immutable value.

modelport acts on ``rate_limits`` (``{calls, key: user|endpoint, renewal_period: minute}``; ``key`` defaults to
``endpoint`` as on Databricks), enforced per endpoint by the gate's ``LimitTable``. ``usage_tracking_config``,
``inference_table_config`` and ``fallback_config`` are kept and echoed but not acted on. ``guardrails`` are refused
when they enable a filter (modelport does not enforce them; accepting them silently would pretend it does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from server.errors import InvalidInput
from server.ops.limits import RateLimit, parse_rate_limits

_KEPT = ("usage_tracking_config", "inference_table_config", "fallback_config", "guardrails")
_FIELDS = frozenset((*_KEPT, "rate_limits"))
_LIMIT_FIELDS = frozenset(("calls", "key", "renewal_period"))


@dataclass(frozen=True, slots=True)
class AiGateway:
    """Rate limits (enforced) plus the AI Gateway sections modelport keeps and echoes only."""

    rate_limits: tuple[RateLimit, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.rate_limits and not self.extra

    def with_rate_limits(self, limits: tuple[RateLimit, ...]) -> AiGateway:
        return replace(self, rate_limits=limits)

    def render(self) -> dict[str, Any]:
        """``AiGatewayConfig`` (also the ``PUT .../ai-gateway`` answer, and what is persisted)."""
        out: dict[str, Any] = {k: self.extra[k] for k in _KEPT if k in self.extra}
        if self.rate_limits:
            out["rate_limits"] = render_rate_limits(self.rate_limits)
        return out


def render_rate_limits(limits: tuple[RateLimit, ...]) -> list[dict[str, Any]]:
    return [limit.as_json() for limit in limits]


def parse_ai_gateway(body: Any, prefix: str = "") -> AiGateway:
    """An ``AiGatewayConfig`` (the body of ``PUT .../ai-gateway``, or a create's ``ai_gateway`` with
    ``prefix="ai_gateway."``).

    Raises:
        InvalidInput: naming the offending field.
    """
    where = prefix.rstrip(".") or "body"
    if body is None:
        return AiGateway()
    if not isinstance(body, Mapping):
        raise InvalidInput(f"{where} must be an object (rate_limits, usage_tracking_config, ...)", field=where)
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidInput(
            f"unknown AI Gateway field(s) {unknown}; known: {sorted(_FIELDS)}", field=f"{prefix}{unknown[0]}"
        )
    extra: dict[str, Any] = {}
    for key in _KEPT:
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise InvalidInput(f"{prefix}{key} must be an object", field=f"{prefix}{key}")
        extra[key] = dict(value)
    if "guardrails" in extra:
        _refuse_guardrails(extra["guardrails"], f"{prefix}guardrails")
    return AiGateway(parse_limits(body.get("rate_limits"), f"{prefix}rate_limits"), extra)


def parse_limits(raw: Any, field_name: str = "rate_limits") -> tuple[RateLimit, ...]:
    """A ``rate_limits`` list: AI Gateway's, or the legacy endpoint rate limits (the same shape for what is supported).

    ``key`` defaults to ``endpoint`` (Databricks' default); per-group, per-service-principal and token-count limits
    are refused with a message that says so.
    """
    for i, item in enumerate(raw if isinstance(raw, list) else ()):
        if not isinstance(item, Mapping):
            continue  # parse_rate_limits names it
        where = f"{field_name}[{i}]"
        if item.get("tokens") is not None:
            raise InvalidInput(
                f"{where}.tokens: token-count limits are not supported; use calls", field=f"{where}.tokens"
            )
        if item.get("principal") is not None or item.get("key") in ("user_group", "service_principal"):
            raise InvalidInput(
                f"{where}: per-group and per-service-principal limits are not supported; use key 'user' or 'endpoint'",
                field=f"{where}.key",
            )
        unknown = sorted(k for k in set(item) - _LIMIT_FIELDS - {"tokens", "principal"} if item[k] is not None)
        if unknown:
            raise InvalidInput(
                f"{where} has unknown field(s) {unknown}; a rate limit is {{calls, key, renewal_period}}",
                field=f"{where}.{unknown[0]}",
            )
    return parse_rate_limits(raw, field_name, default_key="endpoint")


def _refuse_guardrails(guardrails: Mapping[str, Any], where: str) -> None:
    for side in ("input", "output"):
        params = guardrails.get(side)
        if params is None:
            continue
        if not isinstance(params, Mapping):
            raise InvalidInput(f"{where}.{side} must be an object", field=f"{where}.{side}")
        pii = params.get("pii")
        behavior = pii.get("behavior") if isinstance(pii, Mapping) else None
        filtering = behavior not in (None, "NONE")
        if filtering or params.get("safety") or params.get("invalid_keywords") or params.get("valid_topics"):
            raise InvalidInput(
                f"{where}.{side}: AI guardrails (safety, PII, keyword and topic filters) are not enforced by "
                "modelport; remove them or disable them",
                field=f"{where}.{side}",
            )
