"""Who is calling and what they may touch: ``Principal``, permission ``Level`` and ``Resource``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

PrincipalKind = Literal["user", "service_principal", "anonymous"]


class Level(IntEnum):
    """Databricks' serving endpoint permission levels, ordered: each includes the ones below it."""

    NONE = 0
    CAN_VIEW = 1
    """List, describe, read metrics and permissions."""
    CAN_QUERY = 2
    """Score (REST, v2, Arrow, Databricks data plane, MCP tool calls) + view."""
    CAN_MANAGE = 3
    """Update the config, delete, set permissions and rate limits + query."""

    @classmethod
    def parse(cls, text: str) -> Level:
        """``CAN_QUERY`` (any case; ``query`` works too); ``ValueError`` naming the levels otherwise."""
        key = text.strip().upper()
        key = key if key.startswith("CAN_") else f"CAN_{key}"
        if key not in ("CAN_VIEW", "CAN_QUERY", "CAN_MANAGE"):
            raise ValueError(f"unknown permission level {text!r}; use CAN_VIEW, CAN_QUERY or CAN_MANAGE")
        return cls[key]


ResourceKind = Literal["endpoint", "model"]


@dataclass(frozen=True, slots=True)
class Resource:
    """What a request touches: a Databricks serving endpoint, or a registered model (all its ``models:/`` URIs)."""

    kind: ResourceKind
    name: str

    def __str__(self) -> str:
        return f"{self.kind} '{self.name}'"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller (a user or a service principal), or ``ANONYMOUS`` when auth is off.

    ``grants`` come with a personal access token (target → level; a target is an endpoint or model name, ``*`` for
    all, ``models:/NAME`` for a model only, ``endpoints/NAME`` for an endpoint only). ACLs set through the
    permissions API are looked up by name and ``groups`` (``server/ops/acl.py``).
    """

    name: str
    kind: PrincipalKind = "user"
    groups: frozenset[str] = frozenset()
    admin: bool = False
    grants: Mapping[str, Level] = field(default_factory=dict)
    scopes: frozenset[str] = frozenset()
    expires_at: float | None = None
    """Epoch seconds after which the credential that named this principal is no longer valid."""
    via: Literal["token", "oauth", "none"] = "token"
    issuer: str | None = None

    def granted(self, resource: Resource) -> Level:
        """The level the credential's own grants give on ``resource``."""
        grants = self.grants
        if not grants:
            return Level.NONE
        prefixed = f"models:/{resource.name}" if resource.kind == "model" else f"endpoints/{resource.name}"
        return max(grants.get(resource.name, Level.NONE), grants.get(prefixed, Level.NONE), grants.get("*", Level.NONE))


ANONYMOUS = Principal("anonymous", kind="anonymous", admin=True, via="none")
"""The caller when auth is off (the embedded demo on 127.0.0.1): may do everything."""
