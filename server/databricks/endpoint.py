"""One serving endpoint's definition and rollout state, rendered as Databricks' ``ServingEndpointDetailed``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from server.databricks.config import EndpointConfig
from server.databricks.gateway import AiGateway
from server.databricks.routing import TrafficRouter

CREATOR = "modelport"
"""The ``creator`` of endpoints created without an identity (auth off)."""
States = dict[str, tuple[str, str]]
"""Served entity name → (``DEPLOYMENT_*`` state, message)."""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(eq=False)
class Endpoint:
    """One serving endpoint: what was asked for, and where its rollout stands."""

    name: str
    id: str
    created_ms: int
    updated_ms: int
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    route_optimized: bool = False
    creator: str = CREATOR
    ai_gateway: AiGateway = field(default_factory=AiGateway)
    config: EndpointConfig | None = None
    pending: EndpointConfig | None = None
    pending_started_ms: int | None = None
    update: str = "NOT_UPDATING"
    healthy: bool = False
    states: dict[int, States] = field(default_factory=dict)
    """Served entity states per config version."""
    router: TrafficRouter | None = None

    @property
    def owner(self) -> str:
        return f"endpoint:{self.name}"

    def record(self) -> dict[str, Any]:
        """What is persisted."""
        return {
            "name": self.name,
            "id": self.id,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
            "description": self.description,
            "tags": self.tags,
            "route_optimized": self.route_optimized,
            "creator": self.creator,
            "ai_gateway": None if self.ai_gateway.empty else self.ai_gateway.render(),
            "config": None if self.config is None else self.config.to_input(),
            "pending": None if self.pending is None else self.pending.to_input(),
        }

    def render(self, permission_level: str = "CAN_MANAGE") -> dict[str, Any]:
        """``ServingEndpointDetailed``; ``permission_level`` is the caller's."""
        out: dict[str, Any] = {
            "name": self.name,
            "id": self.id,
            "creator": self.creator,
            "creation_timestamp": self.created_ms,
            "last_updated_timestamp": self.updated_ms,
            "state": {
                "ready": "READY" if self.config is not None and self.healthy else "NOT_READY",
                "config_update": self.update,
            },
            "tags": [{"key": k, "value": v} for k, v in sorted(self.tags.items())],
            "permission_level": permission_level,
            "route_optimized": self.route_optimized,
        }
        if self.description is not None:
            out["description"] = self.description
        if not self.ai_gateway.empty:
            out["ai_gateway"] = self.ai_gateway.render()
        if self.config is not None:
            out["config"] = self.config.render(self.states.get(self.config.version, {}), self.created_ms, self.creator)
        if self.pending is not None:
            pending = self.pending.render(self.states.get(self.pending.version, {}), self.created_ms, self.creator)
            out["pending_config"] = {**pending, "start_time": self.pending_started_ms}
        return out
