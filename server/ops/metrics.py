"""modelport's own counters: per request series, per deployment batching and lifecycle, updated on the event loop
(~0.5 µs a request: a tuple, a dict lookup, a bisect) and read at scrape time (``exposition.py``), by the timeline
sampler (``timeline.py``: the dashboard and Databricks' per-minute figures) and for cost attribution (``cost.py``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.deployments import Deployment, DeploymentTable
from server.ops.histogram import COUNTS, LATENCY_MS, QUEUE_MS, Histogram
from server.runtime.batching import BatchRecord

SeriesKey = tuple[str, str | None, str | None, str | None, str | None, str | None]
"""(door, model, version, alias, endpoint, served_entity)."""

SERIES_LABELS = ("door", "model", "version", "alias", "endpoint", "served_entity")
_MAX_SERIES = 10_000
_MAX_EVENTS = 200


class RequestSeries:
    """Answered requests of one (door, model, version, alias, endpoint, served entity)."""

    __slots__ = ("by_class", "latency_ms", "rows")

    def __init__(self) -> None:
        self.by_class = [0, 0, 0, 0, 0]
        """Requests by status class: 1xx, 2xx, 3xx, 4xx, 5xx."""
        self.latency_ms = Histogram(LATENCY_MS)
        self.rows = 0

    @property
    def requests(self) -> int:
        return sum(self.by_class)


@dataclass(slots=True)
class DeploymentCounters:
    """Batching and lifecycle of one deployment key (``name/version`` or ``name@alias``), across its swaps."""

    name: str
    version: str = ""
    provider: str = ""
    queue_wait_ms: Histogram = field(default_factory=lambda: Histogram(QUEUE_MS))
    batch_rows: Histogram = field(default_factory=lambda: Histogram(COUNTS))
    batch_requests: Histogram = field(default_factory=lambda: Histogram(COUNTS))
    busy_s: float = 0.0
    batches: int = 0
    failed_batches: int = 0
    rows: int = 0
    load_s: float = 0.0
    loads: int = 0
    loads_on_demand: int = 0
    swaps: int = 0
    evictions: int = 0
    unloads: int = 0


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """A load, hot swap, unload or failure, for the dashboard's recent events."""

    at: float
    kind: str
    key: str
    detail: dict[str, Any]


class Metrics:
    """Every counter of the process. Doors report through ``Recorder`` → ``observe``; batchers and the manager
    report through ``attach`` and ``event``."""

    def __init__(self) -> None:
        self.series: dict[SeriesKey, RequestSeries] = {}
        self.deployments: dict[str, DeploymentCounters] = {}
        self.events: deque[LifecycleEvent] = deque(maxlen=_MAX_EVENTS)
        self.started = time.time()
        self._table: DeploymentTable | None = None
        self._watched: set[int] = set()
        self.gauges: dict[str, Callable[[], float]] = {}
        """Extra gauges read at scrape time (e.g. rows buffered for the inference tables), name → reader."""
        self.totals: dict[str, Callable[[], float]] = {}
        """Extra counters read at scrape time (e.g. inference-table rows written, dropped), name → reader."""

    # -- hot path -----------------------------------------------------------------------------------------------

    def observe(self, door: str, state: dict[str, Any], status: int, latency_s: float) -> None:
        """One answered request (``Recorder`` calls this). Requests naming no model or endpoint are not counted."""
        model, endpoint = state.get("model"), state.get("endpoint")
        if model is None and endpoint is None:
            return
        key = (door, model, state.get("version"), state.get("alias"), endpoint, state.get("served_entity"))
        series = self.series.get(key)
        if series is None:
            if len(self.series) >= _MAX_SERIES:  # unknown names from clients must not grow memory without bound
                key = (door, "(other)", None, None, None, None)
                series = self.series.get(key)
            if series is None:
                series = self.series[key] = RequestSeries()
        cls = status // 100 - 1
        series.by_class[cls if 0 <= cls < 5 else 4] += 1
        series.latency_ms.observe(latency_s * 1000.0)
        rows = state.get("rows")
        if rows:
            series.rows += rows

    # -- deployments --------------------------------------------------------------------------------------------

    def attach(self, table: DeploymentTable) -> None:
        """Follow the table: every deployment's batcher reports its batches here (call once, before serving)."""
        self._table = table
        table.subscribe(self._refresh)
        self._refresh()

    def _refresh(self) -> None:
        table = self._table
        if table is None:
            return
        for dep in table.all():
            if id(dep.batcher) not in self._watched:
                self._watched.add(id(dep.batcher))
                self._watch(dep)

    def _watch(self, dep: Deployment) -> None:
        counters = self.counters(dep.key)
        counters.version, counters.provider = dep.model.version, dep.session.provider
        counters.load_s = dep.load_seconds

        def on_batch(record: BatchRecord) -> None:
            counters.queue_wait_ms.observe(record.queue_wait_s * 1000.0)
            counters.batch_rows.observe(record.rows)
            counters.batch_requests.observe(record.requests)
            counters.busy_s += record.run_s
            counters.batches += 1
            counters.rows += record.rows
            if record.error is not None:
                counters.failed_batches += 1

        dep.batcher.add_listener(on_batch)

    def counters(self, key: str) -> DeploymentCounters:
        found = self.deployments.get(key)
        if found is None:
            found = self.deployments[key] = DeploymentCounters(key.split("@", 1)[0].split("/", 1)[0])
        return found

    def event(self, kind: str, key: str, **detail: Any) -> None:
        """A lifecycle event from the manager: ``loaded`` (load_s, on_demand), ``swapped`` (from/to version,
        load_s), ``unloaded`` (reason), ``failed`` (reason)."""
        counters = self.counters(key)
        if kind == "loaded":
            counters.loads += 1
            counters.load_s = float(detail.get("load_s", 0.0))
            counters.loads_on_demand += bool(detail.get("on_demand"))
        elif kind == "swapped":
            counters.swaps += 1
            counters.load_s = float(detail.get("load_s", 0.0))
        elif kind == "unloaded":
            counters.unloads += 1
            counters.evictions += "evicted" in str(detail.get("reason", ""))
        self.events.append(LifecycleEvent(time.time(), kind, key, detail))
        self._refresh()

    def live(self) -> dict[str, Deployment]:
        """The deployments served now, by key."""
        return {} if self._table is None else {d.key: d for d in self._table.all()}

    # -- aggregates ---------------------------------------------------------------------------------------------

    def requests_by_model(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(model, version) → (requests, rows), over every door."""
        out: dict[tuple[str, str], tuple[int, int]] = {}
        for (_, model, version, *_), s in self.series.items():
            if model is None:
                continue
            k = (model, str(version))
            n, r = out.get(k, (0, 0))
            out[k] = (n + s.requests, r + s.rows)
        return out
