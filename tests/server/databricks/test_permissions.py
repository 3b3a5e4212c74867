"""The permissions API's bodies: ``access_control_list`` parsing (errors name the field), the creator's entry, and
answers in the shapes databricks-sdk reads."""

from __future__ import annotations

from typing import Any

import pytest
from databricks.sdk.service.serving import (
    GetServingEndpointPermissionLevelsResponse,
    ServingEndpointAccessControlRequest,
    ServingEndpointPermissionLevel,
    ServingEndpointPermissions,
)

from server.databricks.permissions import PERMISSION_LEVELS, owner_entry, parse_acl, render_acl
from server.errors import InvalidInput
from server.ops.acl import AclEntry
from server.ops.identity import ANONYMOUS, Level, Principal


def test_parses_what_the_sdk_sends() -> None:
    acl = [
        ServingEndpointAccessControlRequest(
            user_name="alice", permission_level=ServingEndpointPermissionLevel.CAN_QUERY
        ),
        ServingEndpointAccessControlRequest(
            group_name="users", permission_level=ServingEndpointPermissionLevel.CAN_VIEW
        ),
        ServingEndpointAccessControlRequest(
            service_principal_name="etl", permission_level=ServingEndpointPermissionLevel.CAN_MANAGE
        ),
    ]
    entries = parse_acl({"access_control_list": [a.as_dict() for a in acl]})
    assert entries == [
        AclEntry("user_name", "alice", Level.CAN_QUERY),
        AclEntry("group_name", "users", Level.CAN_VIEW),
        AclEntry("service_principal_name", "etl", Level.CAN_MANAGE),
    ]


def test_empty_or_missing_list_means_no_entries_and_repeats_keep_the_highest_level() -> None:
    assert parse_acl({}) == [] and parse_acl({"access_control_list": []}) == []
    twice = parse_acl(
        {
            "access_control_list": [
                {"user_name": "bob", "permission_level": "CAN_MANAGE"},
                {"user_name": "bob", "permission_level": "CAN_VIEW"},
            ]
        }
    )
    assert twice == [AclEntry("user_name", "bob", Level.CAN_MANAGE)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"acl": []}, "acl"),
        ({"access_control_list": {"user_name": "a"}}, "access_control_list"),
        ({"access_control_list": ["alice"]}, "access_control_list[0]"),
        ({"access_control_list": [{"permission_level": "CAN_VIEW"}]}, "access_control_list[0]"),
        (
            {"access_control_list": [{"user_name": "a", "group_name": "g", "permission_level": "CAN_VIEW"}]},
            "access_control_list[0]",
        ),
        (
            {"access_control_list": [{"user_name": "", "permission_level": "CAN_VIEW"}]},
            "access_control_list[0].user_name",
        ),
        (
            {"access_control_list": [{"user_name": 7, "permission_level": "CAN_VIEW"}]},
            "access_control_list[0].user_name",
        ),
        (
            {"access_control_list": [{"user_name": "a", "permission_level": "CAN_VIEW"}, {"user_name": "b"}]},
            "access_control_list[1].permission_level",
        ),
        (
            {"access_control_list": [{"user_name": "a", "permission_level": "CAN_RUN"}]},
            "access_control_list[0].permission_level",
        ),
        (
            {"access_control_list": [{"user_name": "a", "permission_level": "can_view"}]},
            "access_control_list[0].permission_level",
        ),
        (
            {"access_control_list": [{"user_name": "a", "permission_level": "CAN_VIEW", "role": "x"}]},
            "access_control_list[0].role",
        ),
    ],
)
def test_invalid_bodies_name_the_field(body: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_acl(body)
    assert caught.value.field == field


def test_the_creator_becomes_manager_unless_anonymous() -> None:
    assert owner_entry(Principal("alice")) == AclEntry("user_name", "alice", Level.CAN_MANAGE)
    robot = Principal("etl", kind="service_principal")
    assert owner_entry(robot) == AclEntry("service_principal_name", "etl", Level.CAN_MANAGE)
    assert owner_entry(ANONYMOUS) is None


def test_answers_have_the_sdk_shapes() -> None:
    entries = [AclEntry("user_name", "alice", Level.CAN_MANAGE), AclEntry("group_name", "users", Level.CAN_VIEW)]
    rendered = render_acl("abc123", entries)
    assert rendered == {
        "object_id": "/serving-endpoints/abc123",
        "object_type": "serving-endpoint",
        "access_control_list": [
            {"user_name": "alice", "all_permissions": [{"permission_level": "CAN_MANAGE", "inherited": False}]},
            {"group_name": "users", "all_permissions": [{"permission_level": "CAN_VIEW", "inherited": False}]},
        ],
    }
    parsed = ServingEndpointPermissions.from_dict(rendered)
    assert parsed.as_dict() == rendered
    levels = GetServingEndpointPermissionLevelsResponse.from_dict({"permission_levels": list(PERMISSION_LEVELS)})
    assert [d.permission_level for d in levels.permission_levels or []] == [
        ServingEndpointPermissionLevel.CAN_MANAGE,
        ServingEndpointPermissionLevel.CAN_QUERY,
        ServingEndpointPermissionLevel.CAN_VIEW,
    ]
    assert all(d.description for d in levels.permission_levels or [])
