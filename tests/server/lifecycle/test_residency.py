"""Residency: which deployments the cache unloads (LRU over the count/memory bounds, idle TTL), never pinned ones."""

from __future__ import annotations

import dataclasses

from server.deployments import Deployment, Lifecycle
from server.lifecycle.residency import Residency
from server.settings import CacheSettings
from tests.server.fakes import fake_deployment


def _dep(version: str, *, last_used: float | None, pinned: bool = False, mb: float = 1.0) -> Deployment:
    dep = fake_deployment(version=version, alias=None)
    dep.last_used = last_used
    dep.memory_bytes = int(mb * 2**20)
    dep.lifecycle = dataclasses.replace(Lifecycle(), pinned=pinned)
    return dep


def test_evicts_least_recently_used_unpinned_until_under_the_count() -> None:
    deps = [
        _dep("1", last_used=10.0),
        _dep("2", last_used=5.0, pinned=True),
        _dep("3", last_used=30.0),
        _dep("4", last_used=20.0),
    ]
    victims = Residency(CacheSettings(max_models=2)).to_evict(deps)
    assert [d.model.version for d in victims] == ["1", "4"]


def test_memory_budget_and_kept_keys() -> None:
    deps = [_dep("1", last_used=1.0, mb=3), _dep("2", last_used=2.0, mb=3), _dep("3", last_used=3.0, mb=3)]
    residency = Residency(CacheSettings(max_memory_mb=7))
    assert [d.model.version for d in residency.to_evict(deps)] == ["1"]
    assert [d.model.version for d in residency.to_evict(deps, keep={"doubler/1"})] == ["2"]
    assert residency.to_evict(deps[:2]) == []


def test_everything_pinned_means_nothing_to_evict() -> None:
    deps = [_dep(str(i), last_used=float(i), pinned=True) for i in range(3)]
    assert Residency(CacheSettings(max_models=1)).to_evict(deps) == []


def test_idle_after_the_ttl_only_and_never_pinned() -> None:
    deps = [_dep("1", last_used=100.0), _dep("2", last_used=150.0), _dep("3", last_used=0.0, pinned=True)]
    residency = Residency(CacheSettings(idle_ttl_s=60))
    assert [d.model.version for d in residency.idle(deps, now=170.0)] == ["1"]
    assert [d.model.version for d in residency.idle(deps, now=210.0)] == ["1", "2"]
    assert Residency(CacheSettings()).idle(deps, now=1e9) == []
    assert residency.reap_interval_s == 15.0


def test_footprint_is_twice_the_model_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "model.pkl").write_bytes(b"x" * 1000)
    dep = fake_deployment()
    dep.converted = dataclasses.replace(dep.converted, model_dir=tmp_path)
    assert Residency.footprint(dep) == 2000
