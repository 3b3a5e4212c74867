"""Databricks' permissions API for serving endpoints, as values: ``access_control_list`` request bodies parsed into
``AclEntry`` values (``server/ops/acl.py``), and the ``ServingEndpointPermissions`` and permission-levels answers.

Request (``PUT`` replaces, ``PATCH`` adds or changes)::

    {"access_control_list": [{"user_name": "alice", "permission_level": "CAN_QUERY"},
                             {"group_name": "users", "permission_level": "CAN_VIEW"}]}

Answer::

    {"object_id": "/serving-endpoints/<id>", "object_type": "serving-endpoint",
     "access_control_list": [{"user_name": "alice",
                              "all_permissions": [{"permission_level": "CAN_QUERY", "inherited": false}]}]}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from server.errors import InvalidInput
from server.ops.acl import PRINCIPAL_TYPES, AclEntry, PrincipalType
from server.ops.identity import Level, Principal

OBJECT_TYPE = "serving-endpoint"
_LEVELS = ("CAN_MANAGE", "CAN_QUERY", "CAN_VIEW")

PERMISSION_LEVELS: tuple[dict[str, str], ...] = (
    {
        "permission_level": "CAN_MANAGE",
        "description": "Can update the endpoint's config, AI Gateway and rate limits, tags and permissions, delete "
        "it, query and view it",
    },
    {"permission_level": "CAN_QUERY", "description": "Can query the endpoint and view it"},
    {"permission_level": "CAN_VIEW", "description": "Can list and view the endpoint and its permissions"},
)
"""``GET .../permissionLevels``' ``permission_levels``, highest first."""


def parse_acl(body: Any) -> list[AclEntry]:
    """The ``access_control_list`` of a ``PUT`` or ``PATCH`` body (missing or empty: no entries).

    A principal named twice gets the higher of its levels (Databricks applies the highest permission).

    Raises:
        InvalidInput: naming the offending field (``access_control_list[i].permission_level``, ...).
    """
    if not isinstance(body, Mapping):
        raise InvalidInput("request body must be a JSON object with access_control_list", field="body")
    unknown = sorted(set(body) - {"access_control_list"})
    if unknown:
        raise InvalidInput(f"unknown field(s) {unknown}; the body has access_control_list only", field=unknown[0])
    raw = body.get("access_control_list")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidInput(
            "access_control_list must be a list of {user_name|service_principal_name|group_name, permission_level}",
            field="access_control_list",
        )
    levels: dict[tuple[PrincipalType, str], Level] = {}
    for i, item in enumerate(raw):
        entry = _entry(item, f"access_control_list[{i}]")
        key = (entry.principal_type, entry.principal)
        levels[key] = max(levels.get(key, Level.NONE), entry.level)
    return [AclEntry(t, p, lvl) for (t, p), lvl in levels.items()]


def _entry(item: Any, where: str) -> AclEntry:
    if not isinstance(item, Mapping):
        raise InvalidInput(f"{where} must be an object", field=where)
    unknown = sorted(set(item) - {*PRINCIPAL_TYPES, "permission_level", "display_name"})
    if unknown:
        raise InvalidInput(f"{where} has unknown field(s) {unknown}", field=f"{where}.{unknown[0]}")
    named = [t for t in PRINCIPAL_TYPES if item.get(t) is not None]
    if len(named) != 1:
        raise InvalidInput(
            f"{where} must name exactly one of user_name, service_principal_name or group_name", field=where
        )
    principal_type = named[0]
    principal = item[principal_type]
    if not isinstance(principal, str) or not principal.strip() or len(principal) > 256:
        raise InvalidInput(f"{where}.{principal_type} must be a non-empty name", field=f"{where}.{principal_type}")
    level = item.get("permission_level")
    if level not in _LEVELS:
        raise InvalidInput(
            f"{where}.permission_level {level!r} is not one of {list(_LEVELS)}", field=f"{where}.permission_level"
        )
    return AclEntry(principal_type, principal.strip(), Level[level])


def owner_entry(principal: Principal) -> AclEntry | None:
    """The ``CAN_MANAGE`` entry an endpoint's creator gets (``None`` for the anonymous caller when auth is off)."""
    if principal.kind == "anonymous":
        return None
    if principal.kind == "service_principal":
        return AclEntry("service_principal_name", principal.name, Level.CAN_MANAGE)
    return AclEntry("user_name", principal.name, Level.CAN_MANAGE)


def render_acl(endpoint_id: str, entries: Iterable[AclEntry]) -> dict[str, Any]:
    """``ServingEndpointPermissions``: the endpoint's direct (not inherited) entries."""
    return {
        "object_id": f"/serving-endpoints/{endpoint_id}",
        "object_type": OBJECT_TYPE,
        "access_control_list": [
            {e.principal_type: e.principal, "all_permissions": [{"permission_level": e.level.name, "inherited": False}]}
            for e in entries
        ],
    }
