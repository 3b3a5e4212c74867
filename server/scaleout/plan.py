"""Replica counts and Serve options from the settings and from Databricks endpoint configs (no Ray import).

Databricks sizes a served entity by concurrency: ``Small`` 4 concurrent requests, ``Medium`` 8-16, ``Large``
16-64, and ``scale_to_zero_enabled`` lets it go to none. One modelport replica holds ~64 concurrent 1-row
requests at full speed on one core, so the sizes map to replica ranges (a replica per 16 concurrent requests):
Small 1, Medium 1-2, Large 1-4; scale to zero sets the minimum to 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from server.settings import ReplicaRange

WORKLOAD_REPLICAS = {"Small": (1, 1), "Medium": (1, 2), "Large": (1, 4)}
"""Databricks ``workload_size`` → (min, max) replicas."""


@dataclass(frozen=True, slots=True)
class ReplicaPlan:
    """How many replicas of the server may run, and what each holds."""

    min_replicas: int
    max_replicas: int
    target_ongoing_requests: float = 32.0
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    upscale_delay_s: float = 3.0
    downscale_delay_s: float = 30.0
    graceful_shutdown_s: float = 20.0

    @classmethod
    def from_settings(cls, s: ReplicaRange) -> ReplicaPlan:
        return cls(
            min_replicas=s.min_replicas,
            max_replicas=max(s.max_replicas, s.min_replicas, 1),
            target_ongoing_requests=s.target_ongoing_requests,
            num_cpus=s.num_cpus,
            num_gpus=s.num_gpus,
            upscale_delay_s=s.upscale_delay_s,
            downscale_delay_s=s.downscale_delay_s,
            graceful_shutdown_s=s.graceful_shutdown_s,
        )

    def widened(self, entities: Iterable[tuple[str, bool]]) -> ReplicaPlan:
        """The plan covering Databricks served entities too: ``(workload_size, scale_to_zero_enabled)`` each.

        Every replica serves every model, so the range is the widest asked for: the largest maximum, and a
        minimum of 0 only when every entity (and the settings) allow scaling to zero.
        """
        low, high = self.min_replicas, self.max_replicas
        for size, to_zero in entities:  # each entity asks for its range (from 0 when it scales to zero)
            entity_low, entity_high = WORKLOAD_REPLICAS.get(size.capitalize(), (1, 1))
            low, high = max(low, 0 if to_zero else entity_low), max(high, entity_high)
        return replace(self, min_replicas=low, max_replicas=high)

    @classmethod
    def for_entities(cls, base: ReplicaRange, entities: Iterable[tuple[str, bool]]) -> ReplicaPlan:
        """The plan of one Databricks endpoint's own replicas: its entities' sizes alone decide the range (Small 1,
        Medium 1-2, Large 1-4; 0 minimum when every entity scales to zero); CPUs, GPUs and delays from ``base``."""
        sizes = [(WORKLOAD_REPLICAS.get(size.capitalize(), (1, 1)), to_zero) for size, to_zero in entities]
        if not sizes:
            return replace(cls.from_settings(base), min_replicas=1, max_replicas=1)
        low = 0 if all(to_zero for _, to_zero in sizes) else max(r[0] for r, _ in sizes)
        return replace(cls.from_settings(base), min_replicas=low, max_replicas=max(r[1] for r, _ in sizes))

    @property
    def initial_replicas(self) -> int:
        return max(self.min_replicas, 1)

    def autoscaling_config(self) -> dict[str, Any]:
        """Serve's ``autoscaling_config`` with modelport's policy (``server.scaleout.policy``)."""
        return {
            "min_replicas": self.min_replicas,
            "initial_replicas": self.initial_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
            "downscale_to_zero_delay_s": self.downscale_delay_s,
            "metrics_interval_s": 0.5,
            "look_back_period_s": 2.0,
            "policy": {"policy_function": "server.scaleout.policy:ongoing_requests"},
        }

    def actor_options(self) -> dict[str, Any]:
        """Serve's ``ray_actor_options``: what Ray reserves for each replica (fractional GPUs share one)."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            options["num_gpus"] = self.num_gpus
        return options


def databricks_entities(settings: Any) -> list[tuple[str, bool]]:
    """``(workload_size, scale_to_zero_enabled)`` of every served entity of the persisted Databricks endpoints."""
    return [entity for _, entities in databricks_endpoints(settings) for entity in entities]


def databricks_endpoints(settings: Any) -> list[tuple[str, list[tuple[str, bool]]]]:
    """Each persisted Databricks endpoint's name and its served entities' ``(workload_size, scale_to_zero_enabled)``."""
    from server.databricks.store import EndpointStore

    if not settings.endpoints_db.exists():
        return []
    store = EndpointStore(settings.endpoints_db)
    try:
        records = store.load()
    finally:
        store.close()
    return [(str(record.get("name")), entities_of(record)) for record in records]


def entities_of(record: Any) -> list[tuple[str, bool]]:
    """``(workload_size, scale_to_zero_enabled)`` of the served entities of one endpoint record (both configs)."""
    found: list[tuple[str, bool]] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if "workload_size" in value:
                found.append((str(value["workload_size"]), bool(value.get("scale_to_zero_enabled", False))))
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(record)
    return found
