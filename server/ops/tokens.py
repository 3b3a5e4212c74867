"""Personal access tokens: created once (the secret is shown only then), stored as sha256 digests, verified from an
in-memory table (one hash + one dict lookup per request), revoked at once in this process and within
``AuthDB.refresh_s`` in every other.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from server.ops.authdb import AuthDB
from server.ops.identity import Level, Principal, PrincipalKind

PREFIX = "mp_"
"""Every modelport token starts with this (so secret scanners and the verifier can tell it from a JWT)."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as ``modelport tokens list`` shows it: never the secret."""

    name: str
    principal: str
    kind: PrincipalKind
    admin: bool
    grants: Mapping[str, Level]
    created_ms: int
    expires_ms: int | None
    last_used_ms: int | None

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "principal": self.principal,
            "kind": self.kind,
            "admin": self.admin,
            "grants": {k: v.name for k, v in self.grants.items()},
            "created_ms": self.created_ms,
            "expires_ms": self.expires_ms,
            "last_used_ms": self.last_used_ms,
        }


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    """Create, list, revoke and verify personal access tokens in ``auth.db``."""

    def __init__(self, db: AuthDB) -> None:
        self.db = db
        self._by_digest: dict[str, tuple[str, Principal]] = {}
        self._used: dict[str, int] = {}
        self._loaded = False
        db.on_change(self._reload)

    # -- management (CLI, admin API) ----------------------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        principal: str | None = None,
        kind: PrincipalKind = "user",
        admin: bool = False,
        grants: Mapping[str, Level] | None = None,
        expires_in_s: float | None = None,
    ) -> str:
        """A new token for ``principal`` (default: ``name``); returns the secret, which is stored only hashed."""
        if not name or len(name) > 128:
            raise ValueError("a token name is 1 to 128 characters")
        secret = PREFIX + secrets.token_urlsafe(32)
        now = int(time.time() * 1000)
        expires = None if expires_in_s is None else now + int(expires_in_s * 1000)
        grant_json = orjson.dumps({k: Level(v).name for k, v in (grants or {}).items()}).decode()
        with self.db.write() as db:
            if db.execute("SELECT 1 FROM tokens WHERE name = ?", (name,)).fetchone():
                raise ValueError(f"a token named {name!r} exists; revoke it first or pick another name")
            db.execute(
                "INSERT INTO tokens (name, principal, kind, digest, admin, grants, created_ms, expires_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, principal or name, kind, digest(secret), int(admin), grant_json, now, expires),
            )
        return secret

    def revoke(self, name: str) -> bool:
        """Delete a token; ``False`` if there was none by that name."""
        with self.db.write() as db:
            return db.execute("DELETE FROM tokens WHERE name = ?", (name,)).rowcount > 0

    def list(self) -> list[TokenInfo]:
        self.flush()
        rows = self.db.read(
            "SELECT name, principal, kind, admin, grants, created_ms, expires_ms, last_used_ms "
            "FROM tokens ORDER BY name"
        )
        return [
            TokenInfo(
                str(r[0]), str(r[1]), r[2], bool(r[3]), _grants(str(r[4])), int(r[5]),  # type: ignore[arg-type,call-overload]
                None if r[6] is None else int(r[6]), None if r[7] is None else int(r[7]),  # type: ignore[call-overload]
            )
            for r in rows
        ]  # fmt: skip

    def any(self) -> bool:
        """Whether at least one token exists (auth is configured)."""
        return bool(self.db.read("SELECT 1 FROM tokens LIMIT 1"))

    # -- request path -------------------------------------------------------------------------------------------

    def verify(self, secret: str, now: float | None = None) -> Principal | None:
        """The principal of a valid, unexpired token; ``None`` otherwise. ~1 µs: a sha256 and a dict lookup."""
        self.db.check()
        if not self._loaded:
            self._reload()
        key = digest(secret)
        found = self._by_digest.get(key)
        if found is None or not hmac.compare_digest(found[0], key):
            return None
        principal = found[1]
        now = time.time() if now is None else now
        if principal.expires_at is not None and principal.expires_at <= now:
            return None
        self._used[key] = int(now * 1000)
        return principal

    def touch(self, digest: str, now: float) -> None:
        """Note a use of the token with this digest (written to ``last_used_ms`` on the next flush)."""
        self._used[digest] = int(now * 1000)

    def flush(self) -> None:
        """Write the in-memory ``last used`` times (called when the cache reloads and on listing)."""
        used, self._used = self._used, {}
        if used:
            with self.db._lock, self.db._connect() as db:  # not a generation change: nothing to reload
                db.executemany("UPDATE tokens SET last_used_ms = ? WHERE digest = ?", [(v, k) for k, v in used.items()])

    def _reload(self) -> None:
        self.flush()
        rows = self.db.read("SELECT name, principal, kind, digest, admin, grants, expires_ms FROM tokens")
        table: dict[str, tuple[str, Principal]] = {}
        for name, principal, kind, dig, admin, grants, expires in rows:
            table[str(dig)] = (
                str(dig),
                Principal(
                    str(principal),
                    kind=kind,  # type: ignore[arg-type]
                    admin=bool(admin),
                    grants=_grants(str(grants)),
                    expires_at=None if expires is None else int(expires) / 1000,  # type: ignore[call-overload]
                    via="token",
                    issuer=f"token:{name}",
                ),
            )
        self._by_digest = table
        self._loaded = True


def _grants(raw: str) -> dict[str, Level]:
    return {k: Level[v] for k, v in orjson.loads(raw).items()}
