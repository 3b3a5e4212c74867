"""What runs as which Ray Serve application under ``modelport serve --ray`` (no Ray import).

A *unit* is one Serve application: its replicas' settings, their range, and the front's routes to it.

- The general unit serves every model, the Databricks API and every endpoint, MCP, listings, the dashboard: all
  that no other unit takes.
- A model with its own ``scaleout`` (every model with ``scaleout.per_model``; front ingress) gets a unit whose
  replicas load that model alone; the front sends its ``/model/<name>/<version or alias>/`` paths there.
- Each Databricks endpoint (front ingress) gets a unit whose replicas restore that endpoint alone, sized by its
  served entities (``workload_size``, ``scale_to_zero_enabled``); the front sends ``/serving-endpoints/<name>/``
  there. Endpoints persisted at start get theirs at start, endpoints created later get one while running.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from registry import ModelRef
from server.scaleout.plan import ReplicaPlan, databricks_endpoints, databricks_entities
from server.settings import DeploymentSpec, Settings

GENERAL = "general"
"""The general unit's backend."""


@dataclass(frozen=True)
class Unit:
    """One Serve application: what its replicas serve, how many, and the front's routes to it."""

    app: str
    backend: str
    """The front's backend for it (letters, digits, ``_``)."""
    settings: Settings
    plan: ReplicaPlan
    routes: tuple[str, ...] = ()
    """Path prefixes the front sends to this unit (the general unit takes the rest)."""
    endpoints: tuple[str, ...] | None = None
    """The Databricks endpoints its replicas restore and follow: ``None`` all, ``()`` none."""
    endpoint: str | None = None
    """The Databricks endpoint it serves alone (an endpoint unit)."""


def units(settings: Settings, name: str) -> list[Unit]:
    """The general unit, then one per model with its own ``scaleout``, then one per persisted Databricks endpoint
    (the last two behind the front only; with ``ingress: direct`` the general unit serves all, widened to the
    endpoints' sizes)."""
    if settings.scaleout.ingress != "front":
        plan = ReplicaPlan.from_settings(settings.scaleout).widened(databricks_entities(settings))
        return [Unit(name, GENERAL, replica_settings(settings, plan), plan)]
    plan = ReplicaPlan.from_settings(settings.scaleout)
    out = [Unit(name, GENERAL, replica_settings(settings, plan), plan)]
    own = [spec for spec in settings.all_deployments() if spec.scaleout is not None or settings.scaleout.per_model]
    for i, spec in enumerate(own, 1):
        ref = ModelRef.parse(spec.model)
        plan = ReplicaPlan.from_settings(spec.scaleout or settings.scaleout)
        alone = settings.model_copy(update={"deployments": (spec,), "models": ()})
        app = f"{name}-{i}-{ref.name}"
        out.append(Unit(app, f"model_{i}", replica_settings(alone, plan), plan, model_routes(spec), ()))
    for i, (endpoint, entities) in enumerate(databricks_endpoints(settings), 1):
        out.append(endpoint_unit(settings, name, endpoint, entities, f"endpoint_{i}"))
    return out


def endpoint_unit(settings: Settings, name: str, endpoint: str, entities: Any, backend: str) -> Unit:
    """The unit serving Databricks endpoint ``endpoint`` alone, sized by its entities."""
    plan = ReplicaPlan.for_entities(settings.scaleout, entities)
    alone = settings.model_copy(update={"deployments": (), "models": ()})
    routes = (f"/serving-endpoints/{quote(endpoint, safe='')}/",)
    app = f"{name}-endpoint-{endpoint}"
    return Unit(app, backend, replica_settings(alone, plan), plan, routes, (endpoint,), endpoint)


def model_routes(spec: DeploymentSpec) -> tuple[str, ...]:
    """The scoring paths of one model deployment: ``/model/<name>/<version or alias>/``."""
    ref = ModelRef.parse(spec.model)
    return (f"/model/{quote(ref.name, safe='')}/{ref.version or ref.alias}/",)


def replica_settings(settings: Settings, plan: ReplicaPlan) -> Settings:
    """What each replica runs with: absolute paths (Ray workers have their own cwd), ORT threads = its CPUs."""
    update: dict[str, Any] = {"state_dir": Path(settings.state_dir).resolve()}
    for key in ("ssl_certfile", "ssl_keyfile"):
        value = getattr(settings, key)
        if value is not None:
            update[key] = Path(value).resolve()
    if settings.intra_op_threads is None and plan.num_cpus >= 1:
        update["intra_op_threads"] = int(plan.num_cpus)
    return settings.model_copy(update=update)
