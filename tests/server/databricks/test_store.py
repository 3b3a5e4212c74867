"""EndpointStore: records survive a reopen; nothing is created until something is saved."""

from __future__ import annotations

from pathlib import Path

from server.databricks.store import EndpointStore


def test_records_persist_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "endpoints.db"
    store = EndpointStore(path)
    assert store.load() == [] and not path.exists()
    store.save("b", {"name": "b", "n": 1})
    store.save("a", {"name": "a"})
    store.save("b", {"name": "b", "n": 2})
    store.close()
    reopened = EndpointStore(path)
    assert reopened.load() == [{"name": "a"}, {"name": "b", "n": 2}]
    reopened.delete("a")
    assert [r["name"] for r in reopened.load()] == ["b"]
    reopened.close()
