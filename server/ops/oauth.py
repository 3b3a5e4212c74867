"""OAuth 2.1 bearer JWTs from an external issuer, verified with PyJWT against the issuer's JWKS.

A verify costs 60-200 µs (RS256/ES256), so a verified token is cached until it expires (0.2 µs per hit); the JWKS
fetch (blocking I/O in ``PyJWKClient``) runs in a worker thread, never on the event loop. Expired, not-yet-valid,
wrong-audience, wrong-issuer, tampered and unsigned (``alg: none``) tokens are refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import jwt

from server.ops.identity import Principal, PrincipalKind
from server.settings import OAuthSettings

log = logging.getLogger(__name__)

_MAX_CACHED = 100_000


class InvalidToken(Exception):
    """The JWT was refused; the message says why (safe to show: it never contains the token)."""


class JwtVerifier:
    """Verifies JWTs for one issuer and audience; caches verified principals until ``exp``."""

    def __init__(self, settings: OAuthSettings) -> None:
        self.settings = settings
        self._jwks = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=settings.jwks_cache_s, timeout=10)
        self._cache: dict[str, Principal] = {}

    def cached(self, token: str, now: float) -> Principal | None:
        principal = self._cache.get(token)
        if principal is None:
            return None
        if principal.expires_at is not None and principal.expires_at <= now:
            del self._cache[token]
            return None
        return principal

    async def verify(self, token: str) -> Principal:
        """The principal a valid token names; ``InvalidToken`` with the reason otherwise."""
        now = time.time()
        hit = self.cached(token, now)
        if hit is not None:
            return hit
        try:
            key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientError as exc:
            raise InvalidToken(f"no signing key for this token ({exc})") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token ({exc})") from None
        s = self.settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=list(s.algorithms),
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken(f"token not issued for this server (audience must be {s.audience})") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken(f"token not issued by {s.issuer}") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token ({exc})") from None
        principal = self._principal(claims)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[token] = principal
        return principal

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        s = self.settings
        name = claims.get(s.principal_claim) or claims.get("sub")
        if not isinstance(name, str) or not name:
            raise InvalidToken(f"token has no '{s.principal_claim}' claim naming the caller")
        groups = _strings(claims.get(s.groups_claim))
        scopes = _strings(claims.get("scope", claims.get("scp")))
        admin = bool(groups & set(s.admin_groups)) or name in s.admin_principals or bool(scopes & set(s.admin_scopes))
        client = claims.get("client_id") or claims.get("azp")
        kind: PrincipalKind = "service_principal" if client == name else "user"
        return Principal(
            name, kind=kind, groups=groups, admin=admin, scopes=scopes, expires_at=float(claims["exp"]),
            via="oauth", issuer=str(claims.get("iss")),
        )  # fmt: skip


def _strings(raw: Any) -> frozenset[str]:
    """A claim holding a space-separated string or a list of strings, as a set."""
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list):
        return frozenset(x for x in raw if isinstance(x, str))
    return frozenset()
