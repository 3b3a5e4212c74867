"""Serving endpoint configs as Databricks writes them: ``served_entities`` (or the older ``served_models``) and
``traffic_config``, parsed and validated into immutable values, and rendered back with Databricks' field names.

Extension: ``entity_version`` may name an alias (``champion`` or ``@champion``) instead of a version number; such a
served entity follows the alias (hot swap) like ``/model/{name}/champion`` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.errors import InvalidInput

NAME = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
_WORKLOAD_SIZES = ("Small", "Medium", "Large")
_VERSION = re.compile(r"^\d+$")
_ALIAS = re.compile(r"^@?[A-Za-z0-9_\-]+$")
#: Served entity fields we keep and echo without acting on them.
_PASSTHROUGH = (
    "workload_type",
    "environment_vars",
    "min_provisioned_concurrency",
    "max_provisioned_concurrency",
    "instance_profile_arn",
    "burst_scaling_enabled",
)


def check_name(name: Any, what: str = "endpoint name", field_name: str = "name") -> str:
    """Validate an endpoint or served entity name (1-63 letters, digits, ``-``, ``_``)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidInput(
            f"{what} {name!r} is invalid: use 1 to 63 letters, digits, dashes and underscores", field=field_name
        )
    if what == "endpoint name" and name.startswith("databricks-"):
        raise InvalidInput("endpoint names starting with 'databricks-' are reserved", field=field_name)
    return name


@dataclass(frozen=True, slots=True)
class ServedEntity:
    """One model version (or alias) an endpoint serves."""

    name: str
    entity_name: str
    entity_version: str
    workload_size: str = "Small"
    scale_to_zero_enabled: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def model_uri(self) -> str:
        version = self.entity_version
        if _VERSION.fullmatch(version):
            return f"models:/{self.entity_name}/{version}"
        return f"models:/{self.entity_name}@{version.lstrip('@')}"

    @property
    def segment(self) -> str:
        """The ``version_or_alias`` path segment of ``/model/{name}/{segment}``."""
        return self.entity_version.lstrip("@")

    def to_input(self) -> dict[str, Any]:
        """The entity as it was given (for persistence)."""
        return {
            "name": self.name,
            "entity_name": self.entity_name,
            "entity_version": self.entity_version,
            "workload_size": self.workload_size,
            "scale_to_zero_enabled": self.scale_to_zero_enabled,
            **dict(self.extra),
        }


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """Served entities plus the traffic split (percentages summing to 100), at one ``config_version``."""

    served: tuple[ServedEntity, ...]
    routes: tuple[tuple[str, int], ...]
    version: int = 1
    auto_capture: Mapping[str, Any] | None = None
    """``auto_capture_config`` (inference table): catalog_name, schema_name, table_name_prefix, enabled."""

    def entity(self, name: str) -> ServedEntity | None:
        return next((e for e in self.served if e.name == name), None)

    def to_input(self) -> dict[str, Any]:
        """A config body ``parse_config`` reads back (for persistence)."""
        return {
            "served_entities": [e.to_input() for e in self.served],
            "traffic_config": {"routes": [{"served_model_name": n, "traffic_percentage": p} for n, p in self.routes]},
            "config_version": self.version,
            **({"auto_capture_config": dict(self.auto_capture)} if self.auto_capture is not None else {}),
        }

    def render(self, states: Mapping[str, tuple[str, str]], created_ms: int, creator: str) -> dict[str, Any]:
        """``EndpointCoreConfigOutput``: entities with their deployment state, in both current and legacy shape."""
        entities, models = [], []
        for e in self.served:
            state, message = states.get(e.name, ("DEPLOYMENT_CREATING", "waiting"))
            common = {
                "name": e.name,
                "workload_size": e.workload_size,
                "scale_to_zero_enabled": e.scale_to_zero_enabled,
                "state": {"deployment": state, "deployment_state_message": message},
                "creation_timestamp": created_ms,
                "creator": creator,
                **dict(e.extra),
            }
            entities.append({**common, "entity_name": e.entity_name, "entity_version": e.entity_version})
            models.append({**common, "model_name": e.entity_name, "model_version": e.entity_version})
        out: dict[str, Any] = {
            "served_entities": entities,
            "served_models": models,
            "traffic_config": {"routes": [{"served_model_name": n, "traffic_percentage": p} for n, p in self.routes]},
            "config_version": self.version,
        }
        if self.auto_capture is not None:
            out["auto_capture_config"] = dict(self.auto_capture)
        return out


def parse_config(body: Any, version: int = 1) -> EndpointConfig:
    """Validate an ``EndpointCoreConfigInput`` (the ``config`` of a create, or the body of an update).

    Without ``traffic_config`` the traffic is split evenly (the remainder to the first entities).

    Raises:
        InvalidInput: naming the offending field.
    """
    if not isinstance(body, Mapping):
        raise InvalidInput("config must be an object with served_entities (or served_models)", field="config")
    entities, models = body.get("served_entities"), body.get("served_models")
    if entities and models:
        raise InvalidInput("give served_entities or served_models, not both", field="served_models")
    given, legacy = (models, True) if models else (entities, False)
    if not isinstance(given, list) or not given:
        raise InvalidInput("config needs at least one served entity (served_entities)", field="served_entities")
    served = tuple(_entity(raw, i, legacy) for i, raw in enumerate(given))
    names = [e.name for e in served]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInput(f"served entity names must be unique; repeated: {duplicates}", field="served_entities")
    capture = _auto_capture(body.get("auto_capture_config"))
    return EndpointConfig(served, _routes(body.get("traffic_config"), names), version, capture)


_CAPTURE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _auto_capture(raw: Any) -> Mapping[str, Any] | None:
    """Databricks' ``auto_capture_config``: where the endpoint's inference table lives, and whether it is on."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidInput("auto_capture_config must be an object", field="auto_capture_config")
    out: dict[str, Any] = {"enabled": raw.get("enabled", True)}
    if not isinstance(out["enabled"], bool):
        raise InvalidInput("auto_capture_config.enabled must be a boolean", field="auto_capture_config.enabled")
    for key in ("catalog_name", "schema_name", "table_name_prefix"):
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not _CAPTURE_NAME.fullmatch(value):
            raise InvalidInput(
                f"auto_capture_config.{key} must be 1 to 128 letters, digits, '_' or '-'",
                field=f"auto_capture_config.{key}",
            )
        out[key] = value
    return out


def _entity(raw: Any, i: int, legacy: bool) -> ServedEntity:
    where = f"{'served_models' if legacy else 'served_entities'}[{i}]"
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{where} must be an object", field=where)
    if raw.get("external_model") or raw.get("foundation_model"):
        raise InvalidInput(f"{where}: external and foundation models are not served by modelport", field=where)
    name_key, version_key = ("model_name", "model_version") if legacy else ("entity_name", "entity_version")
    entity_name = raw.get(name_key)
    if not isinstance(entity_name, str) or not entity_name or len(entity_name) > 255:
        raise InvalidInput(
            f"{where}.{name_key} is required: the registered model name (1 to 255 characters)",
            field=f"{where}.{name_key}",
        )
    version = raw.get(version_key)
    if isinstance(version, float) and version.is_integer():  # JSON 3.0 is the integer 3
        version = int(version)
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version) if version >= 0 else None
    if not isinstance(version, str) or not (_VERSION.fullmatch(version) or _ALIAS.fullmatch(version)):
        raise InvalidInput(
            f"{where}.{version_key} is required: a version number (or an alias, e.g. 'champion')",
            field=f"{where}.{version_key}",
        )
    base = re.sub(r"[^A-Za-z0-9_-]", "_", entity_name.rsplit(".", 1)[-1])[:40] or "model"
    default_name = f"{base}-{version.lstrip('@')}"[:63]
    given = raw.get("name")
    name = check_name(default_name if given is None else given, "served entity name", f"{where}.name")
    size = raw.get("workload_size", "Small")
    scale = raw.get("scale_to_zero_enabled", False)
    if not isinstance(size, str) or not isinstance(scale, bool):
        raise InvalidInput(f"{where}: workload_size must be a string, scale_to_zero_enabled a boolean", field=where)
    if size.capitalize() not in _WORKLOAD_SIZES:
        raise InvalidInput(
            f"{where}.workload_size must be one of {', '.join(_WORKLOAD_SIZES)}, not {size[:40]!r}",
            field=f"{where}.workload_size",
        )
    size = size.capitalize()
    extra = {k: raw[k] for k in _PASSTHROUGH if k in raw}
    return ServedEntity(name, entity_name, version, size, scale, extra)


def _routes(traffic: Any, names: Sequence[str]) -> tuple[tuple[str, int], ...]:
    if traffic is None or traffic == {}:
        share, rest = divmod(100, len(names))
        return tuple((n, share + (1 if i < rest else 0)) for i, n in enumerate(names))
    raw = traffic.get("routes") if isinstance(traffic, Mapping) else None
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("traffic_config.routes must be a non-empty list", field="traffic_config.routes")
    routes: list[tuple[str, int]] = []
    for i, route in enumerate(raw):
        where = f"traffic_config.routes[{i}]"
        if not isinstance(route, Mapping):
            raise InvalidInput(f"{where} must be an object", field=where)
        name = route.get("served_model_name") or route.get("served_entity_name")
        pct = route.get("traffic_percentage")
        if name not in names:
            raise InvalidInput(f"{where} names served model {name!r}; served: {list(names)}", field=where)
        if not isinstance(pct, int) or isinstance(pct, bool) or not 0 <= pct <= 100:
            raise InvalidInput(f"{where}.traffic_percentage must be an integer from 0 to 100", field=where)
        routes.append((str(name), pct))
    total = sum(p for _, p in routes)
    if total != 100:
        raise InvalidInput(f"traffic percentages must sum to 100, not {total}", field="traffic_config.routes")
    if len({n for n, _ in routes}) != len(routes):
        raise InvalidInput("each served model may appear once in traffic_config.routes", field="traffic_config")
    return tuple(routes)
