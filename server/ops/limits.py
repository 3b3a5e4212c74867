"""Rate limits as Databricks AI Gateway writes them (``{calls, key: user|endpoint, renewal_period: minute}``),
enforced by a token bucket per key written here (~0.3 µs per hit).

``Limiter`` is the seam for a limit shared across replicas (e.g. Redis with the ``limits`` package); the default
``LocalLimiter`` keeps buckets in this process.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from server.errors import InvalidInput
from server.ops.identity import Resource

_PERIODS = {"minute": 60.0}


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``calls`` per ``renewal_period`` for each user (``key=user``) or for the whole endpoint (``key=endpoint``)."""

    calls: int
    key: Literal["user", "endpoint"] = "user"
    renewal_period: Literal["minute"] = "minute"

    @property
    def per_second(self) -> float:
        return self.calls / _PERIODS[self.renewal_period]

    def as_json(self) -> dict[str, Any]:
        return {"calls": self.calls, "key": self.key, "renewal_period": self.renewal_period}


def parse_rate_limits(
    raw: Any, field: str = "rate_limits", *, default_key: Literal["user", "endpoint"] = "user"
) -> tuple[RateLimit, ...]:
    """Databricks' ``rate_limits`` list; ``InvalidInput`` naming the bad entry. A field given as ``null`` is absent."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidInput(f"{field} must be a list of {{calls, key, renewal_period}} objects", field=field)
    limits = []
    for i, item in enumerate(raw):
        where = f"{field}[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidInput(f"{where} must be an object", field=where)
        calls = item.get("calls")
        key = item.get("key") if item.get("key") is not None else default_key
        period = item.get("renewal_period") if item.get("renewal_period") is not None else "minute"
        if calls is None:
            raise InvalidInput(f"{where}.calls is required", field=f"{where}.calls")
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 0:
            raise InvalidInput(f"{where}.calls must be a non-negative integer", field=f"{where}.calls")
        if key not in ("user", "endpoint"):
            raise InvalidInput(f"{where}.key must be 'user' or 'endpoint'", field=f"{where}.key")
        if period not in _PERIODS:
            raise InvalidInput(f"{where}.renewal_period must be 'minute'", field=f"{where}.renewal_period")
        limits.append(RateLimit(calls, key, "minute"))  # the only period there is (checked above)
    return tuple(limits)


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second; ``take()`` is 0.0 or the seconds until one is free."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.stamp = now

    def take(self, now: float) -> float:
        tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return float("inf") if self.rate <= 0 else (1.0 - tokens) / self.rate


class Limiter(Protocol):
    """Takes one call from the bucket ``key`` of ``limit``; returns 0.0, or the seconds until the next is allowed."""

    def hit(self, key: tuple[Any, ...], limit: RateLimit) -> float: ...


class LocalLimiter:
    """Buckets in this process (one per key and limit).

    ``share`` is the part of each limit this process enforces: 1.0 alone; ``1/N`` when N replicas behind one
    balancer share the traffic (``server.scaleout`` sets it from the live replica count), so that together they
    allow about the limit. A limit above zero keeps at least one call per period on each replica.
    """

    def __init__(self) -> None:
        self._buckets: dict[tuple[Any, ...], TokenBucket] = {}
        self.share = 1.0

    def hit(self, key: tuple[Any, ...], limit: RateLimit) -> float:
        now = time.monotonic()
        capacity = limit.calls * self.share
        if limit.calls > 0:
            capacity = max(1.0, capacity)
        rate = limit.per_second * self.share
        bucket = self._buckets.get(key)
        if bucket is None or bucket.capacity != capacity or bucket.rate != rate:
            bucket = self._buckets[key] = TokenBucket(capacity, rate, now)
        return bucket.take(now)


class LimitTable:
    """The rate limits of each resource: endpoints (AI Gateway, set at run time) and models (YAML settings)."""

    def __init__(self, limiter: Limiter | None = None) -> None:
        self.limiter: Limiter = limiter or LocalLimiter()
        self._limits: dict[Resource, tuple[RateLimit, ...]] = {}

    @property
    def active(self) -> bool:
        """Whether any resource has a rate limit (the fast path skips the gate when auth is off and none has)."""
        return bool(self._limits)

    def set(self, resource: Resource, limits: Iterable[RateLimit]) -> None:
        limits = tuple(limits)
        if limits:
            self._limits[resource] = limits
        else:
            self._limits.pop(resource, None)

    def get(self, resource: Resource) -> tuple[RateLimit, ...]:
        return self._limits.get(resource, ())

    def hit(self, resource: Resource, principal: str) -> float:
        """0.0 when every limit of ``resource`` lets ``principal`` through; else the seconds to wait."""
        limits = self._limits.get(resource)
        if not limits:
            return 0.0
        wait = 0.0
        for i, limit in enumerate(limits):
            key = (resource, i, principal) if limit.key == "user" else (resource, i)
            wait = max(wait, self.limiter.hit(key, limit))
        return wait
