"""Databricks' permissions API for serving endpoints, thin handlers over the gate's ``AclStore``:
``GET/PUT/PATCH /api/2.0/permissions/serving-endpoints/{serving_endpoint_id}`` and ``GET .../permissionLevels``.

``serving_endpoint_id`` is the endpoint's ``id`` (what ``databricks-sdk`` passes) or its name. The guard has already
checked the caller (``CAN_VIEW`` to read, ``CAN_MANAGE`` to change; ``server/rest/guard.py``). ``PUT`` replaces the
endpoint's ACL (an empty or missing ``access_control_list`` clears it), ``PATCH`` adds or changes entries; both
answer the whole ACL. Admins (admin tokens, OAuth admin groups) manage every endpoint without an entry. Included in
the app through ``server/rest/databricks.py``'s router.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from server.databricks.endpoints import EndpointService
from server.databricks.permissions import PERMISSION_LEVELS, parse_acl, render_acl
from server.ops.gate import Gate
from server.ops.identity import Resource
from server.rest.errors import error_response
from server.rest.guard import caller
from server.rest.routes import read_json

log = logging.getLogger(__name__)

router = APIRouter(tags=["databricks permissions"])

PERMISSIONS = "/api/2.0/permissions/serving-endpoints/{serving_endpoint_id}"
_BODY_LIMIT = 1024 * 1024


@router.get(PERMISSIONS, summary="Get a serving endpoint's permissions")
async def get_permissions(serving_endpoint_id: str, request: Request) -> Response:
    return await _acl(request, serving_endpoint_id, None)


@router.put(PERMISSIONS, summary="Set a serving endpoint's permissions (replaces its access control list)")
async def set_permissions(serving_endpoint_id: str, request: Request) -> Response:
    return await _acl(request, serving_endpoint_id, "replace")


@router.patch(PERMISSIONS, summary="Update a serving endpoint's permissions (adds or changes entries)")
async def update_permissions(serving_endpoint_id: str, request: Request) -> Response:
    return await _acl(request, serving_endpoint_id, "update")


@router.get(PERMISSIONS + "/permissionLevels", summary="The permission levels of serving endpoints")
async def permission_levels(serving_endpoint_id: str, request: Request) -> Response:
    gate, endpoints = _parts(request)
    if gate is None or endpoints is None:
        return _not_enabled(request)
    endpoints.name_of(serving_endpoint_id)  # 404 for an unknown endpoint
    return _json({"permission_levels": list(PERMISSION_LEVELS)})


async def _acl(request: Request, endpoint: str, change: Literal["replace", "update"] | None) -> Response:
    gate, endpoints = _parts(request)
    if gate is None or endpoints is None:
        return _not_enabled(request)
    name = endpoints.name_of(endpoint)
    resource = Resource("endpoint", name)
    if change is not None:
        entries = parse_acl(await _body(request))
        (gate.acl.replace if change == "replace" else gate.acl.update)(resource, entries)
        who = caller(request)
        log.info(
            "serving endpoint permissions %s",
            "set" if change == "replace" else "updated",
            extra={
                "endpoint": name,
                "by": None if who is None else who.name,
                "acl": [f"{e.principal_type}:{e.principal}={e.level.name}" for e in entries],
            },
        )
    return _json(render_acl(endpoints.endpoint_id(name), gate.acl.entries(resource)))


def _parts(request: Request) -> tuple[Gate | None, EndpointService | None]:
    state = request.app.state
    return getattr(state, "gate", None), getattr(state, "endpoints", None)


def _not_enabled(request: Request) -> Response:
    return error_response(
        501,
        "NOT_IMPLEMENTED",
        "permissions are not available: this server was built without a gate (identity and ACLs)",
        request,
    )


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


async def _body(request: Request) -> Any:
    return await read_json(request, _BODY_LIMIT)
