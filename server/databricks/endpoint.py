"""One serving endpoint's definition and rollout state, rendered as Databricks' ``ServingEndpointDetailed``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from server.databricks.config import EndpointConfig
from server.databricks.routing import TrafficRouter

CREATOR = "modelport"
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
            "config": None if self.config is None else self.config.to_input(),
            "pending": None if self.pending is None else self.pending.to_input(),
        }

    def render(self) -> dict[str, Any]:
        """``ServingEndpointDetailed``."""
        out: dict[str, Any] = {
            "name": self.name,
            "id": self.id,
            "creator": CREATOR,
            "creation_timestamp": self.created_ms,
            "last_updated_timestamp": self.updated_ms,
            "state": {
                "ready": "READY" if self.config is not None and self.healthy else "NOT_READY",
                "config_update": self.update,
            },
            "tags": [{"key": k, "value": v} for k, v in sorted(self.tags.items())],
            "permission_level": "CAN_MANAGE",
            "route_optimized": self.route_optimized,
        }
        if self.description is not None:
            out["description"] = self.description
        if self.config is not None:
            out["config"] = self.config.render(self.states.get(self.config.version, {}), self.created_ms, CREATOR)
        if self.pending is not None:
            pending = self.pending.render(self.states.get(self.pending.version, {}), self.created_ms, CREATOR)
            out["pending_config"] = {**pending, "start_time": self.pending_started_ms}
        return out
