"""Which deployments stay in memory: the cache bounds (count, approximate memory), LRU order and idle time.

Pure decisions over the live deployments; ``ModelManager`` carries them out. Pinned deployments (configured ones,
endpoints without scale-to-zero) are never chosen.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from pathlib import Path

from server.deployments import Deployment
from server.settings import CacheSettings

log = logging.getLogger(__name__)

#: Session memory is estimated as this many times the ONNX file (or the pyfunc model directory) size.
FOOTPRINT_FACTOR = 2


class Residency:
    """The model cache's rules.

    Args:
        settings: ``max_models``, ``max_memory_mb`` and ``idle_ttl_s``.
    """

    def __init__(self, settings: CacheSettings | None = None) -> None:
        self.settings = settings or CacheSettings()

    @property
    def reap_interval_s(self) -> float | None:
        """How often to look for idle deployments (``None``: never, no TTL)."""
        ttl = self.settings.idle_ttl_s
        return None if ttl is None else min(max(ttl / 4, 1.0), 60.0)

    def over_budget(self, deps: Sequence[Deployment]) -> bool:
        """Whether these deployments exceed the count or memory bound."""
        limit = self.settings.max_memory_mb
        return len(deps) > self.settings.max_models or (
            limit is not None and sum(d.memory_bytes for d in deps) > limit * 2**20
        )

    def to_evict(self, deps: Sequence[Deployment], keep: Collection[str] = ()) -> list[Deployment]:
        """Least recently used unpinned deployments to unload until the rest fit (as many as possible)."""
        rest = list(deps)
        victims: list[Deployment] = []
        candidates = sorted(
            (d for d in deps if not d.lifecycle.pinned and d.key not in keep), key=lambda d: d.last_used or 0.0
        )
        for victim in candidates:
            if not self.over_budget(rest):
                break
            rest.remove(victim)
            victims.append(victim)
        if self.over_budget(rest):
            log.warning(
                "model cache over its bounds, but the other deployments are pinned",
                extra={"models": len(rest), "memory_mb": round(sum(d.memory_bytes for d in rest) / 2**20, 1)},
            )
        return victims

    def idle(self, deps: Sequence[Deployment], now: float, keep: Collection[str] = ()) -> list[Deployment]:
        """Unpinned deployments without a request for ``idle_ttl_s`` and nothing queued or running."""
        ttl = self.settings.idle_ttl_s
        if ttl is None:
            return []
        return [
            d
            for d in deps
            if not d.lifecycle.pinned
            and d.key not in keep
            and now - (d.last_used if d.last_used is not None else now) >= ttl
            and not _busy(d)
        ]

    @staticmethod
    def footprint(dep: Deployment) -> int:
        """Approximate bytes a deployment's session holds (file size times ``FOOTPRINT_FACTOR``)."""
        path = dep.converted.onnx_path
        if dep.converted.runtime == "onnx" and path is not None and path.is_file():
            return FOOTPRINT_FACTOR * path.stat().st_size
        return FOOTPRINT_FACTOR * _dir_size(dep.converted.model_dir)


def _busy(dep: Deployment) -> bool:
    stats = dep.batcher.stats
    return bool(stats.in_flight or stats.queue_depth)


def _dir_size(root: Path) -> int:
    try:
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    except OSError:
        return 0
