"""The shared gate: identity from tokens, permissions from grants and ACLs, rate limits; auth off = anonymous."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.errors import PermissionDenied, RateLimited, Unauthenticated
from server.ops.acl import AclEntry, AclStore
from server.ops.authdb import AuthDB
from server.ops.gate import Gate, bearer
from server.ops.identity import ANONYMOUS, Level, Principal, Resource
from server.ops.limits import LimitTable, RateLimit
from server.ops.tokens import TokenStore

MODEL = Resource("model", "churn")
ENDPOINT = Resource("endpoint", "churn-ep")


def make_gate(tmp_path: Path, enabled: bool = True) -> Gate:
    db = AuthDB(tmp_path / "auth.db")
    return Gate(enabled=enabled, tokens=TokenStore(db), acl=AclStore(db), limits=LimitTable())


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), (b"Bearer abc", "abc"), ("Basic abc", None), ("Bearer", None),
     ("", None), (None, None)],
)  # fmt: skip
def test_bearer(header: str | bytes | None, token: str | None) -> None:
    assert bearer(header) == token


@pytest.mark.anyio
async def test_auth_off_everyone_is_anonymous_admin(tmp_path: Path) -> None:
    gate = make_gate(tmp_path, enabled=False)
    assert await gate.enter(None, MODEL, Level.CAN_MANAGE) is ANONYMOUS
    assert not (tmp_path / "auth.db").exists()  # nothing written for the open demo


@pytest.mark.anyio
async def test_missing_unknown_and_revoked_tokens_are_unauthenticated(tmp_path: Path) -> None:
    gate = make_gate(tmp_path)
    with pytest.raises(Unauthenticated, match="authentication required"):
        await gate.identify(None)
    with pytest.raises(Unauthenticated):
        await gate.identify("Bearer mp_not-a-token")
    with pytest.raises(Unauthenticated, match="unrecognised"):
        await gate.identify("Bearer eyJ.no.oauth")
    secret = gate.tokens.create("alice")
    assert (await gate.identify(f"Bearer {secret}")).name == "alice"
    gate.tokens.revoke("alice")
    with pytest.raises(Unauthenticated, match="revoked"):
        await gate.identify(f"Bearer {secret}")


@pytest.mark.anyio
async def test_grants_and_levels(tmp_path: Path) -> None:
    gate = make_gate(tmp_path)
    secret = gate.tokens.create("bob", grants={"churn": Level.CAN_QUERY, "endpoints/other": Level.CAN_MANAGE})
    bob = await gate.identify(f"Bearer {secret}")
    assert gate.level(bob, MODEL) is Level.CAN_QUERY
    assert gate.level(bob, Resource("model", "other")) is Level.NONE
    assert gate.level(bob, Resource("endpoint", "other")) is Level.CAN_MANAGE
    gate.authorize(bob, MODEL, Level.CAN_VIEW)
    gate.authorize(bob, MODEL, Level.CAN_QUERY)
    with pytest.raises(PermissionDenied, match="bob has CAN_QUERY on model 'churn'; this needs CAN_MANAGE"):
        gate.authorize(bob, MODEL, Level.CAN_MANAGE)
    with pytest.raises(PermissionDenied, match="no permission"):
        await gate.enter(f"Bearer {secret}", Resource("model", "fraud"), Level.CAN_VIEW)


def test_model_prefixed_grant_does_not_reach_an_endpoint_of_the_same_name() -> None:
    p = Principal("p", grants={"models:/churn": Level.CAN_QUERY, "*": Level.CAN_VIEW})
    assert p.granted(Resource("model", "churn")) is Level.CAN_QUERY
    assert p.granted(Resource("endpoint", "churn")) is Level.CAN_VIEW


def test_acl_by_user_group_and_all_users(tmp_path: Path) -> None:
    gate = make_gate(tmp_path)
    gate.acl.replace(ENDPOINT, [AclEntry("user_name", "carol", Level.CAN_MANAGE),
                                AclEntry("group_name", "analysts", Level.CAN_QUERY)])  # fmt: skip
    carol, dave = Principal("carol"), Principal("dave", groups=frozenset({"analysts"}))
    eve = Principal("eve")
    assert gate.level(carol, ENDPOINT) is Level.CAN_MANAGE
    assert gate.level(dave, ENDPOINT) is Level.CAN_QUERY
    assert gate.level(eve, ENDPOINT) is Level.NONE
    gate.acl.update(ENDPOINT, [AclEntry("group_name", "users", Level.CAN_VIEW)])
    assert gate.level(eve, ENDPOINT) is Level.CAN_VIEW
    assert gate.level(carol, ENDPOINT) is Level.CAN_MANAGE  # PATCH keeps the others
    gate.acl.drop(ENDPOINT)
    assert gate.level(carol, ENDPOINT) is Level.NONE


def test_acl_change_by_another_process_is_seen_after_refresh(tmp_path: Path) -> None:
    ours = Gate(enabled=True, tokens=TokenStore(db := AuthDB(tmp_path / "auth.db", refresh_s=0)), acl=AclStore(db),
                limits=LimitTable())  # fmt: skip
    theirs = AclStore(AuthDB(tmp_path / "auth.db"))
    frank = Principal("frank")
    assert gate_level(ours, frank) is Level.NONE
    theirs.replace(MODEL, [AclEntry("user_name", "frank", Level.CAN_QUERY)])
    assert gate_level(ours, frank) is Level.CAN_QUERY


def gate_level(gate: Gate, principal: Principal) -> Level:
    return gate.level(principal, MODEL)


@pytest.mark.anyio
async def test_rate_limit_applies_to_scoring_only(tmp_path: Path) -> None:
    gate = make_gate(tmp_path)
    gate.limits.set(MODEL, [RateLimit(1, "user")])
    secret = gate.tokens.create("admin", admin=True)
    await gate.enter(f"Bearer {secret}", MODEL, Level.CAN_QUERY)
    await gate.enter(f"Bearer {secret}", MODEL, Level.CAN_VIEW)  # viewing is not rate-limited
    with pytest.raises(RateLimited) as info:
        await gate.enter(f"Bearer {secret}", MODEL, Level.CAN_QUERY)
    assert info.value.error_code == "REQUEST_LIMIT_EXCEEDED"
    assert 0 < info.value.retry_after_s <= 60
