"""Cost per inference: the machine's price split over deployments by what each one used.

Attribution rule (docs/observability.md):

* a deployment's **runtime** share is its runtime busy seconds (time its batches spent in onnxruntime or the pyfunc,
  measured by the batcher) priced at the GPU-second price when it runs on CUDA, else at the core-second price;
* the process CPU spent **outside** the runtimes (HTTP, auth, decode, encode, logs) is split between deployments in
  proportion to their requests, priced at the core-second price;
* cost per 1,000 requests and per 1,000 rows = the deployment's cost / its requests (rows) x 1,000.

Prices come from ``settings.cost``: ``cpu_core_per_hour`` (else ``machine_per_hour`` / cores) and ``gpu_per_hour``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from server.settings import CostSettings


@dataclass(frozen=True, slots=True)
class Usage:
    """What one deployment used over the attribution window."""

    busy_s: float
    requests: int
    rows: int
    gpu: bool = False


@dataclass(frozen=True, slots=True)
class Cost:
    total: float
    runtime: float
    handling: float
    per_1k_requests: float | None
    per_1k_rows: float | None


@dataclass(frozen=True, slots=True)
class Prices:
    core_second: float
    gpu_second: float

    @classmethod
    def of(cls, settings: CostSettings, cores: int) -> Prices | None:
        """``None`` when no price is configured (cost reporting off)."""
        if settings.cpu_core_per_hour is not None:
            core = settings.cpu_core_per_hour / 3600
        elif settings.machine_per_hour is not None:
            core = settings.machine_per_hour / 3600 / max(1, cores)
        else:
            return None
        gpu = (settings.gpu_per_hour or 0.0) / 3600
        return cls(core, gpu)


def attribute(usage: Mapping[str, Usage], process_cpu_s: float, prices: Prices) -> dict[str, Cost]:
    """Each deployment's cost from its usage and the process CPU over the same window."""
    busy_cpu = sum(u.busy_s for u in usage.values() if not u.gpu)
    handling = max(0.0, process_cpu_s - busy_cpu)
    requests = sum(u.requests for u in usage.values())
    out: dict[str, Cost] = {}
    for key, u in usage.items():
        runtime = u.busy_s * (prices.gpu_second if u.gpu else prices.core_second)
        share = handling * (u.requests / requests) if requests else 0.0
        handled = share * prices.core_second
        total = runtime + handled
        out[key] = Cost(
            total,
            runtime,
            handled,
            total / u.requests * 1000 if u.requests else None,
            total / u.rows * 1000 if u.rows else None,
        )
    return out
