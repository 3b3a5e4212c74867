"""Once a second, a cumulative snapshot of the counters; the last ten minutes of them answer "per second" and "per
minute" questions: the dashboard's charts and Databricks' per-minute metrics export. Nothing here runs per request.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from server.ops.cost import Cost, Prices, Usage, attribute
from server.ops.histogram import LATENCY_MS, delta, quantile
from server.ops.metrics import Metrics
from server.ops.process import ProcessProbe, ProcessSample

_KEEP = 601
_SERIES = ("t", "rps", "p50_ms", "p99_ms", "error_rate", "batch_rows", "queue_depth", "cpu_percent", "rss_mb",
           "gpu_percent")  # fmt: skip


@dataclass(slots=True)
class Group:
    """Cumulative figures of one group (``all``, ``model:<name>``, ``endpoint:<name>``) at one tick."""

    requests: int = 0
    c4xx: int = 0
    c5xx: int = 0
    rows: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_MS) + 1))
    busy_s: float = 0.0
    batches: int = 0
    batch_rows: int = 0
    queue_depth: int = 0
    in_flight: int = 0


@dataclass(frozen=True, slots=True)
class Tick:
    at: float
    groups: dict[str, Group]
    process: ProcessSample
    costs: dict[str, Cost]


class Timeline:
    """Samples ``metrics`` every ``interval_s`` while ``run()`` runs; ``tick()`` samples once (tests)."""

    def __init__(self, metrics: Metrics, probe: ProcessProbe, prices: Prices | None, interval_s: float = 1.0) -> None:
        self.metrics = metrics
        self.probe = probe
        self.prices = prices
        self.interval_s = interval_s
        self.ticks: deque[Tick] = deque(maxlen=_KEEP)
        self._cpu0 = probe.sample().cpu_s

    async def run(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(self.interval_s)

    def tick(self) -> Tick:
        groups: dict[str, Group] = {"all": Group()}
        for (_, model, _, _, endpoint, _), s in self.metrics.series.items():
            names = ["all"]
            if model is not None:
                names.append(f"model:{model}")
            if endpoint is not None:
                names.append(f"endpoint:{endpoint}")
            for name in names:
                g = groups.get(name) or groups.setdefault(name, Group())
                g.requests += s.requests
                g.c4xx += s.by_class[3]
                g.c5xx += s.by_class[4]
                g.rows += s.rows
                g.latency = [a + b for a, b in zip(g.latency, s.latency_ms.counts, strict=True)]
        live = self.metrics.live()
        for key, c in self.metrics.deployments.items():
            for name in ("all", f"model:{c.name}"):
                g = groups.get(name) or groups.setdefault(name, Group())
                g.busy_s += c.busy_s
                g.batches += c.batches
                g.batch_rows += c.rows
                dep = live.get(key)
                if dep is not None:
                    stats = dep.batcher.stats
                    g.queue_depth += stats.queue_depth
                    g.in_flight += stats.in_flight
        process = self.probe.sample()
        tick = Tick(time.time(), groups, process, self.costs(process))
        self.ticks.append(tick)
        return tick

    def costs(self, process: ProcessSample | None = None) -> dict[str, Cost]:
        """Cost per deployment key since start (empty when no price is configured)."""
        if self.prices is None:
            return {}
        process = process or self.probe.sample()
        per_model = self.metrics.requests_by_model()
        usage = {}
        for key, c in self.metrics.deployments.items():
            requests, rows = per_model.get((c.name, c.version), (0, 0))
            usage[key] = Usage(c.busy_s, requests, rows, gpu=c.provider.startswith("CUDA"))
        return attribute(usage, process.cpu_s - self._cpu0, self.prices)

    # -- reading ------------------------------------------------------------------------------------------------

    def window(self, seconds: float) -> tuple[Tick, Tick] | None:
        """The newest tick and the oldest one at most ``seconds`` before it (``None`` before two ticks exist)."""
        if len(self.ticks) < 2:
            return None
        newest = self.ticks[-1]
        oldest = newest
        for tick in reversed(self.ticks):
            if newest.at - tick.at > seconds + 0.5:
                break
            oldest = tick
        return (oldest, newest) if oldest is not newest else (self.ticks[-2], newest)

    def minute(self, group: str) -> dict[str, float] | None:
        """Requests, 4xx, 5xx over the last minute and CPU/memory use now, for one group."""
        span = self.window(60.0)
        if span is None:
            return None
        old, new = span
        a, b = old.groups.get(group, Group()), new.groups.get(group, Group())
        elapsed = max(1e-9, new.process.wall - old.process.wall)
        cores = self.probe.cores
        memory = new.process.memory_total_bytes
        return {
            "requests": b.requests - a.requests,
            "c4xx": b.c4xx - a.c4xx,
            "c5xx": b.c5xx - a.c5xx,
            "cpu_percent": 100.0 * (new.process.cpu_s - old.process.cpu_s) / elapsed / cores,
            "mem_percent": 100.0 * new.process.rss_bytes / memory if memory else 0.0,
        }

    def series(self, group: str, points: int = 300) -> dict[str, list[Any]]:
        """Per-second rates of one group over the last ``points`` ticks, for the dashboard's charts."""
        ticks = list(self.ticks)[-(points + 1) :]
        out: dict[str, list[Any]] = {k: [] for k in _SERIES}
        for old, new in itertools.pairwise(ticks):
            a, b = old.groups.get(group, Group()), new.groups.get(group, Group())
            dt = max(1e-9, new.process.wall - old.process.wall)
            n = b.requests - a.requests
            lat = delta(b.latency, a.latency)
            batches = b.batches - a.batches
            out["t"].append(round(new.at, 3))
            out["rps"].append(round(n / dt, 2))
            out["p50_ms"].append(_round(quantile(LATENCY_MS, lat, 0.50)))
            out["p99_ms"].append(_round(quantile(LATENCY_MS, lat, 0.99)))
            out["error_rate"].append(round((b.c5xx - a.c5xx + b.c4xx - a.c4xx) / n, 4) if n else 0.0)
            out["batch_rows"].append(round((b.batch_rows - a.batch_rows) / batches, 2) if batches else None)
            out["queue_depth"].append(b.queue_depth)
            out["cpu_percent"].append(round(100.0 * (new.process.cpu_s - old.process.cpu_s) / dt / self.probe.cores, 1))
            out["rss_mb"].append(round(new.process.rss_bytes / 2**20, 1))
            gpu = new.process.gpu_utilization
            out["gpu_percent"].append(None if gpu is None else round(gpu * 100, 1))
        return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
