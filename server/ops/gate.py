"""``Gate``: identity → permission → rate limit, the part of the request pipeline every door shares.

Doors call ``enter`` once per request, before reading or decoding a body, then the ``InferenceService`` (decode →
batch), then log the request with the principal's name. A verified credential is cached, so a request with a known
token costs a dict lookup and a hash (docs/performance.md has the measured cost).

Credentials: ``Authorization: Bearer <token>`` where the token is a personal access token (``mp_...``, see
``tokens.py``) or, when OAuth is configured, a JWT from that issuer (``oauth.py``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from server.errors import PermissionDenied, RateLimited, Unauthenticated
from server.ops.acl import AclStore
from server.ops.identity import ANONYMOUS, Level, Principal, Resource
from server.ops.limits import LimitTable
from server.ops.oauth import InvalidToken, JwtVerifier
from server.ops.tokens import PREFIX, TokenStore
from server.ops.tokens import digest as digest_of

log = logging.getLogger(__name__)

_MAX_DECISIONS = 100_000
HOW_TO = "send 'Authorization: Bearer <token>' (create one with: modelport tokens create NAME --grant MODEL=CAN_QUERY)"


def bearer(authorization: str | bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, ``None`` for anything else."""
    if not authorization:
        return None
    if isinstance(authorization, bytes):
        authorization = authorization.decode("latin-1")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class Gate:
    """Who is calling, may they, and are they within the rate limits.

    Args:
        enabled: auth on (``auth.required``, or a non-loopback bind); off, every caller is ``ANONYMOUS`` (admin).
        tokens: personal access tokens.
        acl: per-endpoint and per-model ACLs.
        oauth: JWT verifier when an external issuer is configured.
        limits: rate limits per resource (applied to scoring calls).
        required_scopes: scopes an OAuth token must carry to be accepted at all.
    """

    def __init__(
        self,
        *,
        enabled: bool,
        tokens: TokenStore,
        acl: AclStore,
        limits: LimitTable,
        oauth: JwtVerifier | None = None,
        required_scopes: tuple[str, ...] = (),
    ) -> None:
        self.enabled = enabled
        self.tokens = tokens
        self.acl = acl
        self.limits = limits
        self.oauth = oauth
        self.required_scopes = frozenset(required_scopes)
        self._version = 0
        self._decisions: dict[tuple[object, ...], tuple[Principal, int, str | None]] = {}
        tokens.db.on_change(self._changed)
        acl.db.on_change(self._changed)

    def _changed(self) -> None:
        """Tokens or ACLs changed (here or in another process): forget every cached decision."""
        self._version += 1
        self._decisions = {}

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` when tokens or ACLs change (who may see what): at once for a change made in this
        process, within ``auth.refresh_s`` of the next request for one made in another."""
        for db in {id(d): d for d in (self.tokens.db, self.acl.db)}.values():
            db.on_change(listener)

    # -- identity -----------------------------------------------------------------------------------------------

    async def identify(self, authorization: str | bytes | None) -> Principal:
        """The caller; ``Unauthenticated`` (401) for a missing, unknown, expired or invalid credential."""
        if not self.enabled:
            return ANONYMOUS
        token = bearer(authorization)
        if token is None:
            raise Unauthenticated(f"authentication required: {HOW_TO}", field="Authorization")
        if token.startswith(PREFIX):
            principal = self.tokens.verify(token)
            if principal is None:
                raise Unauthenticated("invalid, expired or revoked access token", field="Authorization")
            return principal
        if self.oauth is None:
            raise Unauthenticated(f"unrecognised bearer token: {HOW_TO}", field="Authorization")
        principal = self.oauth.cached(token, time.time())
        if principal is None:
            try:
                principal = await self.oauth.verify(token)
            except InvalidToken as exc:
                raise Unauthenticated(f"invalid OAuth token: {exc}", field="Authorization") from None
        missing = self.required_scopes - principal.scopes
        if missing:
            raise PermissionDenied(f"the OAuth token lacks the scope(s) {sorted(missing)}", field="Authorization")
        return principal

    # -- permission ---------------------------------------------------------------------------------------------

    def level(self, principal: Principal, resource: Resource) -> Level:
        """What ``principal`` may do with ``resource``: admin → CAN_MANAGE; else its grants and the ACLs."""
        if principal.admin:
            return Level.CAN_MANAGE
        return max(principal.granted(resource), self.acl.level_of(principal, resource))

    def can(self, principal: Principal, resource: Resource, level: Level) -> bool:
        return principal.admin or self.level(principal, resource) >= level

    def authorize(self, principal: Principal, resource: Resource, level: Level) -> None:
        """``PermissionDenied`` (403) unless ``principal`` holds ``level`` on ``resource``."""
        if principal.admin:
            return
        have = self.level(principal, resource)
        if have < level:
            held = "no permission" if have is Level.NONE else have.name
            raise PermissionDenied(
                f"{principal.name} has {held} on {resource}; this needs {level.name}", field="permission_level"
            )

    # -- rate limit ---------------------------------------------------------------------------------------------

    def admit(self, principal: Principal, resource: Resource) -> None:
        """``RateLimited`` (429) when a rate limit of ``resource`` is used up for this caller."""
        wait = self.limits.hit(resource, principal.name)
        if wait > 0.0:
            retry = 60.0 if math.isinf(wait) else wait
            raise RateLimited(
                f"rate limit of {resource} exceeded for {principal.name}; retry after {math.ceil(retry)} s",
                retry_after_s=retry,
            )

    def check(self, principal: Principal, resource: Resource | None, level: Level) -> None:
        """Permission on ``resource`` (when given), then its rate limit (for scoring calls)."""
        if resource is not None:
            self.authorize(principal, resource, level)
            if level is Level.CAN_QUERY:
                self.admit(principal, resource)

    async def enter(
        self,
        authorization: str | bytes | None,
        resource: Resource | None,
        level: Level,
        state: dict[str, object] | None = None,
    ) -> Principal:
        """Identity, then ``check``; the principal goes into ``state`` (``principal``, ``caller``) before the check.

        Allowed (credential, resource, level) decisions are cached until tokens or ACLs change or the credential
        expires, so a repeat caller costs a dict lookup (plus the rate limit) instead of a hash and two lookups.
        """
        self.tokens.db.check()  # may invalidate the cache (revocations from other processes)
        key = (authorization, resource, level)
        hit = self._decisions.get(key)
        if hit is not None:
            principal, version, digest = hit
            now = time.time()
            if version == self._version and (principal.expires_at is None or principal.expires_at > now):
                if state is not None:
                    state["principal"], state["caller"] = principal.name, principal
                if digest is not None:
                    self.tokens.touch(digest, now)
                if resource is not None and level is Level.CAN_QUERY and self.limits.active:
                    self.admit(principal, resource)
                return principal
        principal = await self.identify(authorization)
        if state is not None:
            state["principal"], state["caller"] = principal.name, principal
        self.check(principal, resource, level)
        if len(self._decisions) >= _MAX_DECISIONS:
            self._decisions = {}
        token = bearer(authorization) if principal.via == "token" else None
        self._decisions[key] = (principal, self._version, None if token is None else digest_of(token))
        return principal
