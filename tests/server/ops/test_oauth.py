"""OAuth bearer JWTs against a JWKS served on 127.0.0.1: what is accepted, what is refused, and the cache."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.errors import PermissionDenied, Unauthenticated
from server.ops.acl import AclStore
from server.ops.authdb import AuthDB
from server.ops.gate import Gate
from server.ops.limits import LimitTable
from server.ops.oauth import InvalidToken, JwtVerifier
from server.ops.tokens import TokenStore
from server.settings import OAuthSettings
from tests.jwks import Issuer, serve_issuer

AUDIENCE = "https://models.example.com/mcp"


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with serve_issuer(AUDIENCE) as served:
        yield served


def verifier(issuer: Issuer, **overrides: object) -> JwtVerifier:
    return JwtVerifier(OAuthSettings(**issuer.settings(**overrides)))


@pytest.mark.anyio
async def test_valid_token_names_the_principal_groups_and_scopes(issuer: Issuer) -> None:
    v = verifier(issuer, admin_groups=("ml-admins",))
    p = await v.verify(issuer.token("alice", groups=["analysts"], scope="models:invoke openid"))
    assert (p.name, p.via, p.admin) == ("alice", "oauth", False)
    assert p.groups == {"analysts"} and p.scopes == {"models:invoke", "openid"}
    assert p.issuer == issuer.issuer and p.expires_at is not None and p.expires_at > time.time()
    admin = await v.verify(issuer.token("root", groups=["ml-admins"]))
    assert admin.admin


@pytest.mark.anyio
async def test_principal_claim_is_configurable(issuer: Issuer) -> None:
    p = await verifier(issuer, principal_claim="email").verify(issuer.token("u-123", email="alice@example.com"))
    assert p.name == "alice@example.com"


@pytest.mark.anyio
async def test_verified_tokens_are_cached_until_expiry(issuer: Issuer) -> None:
    v = verifier(issuer)
    token = issuer.token("alice")
    first = await v.verify(token)
    assert v.cached(token, time.time()) is first
    assert v.cached(token, first.expires_at + 1) is None  # type: ignore[operator]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda i: i.token("alice", ttl_s=-120), "expired"),
        (lambda i: i.token("alice", aud="https://elsewhere.example.com/mcp"), "audience"),
        (lambda i: i.token("alice", iss="https://evil.example.com"), "not issued by"),
        (lambda i: i.token("alice", key=i.other), "invalid token"),
        (lambda i: i.unsigned("alice"), "invalid token|malformed"),
        (lambda i: "not.a.jwt", "malformed"),
        (lambda i: i.token(""), "claim naming the caller"),
    ],
    ids=["expired", "wrong-audience", "wrong-issuer", "forged", "alg-none", "garbage", "no-subject"],
)
async def test_bad_tokens_are_refused(issuer: Issuer, make: object, reason: str) -> None:
    with pytest.raises(InvalidToken, match=reason):
        await verifier(issuer).verify(make(issuer))  # type: ignore[operator]


@pytest.mark.anyio
async def test_gate_requires_the_configured_scopes(issuer: Issuer, tmp_path: Path) -> None:
    db = AuthDB(tmp_path / "auth.db")
    gate = Gate(
        enabled=True,
        tokens=TokenStore(db),
        acl=AclStore(db),
        limits=LimitTable(),
        oauth=verifier(issuer, required_scopes=("models:invoke",)),
        required_scopes=("models:invoke",),
    )
    assert (await gate.identify(f"Bearer {issuer.token('alice')}")).name == "alice"
    with pytest.raises(PermissionDenied, match="lacks the scope"):
        await gate.identify(f"Bearer {issuer.token('alice', scope='openid')}")
    with pytest.raises(Unauthenticated, match="invalid OAuth token: token expired"):
        await gate.identify(f"Bearer {issuer.token('alice', ttl_s=-120)}")
