"""The sqlite file holding tokens and ACLs (``<state_dir>/auth.db``), shared by the CLI and running servers.

Every write bumps a generation number; a server re-reads its caches when the generation moved (checked at most every
``refresh_s`` seconds on the request path), so a token revoked or an ACL changed by another process takes effect
within seconds, and one changed through this process at once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', 0)",
    """CREATE TABLE IF NOT EXISTS tokens (
        name TEXT PRIMARY KEY, principal TEXT NOT NULL, kind TEXT NOT NULL, digest TEXT NOT NULL UNIQUE,
        admin INTEGER NOT NULL, grants TEXT NOT NULL, created_ms INTEGER NOT NULL, expires_ms INTEGER,
        last_used_ms INTEGER)""",
    """CREATE TABLE IF NOT EXISTS acl (
        object TEXT NOT NULL, principal_type TEXT NOT NULL, principal TEXT NOT NULL, level TEXT NOT NULL,
        PRIMARY KEY (object, principal_type, principal))""",
)


class AuthDB:
    """Thread-safe access to ``auth.db``; ``path=None`` keeps everything in memory (tests, no state dir)."""

    def __init__(self, path: Path | None, *, refresh_s: float = 1.0) -> None:
        self.path = path
        self.refresh_s = refresh_s
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._seen = -1
        self._checked = float("-inf")
        self._listeners: list[Callable[[], None]] = []

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that bumps the generation; this process's listeners hear of it at once."""
        with self._lock, self._connect() as db:
            yield db
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
        self._checked = float("-inf")
        self.check()

    def read(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Rows of a query; none (without creating the file) while there is no ``auth.db`` yet."""
        if self._db is None and self.path is not None and not self.path.exists():
            return []
        with self._lock:
            return self._connect().execute(sql, args).fetchall()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (on the checking thread) whenever another generation is seen."""
        self._listeners.append(listener)

    def check(self, now: float | None = None) -> None:
        """Reload listeners' caches if the generation moved; cheap (a clock read) between checks."""
        now = time.monotonic() if now is None else now
        if now - self._checked < self.refresh_s:
            return
        self._checked = now
        rows = self.read("SELECT value FROM meta WHERE key = 'generation'")
        generation = int(rows[0][0]) if rows else 0  # type: ignore[call-overload]
        if generation != self._seen:
            self._seen = generation
            for listener in self._listeners:
                listener()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.path) if self.path is not None else ":memory:", check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL") if self.path is not None else None
            db.execute("PRAGMA busy_timeout=5000")
            with db:
                for statement in _SCHEMA:
                    db.execute(statement)
            if self.path is not None:
                self.path.chmod(0o600)
            self._db = db
        return self._db
