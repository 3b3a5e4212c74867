"""Endpoint definitions persisted in a small sqlite file in the state directory (``endpoints.db``).

One row per endpoint, its record as JSON: what was asked for (name, tags, description, the active and the pending
config), never runtime state. Restored at start by ``EndpointService.restore``.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import orjson

_SCHEMA = "CREATE TABLE IF NOT EXISTS endpoints (name TEXT PRIMARY KEY, record TEXT NOT NULL)"


class EndpointStore:
    """Thread-safe CRUD of endpoint records.

    Args:
        path: the sqlite file (created with its directory); ``None`` keeps records in memory only.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def save(self, name: str, record: dict[str, Any]) -> None:
        data = orjson.dumps(record).decode()
        with self._lock, self._connect() as db:
            db.execute(
                "INSERT INTO endpoints (name, record) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET record = excluded.record",
                (name, data),
            )

    def delete(self, name: str) -> None:
        with self._lock, self._connect() as db:
            db.execute("DELETE FROM endpoints WHERE name = ?", (name,))

    def get(self, name: str) -> dict[str, Any] | None:
        """One endpoint's record, or ``None`` (another process may have written it since this one started)."""
        if self._db is None and self.path is not None and not self.path.exists():
            return None
        with self._lock:
            row = self._connect().execute("SELECT record FROM endpoints WHERE name = ?", (name,)).fetchone()
        return None if row is None else orjson.loads(row[0])  # type: ignore[no-any-return]

    def load(self) -> list[dict[str, Any]]:
        """Every record, by name (nothing, without creating the file, when there is none yet)."""
        if self._db is None and self.path is not None and not self.path.exists():
            return []
        with self._lock:
            rows = self._connect().execute("SELECT record FROM endpoints ORDER BY name").fetchall()
        return [orjson.loads(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _connect(self) -> sqlite3.Connection:
        """The connection, opened (and the file created) on first use."""
        if self._db is None:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path) if self.path is not None else ":memory:", check_same_thread=False)
            with self._db:
                self._db.execute(_SCHEMA)
        return self._db
