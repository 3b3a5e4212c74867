"""A fixed-bucket histogram cheap enough for the hot path (one bisect, two adds), with quantile estimates."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

LATENCY_MS = (0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0)
QUEUE_MS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 5000.0)
COUNTS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 16384.0, 65536.0)


class Histogram:
    """Counts per bucket (``counts[i]``: values ≤ ``bounds[i]``, the last one above every bound) and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def snapshot(self) -> tuple[int, ...]:
        return tuple(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, count of values ≤ it)`` for every bound and ``inf`` (Prometheus' ``le`` buckets)."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


def quantile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """Estimate the ``q`` quantile from bucket counts (linear within a bucket); ``None`` with no values."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            low = bounds[i - 1] if i > 0 else 0.0
            high = bounds[i] if i < len(bounds) else bounds[-1] * 2
            return low + (high - low) * ((rank - seen) / n)
        seen += n
    return float(bounds[-1])


def delta(now: Sequence[int], before: Sequence[int] | None) -> list[int]:
    """Counts added between two snapshots of one histogram."""
    if before is None:
        return list(now)
    return [a - b for a, b in zip(now, before, strict=True)]
