"""Access control lists per serving endpoint and per registered model, as Databricks' permissions API shapes them.

An entry gives a user, a service principal or a group a level on one object. Every authenticated principal is in the
group ``users`` (Databricks' all-users group). Kept in ``auth.db`` and cached in memory (reloaded on change).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from server.ops.authdb import AuthDB
from server.ops.identity import Level, Principal, Resource

PrincipalType = Literal["user_name", "service_principal_name", "group_name"]
PRINCIPAL_TYPES: tuple[PrincipalType, ...] = ("user_name", "service_principal_name", "group_name")
ALL_USERS = "users"


@dataclass(frozen=True, slots=True)
class AclEntry:
    principal_type: PrincipalType
    principal: str
    level: Level


def object_key(resource: Resource) -> str:
    return f"{resource.kind}:{resource.name}"


class AclStore:
    """Read and replace ACLs; ``level_of`` answers from memory."""

    def __init__(self, db: AuthDB) -> None:
        self.db = db
        self._acls: dict[str, dict[tuple[str, str], Level]] = {}
        self._loaded = False
        db.on_change(self._reload)

    def entries(self, resource: Resource) -> list[AclEntry]:
        self._fresh()
        acl = self._acls.get(object_key(resource), {})
        return [AclEntry(t, p, lvl) for (t, p), lvl in sorted(acl.items())]  # type: ignore[arg-type]

    def replace(self, resource: Resource, entries: Iterable[AclEntry]) -> None:
        """``PUT``: the object's ACL becomes exactly ``entries``."""
        key = object_key(resource)
        with self.db.write() as db:
            db.execute("DELETE FROM acl WHERE object = ?", (key,))
            db.executemany(
                "INSERT OR REPLACE INTO acl (object, principal_type, principal, level) VALUES (?, ?, ?, ?)",
                [(key, e.principal_type, e.principal, e.level.name) for e in entries],
            )

    def update(self, resource: Resource, entries: Iterable[AclEntry]) -> None:
        """``PATCH``: set these principals' levels, keep the others."""
        key = object_key(resource)
        with self.db.write() as db:
            db.executemany(
                "INSERT OR REPLACE INTO acl (object, principal_type, principal, level) VALUES (?, ?, ?, ?)",
                [(key, e.principal_type, e.principal, e.level.name) for e in entries],
            )

    def drop(self, resource: Resource) -> None:
        """Forget an object's ACL (its endpoint was deleted)."""
        with self.db.write() as db:
            db.execute("DELETE FROM acl WHERE object = ?", (object_key(resource),))

    def level_of(self, principal: Principal, resource: Resource) -> Level:
        """The highest level any entry gives ``principal`` (by name, or one of its groups, or ``users``)."""
        self._fresh()
        acl = self._acls.get(object_key(resource))
        if not acl:
            return Level.NONE
        best = max(
            acl.get(("user_name", principal.name), Level.NONE),
            acl.get(("service_principal_name", principal.name), Level.NONE),
            acl.get(("group_name", ALL_USERS), Level.NONE),
        )
        for group in principal.groups:
            best = max(best, acl.get(("group_name", group), Level.NONE))
        return best

    def _fresh(self) -> None:
        self.db.check()
        if not self._loaded:
            self._reload()

    def _reload(self) -> None:
        acls: dict[str, dict[tuple[str, str], Level]] = {}
        for obj, ptype, principal, level in self.db.read("SELECT object, principal_type, principal, level FROM acl"):
            acls.setdefault(str(obj), {})[(str(ptype), str(principal))] = Level[str(level)]
        self._acls = acls
        self._loaded = True
