"""TokenStore: tokens are shown once, stored hashed, verified from memory, revoked across processes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.ops.authdb import AuthDB
from server.ops.identity import Level
from server.ops.tokens import PREFIX, TokenStore, digest


@pytest.fixture
def db(tmp_path: Path) -> Iterator[AuthDB]:
    db = AuthDB(tmp_path / "auth.db")
    yield db
    db.close()


def test_create_then_verify_names_the_principal(db: AuthDB) -> None:
    store = TokenStore(db)
    secret = store.create(
        "ci", principal="svc-ci", kind="service_principal", grants={"fraud_detector": Level.CAN_QUERY}
    )
    assert secret.startswith(PREFIX) and len(secret) > 40
    principal = store.verify(secret)
    assert principal is not None
    assert (principal.name, principal.kind, principal.admin, principal.via) == (
        "svc-ci",
        "service_principal",
        False,
        "token",
    )
    assert principal.grants == {"fraud_detector": Level.CAN_QUERY}
    assert principal.issuer == "token:ci" and principal.expires_at is None
    admin = store.verify(store.create("root", admin=True))
    assert admin is not None and admin.name == "root" and admin.admin and admin.kind == "user"


def test_wrong_or_altered_secrets_are_refused(db: AuthDB) -> None:
    store = TokenStore(db)
    secret = store.create("alice", admin=True)
    assert store.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.verify(secret + "x") is None
    assert store.verify("") is None
    assert store.verify(digest(secret)) is None  # the stored digest is not a credential


def test_the_secret_is_stored_only_hashed(db: AuthDB, tmp_path: Path) -> None:
    store = TokenStore(db)
    secret = store.create("alice", admin=True)
    db.close()
    raw = (tmp_path / "auth.db").read_bytes()
    assert secret.encode() not in raw and digest(secret).encode() in raw
    assert (tmp_path / "auth.db").stat().st_mode & 0o077 == 0  # owner-only


def test_names_are_unique_and_bounded(db: AuthDB) -> None:
    store = TokenStore(db)
    store.create("alice")
    with pytest.raises(ValueError, match="exists"):
        store.create("alice")
    with pytest.raises(ValueError, match="1 to 128"):
        store.create("")
    with pytest.raises(ValueError, match="1 to 128"):
        store.create("n" * 129)
    assert [t.name for t in store.list()] == ["alice"]


def test_expired_tokens_are_refused(db: AuthDB) -> None:
    store = TokenStore(db)
    now = time.time()
    secret = store.create("short", admin=True, expires_in_s=60)
    principal = store.verify(secret, now=now)
    assert principal is not None and principal.expires_at == pytest.approx(now + 60, abs=5)
    assert store.verify(secret, now=now + 120) is None
    [info] = store.list()
    assert info.expires_ms is not None and info.expires_ms == pytest.approx((now + 60) * 1000, abs=5000)


def test_revoke_is_immediate_in_this_process(db: AuthDB) -> None:
    store = TokenStore(db)
    secret = store.create("alice", admin=True)
    assert store.verify(secret) is not None
    assert store.revoke("alice") is True
    assert store.verify(secret) is None
    assert store.revoke("alice") is False
    assert store.list() == [] and not store.any()


def test_another_process_sees_the_revocation_after_its_refresh(db: AuthDB, tmp_path: Path) -> None:
    cli = TokenStore(db)
    secret = cli.create("alice", admin=True)
    server_db = AuthDB(tmp_path / "auth.db", refresh_s=0)  # a server re-checking the generation on every request
    try:
        server = TokenStore(server_db)
        assert server.verify(secret) is not None
        later = cli.create("bob")
        assert server.verify(later) is not None  # a new token is seen too
        assert cli.revoke("alice")
        assert server.verify(secret) is None
        assert server.verify(later) is not None
    finally:
        server_db.close()


def test_a_stale_cache_is_kept_until_the_refresh_interval(db: AuthDB, tmp_path: Path) -> None:
    cli = TokenStore(db)
    secret = cli.create("alice", admin=True)
    server_db = AuthDB(tmp_path / "auth.db", refresh_s=3600)
    try:
        server = TokenStore(server_db)
        assert server.verify(secret) is not None
        cli.revoke("alice")
        assert server.verify(secret) is not None  # not re-read yet: the documented revocation delay
        server_db.check(now=time.monotonic() + 3601)
        assert server.verify(secret) is None
    finally:
        server_db.close()


def test_list_never_returns_the_secret_and_records_last_use(db: AuthDB) -> None:
    store = TokenStore(db)
    secret = store.create("bot", principal="svc", grants={"*": Level.CAN_VIEW, "models:/m": Level.CAN_MANAGE})
    store.create("alice", admin=True)
    infos = store.list()
    assert [i.name for i in infos] == ["alice", "bot"]
    bot = infos[1]
    assert bot.principal == "svc" and bot.kind == "user" and not bot.admin and bot.last_used_ms is None
    assert bot.grants == {"*": Level.CAN_VIEW, "models:/m": Level.CAN_MANAGE}
    dumped = repr(infos) + repr([i.as_json() for i in infos])
    assert secret not in dumped and secret[len(PREFIX) :] not in dumped and digest(secret) not in dumped
    assert bot.as_json()["grants"] == {"*": "CAN_VIEW", "models:/m": "CAN_MANAGE"}
    before = int(time.time() * 1000)
    assert store.verify(secret) is not None
    used = {i.name: i.last_used_ms for i in store.list()}
    assert used["alice"] is None and used["bot"] is not None and used["bot"] >= before


def test_any_does_not_create_the_database(tmp_path: Path) -> None:
    path = tmp_path / "state" / "auth.db"
    db = AuthDB(path)
    try:
        store = TokenStore(db)
        assert not store.any() and not path.exists()
        store.create("alice", admin=True)
        assert store.any() and path.exists()
    finally:
        db.close()


def test_in_memory_store() -> None:
    db = AuthDB(None)
    try:
        store = TokenStore(db)
        assert not store.any()
        secret = store.create("alice", admin=True)
        assert store.any() and store.verify(secret) is not None
    finally:
        db.close()
